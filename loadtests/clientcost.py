"""What one client connection costs the generator: ours against aiohttp's.

``python -m loadtests client-cost`` starts a stand-in server in a process of its own (a
bare asyncio server that accepts the WebSocket upgrade and, every ``--tick-ms``, writes
the same text frame of ``--frame-bytes`` to every connection, like the hub does), then,
for each client kind in turn, one client process that opens ``--connections``
connections from spread source addresses and counts what it receives for
``--duration`` seconds. It reports, per kind: the client process's CPU per received
frame (µs), its resident memory per connection (KiB: RSS after connecting minus
before, over the connections), and the frames received a second. The stand-in server
is the same for both, so the difference is the client's.

Kinds: ``ours`` (:mod:`loadtests.wsclient`, frames counted with ``bytes.count`` as
the viewers do) and ``aiohttp`` (``ClientSession.ws_connect`` and a reader task per
connection, the way ``loadtests.fanout`` reads).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import time
from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import Any, Final

import aiohttp
import uvloop

from livecommerce.protocol import text_frame
from loadtests._common import WS, raise_fd_limit, rss_mib
from loadtests.server import free_port
from loadtests.wsclient import WsClient, accept_key, open_connection, source_address

KINDS: Final = ("ours", "aiohttp")


class _Member(asyncio.Protocol):
    def __init__(self, members: set[asyncio.Transport]) -> None:
        self.members = members
        self.transport: Any = None
        self.buf = b""
        self.open = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.open:
            return
        self.buf += data
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return
        key = b""
        for line in self.buf[:end].split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"sec-websocket-key":
                key = value.strip()
        self.transport.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n" % accept_key(key)
        )
        self.open = True
        self.members.add(self.transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.members.discard(self.transport)


def stand_in(port: int, tick_s: float, frame_bytes: int, ready: Connection) -> None:
    """The stand-in server (a process of its own)."""
    raise_fd_limit(20_000)

    async def run() -> None:
        members: set[asyncio.Transport] = set()
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: _Member(members), "127.0.0.1", port, backlog=4096)
        frame = text_frame(b'{"seq":1,"type":"chat","text":"' + b"x" * frame_bytes + b'"}')
        ready.send("ready")
        async with server:
            while True:
                await asyncio.sleep(tick_s)
                for t in list(members):
                    t.write(frame)

    uvloop.run(run())


class _Counter(WsClient):
    __slots__ = ("frames",)

    def __init__(self, host: str) -> None:
        super().__init__(host)
        self.control = False
        self.frames = [0]

    def on_text(self, data: bytes | bytearray, start: int, end: int) -> None:
        self.frames[0] += data.count(b"\n", start, end) + 1


def client(kind: str, port: int, n: int, duration: float, out: Connection) -> None:
    """A client process: open ``n`` connections of ``kind``, count for ``duration``."""
    raise_fd_limit(20_000)

    async def run() -> dict[str, Any]:
        rss0 = rss_mib(os.getpid())
        frames = [0]
        keep: list[Any] = []
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        if kind == "ours":
            for lo in range(0, n, 200):

                def make() -> WsClient:
                    c = _Counter(f"127.0.0.1:{port}")
                    c.frames = frames
                    return c

                keep += await asyncio.gather(
                    *(
                        open_connection(make, "127.0.0.1", port, source=source_address(3, i))
                        for i in range(lo, min(n, lo + 200))
                    )
                )
        else:

            async def read(ws: WS) -> None:
                async for msg in ws:
                    if msg.type is aiohttp.WSMsgType.TEXT:
                        frames[0] += msg.data.count(b"\n") + 1

            for lo in range(0, n, 200):
                sockets = await asyncio.gather(
                    *(
                        session.ws_connect(
                            f"ws://127.0.0.1:{port}/ws", autoping=True, decode_text=False
                        )
                        for _ in range(lo, min(n, lo + 200))
                    )
                )
                keep += [(ws, asyncio.create_task(read(ws))) for ws in sockets]
        await asyncio.sleep(1.0)
        rss1 = rss_mib(os.getpid())
        frames[0] = 0
        t0, wall0 = os.times(), time.monotonic()
        await asyncio.sleep(duration)
        t1, wall1 = os.times(), time.monotonic()
        cpu0, cpu1 = t0.user + t0.system, t1.user + t1.system
        user = t1.user - t0.user
        got = frames[0]
        await session.close()
        return {
            "kind": kind,
            "connections": n,
            "frames_per_s": round(got / (wall1 - wall0)),
            "cpu_pct": round(100 * (cpu1 - cpu0) / (wall1 - wall0), 1),
            "cpu_us_per_frame": round(1e6 * (cpu1 - cpu0) / got, 2) if got else None,
            "user_us_per_frame": round(1e6 * user / got, 2) if got else None,
            "rss_kib_per_connection": round((rss1 - rss0) * 1024 / n, 1),
        }

    out.send(uvloop.run(run()))


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m loadtests client-cost",
        description="CPU per frame and memory per connection of the generator's client.",
    )
    p.add_argument("--connections", type=int, default=2000)
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--tick-ms", type=float, default=100.0)
    p.add_argument("--frame-bytes", type=int, default=300)
    p.add_argument("--kinds", default=",".join(KINDS), help="ours,aiohttp")
    p.add_argument("--json", metavar="PATH")
    a = p.parse_args(argv)
    if not 1 <= a.connections <= 15_000:
        p.error("--connections must be 1 to 15000")
    kinds = [k for k in a.kinds.split(",") if k]
    if not kinds or any(k not in KINDS for k in kinds):
        p.error(f"--kinds: some of {', '.join(KINDS)}")
    ctx = multiprocessing.get_context("spawn")
    port = free_port()
    ours, theirs = ctx.Pipe()
    server = ctx.Process(
        target=stand_in, args=(port, a.tick_ms / 1000, a.frame_bytes, theirs), daemon=True
    )
    server.start()
    results: list[dict[str, Any]] = []
    try:
        if not ours.poll(30):
            raise SystemExit("client-cost: the stand-in server did not start")
        ours.recv()
        for kind in kinds:
            mine, other = ctx.Pipe()
            proc = ctx.Process(
                target=client, args=(kind, port, a.connections, a.duration, other), daemon=True
            )
            proc.start()
            if not mine.poll(a.duration + 120):
                raise SystemExit(f"client-cost: the {kind} client did not finish")
            results.append(mine.recv())
            proc.join(10)
    finally:
        server.terminate()
        server.join(5)
    for r in results:
        print(
            f"{r['kind']:<8} {r['connections']} connections: {r['frames_per_s']:,} frames/s, "
            f"{r['cpu_pct']} % of a core, {r['cpu_us_per_frame']} µs per frame "
            f"({r['user_us_per_frame']} in user space), "
            f"{r['rss_kib_per_connection']} KiB per connection"
        )
    text = json.dumps({"scenario": "client-cost", "args": vars(a), "results": results}, indent=2)
    if a.json:
        with open(a.json, "w") as f:
            f.write(text + "\n")
    return 0
