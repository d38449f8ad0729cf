"""Giveaways over the wire, on both engines (issue 14): start, enter by button or by
keyword, a leaver skipped, the draw, its proof checked, the winners' prize orders."""

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

from livecommerce.client import Client
from livecommerce.http.keys import SERVICE
from livecommerce.http.orders import SANDBOX
from livecommerce.promotions import draws
from livecommerce.protocol import dumps, loads, split_frame
from tests.conftest import (
    HOST,
    SECRET,
    ClientFactory,
    ServerFactory,
    ServerProcess,
    token,
    until,
)
from tests.test_commerce_ws import is_type, put_product
from tests.test_coupons_ws import refused


async def _proof(port: int, gid: str) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as s,
        s.get(f"http://127.0.0.1:{port}/api/giveaways/{gid}/proof") as resp,
    ):
        return resp.status, await resp.json()


async def _events(client: Client, types: set[str]) -> dict[str, dict[str, Any]]:
    """The next event of each of ``types``, in whatever order they come (a private
    event is sent at once, a room's at the next tick)."""
    got: dict[str, dict[str, Any]] = {}
    while len(got) < len(types):
        event = await client.next_event(lambda e: e["type"] in types - got.keys())
        got[event["type"]] = event
    return got


async def test_a_keyword_giveaway_from_start_to_a_checked_proof(
    start_server: ServerFactory, connect: ClientFactory
) -> None:
    server = await start_server(tick_ms=20)
    assert await put_product(server, "mug-01", "Blue mug", 1500) == 200
    host = await connect(server, HOST)
    viewers = {n: await connect(server, token(n)) for n in ("ana", "bo", "cy", "dee")}
    for c in (host, *viewers.values()):
        await c.join("demo")
    started = await host.request(
        "giveaway.start", room="demo", sku="mug-01", winners=2, duration_s=60,
        entry="keyword", keyword="LuckyMug",
    )  # fmt: skip
    g = started["giveaway"]
    assert (g["prize"], g["sku"], g["count"], g["keyword"], g["status"]) == (
        "Blue mug", "mug-01", 2, "luckymug", "open",
    )  # fmt: skip
    event = await viewers["ana"].next_event(is_type("giveaway.started"))
    assert event["giveaway"]["commitment"] == g["commitment"] and "seq" in event
    assert "Winners are drawn among the entrants still watching" in event["giveaway"]["rule"]

    for name in ("ana", "bo", "cy", "dee"):
        reply = await viewers[name].request("chat", room="demo", text="luckymug please!")
        assert reply["entered"] == {"giveaway_id": g["id"], "entries": reply["entered"]["entries"],
                                    "new": True}  # fmt: skip
    again = await viewers["ana"].request("chat", room="demo", text="LUCKYMUG")
    assert again["entered"]["new"] is False  # one entry per user
    plain = await viewers["bo"].request("chat", room="demo", text="nice mug")
    assert "entered" not in plain
    assert await refused(viewers["ana"], "giveaway.enter", room="demo", giveaway=g["id"]) == (
        "bad_request"  # this one is entered by its keyword
    )
    counted = await viewers["ana"].next_event(
        lambda e: e["type"] == "giveaway.entries" and e["entries"] == 4
    )
    assert counted["giveaway_id"] == g["id"] and "seq" not in counted
    await viewers["dee"].close()  # dee leaves before the draw: not drawn
    await until(lambda: not server.app[SERVICE].hub.here("demo", "dee"), "dee gone from the room")
    await asyncio.sleep(0.1)  # the leave reaches the store

    drawn = (await host.request("giveaway.draw", room="demo", giveaway=g["id"]))["giveaway"]
    assert drawn["status"] == "drawn" and len(drawn["winners"]) == 2
    assert set(drawn["winners"]) <= {"ana", "bo", "cy"}
    seen = {
        n: await _events(
            viewers[n], {"giveaway.drawn"} | ({"order.updated"} if n in drawn["winners"] else set())
        )
        for n in ("ana", "bo", "cy")
    }
    assert (
        seen["cy"]["giveaway.drawn"]["giveaway"] == drawn
        and drawn["proof"] == f"/api/giveaways/{g['id']}/proof"
    )

    status, doc = await _proof(server.port, g["id"])
    assert status == 200
    proof = draws.Proof.from_json(doc)
    assert draws.verify(proof, published_commitment=g["commitment"]) == []
    assert proof.entrants == ["ana", "bo", "cy"] and proof.winners == drawn["winners"]
    assert proof.entrants_digest == drawn["entrants_digest"]

    shop = server.app[SANDBOX]
    assert shop is not None
    for winner in drawn["winners"]:  # each winner is told of their prize: a free order
        order = seen[winner]["order.updated"]["order"]
        assert (order["price"], order["sku"], order["status"], order["source"]) == (
            0, "mug-01", "held", "giveaway",
        )  # fmt: skip
        assert order["payment_url"].startswith("/sandbox/checkout/")
        oid = order["id"]  # the shop gets it through the bridge, to ship
        await until(functools.partial(operator.contains, shop.orders, oid), "the webhook")
        sent = shop.orders[oid]
        assert (sent["source"], sent["unit_price"], sent["buyer_id"]) == ("giveaway", 0, winner)
    svc = server.app[SERVICE]
    assert await refused(host, "giveaway.draw", room="demo", giveaway=g["id"]) == (
        "giveaway_closed"
    )
    log = [loads(e) for e in await svc.backends.moderation.actions("demo", 50)]
    actions = [e["action"] for e in log]
    assert "giveaway.start" in actions and "giveaway.draw" in actions


async def test_the_time_up_draws_and_the_snapshot_shows_the_giveaway(
    start_server: ServerFactory, connect: ClientFactory
) -> None:
    server = await start_server(tick_ms=20)
    host = await connect(server, HOST)
    ana = await connect(server, token("ana"))
    await host.join("demo")
    g = (
        await host.request(
            "giveaway.start", room="demo", prize="A signed poster", duration_s=30, entry="button"
        )
    )["giveaway"]
    snap = await ana.join("demo")
    assert snap["giveaway"]["id"] == g["id"] and snap["my_entry"] is False
    got = await ana.request("giveaway.enter", room="demo", giveaway=g["id"])
    assert got == {"giveaway_id": g["id"], "entries": 1, "new": True}
    snap = await (await connect(server, token("ana"))).join("demo")
    assert snap["my_entry"] is True
    svc = server.app[SERVICE]
    later = lambda: time.time() + 31  # noqa: E731 - the giveaway's time is up
    svc.hub._clock = later
    await asyncio.sleep(0.3)  # presence reported at that time (Redis: who is watching)
    svc._clock = later
    seen = await _events(ana, {"giveaway.drawn", "order.updated"})  # the sweeper drew
    assert seen["giveaway.drawn"]["giveaway"]["winners"] == ["ana"]
    update = seen["order.updated"]
    assert update["order"]["sku"] == g["id"] and update["order"]["price"] == 0  # a text prize
    after = await (await connect(server, token("bo"))).join("demo")
    assert after["giveaway"] is None


async def test_who_may_do_what_and_bad_input(
    start_server: ServerFactory, connect: ClientFactory
) -> None:
    server = await start_server(limits={"commerce_burst": 100})
    host = await connect(server, HOST)
    viewer = await connect(server, token("v1"))
    guest = await connect(server)
    await host.join("demo")
    await viewer.join("demo")
    base = {"prize": "Mug", "duration_s": 60, "entry": "button"}
    for who in (viewer, guest):
        assert await refused(who, "giveaway.start", room="demo", **base) in (
            "forbidden", "unauthorized",
        )  # fmt: skip
    for fields in (
        {"duration_s": 29},
        {"duration_s": 901},
        {"winners": 0},
        {"entry": "shout"},
        {"entry": "keyword"},
        {"keyword": "two words", "entry": "keyword"},
        {"watch_minutes": 1},
        {"prize": ""},
        {"verified_only": "yes"},
    ):
        assert await refused(host, "giveaway.start", room="demo", **{**base, **fields}) == (
            "bad_request"
        ), fields
    assert await refused(host, "giveaway.start", room="demo", **{**base, "sku": "nope"}) == (
        "not_found"
    )
    g = (await host.request("giveaway.start", room="demo", **base))["giveaway"]
    assert await refused(host, "giveaway.start", room="demo", **base) == "conflict"
    assert await refused(host, "giveaway.enter", room="demo", giveaway=g["id"]) == "forbidden"
    assert await refused(guest, "giveaway.enter", room="demo", giveaway=g["id"]) == ("unauthorized")
    assert await refused(viewer, "giveaway.draw", room="demo", giveaway=g["id"]) == "forbidden"
    assert await refused(viewer, "giveaway.enter", room="demo", giveaway="demo.gnope") == (
        "not_found"
    )
    assert await refused(viewer, "giveaway.enter", room="demo", giveaway="x" * 81) == (
        "bad_request"
    )
    muted = await connect(server, token("m1"))
    await muted.join("demo")
    await host.request("mod.mute", room="demo", user="m1", seconds=60)
    assert await refused(muted, "giveaway.enter", room="demo", giveaway=g["id"]) == "muted"
    await host.request("mod.ban", room="demo", user="v1")
    assert await refused(viewer, "giveaway.enter", room="demo", giveaway=g["id"]) == "banned"
    await host.request("giveaway.cancel", room="demo", giveaway=g["id"])
    late = await connect(server, token("v2"))
    await late.join("demo")
    assert await refused(late, "giveaway.enter", room="demo", giveaway=g["id"]) == (
        "giveaway_closed"
    )
    assert await refused(host, "giveaway.cancel", room="demo", giveaway=g["id"]) == (
        "giveaway_closed"
    )
    status, _ = await _proof(server.port, g["id"])
    assert status == 404  # never drawn
    assert (await _proof(server.port, "no-such-room.gx"))[0] == 404


async def test_conditions_verified_only_and_watch_time(
    start_server: ServerFactory, connect: ClientFactory
) -> None:
    server = await start_server()
    host = await connect(server, HOST)
    plain = await connect(server, token("p1"))
    vip = await connect(server, token("v1", extra={"verified": True}))
    for c in (plain, vip):
        await c.join("demo")
    g = (
        await host.request(
            "giveaway.start", room="demo", prize="Mug", duration_s=60, entry="button",
            verified_only=True,
        )
    )["giveaway"]  # fmt: skip
    assert await refused(plain, "giveaway.enter", room="demo", giveaway=g["id"]) == ("not_eligible")
    assert (await vip.request("giveaway.enter", room="demo", giveaway=g["id"]))["new"]
    await host.request("giveaway.cancel", room="demo", giveaway=g["id"])
    timed = (
        await host.request(
            "giveaway.start", room="demo", prize="Mug", duration_s=180, entry="button",
            watch_minutes=2,
        )
    )["giveaway"]  # fmt: skip
    assert await refused(vip, "giveaway.enter", room="demo", giveaway=timed["id"]) == (
        "not_eligible"
    )


async def test_one_entry_per_user_across_processes_and_a_kill_loses_none(
    redis_url: str, spawn: Callable[..., ServerProcess]
) -> None:
    """Two processes on one Redis. 300 viewers, each with a connection on both
    processes, enter 3 times through each: 300 entries. Then 200 more enter through
    both while one process is killed: every entry answered ok is kept, none twice. The
    survivor's draw holds exactly the entrants still watching on it."""
    args = ("--redis-url", redis_url, "--secret", SECRET, "--demo", "--tick-ms", "20")
    p1, p2 = spawn(*args), spawn(*args)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def viewer(p: ServerProcess, name: str) -> aiohttp.ClientWebSocketResponse:
            ws = await session.ws_connect(f"{p.url}/ws")
            await ws.send_str(dumps({"op": "connect", "id": 1, "token": token(name)}).decode())
            await ws.send_str('{"op":"join","id":2,"room":"demo"}')
            return ws

        hws = await session.ws_connect(f"{p2.url}/ws")
        await hws.send_str(dumps({"op": "connect", "id": 1, "token": HOST}).decode())
        start = {"op": "giveaway.start", "id": 3, "room": "demo", "prize": "Mug",
                 "duration_s": 600, "entry": "button", "winners": 5}  # fmt: skip
        await hws.send_str(dumps(start).decode())
        gid = ""
        while not gid:
            for line in split_frame(await hws.receive_str(timeout=5)):
                if line.get("id") == 3:
                    gid = line["data"]["giveaway"]["id"]

        async def enter(ws: aiohttp.ClientWebSocketResponse, tries: int) -> list[bool]:
            for j in range(tries):
                cmd = {"op": "giveaway.enter", "id": 10 + j, "room": "demo", "giveaway": gid}
                with contextlib.suppress(ConnectionError, aiohttp.ClientError):
                    await ws.send_str(dumps(cmd).decode())
            oks: list[bool] = []
            while len(oks) < tries:
                try:
                    frame = await ws.receive_str(timeout=10)
                except (TypeError, TimeoutError, aiohttp.ClientError, ConnectionError):
                    return oks  # this viewer's server was killed
                for line in split_frame(frame):
                    if line.get("id", 0) >= 10 and "type" not in line:
                        oks.append(bool(line["ok"]))
            return oks

        names = [f"k{i}" for i in range(300)]
        pairs = [(await viewer(p1, n), await viewer(p2, n)) for n in names]
        await asyncio.gather(*(enter(ws, 3) for pair in pairs for ws in pair))
        r = aioredis.Redis.from_url(redis_url, decode_responses=True)
        key = f"lc:{{demo}}:gaw:{gid}"
        assert int(await r.hget(key, "entries") or 0) == 300
        assert await r.scard(f"lc:{{demo}}:gent:{gid}") == 300

        more = [f"late{i}" for i in range(200)]
        late = [(await viewer(p1, n), await viewer(p2, n)) for n in more]
        burst = asyncio.gather(*(enter(ws, 2) for pair in late for ws in pair))
        await asyncio.sleep(0.02)
        p1.proc.send_signal(signal.SIGKILL)
        p1.proc.wait(10)
        answers = await asyncio.wait_for(burst, 30)
        sent_by = [n for n in more for _ in (0, 1)]  # the order of the sockets entering
        ok_users = {n for n, oks in zip(sent_by, answers, strict=True) if any(oks)}
        members = set(await r.smembers(f"lc:{{demo}}:gent:{gid}"))
        assert ok_users <= members  # nothing answered ok is lost
        assert int(await r.hget(key, "entries") or 0) == len(members)  # none counted twice

        # every entrant also watches on the survivor: all are drawn among, at once
        await hws.send_str(dumps({"op": "giveaway.draw", "id": 4, "room": "demo",
                                  "giveaway": gid}).decode())  # fmt: skip
        drawn: dict[str, Any] = {}
        while not drawn:
            for line in split_frame(await hws.receive_str(timeout=10)):
                if line.get("id") == 4:
                    assert line["ok"], line
                    drawn = line["data"]["giveaway"]
        proof = draws.Proof.from_json(loads(await r.get(f"lc:{{demo}}:gproof:{gid}") or "{}"))
        assert draws.verify(proof) == [] and len(proof.winners) == 5
        # every entrant still has their connection on the survivor: all are drawn among
        assert set(proof.entrants) == members
        await r.aclose()
        for pair in [*pairs, *late]:
            for ws in pair:
                await ws.close()
        await hws.close()
