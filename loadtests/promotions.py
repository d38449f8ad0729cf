"""Bursts at the live room's promotions, each against a server of its own
(``--backend redis --workers 2`` by default: two processes on one Redis):

- ``python -m loadtests coupon-claims``: ``--users`` viewers (spread over ``--procs``
  generator processes) each send ``--claims`` claims at a coupon of ``--quantity``, all
  at once or spread evenly at ``--rate`` a second. Checks: exactly ``quantity``
  granted, none twice for one user.
- ``python -m loadtests bids``: ``--users`` bidders each bid ``--bids`` times on one lot,
  one bid in flight each, as fast as answered or spread at ``--rate`` a second (the
  next names the least amount the last answer or
  ``auction.bid`` gave, plus 0-2 increments; a third are proxy bids). Checks: the final
  price and leader equal a serial replay of the bid log.
- ``python -m loadtests group-fill``: ``--groups`` groups of ``--size`` members (over the
  two processes) fill one after the other; the time from sending each last slot's join
  to each member's ``order.updated``. Checks: every member of every group has one order.

Each prints its figures as JSON: operations a second (over the span from the first sent
to the last answer) and latency (p50, p99, max). The generator is aiohttp's client,
about 60 µs of its CPU per command sent and answered, so with 2 generator processes on
this 2-core machine the figure is a floor for the server, not its ceiling
(``docs/benchmarks.md`` says how each row was run).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import random
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from typing import Any

import aiohttp
import redis.asyncio as aioredis

from livecommerce.promotions.auctions import Auction, Bid, replay
from livecommerce.protocol import dumps, loads
from loadtests import server as servers
from loadtests._common import WS, open_socket, raise_fd_limit, request

Result = tuple[str, str, float]
"""(user, outcome code, seconds from sending to the answer)."""


async def _answers(
    ws: WS, wanted: set[int], on_event: Callable[[dict[str, Any]], None]
) -> dict[int, tuple[dict[str, Any], float]]:
    """Read until every id of ``wanted`` is answered: each answer and when it came;
    events go to ``on_event``."""
    got: dict[int, tuple[dict[str, Any], float]] = {}
    while wanted - got.keys():
        msg = await ws.receive()
        if msg.type is not aiohttp.WSMsgType.TEXT:
            break
        now = time.monotonic()
        for line in msg.data.split(b"\n"):
            obj = loads(line) if line else {}
            if obj.get("id") in wanted and "ok" in obj:
                got[obj["id"]] = (obj, now)
            elif "type" in obj:
                on_event(obj)
    return got


def _code(answer: dict[str, Any]) -> str:
    return "ok" if answer["ok"] else answer["error"]["code"]


async def _claims(ws: WS, user: str, coupon: str, send_at: list[float]) -> list[Result]:
    """A claim at each time of ``send_at`` (monotonic; all at once if they are alike),
    their answers read as they come."""
    sent: dict[int, float] = {}

    async def send() -> None:
        for j, at in enumerate(send_at):
            if (wait := at - time.monotonic()) > 0:
                await asyncio.sleep(wait)
            frame = dumps({"op": "coupon.claim", "id": 10 + j, "room": "demo", "coupon": coupon})
            sent[10 + j] = time.monotonic()
            await ws.send_str(frame.decode())

    wanted = set(range(10, 10 + len(send_at)))
    _, answers = await asyncio.gather(send(), _answers(ws, wanted, lambda _: None))
    return [(user, _code(a), at - sent[i]) for i, (a, at) in answers.items()]


async def _bids(ws: WS, user: str, lot: str, send_at: list[float], seed: int) -> list[Result]:
    """A bid at each time of ``send_at`` (or as soon after as the last one's answer),
    one after the other, each at the least amount last heard of."""
    rng = random.Random(seed)
    least = [0]

    def heard(event: dict[str, Any]) -> None:
        if event.get("type") == "auction.bid":
            least[0] = max(least[0], event["min_bid"])

    out: list[Result] = []
    for j, at in enumerate(send_at):
        if (wait := at - time.monotonic()) > 0:
            await asyncio.sleep(wait)
        amount = max(least[0], 100) + rng.randrange(0, 3) * 100
        cmd: dict[str, Any] = {"op": "bid", "id": 10 + j, "room": "demo", "auction": lot,
                               "amount": amount}  # fmt: skip
        if rng.random() < 0.3:
            cmd["max"] = amount + rng.randrange(1, 10) * 100
        began = time.monotonic()
        await ws.send_str(dumps(cmd).decode())
        got = (await _answers(ws, {10 + j}, heard)).get(10 + j)
        if got is None:
            break
        answer, at = got
        out.append((user, _code(answer), at - began))
        if answer["ok"]:
            least[0] = max(least[0], answer["data"]["auction"]["min_bid"])
        elif answer["error"]["code"] == "bid_too_low":
            least[0] = max(least[0], answer["error"]["min_bid"])
    return out


async def _viewer_burst(
    ws_url: str, tokens: list[str], op: str, target: str, n: int, rate: float, pipe: Connection
) -> list[Result]:
    """One generator process: connect and join, say ready, wait for "go", then each
    viewer sends its ``n`` commands of ``op`` at ``target`` (claims: all at once, or
    spread evenly at ``rate`` a second over this process's viewers)."""
    connector = aiohttp.TCPConnector(limit=0)  # every viewer's socket at once
    async with aiohttp.ClientSession(connector=connector) as s:
        sockets = []
        for i in range(0, len(tokens), 100):
            batch = await asyncio.gather(*(open_socket(s, ws_url) for _ in tokens[i : i + 100]))
            sockets += batch
        users = []
        for ws, tok in zip(sockets, tokens, strict=True):
            hello = await request(ws, 1, "connect", token=tok)
            await request(ws, 2, "join", room="demo")
            users.append(hello["user"]["id"])
        pipe.send(("ready",))
        await asyncio.to_thread(pipe.recv)  # "go"
        t0, k = time.monotonic(), len(sockets)
        at = [[t0 + (j * k + i) / rate if rate else t0 for j in range(n)] for i in range(k)]
        work = [
            _claims(ws, u, target, at[i])
            if op == "coupon.claim"
            else _bids(ws, u, target, at[i], i)
            for i, (ws, u) in enumerate(zip(sockets, users, strict=True))
        ]
        results = [r for rs in await asyncio.gather(*work) for r in rs]
        for ws in sockets:
            await ws.close()
        return results


def _generator(
    ws_url: str, tokens: list[str], op: str, target: str, n: int, rate: float, pipe: Connection
) -> None:
    raise_fd_limit(len(tokens) + 100)
    results = asyncio.run(_viewer_burst(ws_url, tokens, op, target, n, rate, pipe))
    pipe.send(("results", results))


async def _burst(
    ws_url: str, tokens: list[str], op: str, target: str, n: int, procs: int, rate: float = 0
) -> tuple[list[Result], float]:
    """Spread the viewers over ``procs`` generator processes; start them together
    (``rate``: commands offered a second in all; 0: as fast as they go). Returns every
    answer and the span from "go" to the last answer (seconds)."""
    ctx = multiprocessing.get_context("spawn")
    pipes, workers = [], []
    share = -(-len(tokens) // procs)
    for i in range(procs):
        ours, theirs = ctx.Pipe()
        part = tokens[i * share : (i + 1) * share]
        args = (ws_url, part, op, target, n, rate / procs, theirs)
        p = ctx.Process(target=_generator, args=args)
        p.start()
        pipes.append(ours)
        workers.append(p)
    for pipe in pipes:
        await asyncio.to_thread(pipe.recv)  # ready
    began = time.monotonic()
    for pipe in pipes:
        pipe.send(("go",))
    results: list[Result] = []
    for pipe in pipes:
        results += (await asyncio.to_thread(pipe.recv))[1]
    span = time.monotonic() - began
    for p in workers:
        p.join(30)
    return results, span


def _latency(seconds: list[float]) -> dict[str, float]:
    lat = sorted(seconds)
    return {
        "p50_ms": round(statistics.median(lat) * 1000, 1),
        "p99_ms": round(lat[max(0, int(len(lat) * 0.99) - 1)] * 1000, 1),
        "max_ms": round(lat[-1] * 1000, 1),
    }


async def coupon_claims(
    opts: argparse.Namespace, server: servers.Server, host: str
) -> dict[str, Any]:
    tokens = await servers.tokens(server, [f"claimer{i}" for i in range(opts.users)], PROG)
    ws_url = f"ws://127.0.0.1:{server.port}/ws"
    async with aiohttp.ClientSession() as s:
        hws = await open_socket(s, ws_url)
        await request(hws, 1, "connect", token=host)
        dropped = await request(
            hws, 2, "coupon.drop", room="demo", kind="amount", value=300,
            quantity=opts.quantity, minutes=30,
        )  # fmt: skip
        coupon = dropped["coupon"]["id"]
        results, span = await _burst(
            ws_url, tokens, "coupon.claim", coupon, opts.claims, opts.procs, opts.rate
        )
        left = await request(hws, 3, "join", room="demo")
        await hws.close()
    granted = Counter(user for user, code, _ in results if code == "ok")
    remaining = next((c["remaining"] for c in left["snapshot"]["coupons"] if c["id"] == coupon), 0)
    return {
        "claims": len(results),
        "quantity": opts.quantity,
        "span_s": round(span, 3),
        "claims_per_s": round(len(results) / span),
        **_latency([t for _, _, t in results]),
        "outcomes": dict(Counter(code for _, code, _ in results)),
        "granted": sum(granted.values()),
        "doubled": sum(1 for n in granted.values() if n > 1),
        "remaining": remaining,
        "ok": sum(granted.values()) == opts.quantity and not any(n > 1 for n in granted.values()),
    }


async def bids(opts: argparse.Namespace, server: servers.Server, host: str) -> dict[str, Any]:
    tokens = await servers.tokens(server, [f"bidder{i}" for i in range(opts.users)], PROG)
    ws_url = f"ws://127.0.0.1:{server.port}/ws"
    async with aiohttp.ClientSession() as s:
        hws = await open_socket(s, ws_url)
        await request(hws, 1, "connect", token=host)
        lot = await request(
            hws, 2, "auction.start", room="demo", sku="mug-01", start_bid=100, duration_s=300
        )
        aid = lot["auction"]["id"]
        results, span = await _burst(ws_url, tokens, "bid", aid, opts.bids, opts.procs, opts.rate)
        async with s.get(f"http://127.0.0.1:{server.port}/api/auctions/{aid}/bids") as resp:
            doc = await resp.json()
        await hws.close()
    final = doc["auction"]
    replayed: tuple[int, str] | None = None
    if server.redis_url:  # the proxy maxima, hidden while the lot is open, from the store
        r = aioredis.Redis.from_url(server.redis_url, decode_responses=True)
        try:
            record = await r.hgetall(f"lc:{{demo}}:auc:{aid}")
            log = [Bid(**loads(e)) for e in await r.lrange(f"lc:{{demo}}:abids:{aid}", 0, -1)]
        finally:
            await r.aclose()
        replayed = replay(Auction.from_record(dict(record)), log)  # type: ignore[arg-type]
    leader = final["leader"]["id"] if final["leader"] else ""
    return {
        "bids": len(results),
        "span_s": round(span, 3),
        "bids_per_s": round(len(results) / span),
        **_latency([t for _, _, t in results]),
        "outcomes": dict(Counter(code for _, code, _ in results)),
        "logged": len(doc["bids"]),
        "price": final["price"],
        "replayed": replayed is not None,
        "ok": len(doc["bids"]) == final["bids"]
        and (replayed is None or replayed == (final["price"], leader)),
    }


async def group_fill(opts: argparse.Namespace, server: servers.Server, host: str) -> dict[str, Any]:
    """Groups fill one after the other; each member's order event is timed from the
    sending of the last slot's join."""
    names = [f"member{i}" for i in range(opts.size)]
    tokens = await servers.tokens(server, names, PROG)
    ws_url = f"ws://127.0.0.1:{server.port}/ws"  # the workers share it: members spread
    delays: list[float] = []
    orders = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
        hws = await open_socket(s, ws_url)
        await request(hws, 1, "connect", token=host)
        deal = await request(
            hws, 2, "deal.start", room="demo", sku="mug-01", price=1000, size=opts.size,
            window_minutes=30, stock=opts.size * opts.groups,
        )  # fmt: skip
        members = []
        for tok in tokens:
            ws = await open_socket(s, ws_url)
            await request(ws, 1, "connect", token=tok)
            await request(ws, 2, "join", room="demo")
            members.append(ws)
        for g in range(opts.groups):
            await asyncio.sleep(0.25)  # each member joins one group at a time: under its rate
            base = 10 + g * 10
            opened = await request(
                members[0], base, "group.open", room="demo", deal=deal["deal"]["id"]
            )
            gid = opened["group"]["id"]
            for ws in members[1:-1]:
                await request(ws, base + 1, "group.join", room="demo", group=gid)
            heard: dict[int, float] = {}
            waiting = [
                asyncio.create_task(_order_event(ws, gid.encode(), heard, i))
                for i, ws in enumerate(members)
            ]
            sent = time.monotonic()
            await members[-1].send_str(
                dumps({"op": "group.join", "id": base + 2, "room": "demo", "group": gid}).decode()
            )
            await asyncio.wait_for(asyncio.gather(*waiting), 30)
            delays += [t - sent for t in heard.values()]
            orders += len(heard)
        for ws in [*members, hws]:
            await ws.close()
    per_group = [max(delays[i : i + opts.size]) for i in range(0, len(delays), opts.size)]
    return {
        "groups": opts.groups,
        "size": opts.size,
        "orders": orders,
        **_latency(delays),
        "all_members_p50_ms": round(statistics.median(per_group) * 1000, 1),
        "all_members_max_ms": round(max(per_group) * 1000, 1),
        "ok": orders == opts.groups * opts.size,
    }


async def _order_event(ws: WS, gid: bytes, heard: dict[int, float], i: int) -> None:
    """Note when member ``i`` hears of their order from the group ``gid``."""
    while i not in heard:
        msg = await ws.receive()
        for line in msg.data.split(b"\n"):
            if line and b'"order.updated"' in line and gid in line:
                heard[i] = time.monotonic()


SCENARIOS: dict[str, Callable[[argparse.Namespace, servers.Server, str], Any]] = {
    "coupon-claims": coupon_claims,
    "bids": bids,
    "group-fill": group_fill,
}
PROG = "python -m loadtests"


async def _run(name: str, opts: argparse.Namespace) -> dict[str, Any]:
    server = servers.start(backend=opts.backend, workers=opts.workers)
    try:
        host = await servers.host_token(server, PROG)
        fig = await SCENARIOS[name](opts, server, host)
    finally:
        server.stop()
    return {"scenario": name, "backend": opts.backend, "workers": opts.workers,
            "users": getattr(opts, "users", None), **fig}  # fmt: skip


def main(name: str, argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(prog=f"{PROG} {name}", description=__doc__.split("\n\n")[0])
    p.add_argument("--backend", choices=["redis", "memory"], default="redis")
    p.add_argument("--workers", type=int, default=2, help="server processes (2)")
    p.add_argument("--procs", type=int, default=2, help="generator processes (2)")
    if name == "coupon-claims":
        p.add_argument("--users", type=int, default=2000, help="viewers (2000)")
        p.add_argument("--claims", type=int, default=2, help="claims each viewer sends (2)")
        p.add_argument("--quantity", type=int, default=100, help="coupons (100)")
        p.add_argument(
            "--rate", type=float, default=0, help="claims offered a second (0: all at once)"
        )
    elif name == "bids":
        p.add_argument("--users", type=int, default=2000, help="bidders (2000)")
        p.add_argument("--bids", type=int, default=10, help="bids each bidder sends (10)")
        p.add_argument(
            "--rate", type=float, default=0, help="bids offered a second (0: each at once)"
        )
    else:
        p.add_argument("--groups", type=int, default=20, help="groups filled (20)")
        p.add_argument("--size", type=int, default=50, help="members of each (50)")
    p.add_argument("--json", metavar="PATH", help="also write the figures as JSON to PATH")
    opts = p.parse_args(argv)
    if opts.backend == "memory":
        opts.workers = 1
    fig = asyncio.run(_run(name, opts))
    print(json.dumps(fig, indent=1))
    if opts.json:
        with open(opts.json, "w") as f:
            json.dump(fig, f, indent=1)
    if not fig["ok"]:
        print(f"{PROG} {name}: the invariant failed", file=sys.stderr)
        return 1
    return 0
