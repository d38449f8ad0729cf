"""Live coupons over the wire, on both engines (issue 14)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections import Counter
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from livecommerce.client import Client, ClientError
from livecommerce.http.orders import SANDBOX
from livecommerce.protocol import dumps, split_frame
from tests.conftest import (
    HOST,
    MOD,
    SECRET,
    ClientFactory,
    ServerFactory,
    ServerProcess,
    token,
    until,
)
from tests.test_commerce_ws import is_type, open_sale, put_product


async def refused(client: Client, op: str, **fields: Any) -> str:
    with pytest.raises(ClientError) as err:
        await client.request(op, **fields)
    return err.value.code


async def test_a_host_drops_a_coupon_viewers_claim_it_and_see_it_go(
    start_server: ServerFactory, connect: ClientFactory
) -> None:
    server = await start_server(tick_ms=20)
    host = await connect(server, HOST)
    ana, bo = await connect(server, token("ana")), await connect(server, token("bo"))
    for c in (host, ana, bo):
        await c.join("demo")
    dropped = await host.request(
        "coupon.drop", room="demo", kind="amount", value=300, quantity=2, min_total=1000
    )
    coupon = dropped["coupon"]
    assert (coupon["remaining"], coupon["per_user"], coupon["skus"]) == (2, 1, [])
    event = await ana.next_event(is_type("coupon.dropped"))
    assert event["coupon"] == coupon and "seq" in event

    got = await ana.request("coupon.claim", room="demo", coupon=coupon["id"])
    assert got["mine"] == 1 and got["coupon"]["remaining"] == 1
    assert await refused(ana, "coupon.claim", room="demo", coupon=coupon["id"]) == (
        "limit_exceeded"
    )
    stock = await bo.next_event(lambda e: e["type"] == "coupon.stock" and e["remaining"] == 1)
    assert stock["coupon_id"] == coupon["id"] and "seq" not in stock
    await bo.request("coupon.claim", room="demo", coupon=coupon["id"])
    late = await connect(server, token("cy"))
    await late.join("demo")
    assert await refused(late, "coupon.claim", room="demo", coupon=coupon["id"]) in (
        "sold_out",
        "coupon_ended",
    )
    ended = await ana.next_event(is_type("coupon.ended"), timeout=10)  # the sweeper's
    assert (ended["coupon_id"], ended["reason"]) == (coupon["id"], "claimed")

    again = await connect(server, token("ana"))
    snap = await again.join("demo")
    assert snap["coupons"] == [] and snap["my_coupons"] == {}


async def test_the_snapshot_lists_live_coupons_and_the_viewers_own_claims(
    start_server: ServerFactory, connect: ClientFactory
) -> None:
    server = await start_server()
    host = await connect(server, HOST)
    c = (await host.request("coupon.drop", room="demo", kind="percent", value=15, quantity=5))[
        "coupon"
    ]
    ana = await connect(server, token("ana"))
    await ana.join("demo")
    await ana.request("coupon.claim", room="demo", coupon=c["id"])
    snap = await (await connect(server, token("ana"))).join("demo")
    assert [x["id"] for x in snap["coupons"]] == [c["id"]]
    assert snap["coupons"][0]["remaining"] == 4
    assert snap["my_coupons"] == {c["id"]: 1}
    guest = await connect(server)
    guest_snap = await guest.join("demo")
    assert guest_snap["my_coupons"] == {} and len(guest_snap["coupons"]) == 1

    await host.request("coupon.stop", room="demo", coupon=c["id"])
    ended = await ana.next_event(is_type("coupon.ended"))
    assert ended["reason"] == "stopped"
    await host.request("coupon.stop", room="demo", coupon=c["id"])  # once more: nothing
    assert await refused(ana, "coupon.claim", room="demo", coupon=c["id"]) == "coupon_ended"


async def test_who_may_do_what_and_bad_input(
    start_server: ServerFactory, connect: ClientFactory
) -> None:
    server = await start_server()
    host = await connect(server, HOST)
    mod = await connect(server, MOD)
    viewer = await connect(server, token("v1"))
    guest = await connect(server)
    await viewer.join("demo")
    for who in (viewer, mod, guest):
        code = await refused(who, "coupon.drop", room="demo", kind="amount", value=1, quantity=1)
        assert code in ("forbidden", "unauthorized")
    for fields, code in (
        ({"kind": "percent", "value": 95, "quantity": 1}, "bad_request"),
        ({"kind": "percent", "value": 4, "quantity": 1}, "bad_request"),
        ({"kind": "free", "value": 1, "quantity": 1}, "bad_request"),
        ({"kind": "amount", "value": 1, "quantity": 0}, "bad_request"),
        ({"kind": "amount", "value": 1, "quantity": 1, "minutes": 5, "until": 9e12}, "bad_request"),
        ({"kind": "amount", "value": 1, "quantity": 1, "skus": ["nope"]}, "not_found"),
        ({"kind": "amount", "value": 1, "quantity": 1, "per_user": 101}, "bad_request"),
    ):
        assert await refused(host, "coupon.drop", room="demo", **fields) == code, fields
    c = (await host.request("coupon.drop", room="demo", kind="amount", value=1, quantity=9))[
        "coupon"
    ]
    assert await refused(guest, "coupon.claim", room="demo", coupon=c["id"]) == "unauthorized"
    assert await refused(viewer, "coupon.claim", room="demo", coupon="c-nope") == "not_found"
    await host.request("mod.ban", room="demo", user="v1")
    assert await refused(viewer, "coupon.claim", room="demo", coupon=c["id"]) == "banned"


async def test_a_watch_time_gate(start_server: ServerFactory, connect: ClientFactory) -> None:
    server = await start_server()
    host = await connect(server, HOST)
    gated = await host.request(
        "coupon.drop", room="demo", kind="amount", value=100, quantity=5, watch_minutes=2
    )
    viewer = await connect(server, token("v1"))
    await viewer.join("demo")
    with pytest.raises(ClientError) as err:
        await viewer.request("coupon.claim", room="demo", coupon=gated["coupon"]["id"])
    assert err.value.code == "not_eligible" and "watched 2 minutes" in err.value.message
    assert err.value.data is not None and err.value.data["watch_s"] == 120


async def test_a_server_killed_during_a_claim_burst_loses_no_claim_and_doubles_none(
    redis_url: str, spawn: Callable[..., ServerProcess]
) -> None:
    """Two processes on one Redis; 200 viewers claim a coupon of 60 (2 each, 3 tries
    each) through both; one process is killed in the middle. Every claim answered ok is
    in Redis, no viewer holds more than 2, no more than 60 in all, and the survivor's
    viewers and the restarted server go on."""
    args = ("--redis-url", redis_url, "--secret", SECRET, "--demo", "--tick-ms", "20")
    p1, p2 = spawn(*args), spawn(*args)
    # no cap on connections (aiohttp's default, 100, would hold the 101st socket back)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def viewer(p: ServerProcess, name: str) -> aiohttp.ClientWebSocketResponse:
            ws = await session.ws_connect(f"{p.url}/ws")
            await ws.send_str(dumps({"op": "connect", "id": 1, "token": token(name)}).decode())
            await ws.send_str('{"op":"join","id":2,"room":"demo"}')
            return ws

        drop = {"op": "coupon.drop", "id": 3, "room": "demo", "kind": "percent", "value": 10}
        hws = await session.ws_connect(f"{p2.url}/ws")
        await hws.send_str(dumps({"op": "connect", "id": 1, "token": HOST}).decode())
        await hws.send_str(dumps({**drop, "quantity": 60, "per_user": 2}).decode())
        coupon = ""
        while not coupon:
            for line in split_frame(await hws.receive_str(timeout=5)):
                if line.get("id") == 3:
                    coupon = line["data"]["coupon"]["id"]
        names = [f"k{i}" for i in range(200)]
        sockets = [await viewer(p1 if i % 2 else p2, n) for i, n in enumerate(names)]
        granted: Counter[str] = Counter()

        async def claims(ws: aiohttp.ClientWebSocketResponse, name: str) -> None:
            for j in range(3):
                cmd = {"op": "coupon.claim", "id": 10 + j, "room": "demo", "coupon": coupon}
                with contextlib.suppress(ConnectionError, aiohttp.ClientError):
                    await ws.send_str(dumps(cmd).decode())
            answered = 0
            while answered < 3:
                try:
                    frame = await ws.receive_str(timeout=10)
                except (TypeError, TimeoutError, aiohttp.ClientError, ConnectionError):
                    return  # this viewer's server was killed
                for line in split_frame(frame):
                    if line.get("id", 0) >= 10 and "type" not in line:
                        answered += 1
                        granted[name] += bool(line["ok"])

        burst = asyncio.gather(*(claims(ws, n) for ws, n in zip(sockets, names, strict=True)))
        await asyncio.sleep(0.02)
        p1.proc.send_signal(signal.SIGKILL)
        p1.proc.wait(10)
        await asyncio.wait_for(burst, 30)
        for ws in [*sockets, hws]:
            await ws.close()
    r = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        stored = {u: int(n) for u, n in (await r.hgetall(f"lc:{{demo}}:cclaims:{coupon}")).items()}
        claimed = int(await r.hget(f"lc:{{demo}}:coupon:{coupon}", "claimed") or 0)
    finally:
        await r.aclose()
    assert sum(granted.values()) > 0, "some claims were answered before the kill"
    for name, n in granted.items():  # nothing answered ok is lost
        assert stored.get(name, 0) >= n, (name, n, stored.get(name))
    assert all(n <= 2 for n in stored.values())  # none past the limit, kill or not
    assert claimed == sum(stored.values()) <= 60
    p3 = spawn(*args)
    assert p3.ready()


# -- spending a coupon on an order ---------------------------------------------------------


async def test_a_claimed_coupon_is_spent_once_with_the_hold_and_given_back_if_it_expires(
    start_server: ServerFactory, connect: ClientFactory
) -> None:
    """mall #1003: one coupon used in 5 concurrent orders. Here exactly one order gets
    it, the server computes the discount, the webhook carries it, and the coupon is the
    buyer's again when the hold expires."""
    server = await start_server(hold_s=1, sweep_interval_ms=100, limits={"order_burst": 100})
    host = await connect(server, HOST)
    sale = await open_sale(host, server, stock=50, limit=20, price=1000)
    c = (
        await host.request(
            "coupon.drop", room="demo", kind="amount", value=300, quantity=5, min_total=1500
        )
    )["coupon"]
    ana = await connect(server, token("ana"))
    await ana.join("demo")

    def order(key: str, qty: int = 2, coupon: str | None = c["id"]) -> Any:
        fields: dict[str, Any] = {"room": "demo", "sale": sale["id"], "qty": qty, "key": key}
        if coupon is not None:
            fields["coupon"] = coupon
        return ana.request("order", **fields)

    with pytest.raises(ClientError) as err:
        await order("k0")
    assert err.value.code == "coupon_not_applicable" and err.value.data["rule"] == "unclaimed"
    await ana.request("coupon.claim", room="demo", coupon=c["id"])
    with pytest.raises(ClientError) as err:
        await order("k1", qty=1)  # 1,000 is under the coupon's 1,500
    assert err.value.data["rule"] == "min_total"

    tabs = [await connect(server, token("ana")) for _ in range(5)]  # five tabs at once
    for tab in tabs:
        await tab.join("demo")
    fields = {"room": "demo", "sale": sale["id"], "qty": 2, "coupon": c["id"]}
    tries = await asyncio.gather(
        *(tab.request("order", key=f"race{i}", **fields) for i, tab in enumerate(tabs)),
        return_exceptions=True,
    )
    won = [t["order"] for t in tries if isinstance(t, dict)]
    lost = [t for t in tries if isinstance(t, ClientError)]
    assert len(won) == 1 and len(lost) == 4
    assert all(e.code == "coupon_not_applicable" for e in lost), [e.code for e in lost]
    assert (won[0]["coupon"], won[0]["discount"], won[0]["price"]) == (c["id"], 300, 1000)
    plain = (await order("plain", coupon=None))["order"]
    assert "coupon" not in plain and "discount" not in plain  # no coupon, as before
    again = await order("race0")  # a retry of the winning key: the same order
    if again["order"]["id"] == won[0]["id"]:
        assert again["order"]["discount"] == 300

    shop = server.app[SANDBOX]
    assert shop is not None
    await until(lambda: won[0]["id"] in shop.orders, "the webhook")
    held = shop.orders[won[0]["id"]]
    assert (held["coupon"], held["discount"], held["total"]) == (c["id"], 300, 1700)

    expired = await ana.next_event(
        lambda e: e["type"] == "order.updated" and e["order"]["id"] == won[0]["id"], timeout=10
    )
    assert expired["order"]["status"] == "expired"
    back = (await order("after-expiry"))["order"]  # the coupon came back with the units
    assert back["discount"] == 300


async def test_a_coupon_for_other_products_is_refused_with_the_rule(
    start_server: ServerFactory, connect: ClientFactory
) -> None:
    server = await start_server()
    host = await connect(server, HOST)
    sale = await open_sale(host, server, price=1000)  # the product "mug"
    assert await put_product(server, "tee", "Tee", 2500) == 200
    c = (
        await host.request(
            "coupon.drop", room="demo", kind="percent", value=15, quantity=5, skus=["tee"]
        )
    )["coupon"]
    bo = await connect(server, token("bo"))
    await bo.join("demo")
    await bo.request("coupon.claim", room="demo", coupon=c["id"])
    with pytest.raises(ClientError) as err:
        await bo.request("order", room="demo", sale=sale["id"], qty=1, key="k", coupon=c["id"])
    assert err.value.code == "coupon_not_applicable" and err.value.data["rule"] == "sku"
    assert "other products" in err.value.message


async def test_the_server_picks_the_best_claimed_coupon(
    start_server: ServerFactory, connect: ClientFactory
) -> None:
    server = await start_server(limits={"order_burst": 100})
    host = await connect(server, HOST)
    sale = await open_sale(host, server, stock=20, limit=10, price=1000)
    amount = await host.request("coupon.drop", room="demo", kind="amount", value=300, quantity=3)
    percent = await host.request("coupon.drop", room="demo", kind="percent", value=20, quantity=3)
    cy = await connect(server, token("cy"))
    await cy.join("demo")
    first = await cy.request("order", room="demo", sale=sale["id"], qty=2, key="a", coupon="best")
    assert "coupon" not in first["order"]  # nothing claimed: the full price, no refusal
    for c in (amount, percent):
        await cy.request("coupon.claim", room="demo", coupon=c["coupon"]["id"])
    got = []
    for key in ("b", "c", "d"):
        reply = await cy.request(
            "order", room="demo", sale=sale["id"], qty=2, key=key, coupon="best"
        )
        got.append((reply["order"].get("coupon"), reply["order"].get("discount")))
    assert got == [(percent["coupon"]["id"], 400), (amount["coupon"]["id"], 300), (None, None)]
