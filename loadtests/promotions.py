"""``python -m loadtests coupon-claims``: a burst of coupon claims at one live coupon.

Starts its own server (``--backend redis --workers 2`` by default: claims over two
processes on one Redis), connects ``--users`` viewers (aiohttp clients spread over
``--procs`` generator processes), has the host drop a coupon of ``--quantity`` (one
per viewer), and sends every viewer's ``--claims`` claims at once. Prints claims a
second (over the span from the first claim sent to the last reply), the latency of a
claim (p50, p99, max), the outcomes, and checks the invariant: exactly ``quantity``
claims granted, none twice for one user.

The generator is aiohttp's client: about 60 µs of its CPU per claim sent and answered,
so with 2 generator processes on this 2-core machine the figure is a floor for the
server, not its ceiling (``docs/benchmarks.md`` says how it was run).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import statistics
import sys
import time
from collections import Counter
from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import Any

import aiohttp

from livecommerce.protocol import dumps, loads
from loadtests import server as servers
from loadtests._common import WS, open_socket, raise_fd_limit, request

PROG = "python -m loadtests coupon-claims"


async def _viewer_burst(
    ws_url: str, tokens: list[str], coupon: str, claims: int, pipe: Connection
) -> list[tuple[str, str, float]]:
    """One generator process: connect and join, say ready, wait for "go", claim."""
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
        results: list[tuple[str, str, float]] = []

        async def claim(ws: WS, user: str) -> None:
            sent: dict[int, float] = {}
            for j in range(claims):
                cid = 10 + j
                sent[cid] = time.monotonic()
                frame = dumps({"op": "coupon.claim", "id": cid, "room": "demo", "coupon": coupon})
                await ws.send_str(frame.decode())
            while sent:
                msg = await ws.receive()
                if msg.type is not aiohttp.WSMsgType.TEXT:
                    break
                for line in msg.data.split(b"\n"):
                    obj = loads(line) if line else {}
                    rid = obj.get("id")
                    if rid in sent and "ok" in obj:
                        code = "ok" if obj["ok"] else obj["error"]["code"]
                        results.append((user, code, time.monotonic() - sent.pop(rid)))

        await asyncio.gather(*(claim(ws, u) for ws, u in zip(sockets, users, strict=True)))
        for ws in sockets:
            await ws.close()
        return results


def _generator(ws_url: str, tokens: list[str], coupon: str, claims: int, pipe: Connection) -> None:
    raise_fd_limit(len(tokens) + 100)
    results = asyncio.run(_viewer_burst(ws_url, tokens, coupon, claims, pipe))
    pipe.send(("results", results))


async def run(opts: argparse.Namespace) -> dict[str, Any]:
    server = servers.start(backend=opts.backend, workers=opts.workers)
    try:
        names = [f"claimer{i}" for i in range(opts.users)]
        tokens = await servers.tokens(server, names, PROG)
        host = await servers.host_token(server, PROG)
        ws_url = f"ws://127.0.0.1:{server.port}/ws"
        async with aiohttp.ClientSession() as s:
            hws = await open_socket(s, ws_url)
            await request(hws, 1, "connect", token=host)
            dropped = await request(
                hws, 2, "coupon.drop", room="demo", kind="amount", value=300,
                quantity=opts.quantity, minutes=30,
            )  # fmt: skip
            coupon = dropped["coupon"]["id"]
            ctx = multiprocessing.get_context("spawn")
            pipes, procs = [], []
            share = -(-opts.users // opts.procs)
            for i in range(opts.procs):
                ours, theirs = ctx.Pipe()
                part = tokens[i * share : (i + 1) * share]
                p = ctx.Process(target=_generator, args=(ws_url, part, coupon, opts.claims, theirs))
                p.start()
                pipes.append(ours)
                procs.append(p)
            for pipe in pipes:
                await asyncio.to_thread(pipe.recv)  # ready
            began = time.monotonic()
            for pipe in pipes:
                pipe.send(("go",))
            results: list[tuple[str, str, float]] = []
            for pipe in pipes:
                results += (await asyncio.to_thread(pipe.recv))[1]
            span = time.monotonic() - began
            for p in procs:
                p.join(30)
            left = await request(hws, 3, "join", room="demo")
            await hws.close()
    finally:
        server.stop()
    codes = Counter(code for _, code, _ in results)
    granted = Counter(user for user, code, _ in results if code == "ok")
    lat = sorted(ms for _, _, ms in results)
    remaining = next((c["remaining"] for c in left["snapshot"]["coupons"] if c["id"] == coupon), 0)
    return {
        "backend": opts.backend,
        "workers": opts.workers,
        "users": opts.users,
        "claims": len(results),
        "quantity": opts.quantity,
        "span_s": round(span, 3),
        "claims_per_s": round(len(results) / span),
        "p50_ms": round(statistics.median(lat) * 1000, 1),
        "p99_ms": round(lat[int(len(lat) * 0.99) - 1] * 1000, 1),
        "max_ms": round(lat[-1] * 1000, 1),
        "outcomes": dict(codes),
        "granted": sum(granted.values()),
        "doubled": sum(1 for n in granted.values() if n > 1),
        "remaining": remaining,
        "ok": sum(granted.values()) == opts.quantity and not any(n > 1 for n in granted.values()),
    }


def main(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("--backend", choices=["redis", "memory"], default="redis")
    p.add_argument("--workers", type=int, default=2, help="server processes (2)")
    p.add_argument("--users", type=int, default=2000, help="viewers (2000)")
    p.add_argument("--claims", type=int, default=2, help="claims each viewer sends (2)")
    p.add_argument("--quantity", type=int, default=100, help="coupons (100)")
    p.add_argument("--procs", type=int, default=2, help="generator processes (2)")
    p.add_argument("--json", metavar="PATH", help="also write the figures as JSON to PATH")
    opts = p.parse_args(argv)
    if opts.backend == "memory":
        opts.workers = 1
    fig = asyncio.run(run(opts))
    print(json.dumps(fig, indent=1))
    if opts.json:
        with open(opts.json, "w") as f:
            json.dump(fig, f, indent=1)
    if not fig["ok"]:
        print(f"{PROG}: the invariant failed", file=sys.stderr)
        return 1
    return 0
