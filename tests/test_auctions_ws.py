"""Live auctions over the wire, on both engines (issue 14): a lot, plain and proxy
bids, the coalesced clock and price, an anti-sniping extension, the hammer and the
winner's hold, the public bid log, and bursts over two processes (one killed)."""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from livecommerce.client import ClientError
from livecommerce.http.keys import SERVICE
from livecommerce.http.orders import SANDBOX
from livecommerce.promotions.auctions import Auction, Bid, replay
from livecommerce.protocol import dumps, loads, split_frame
from tests.conftest import HOST, SECRET, ClientFactory, ServerFactory, ServerProcess, token
from tests.test_commerce_ws import is_type, put_product
from tests.test_coupons_ws import refused
from tests.test_giveaways_ws import _events

LOT = {"sku": "mug-01", "start_bid": 1000, "duration_s": 30}


async def _bid_log(port: int, aid: str) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as s,
        s.get(f"http://127.0.0.1:{port}/api/auctions/{aid}/bids") as resp,
    ):
        return resp.status, await resp.json()


async def test_a_lot_from_the_first_bid_to_the_hammer(
    start_server: ServerFactory, connect: ClientFactory
) -> None:
    server = await start_server(tick_ms=20)
    assert await put_product(server, "mug-01", "Blue mug", 1800) == 200
    host = await connect(server, HOST)
    ana = await connect(server, token("ana", name="Ana"))
    bo = await connect(server, token("bo", name="Bo"))
    for c in (host, ana, bo):
        await c.join("demo")
    a = (await host.request("auction.start", room="demo", **LOT))["auction"]
    assert (a["price"], a["min_bid"], a["leader"], a["extend_s"], a["status"]) == (
        0, 1000, None, 10, "open",
    )  # fmt: skip
    started = await bo.next_event(is_type("auction.started"))
    assert started["auction"]["id"] == a["id"] and "seq" in started
    snap = await (await connect(server, token("cy"))).join("demo")
    assert snap["auction"]["id"] == a["id"]

    assert await refused(host, "bid", room="demo", auction=a["id"], amount=5000) == "forbidden"
    with pytest.raises(ClientError) as low:
        await ana.request("bid", room="demo", auction=a["id"], amount=999)
    assert low.value.code == "bid_too_low" and low.value.data is not None
    assert (low.value.data["price"], low.value.data["min_bid"]) == (0, 1000)
    first = await ana.request("bid", room="demo", auction=a["id"], amount=1000, max=5000)
    assert first["leading"] and first["auction"]["price"] == 1000
    second = await bo.request("bid", room="demo", auction=a["id"], amount=2000)
    assert not second["leading"] and second["auction"]["price"] == 2100  # ana's proxy
    latest = await bo.next_event(lambda e: e["type"] == "auction.bid" and e["bids"] == 2)
    assert (latest["price"], latest["leader"], latest["min_bid"]) == (
        2100, {"id": "ana", "name": "Ana"}, 2200,
    )  # fmt: skip
    assert "seq" not in latest

    svc = server.app[SERVICE]
    svc._clock = lambda: time.time() + 25  # in the last 10 seconds: the clock goes back
    late = await bo.request("bid", room="demo", auction=a["id"], amount=6000)
    assert late["leading"] and late["auction"]["price"] == 6000
    assert late["auction"]["extensions"] == 1
    extended = await ana.next_event(is_type("auction.extended"))
    assert extended["auction_id"] == a["id"] and extended["ends_at"] > a["ends_at"]

    svc._clock = lambda: time.time() + 40  # past the extended clock: the hammer
    seen = await _events(bo, {"auction.ended", "order.updated"})
    ended = seen["auction.ended"]["auction"]
    assert (ended["status"], ended["price"], ended["leader"]["id"]) == ("ended", 6000, "bo")
    order = seen["order.updated"]["order"]
    assert (order["price"], order["source"], order["sale"], order["status"]) == (
        6000, "auction", a["id"], "held",
    )  # fmt: skip
    shop = server.app[SANDBOX]
    assert shop is not None
    status, doc = await _bid_log(server.port, a["id"])
    assert status == 200 and doc["auction"]["status"] == "ended"
    assert [(b["user"], b["amount"], b["max"], b["price"]) for b in doc["bids"]] == [
        ("ana", 1000, 5000, 1000),
        ("bo", 2000, 2000, 2100),
        ("bo", 6000, 6000, 6000),
    ]
    assert await refused(ana, "bid", room="demo", auction=a["id"], amount=9000) == (
        "auction_closed"
    )


async def test_the_log_hides_maxima_while_open_and_bad_input(
    start_server: ServerFactory, connect: ClientFactory
) -> None:
    server = await start_server(limits={"commerce_burst": 100})
    await put_product(server, "mug-01", "Blue mug", 1800)
    host = await connect(server, HOST)
    viewer = await connect(server, token("v1"))
    guest = await connect(server)
    await viewer.join("demo")
    assert await refused(viewer, "auction.start", room="demo", **LOT) == "forbidden"
    for fields, code in (
        ({"duration_s": 9}, "bad_request"),
        ({"duration_s": 301}, "bad_request"),
        ({"start_bid": 0}, "bad_request"),
        ({"extend_s": 61}, "bad_request"),
        ({"increments": [[5, 10]]}, "bad_request"),
        ({"increments": "steep"}, "bad_request"),
        ({"sku": "nope"}, "not_found"),
    ):
        assert await refused(host, "auction.start", room="demo", **{**LOT, **fields}) == code
    a = (await host.request("auction.start", room="demo", **{**LOT, "extend_s": 0}))["auction"]
    assert await refused(host, "auction.start", room="demo", **LOT) == "conflict"
    assert await refused(guest, "bid", room="demo", auction=a["id"], amount=1000) == (
        "unauthorized"
    )
    assert await refused(viewer, "bid", room="demo", auction="demo.anope", amount=1000) == (
        "not_found"
    )
    assert await refused(viewer, "bid", room="demo", auction=a["id"], amount=0) == "bad_request"
    await viewer.request("bid", room="demo", auction=a["id"], amount=1000, max=4000)
    status, doc = await _bid_log(server.port, a["id"])
    assert status == 200 and doc["bids"][0]["max"] is None  # hidden while the lot is open
    assert (await _bid_log(server.port, "nope.a1"))[0] == 404
    muted = await connect(server, token("m1"))
    await muted.join("demo")
    await host.request("mod.mute", room="demo", user="m1", seconds=60)
    assert await refused(muted, "bid", room="demo", auction=a["id"], amount=5000) == "muted"
    await host.request("mod.ban", room="demo", user="v1")
    assert await refused(viewer, "bid", room="demo", auction=a["id"], amount=5000) == "banned"


async def _burst(
    redis_url: str,
    spawn: Callable[..., ServerProcess],
    *,
    bidders: int,
    per_bidder: int,
    seconds: float,
    kill_after_s: float | None,
) -> tuple[Counter[tuple[str, int]], dict[str, Any], int]:
    """Two processes; ``bidders`` bid ``per_bidder`` times each over ``seconds``, half on
    each process; one process is killed after ``kill_after_s``. Returns the bids
    answered ok (by user and amount), the lot's bid log as Redis keeps it (maxima
    included) and how many bids were sent."""
    args = ("--redis-url", redis_url, "--secret", SECRET, "--demo", "--tick-ms", "50")
    p1, p2 = spawn(*args), spawn(*args)
    rng = random.Random(2000)
    ok: Counter[tuple[str, int]] = Counter()
    sent = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        async with session.put(
            f"{p2.url}/api/rooms/demo/products/mug-01",
            json={"title": "Blue mug", "price": 1800},
            headers={"Authorization": f"Bearer {HOST}"},
        ) as put:
            assert put.status == 200
        hws = await session.ws_connect(f"{p2.url}/ws")
        await hws.send_str(dumps({"op": "connect", "id": 1, "token": HOST}).decode())
        start = {"op": "auction.start", "id": 2, "room": "demo", "sku": "mug-01",
                 "start_bid": 100, "duration_s": 300}  # fmt: skip
        await hws.send_str(dumps(start).decode())
        aid = ""
        while not aid:
            for line in split_frame(await hws.receive_str(timeout=5)):
                if line.get("id") == 2:
                    aid = line["data"]["auction"]["id"]

        async def bidder(i: int) -> None:
            nonlocal sent
            name = f"b{i}"
            p = p1 if i % 2 else p2
            try:
                ws = await session.ws_connect(f"{p.url}/ws", heartbeat=None)
            except aiohttp.ClientError:
                return  # its process was killed before it connected
            least = 100  # the lot's min_bid as this bidder last heard it
            with contextlib.suppress(ConnectionError, aiohttp.ClientError, TimeoutError, TypeError):
                await ws.send_str(dumps({"op": "connect", "id": 1, "token": token(name)}).decode())
                await ws.send_str('{"op":"join","id":2,"room":"demo"}')  # auction.bid events
                await asyncio.sleep(rng.random() * seconds / per_bidder)
                for j in range(per_bidder):
                    amount = least + rng.randrange(0, 3) * 100
                    cmd: dict[str, Any] = {"op": "bid", "id": 10 + j, "room": "demo",
                                           "auction": aid, "amount": amount}  # fmt: skip
                    if rng.random() < 0.3:
                        cmd["max"] = amount + rng.randrange(1, 10) * 100
                    await ws.send_str(dumps(cmd).decode())
                    sent += 1
                    answer: dict[str, Any] | None = None
                    while answer is None:
                        for line in split_frame(await ws.receive_str(timeout=15)):
                            if line.get("id") == 10 + j:
                                answer = line
                            elif line.get("type") == "auction.bid":
                                least = max(least, line["min_bid"])
                    if answer["ok"]:
                        ok[(name, amount)] += 1
                        least = max(least, answer["data"]["auction"]["min_bid"])
                    elif answer["error"]["code"] == "bid_too_low":
                        least = max(least, answer["error"]["min_bid"])
                    await asyncio.sleep(seconds / per_bidder)
            await ws.close()

        burst = asyncio.gather(*(bidder(i) for i in range(bidders)))
        if kill_after_s is not None:
            await asyncio.sleep(kill_after_s)
            p1.proc.send_signal(signal.SIGKILL)
            p1.proc.wait(10)
        await asyncio.wait_for(burst, seconds * 6 + 60)
        await hws.close()
    r = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        raw = await r.lrange(f"lc:{{demo}}:abids:{aid}", 0, -1)
        lot = await r.hgetall(f"lc:{{demo}}:auc:{aid}")
    finally:
        await r.aclose()
    return ok, {"log": [loads(x) for x in raw], "lot": lot, "aid": aid}, sent


def _check(ok: Counter[tuple[str, int]], got: dict[str, Any]) -> None:
    """The final price and leader equal a serial replay of the log, and every bid
    answered ok is in the log (none lost), none twice."""
    lot = Auction.from_record(got["lot"])
    log = [Bid(**{k: e[k] for k in Bid.__dataclass_fields__}) for e in got["log"]]
    assert [b.seq for b in log] == list(range(1, len(log) + 1)) and len(log) == lot.bids
    assert replay(lot, log) == (lot.price, lot.leader)
    logged = Counter((b.user, b.amount) for b in log)
    assert all(logged[k] >= n for k, n in ok.items())  # nothing answered ok is lost


async def test_2000_bidders_20000_bids_in_10_s_over_two_processes(
    redis_url: str, spawn: Callable[..., ServerProcess]
) -> None:
    ok, got, sent = await _burst(
        redis_url, spawn, bidders=2000, per_bidder=10, seconds=10, kill_after_s=None
    )
    # Bidders who heard the price a tick ago mostly bid too low: accepted bids are the
    # price's steps (a few dozen); every refusal changed nothing (the log is the count).
    assert sent == 20_000 and sum(ok.values()) >= 10
    _check(ok, got)


async def test_a_process_killed_in_a_bid_burst_loses_no_accepted_bid(
    redis_url: str, spawn: Callable[..., ServerProcess]
) -> None:
    ok, got, _ = await _burst(
        redis_url, spawn, bidders=300, per_bidder=8, seconds=4, kill_after_s=1.5
    )
    assert sum(ok.values()) > 0
    _check(ok, got)
