"""A connection that sends no whole request in time is closed.

aiohttp closes a keep-alive connection left idle between requests after 75 s, but has
no deadline for a request's headers: a client that trickles them a byte at a time
(slowloris) holds a connection, and a file descriptor, for as long as it likes. Here
each connection must send the headers of a request within ``seconds`` of opening, and
within ``seconds`` of its last answer (an idle connection is closed then too); a
WebSocket, once upgraded, is the hub's to watch (heartbeats, slow consumers).

:class:`WatchedSite` is the listening socket with the deadline; :func:`middleware`
marks the moment a request's headers are in (the handler runs) and re-arms the
deadline when the answer is out.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

log = logging.getLogger(__name__)

DEFAULT_S = 15.0


class Deadlines:
    """The deadline of every watched connection of one server process."""

    def __init__(self, seconds: float = DEFAULT_S) -> None:
        self.seconds = seconds
        self._timers: dict[Any, asyncio.TimerHandle] = {}

    def arm(self, transport: Any) -> None:
        self.disarm(transport)
        loop = asyncio.get_running_loop()
        self._timers[transport] = loop.call_later(self.seconds, self._expire, transport)

    def disarm(self, transport: Any) -> None:
        timer = self._timers.pop(transport, None)
        if timer is not None:
            timer.cancel()

    def _expire(self, transport: Any) -> None:
        self._timers.pop(transport, None)
        if not transport.is_closing():
            log.info("closing a connection that sent no request within %g s", self.seconds)
            transport.close()

    def protocol_factory(self, factory: Callable[[], Any]) -> Callable[[], asyncio.Protocol]:
        """``factory``'s protocols, each under the deadline from its first byte on."""
        return lambda: _Watched(factory(), self)


class _Watched(asyncio.Protocol):
    """aiohttp's protocol of one connection, with its deadline armed at the start."""

    def __init__(self, inner: Any, deadlines: Deadlines) -> None:
        self._inner = inner
        self._deadlines = deadlines
        self._transport: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        self._deadlines.arm(transport)
        self._inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._deadlines.disarm(self._transport)
        self._inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        result: bool | None = self._inner.eof_received()
        return result

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()


DEADLINES = web.AppKey("deadlines", Deadlines)
"""This process's deadlines, when it listens through a :class:`WatchedSite`."""


@web.middleware
async def middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """The request's headers are in: no deadline while it is served; after a plain
    answer, the next request's (a WebSocket is never under one again)."""
    deadlines = request.app.get(DEADLINES)
    transport = request.transport
    if deadlines is None or transport is None:
        return await handler(request)
    deadlines.disarm(transport)
    response: web.StreamResponse | None = None
    try:
        response = await handler(request)
        return response
    finally:
        if not isinstance(response, web.WebSocketResponse) and not transport.is_closing():
            deadlines.arm(transport)


class WatchedSite(web.BaseSite):
    """``host:port`` (``SO_REUSEPORT`` with ``reuse_port``), every connection under
    ``deadlines``."""

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        *,
        deadlines: Deadlines,
        backlog: int = 128,
        reuse_port: bool = False,
    ) -> None:
        super().__init__(runner, backlog=backlog)
        self._host = host
        self._port = port
        self._deadlines = deadlines
        self._reuse_port = reuse_port

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        self._server = await asyncio.get_running_loop().create_server(
            self._deadlines.protocol_factory(server),
            self._host,
            self._port,
            backlog=self._backlog,
            reuse_address=True,
            reuse_port=self._reuse_port,
        )
