"""Group buys over the wire, on both engines (issue 14): a deal, a group opened,
joined from its link and filled (every member's order at once), a group that fails,
and the last slot raced over two processes with one of them killed."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import operator
import signal
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import redis.asyncio as aioredis

from livecommerce.http.keys import SERVICE
from livecommerce.http.orders import SANDBOX
from livecommerce.protocol import dumps, loads, split_frame
from tests.conftest import HOST, SECRET, ClientFactory, ServerFactory, ServerProcess, token, until
from tests.test_commerce_ws import is_type, put_product
from tests.test_coupons_ws import refused
from tests.test_giveaways_ws import _events

DEAL = {"sku": "mug-01", "price": 1200, "size": 3, "window_minutes": 10, "stock": 30}


async def test_a_group_opens_is_joined_from_its_link_and_fills(
    start_server: ServerFactory, connect: ClientFactory
) -> None:
    server = await start_server(tick_ms=20)
    assert await put_product(server, "mug-01", "Blue mug", 1800) == 200
    host = await connect(server, HOST)
    ana, bo, cy = [await connect(server, token(n)) for n in ("ana", "bo", "cy")]
    for c in (host, ana, bo, cy):
        await c.join("demo")
    d = (await host.request("deal.start", room="demo", **DEAL))["deal"]
    assert (d["price"], d["size"], d["remaining"], d["title"]) == (1200, 3, 30, "Blue mug")
    started = await bo.next_event(is_type("deal.started"))
    assert started["deal"]["id"] == d["id"] and "seq" in started

    g = (await ana.request("group.open", room="demo", deal=d["id"]))["group"]
    assert (g["members"], g["needed"], g["status"]) == (["ana"], 2, "forming")
    forming = await cy.next_event(
        lambda e: e["type"] == "group.forming" and e["forming"] == 1 and e["groups"]
    )
    assert forming["groups"][0]["id"] == g["id"] and "seq" not in forming
    assert await refused(ana, "group.open", room="demo", deal=d["id"]) == "conflict"
    snap = await (await connect(server, token("bo"))).join("demo")
    assert [x["id"] for x in snap["deals"]] == [d["id"]]
    assert [x["id"] for x in snap["groups"]] == [g["id"]] and snap["my_groups"] == []

    joined = await bo.request("group.join", room="demo", group=g["id"])  # from the share link
    assert joined["filled"] is False and joined["group"]["members"] == ["ana", "bo"]
    mine = await (await connect(server, token("bo"))).join("demo")
    assert [x["id"] for x in mine["my_groups"]] == [g["id"]]
    last = await cy.request("group.join", room="demo", group=g["id"])
    assert last["filled"] is True and last["group"]["status"] == "filled"
    shop = server.app[SANDBOX]
    assert shop is not None
    for member, client in (("ana", ana), ("bo", bo), ("cy", cy)):
        seen = await _events(client, {"group.filled", "order.updated"})
        assert seen["group.filled"]["group"]["members"] == ["ana", "bo", "cy"]
        order = seen["order.updated"]["order"]
        assert (order["price"], order["status"], order["source"], order["sale"]) == (
            1200, "held", "group", g["id"],
        )  # fmt: skip
        oid = order["id"]
        await until(functools.partial(operator.contains, shop.orders, oid), "the webhook")
        sent = shop.orders[oid]
        assert (sent["source"], sent["unit_price"], sent["buyer_id"]) == ("group", 1200, member)
    assert await refused(host, "group.join", room="demo", group=g["id"]) == "group_closed"
    actions = [e["action"] for e in await _modlog(server)]
    assert "deal.start" in actions
    await host.request("deal.stop", room="demo", deal=d["id"])
    assert await refused(ana, "group.open", room="demo", deal=d["id"]) == "group_closed"


async def _modlog(server: Any) -> list[dict[str, Any]]:
    svc = server.app[SERVICE]
    return [loads(e) for e in await svc.backends.moderation.actions("demo", 50)]


async def test_a_group_short_at_its_end_fails_and_each_member_is_told(
    start_server: ServerFactory, connect: ClientFactory
) -> None:
    server = await start_server(tick_ms=20)
    await put_product(server, "mug-01", "Blue mug", 1800)
    host = await connect(server, HOST)
    ana, bo = await connect(server, token("ana")), await connect(server, token("bo"))
    for c in (host, ana, bo):
        await c.join("demo")
    d = (await host.request("deal.start", room="demo", **{**DEAL, "window_minutes": 1}))["deal"]
    g = (await ana.request("group.open", room="demo", deal=d["id"]))["group"]
    await bo.request("group.join", room="demo", group=g["id"])
    svc = server.app[SERVICE]
    svc._clock = lambda: time.time() + 61  # the window is over
    for client in (ana, bo):
        failed = await client.next_event(is_type("group.failed"), timeout=10)  # the sweeper's
        assert failed["group"]["id"] == g["id"] and failed["group"]["status"] == "failed"
    deal = await svc.backends.groups.deal("demo", d["id"])
    assert deal is not None and deal.remaining == 30  # the holds went back
    assert await svc.backends.inventory.outbox("demo") == []
    again = await ana.request("group.open", room="demo", deal=d["id"])  # free to open anew
    assert again["group"]["members"] == ["ana"]


async def test_who_may_do_what_and_bad_input(
    start_server: ServerFactory, connect: ClientFactory
) -> None:
    server = await start_server(limits={"commerce_burst": 100})
    await put_product(server, "mug-01", "Blue mug", 1800)
    host = await connect(server, HOST)
    viewer = await connect(server, token("v1"))
    guest = await connect(server)
    await viewer.join("demo")
    assert await refused(viewer, "deal.start", room="demo", **DEAL) == "forbidden"
    assert await refused(guest, "deal.start", room="demo", **DEAL) == "unauthorized"
    for fields, code in (
        ({"price": 1801}, "bad_request"),  # above the list price
        ({"size": 1}, "bad_request"),
        ({"size": 51}, "bad_request"),
        ({"window_minutes": 0}, "bad_request"),
        ({"window_minutes": 1441}, "bad_request"),
        ({"stock": 2}, "bad_request"),  # fewer than a group
        ({"sku": "nope"}, "not_found"),
    ):
        assert await refused(host, "deal.start", room="demo", **{**DEAL, **fields}) == code, fields
    d = (await host.request("deal.start", room="demo", **DEAL))["deal"]
    assert await refused(guest, "group.open", room="demo", deal=d["id"]) == "unauthorized"
    assert await refused(viewer, "group.open", room="demo", deal="d-nope") == "not_found"
    assert await refused(viewer, "group.join", room="demo", group="demo.pnope") == "not_found"
    assert await refused(viewer, "deal.stop", room="demo", deal=d["id"]) == "forbidden"
    await host.request("mod.ban", room="demo", user="v1")
    assert await refused(viewer, "group.open", room="demo", deal=d["id"]) == "banned"


async def test_the_last_slot_raced_by_500_over_two_processes_goes_to_one(
    redis_url: str, spawn: Callable[..., ServerProcess]
) -> None:
    """Two processes on one Redis; a group of 3 with 2 members; 500 viewers (250 on
    each process) race for its last slot while one process is killed. Exactly one
    wins; the group has exactly 3 members, each with one order, none twice."""
    args = ("--redis-url", redis_url, "--secret", SECRET, "--demo", "--tick-ms", "20")
    p1, p2 = spawn(*args), spawn(*args)
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session,
        session.put(
            f"{p2.url}/api/rooms/demo/products/mug-01",
            json={"title": "Blue mug", "price": 1800},
            headers={"Authorization": f"Bearer {HOST}"},
        ) as put,
    ):
        assert put.status == 200

        async def ask(p: ServerProcess, tok: str, cmd: dict[str, Any]) -> dict[str, Any]:
            ws = await session.ws_connect(f"{p.url}/ws")
            await ws.send_str(dumps({"op": "connect", "id": 1, "token": tok}).decode())
            await ws.send_str(dumps({**cmd, "id": 9, "room": "demo"}).decode())
            while True:
                for line in split_frame(await ws.receive_str(timeout=5)):
                    if line.get("id") == 9:
                        await ws.close()
                        answer: dict[str, Any] = line
                        return answer

        d = (await ask(p2, HOST, {"op": "deal.start", **DEAL}))["data"]["deal"]
        g = (await ask(p2, token("ana"), {"op": "group.open", "deal": d["id"]}))["data"]["group"]
        await ask(p1, token("bo"), {"op": "group.join", "group": g["id"]})

        async def racer(p: ServerProcess, name: str) -> aiohttp.ClientWebSocketResponse:
            ws = await session.ws_connect(f"{p.url}/ws")
            await ws.send_str(dumps({"op": "connect", "id": 1, "token": token(name)}).decode())
            return ws

        names = [f"r{i}" for i in range(500)]
        sockets = [await racer(p1 if i % 2 else p2, n) for i, n in enumerate(names)]

        async def race(ws: aiohttp.ClientWebSocketResponse) -> bool | None:
            cmd = {"op": "group.join", "id": 10, "room": "demo", "group": g["id"]}
            with contextlib.suppress(ConnectionError, aiohttp.ClientError):
                await ws.send_str(dumps(cmd).decode())
            while True:
                try:
                    frame = await ws.receive_str(timeout=10)
                except (TypeError, TimeoutError, aiohttp.ClientError, ConnectionError):
                    return None  # this racer's server was killed
                for line in split_frame(frame):
                    if line.get("id") == 10:
                        return bool(line["ok"])

        burst = asyncio.gather(*(race(ws) for ws in sockets))
        await asyncio.sleep(0.01)
        p1.proc.send_signal(signal.SIGKILL)
        p1.proc.wait(10)
        answers = await asyncio.wait_for(burst, 30)
        for ws in sockets:
            await ws.close()
    r = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        members = await r.lrange(f"lc:{{demo}}:gmem:{g['id']}", 0, -1)
        status = await r.hget(f"lc:{{demo}}:grp:{g['id']}", "status")
        orders = [await r.hgetall(k) async for k in r.scan_iter("lc:{demo}:ordr:*")]
    finally:
        await r.aclose()
    winners = [n for n, ok in zip(names, answers, strict=True) if ok]
    assert len(winners) <= 1  # at most one told it won (its process may have died)
    assert members[:2] == ["ana", "bo"] and len(members) == 3 and status == "filled"
    assert not winners or members[2] == winners[0]
    group_orders = [o for o in orders if o.get("sale") == g["id"]]
    assert sorted(o["user"] for o in group_orders) == sorted(members)  # one order each
