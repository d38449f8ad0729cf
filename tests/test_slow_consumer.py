"""A member that stops reading is closed with 4009 and never delays the others."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import struct

import aiohttp

from tests.conftest import HOST, ClientFactory, ServerFactory, token


def masked_text(payload: bytes) -> bytes:
    mask = os.urandom(4)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    assert len(payload) < 126
    return bytes((0x81, 0x80 | len(payload))) + mask + body


class StalledMember:
    """A raw WebSocket client that joins the demo room, then reads nothing until asked.

    A plain socket (not an asyncio stream, which would keep reading into its buffer)
    with a small receive buffer, so the server's queue for it really grows.
    """

    def __init__(self, rcvbuf: int = 4096) -> None:
        self.sock = socket.socket()
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.setblocking(False)
        self.loop = asyncio.get_running_loop()
        self.pending = b""

    async def join(self, port: int) -> None:
        await self.loop.sock_connect(self.sock, ("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        await self.loop.sock_sendall(
            self.sock,
            f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode(),
        )
        head = await self.read_until(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        await self.loop.sock_sendall(self.sock, masked_text(b'{"op":"connect","id":1}'))
        await self.loop.sock_sendall(self.sock, masked_text(b'{"op":"join","id":2,"room":"demo"}'))

    async def read_until(self, marker: bytes) -> bytes:
        while marker not in self.pending:
            chunk = await self.loop.sock_recv(self.sock, 65536)
            if not chunk:
                raise ConnectionError("closed")
            self.pending += chunk
        head, _, self.pending = self.pending.partition(marker)
        return head

    async def read_exactly(self, n: int) -> bytes:
        while len(self.pending) < n:
            chunk = await self.loop.sock_recv(self.sock, 1 << 20)
            if not chunk:
                raise ConnectionError("closed")
            self.pending += chunk
        out, self.pending = self.pending[:n], self.pending[n:]
        return out

    async def close_code(self) -> int:
        """Read frames until the close frame; return its code."""
        while True:
            head = await self.read_exactly(2)
            length = head[1] & 0x7F
            if length == 126:
                length = struct.unpack("!H", await self.read_exactly(2))[0]
            elif length == 127:
                length = struct.unpack("!Q", await self.read_exactly(8))[0]
            payload = await self.read_exactly(length)
            if head[0] & 0x0F == 0x8:
                code: int = struct.unpack("!H", payload[:2])[0]
                return code


async def slow_closes(port: int) -> int:
    url = f"http://127.0.0.1:{port}/metrics"
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        text = await resp.text()
    for line in text.splitlines():
        if line.startswith("livecommerce_slow_closes "):
            return int(line.split()[1])
    return 0


async def test_a_stalled_member_is_closed_4009_while_the_others_keep_receiving(
    start_server: ServerFactory, connect: ClientFactory
) -> None:
    server = await start_server(
        outbound_limit=128 * 1024, tick_ms=20, limits={"staff_burst": 10_000}
    )
    host = await connect(server, HOST)
    readers = [await connect(server, token(f"r{i}")) for i in range(3)]
    for c in readers:
        await c.join("demo")
    stalled = StalledMember()
    await stalled.join(server.port)
    await asyncio.sleep(0.1)  # its join has gone through

    text = "x" * 480
    sent = []
    for i in range(2000):
        sent.append((await host.request("announce", room="demo", text=f"{i} {text}"))["seq"])
        if i % 50 == 0:
            await asyncio.sleep(0.02)  # a few ticks go by while we talk
    for c in readers:  # every reading member got every announcement, in order
        seqs: list[int] = []
        while len(seqs) < len(sent):
            event = await c.next_event(lambda e: e["type"] == "announcement", timeout=10)
            seqs.append(event["seq"])
        assert seqs == sent
    assert await slow_closes(server.port) == 1
    assert await asyncio.wait_for(stalled.close_code(), 10) == 4009
    stalled.sock.close()
    # the room carries on for the others
    last = await host.request("announce", room="demo", text="still here")
    event = await readers[0].next_event(lambda e: e["type"] == "announcement")
    assert event["seq"] == last["seq"]


async def test_a_member_that_stops_reading_is_closed_before_its_buffers_fill(
    start_server: ServerFactory, connect: ClientFactory
) -> None:
    """The stall rule alone (the queue's limits are out of reach): the member's kernel
    still takes what it is sent, but its application takes nothing."""
    server = await start_server(
        stall_s=0.4,
        max_lag_s=600.0,
        outbound_limit=64 << 20,
        socket_sndbuf=0,
        tick_ms=20,
        limits={"staff_burst": 10_000},  # the host announces as fast as it can
    )
    host = await connect(server, HOST)
    readers = [await connect(server, token(f"r{i}")) for i in range(3)]
    for c in readers:
        await c.join("demo")
    stalled = StalledMember(rcvbuf=0)  # the kernel's own buffer: megabytes on loopback
    await stalled.join(server.port)
    await asyncio.sleep(0.1)  # its join has gone through

    sent = []
    text = "x" * 480
    while await slow_closes(server.port) == 0:  # ~50 KB/s, as a busy room
        sent.append((await host.request("announce", room="demo", text=text))["seq"])
        await asyncio.sleep(0.01)
        assert len(sent) < 3000, "the stalled member was never closed"
    assert len(sent) > 10  # it had been sent enough to judge
    for c in readers:  # the readers were judged too, every sample, and kept
        seqs: list[int] = []
        while len(seqs) < len(sent):
            event = await c.next_event(lambda e: e["type"] == "announcement", timeout=10)
            seqs.append(event["seq"])
        assert seqs == sent
    assert await asyncio.wait_for(stalled.close_code(), 10) == 4009
    stalled.sock.close()
    assert await slow_closes(server.port) == 1
