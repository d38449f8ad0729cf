"""A minimal WebSocket client (RFC 6455) for the load generator, on asyncio protocols.

Why not aiohttp's or websockets' client: a load generator holds thousands of
connections per process and spends its CPU per received frame. This client is an
``asyncio.BufferedProtocol`` with slots and nothing else per connection (no reader task, no
queue, no message objects); it splits the byte stream into frames itself and hands each
text frame to :meth:`WsClient.on_text` as ``(data, start, end)``, so a subclass can count
lines or read a line's ``seq`` with C-level ``bytes`` searches, without copying or
parsing. ``python -m loadtests client-cost`` measures it against aiohttp's client.

What it implements: the opening handshake (with the ``Sec-WebSocket-Accept`` check),
unmasked server frames of any length (fragments are counted as text), masked client text
frames, pong answers to pings, and the closing handshake. No extensions, no compression
(PROTOCOL.md: none by default). Server frames are never masked; a masked one is a
protocol error and closes the connection with 1002.

Each connection can be bound to its own source address in 127.0.0.0/8
(:func:`source_address`), so 10,000 connections to one server port never exhaust the
ephemeral ports of one address pair.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import random
import socket
import struct
from collections.abc import Callable
from typing import Any, Final, cast

from livecommerce.protocol import loads

GUID: Final = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_CONT: Final = 0x0
OP_TEXT: Final = 0x1
OP_CLOSE: Final = 0x8
OP_PING: Final = 0x9
OP_PONG: Final = 0xA
CLOSE_ABNORMAL: Final = 1006
"""No close frame came: the connection dropped (RFC 6455, 7.1.5)."""
CLOSE_PROTOCOL: Final = 1002
_IP_BIND_ADDRESS_NO_PORT: Final = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)
_MAX_HEADERS: Final = 16 * 1024


def source_address(block: int, n: int) -> str:
    """The ``n``-th source address of ``block``: ``127.<block>.<hi>.<lo>``, with ``lo``
    from 1 to 254 (never a .0 or .255 address), about 65,000 addresses per block.

    Blocks keep the generator's processes apart (each uses its own); block 0 would hold
    127.0.0.1, the server's address, so blocks are 1 to 254.

    Raises:
        ValueError: ``block`` or ``n`` out of range.
    """
    if not 1 <= block <= 254:
        raise ValueError("block must be 1 to 254")
    if n < 0:
        raise ValueError("n must not be negative")
    hi, lo = divmod(n % (254 * 256), 254)
    return f"127.{block}.{hi}.{lo + 1}"


def masked_frame(opcode: int, payload: bytes) -> bytes:
    """One final client frame (masked, as RFC 6455 requires of clients)."""
    n = len(payload)
    first = 0x80 | opcode
    if n < 126:
        header = bytes((first, 0x80 | n))
    elif n < 1 << 16:
        header = struct.pack("!BBH", first, 0x80 | 126, n)
    else:
        header = struct.pack("!BBQ", first, 0x80 | 127, n)
    mask = random.randbytes(4)
    if not n:
        return header + mask
    key = int.from_bytes((mask * (n // 4 + 1))[:n], "big")
    return header + mask + (int.from_bytes(payload, "big") ^ key).to_bytes(n, "big")


def accept_key(key: bytes) -> bytes:
    """``Sec-WebSocket-Accept`` for a ``Sec-WebSocket-Key`` (RFC 6455, 4.2.2)."""
    return base64.b64encode(hashlib.sha1(key + GUID).digest())


_READ_SIZE: Final = 256 * 1024


class _SharedBuffer:
    """The one buffer every connection of a process reads into (``BufferedProtocol``):
    a read is handled before the next one starts, so one buffer serves them all and no
    ``bytes`` object is made per read. Grown when a frame does not fit."""

    def __init__(self, size: int) -> None:
        self.buf = bytearray(size)
        self.view = memoryview(self.buf)

    def grow(self, size: int) -> None:
        self.buf = bytearray(max(size, 2 * len(self.buf)))
        self.view = memoryview(self.buf)


_shared = _SharedBuffer(_READ_SIZE)


class HandshakeError(ConnectionError):
    """The server did not switch protocols as RFC 6455 says it must."""


class WsClient(asyncio.BufferedProtocol):
    """One client connection. Subclasses override :meth:`on_text` (and may override
    :meth:`on_lost`); :meth:`request` sends a command and waits for its reply while
    :attr:`control` is set (every line of every frame is then parsed).

    The protocol object may be reused for a new connection (``connection_made`` resets
    the per-connection state), which is how a client resumes on another socket.
    """

    __slots__ = (
        "_buf",
        "_key",
        "_opened",
        "_upgraded",
        "_wait_id",
        "_waiter",
        "close_code",
        "control",
        "host",
        "path",
        "transport",
    )

    def __init__(self, host: str, path: str = "/ws") -> None:
        self.host = host
        self.path = path
        self.transport: asyncio.Transport | None = None
        self.close_code: int | None = None
        self.control = True
        """Parse every line and resolve :meth:`request` waiters (off: only on_text)."""
        self._buf = b""
        self._key = b""
        self._opened: asyncio.Future[None] | None = None
        self._upgraded = False
        self._waiter: asyncio.Future[dict[str, Any]] | None = None
        self._wait_id = -1

    # -- asyncio.BufferedProtocol---------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.close_code = None
        self._buf = b""
        self._key = base64.b64encode(os.urandom(16))
        self._opened = asyncio.get_running_loop().create_future()
        self._upgraded = False
        self.transport.write(
            b"GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n"
            % (self.path.encode(), self.host.encode(), self._key)
        )

    def get_buffer(self, sizehint: int) -> memoryview:
        rem = self._buf
        if not rem:
            return _shared.view
        if len(rem) + _READ_SIZE > len(_shared.buf):
            _shared.grow(len(rem) + _READ_SIZE)
        _shared.buf[: len(rem)] = rem
        return _shared.view[len(rem) :]

    def feed(self, data: bytes) -> None:
        """Take ``data`` as if it had been read from the socket (for tests)."""
        if len(self._buf) + len(data) + _READ_SIZE > len(_shared.buf):
            _shared.grow(len(self._buf) + len(data) + _READ_SIZE)
        view = self.get_buffer(len(data))
        view[: len(data)] = data
        self.buffer_updated(len(data))

    def buffer_updated(self, nbytes: int) -> None:
        """Handle what was left over from the last read, then the new bytes, all in the
        shared buffer: nothing may keep a reference to it."""
        data = _shared.buf
        n = len(self._buf) + nbytes
        self._buf = b""
        pos = 0
        if not self._upgraded:  # still in the HTTP handshake
            end = data.find(b"\r\n\r\n", 0, n)
            if end < 0:
                if n > _MAX_HEADERS:
                    self._fail_handshake("headers too long")
                else:
                    self._buf = bytes(data[:n])
                return
            if not self._handshake(bytes(data[:end])):
                return
            pos = end + 4
        while n - pos >= 2:
            second = data[pos + 1]
            length = second & 0x7F
            if length < 126:
                start = pos + 2
            elif length == 126:
                if n - pos < 4:
                    break
                length = (data[pos + 2] << 8) | data[pos + 3]
                start = pos + 4
            else:
                if n - pos < 10:
                    break
                length = int.from_bytes(data[pos + 2 : pos + 10], "big")
                start = pos + 10
            end = start + length
            if end > n:
                break
            if second & 0x80:
                self.abort(CLOSE_PROTOCOL)
                return
            opcode = data[pos] & 0x0F
            if opcode <= OP_TEXT:
                if self.control:
                    self._control_frame(data, start, end)
                else:
                    self.on_text(data, start, end)
            elif opcode == OP_CLOSE:
                self._close_received(data, start, end)
                return
            elif opcode == OP_PING:
                self.send(OP_PONG, bytes(data[start:end]))
            pos = end
            if self.transport is None:
                return
        if pos < n:
            self._buf = bytes(data[pos:n])

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.close_code is None:
            self.close_code = CLOSE_ABNORMAL
        err = ConnectionError(f"connection lost ({self.close_code})")
        if self._opened is not None and not self._opened.done():
            self._opened.set_exception(err)
            self._opened.exception()  # retrieved: nobody may be waiting any more
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(err)
        self._waiter = None
        self.on_lost(self.close_code)

    # -- for subclasses ------------------------------------------------------------------

    def on_text(self, data: bytes | bytearray, start: int, end: int) -> None:
        """A text frame's payload is ``data[start:end]`` (called when not ``control``)."""

    def on_line(self, obj: dict[str, Any]) -> None:
        """A line, parsed, that no :meth:`request` waits for (in ``control`` mode)."""

    def on_lost(self, code: int) -> None:
        """The connection ended with ``code`` (:data:`CLOSE_ABNORMAL`: no close frame)."""

    # -- sending and requests ------------------------------------------------------------

    async def opened(self) -> None:
        """Wait until the server accepted the upgrade of the current connection.

        Raises:
            HandshakeError: it refused.
            ConnectionError: the connection dropped first, or there is none.
        """
        if self._opened is None:
            raise ConnectionError("not connected")
        await self._opened

    def send(self, opcode: int, payload: bytes) -> None:
        if self.transport is not None:
            self.transport.write(masked_frame(opcode, payload))

    def send_text(self, payload: bytes) -> None:
        if self.transport is not None:
            self.transport.write(masked_frame(OP_TEXT, payload))

    async def request(self, cid: int, payload: bytes, *, ahead: bytes = b"") -> dict[str, Any]:
        """Send ``payload`` (a command with id ``cid``) and return its reply object,
        ``ok`` or not; :attr:`control` must be set. A command ``ahead`` goes first in
        the same write (pipelined; its reply goes to :meth:`on_line`).

        Raises:
            ConnectionError: the connection dropped first.
        """
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[dict[str, Any]] = loop.create_future()
        self._waiter = waiter
        self._wait_id = cid
        if self.transport is not None:
            first = masked_frame(OP_TEXT, ahead) if ahead else b""
            self.transport.write(first + masked_frame(OP_TEXT, payload))
        try:
            return await waiter
        finally:
            if self._waiter is waiter:
                self._waiter = None

    def replied(self, obj: dict[str, Any]) -> None:
        """Hand ``obj`` (a reply) to the waiting :meth:`request`, if it is its reply."""
        waiter = self._waiter
        if waiter is not None and obj.get("id") == self._wait_id and not waiter.done():
            waiter.set_result(obj)

    def close(self, code: int = 1000) -> None:
        """Send a close frame and close the socket (without waiting for the answer)."""
        transport = self.transport
        if transport is None:
            return
        if self._upgraded:
            self.send(OP_CLOSE, struct.pack("!H", code))
        transport.close()

    def abort(self, code: int) -> None:
        """Drop the connection at once; ``code`` is what :meth:`on_lost` will see."""
        if self.close_code is None:
            self.close_code = code
        if self.transport is not None:
            self.transport.abort()

    # -- internals -----------------------------------------------------------------------

    def _handshake(self, head: bytes) -> bool:
        lines = head.split(b"\r\n")
        status = lines[0].split(b" ", 2)
        if len(status) < 2 or status[1] != b"101":
            self._fail_handshake(f"status {lines[0][:60]!r}")
            return False
        headers: dict[bytes, bytes] = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        if headers.get(b"sec-websocket-accept") != accept_key(self._key):
            self._fail_handshake("wrong Sec-WebSocket-Accept")
            return False
        self._upgraded = True
        if self._opened is not None and not self._opened.done():
            self._opened.set_result(None)
        return True

    def _fail_handshake(self, why: str) -> None:
        if self._opened is not None and not self._opened.done():
            self._opened.set_exception(HandshakeError(why))
        self.abort(CLOSE_PROTOCOL)

    def _control_frame(self, data: bytes | bytearray, start: int, end: int) -> None:
        lines = bytes(data[start:end]).split(b"\n")
        for i, line in enumerate(lines):
            if not line:
                continue
            obj = loads(line)
            if "ok" in obj and obj.get("id") == self._wait_id and self._waiter is not None:
                self.replied(obj)
            else:
                self.on_line(obj)
            if not self.control:  # the reply switched modes: the rest are events
                rest = b"\n".join(lines[i + 1 :])
                if rest:
                    self.on_text(rest, 0, len(rest))
                return

    def _close_received(self, data: bytes | bytearray, start: int, end: int) -> None:
        code = int.from_bytes(data[start : start + 2], "big") if end - start >= 2 else 1005
        self.close_code = code
        transport = self.transport
        if transport is not None:
            transport.write(masked_frame(OP_CLOSE, bytes(data[start : start + 2])))
            transport.close()


async def open_connection(
    factory: Callable[[], WsClient],
    host: str,
    port: int,
    *,
    source: str | None = None,
    rcvbuf: int = 0,
) -> WsClient:
    """Connect a TCP socket from ``source`` (any port; ``None``: the kernel's choice)
    to ``host:port``, hand it to the protocol ``factory()`` and wait for the upgrade.

    ``rcvbuf`` sets ``SO_RCVBUF`` before connecting (0: the kernel's autotuning).

    Raises:
        OSError: the connection failed.
        HandshakeError: the server refused the upgrade.
    """
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        if source is not None:
            # the port is chosen at connect(), per destination: no bind-time port limit
            sock.setsockopt(socket.SOL_IP, _IP_BIND_ADDRESS_NO_PORT, 1)
            sock.bind((source, 0))
        if rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await loop.sock_connect(sock, (host, port))
    except BaseException:
        sock.close()
        raise
    _, proto = await loop.create_connection(factory, sock=sock)
    assert isinstance(proto, WsClient)
    try:
        await proto.opened()
    except BaseException:
        proto.abort(CLOSE_ABNORMAL)
        raise
    return proto
