"""A lean HTTP/1.1 client for one thing: POSTing webhooks to one URL, many at a time.

The order bridge spends most of its CPU posting: measured with ``loadtests/bridge.py``,
aiohttp's client took about 150 µs of the bridge's ~280 µs per delivered order (request
and response objects, header multidicts, cookie jar, tracing hooks, timers). A webhook
needs none of it: one method, one URL, a few headers, a small JSON body, a status and a
small answer. This client sends a request as one ``bytes`` write on a kept-alive
connection and reads the answer with a small parser; everything else is left out.

What it does:

- ``http://`` and ``https://`` URLs (TLS with the default context, certificates and host
  names checked, unless a context is given);
- a pool of at most ``connections`` kept-alive connections; a request waits for a free
  one; a connection the server closes (``Connection: close``, HTTP/1.0, an error) is
  dropped, a fresh one is opened for the next request;
- answers with ``Content-Length``, ``Transfer-Encoding: chunked``, or neither (the body
  ends when the server closes); interim ``1xx`` answers are skipped; an answer over
  ``max_answer`` bytes is an error;
- a request sent on a kept-alive connection that the server had closed meanwhile (no
  byte of answer came back) is sent once more on a new connection: a webhook is
  idempotent by its ``webhook-id``, and an idle connection closing under a request is
  not the order system failing;
- ``timeout_s`` bounds each request, connecting included; on timeout the connection is
  aborted.

What it does not: redirects (a webhook that redirects is a misconfiguration; its 3xx is
returned as it is), proxies, cookies, compression, HTTP/2.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Mapping
from urllib.parse import urlsplit

MAX_ANSWER = 1 << 20
"""The largest answer body read (an order system answers with a few bytes of JSON)."""
_MAX_HEAD = 64 * 1024


class HttpError(ConnectionError):
    """The server's answer could not be read (closed early, malformed, too large)."""


class _Answer:
    """The incremental parser of one answer's bytes."""

    __slots__ = ("_buf", "_head", "body", "chunked", "close", "done", "length", "status")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._head = True
        self.status = 0
        self.length: int | None = None
        self.chunked = False
        self.close = False
        self.body = bytearray()
        self.done = False

    def feed(self, data: bytes) -> None:
        """Take more bytes; sets :attr:`done` when the answer is complete.

        Raises:
            HttpError: the answer is malformed or too large.
        """
        self._buf += data
        while not self.done:
            if self._head:
                if not self._read_head():
                    return
            elif self.chunked:
                if not self._read_chunk():
                    return
            elif self.length is not None:
                take = min(self.length - len(self.body), len(self._buf))
                self.body += self._buf[:take]
                del self._buf[:take]
                if len(self.body) == self.length:
                    self.done = True
                return
            else:  # until the server closes
                self.body += self._buf
                self._buf.clear()
                self._check_size()
                return

    def eof(self) -> None:
        """The server closed: complete the answer if it was read to the end.

        Raises:
            HttpError: the answer was cut short.
        """
        if not self.done and not self._head and not self.chunked and self.length is None:
            self.done = True
            self.close = True
        if not self.done:
            raise HttpError("the server closed the connection before the end of the answer")

    def _read_head(self) -> bool:
        end = self._buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buf) > _MAX_HEAD:
                raise HttpError("the answer's head is too large")
            return False
        head = bytes(self._buf[:end]).decode("latin-1")
        del self._buf[: end + 4]
        lines = head.split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise HttpError(f"not an HTTP/1.x answer: {lines[0][:80]!r}")
        status = int(parts[1])
        if 100 <= status < 200:  # interim (100 Continue, 103 Early Hints): the real one follows
            return True
        self.status = status
        self.close = parts[0] == "HTTP/1.0"
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep:
                raise HttpError(f"malformed header line: {line[:80]!r}")
            name, value = name.strip().lower(), value.strip()
            if name == "content-length":
                if not (value.isascii() and value.isdigit()):
                    raise HttpError(f"bad Content-Length: {value[:40]!r}")
                self.length = int(value)
            elif name == "transfer-encoding":
                self.chunked = value.lower().endswith("chunked")
            elif name == "connection":
                tokens = {t.strip().lower() for t in value.split(",")}
                self.close = "close" in tokens or (self.close and "keep-alive" not in tokens)
        if self.chunked:
            self.length = None
        self._head = False
        if self.status in (204, 304) or self.length == 0:
            self.done = True
        elif self.length is not None and self.length > MAX_ANSWER:
            raise HttpError("the answer is too large")
        return True

    def _read_chunk(self) -> bool:
        end = self._buf.find(b"\r\n")
        if end < 0:
            return False
        size_text = bytes(self._buf[:end]).split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise HttpError(f"bad chunk size: {size_text[:20]!r}") from None
        if size == 0:  # the last chunk; then trailers, if any, up to an empty line
            rest = end + 2
            if self._buf[rest : rest + 2] == b"\r\n":
                stop = rest + 2
            else:
                found = self._buf.find(b"\r\n\r\n", rest)
                if found < 0:
                    return False
                stop = found + 4
            del self._buf[:stop]
            self.done = True
            return True
        if len(self._buf) < end + 2 + size + 2:
            return False
        self.body += self._buf[end + 2 : end + 2 + size]
        del self._buf[: end + 2 + size + 2]
        self._check_size()
        return True

    def _check_size(self) -> None:
        if len(self.body) > MAX_ANSWER:
            raise HttpError("the answer is too large")


class _Connection(asyncio.Protocol):
    """One kept-alive connection; one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.requests = 0
        """Requests sent on it (after the first, a failure may be a stale keep-alive)."""
        self._answer: _Answer | None = None
        self._waiter: asyncio.Future[_Answer] | None = None
        self._got_bytes = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        answer, waiter = self._answer, self._waiter
        if answer is None or waiter is None or waiter.done():
            self.abort()  # bytes nobody asked for: the connection cannot be trusted
            return
        self._got_bytes = True
        try:
            answer.feed(data)
        except HttpError as exc:
            waiter.set_exception(exc)
            self.abort()
            return
        if answer.done:
            self._answer = None
            waiter.set_result(answer)

    def eof_received(self) -> bool | None:
        self._finish_on_close()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._finish_on_close()

    def _finish_on_close(self) -> None:
        self.closed = True
        answer, waiter = self._answer, self._waiter
        if answer is None or waiter is None or waiter.done():
            return
        self._answer = None
        try:
            answer.eof()
        except HttpError as exc:
            waiter.set_exception(_Stale(str(exc)) if not self._got_bytes else exc)
            return
        waiter.set_result(answer)

    def send(self, request: bytes) -> asyncio.Future[_Answer]:
        assert self.transport is not None and self._answer is None
        self._answer = _Answer()
        self._got_bytes = False
        self._waiter = asyncio.get_running_loop().create_future()
        self.requests += 1
        self.transport.write(request)
        return self._waiter

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()


class _Stale(HttpError):
    """The connection closed before any byte of the answer."""


class WebhookClient:
    """POSTs to one URL over at most ``connections`` kept-alive connections.

    Args:
        url: ``http://`` or ``https://`` URL.
        timeout_s: the longest one request may take, connecting included.
        connections: connections open at most (requests beyond wait for one).
        ssl_context: for ``https://``; default: the system's, verifying.
        max_answer: the largest answer body accepted.

    Raises:
        ValueError: the URL is not an absolute http(s) URL.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float = 10.0,
        connections: int = 64,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        self.url = url
        self._host = parts.hostname
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._ssl: ssl.SSLContext | None = None
        if parts.scheme == "https":
            self._ssl = ssl_context or ssl.create_default_context()
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        host = parts.netloc.rpartition("@")[2]  # no credentials in the Host header
        self._head = f"POST {target} HTTP/1.1\r\nHost: {host}\r\n".encode("latin-1")
        self._timeout_s = timeout_s
        self._slots = asyncio.Semaphore(connections)
        self._idle: list[_Connection] = []
        self._open: set[_Connection] = set()

    async def post(
        self, body: bytes, headers: Mapping[str, str], *, content_type: str = "application/json"
    ) -> tuple[int, bytes]:
        """Send one POST; return its status and answer body.

        Raises:
            TimeoutError: past ``timeout_s``.
            OSError: the connection failed (``HttpError`` for an unreadable answer).
            ValueError: a header holds a line break.
        """
        request = self._request(body, headers, content_type)
        async with self._slots, asyncio.timeout(self._timeout_s):
            for _ in range(2):
                conn = await self._connection()
                reused = conn.requests > 0
                try:
                    answer = await conn.send(request)
                except _Stale:
                    self._drop(conn)
                    if reused:
                        continue  # a kept-alive connection the server had closed
                    raise
                except BaseException:
                    self._drop(conn)
                    conn.abort()
                    raise
                if answer.close or conn.closed:
                    self._drop(conn)
                    conn.abort()
                else:
                    self._idle.append(conn)
                return answer.status, bytes(answer.body)
            raise HttpError("the connection closed before the answer, twice")

    def _request(self, body: bytes, headers: Mapping[str, str], content_type: str) -> bytes:
        lines = [f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"]
        for name, value in headers.items():
            if "\r" in name or "\n" in name or "\r" in value or "\n" in value:
                raise ValueError(f"header {name!r} holds a line break")
            lines.append(f"{name}: {value}\r\n")
        lines.append("\r\n")
        return self._head + "".join(lines).encode("latin-1") + body

    async def _connection(self) -> _Connection:
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed:
                return conn
            self._open.discard(conn)
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(
            _Connection,
            self._host,
            self._port,
            ssl=self._ssl,
            server_hostname=self._host if self._ssl else None,
        )
        self._open.add(conn)
        return conn

    def _drop(self, conn: _Connection) -> None:
        self._open.discard(conn)
        with contextlib.suppress(ValueError):
            self._idle.remove(conn)

    async def close(self) -> None:
        """Close every connection."""
        for conn in list(self._open):
            conn.abort()
        self._open.clear()
        self._idle.clear()
