"""``create_app(settings)``: the whole server as one aiohttp application.

Every resource is opened in a ``cleanup_ctx`` and closed in reverse order; on shutdown
every WebSocket client gets close 1001 before the stores go away.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import secrets
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from aiohttp import web

from livecommerce.auth import Principal, verify_token
from livecommerce.auth.tokens import demo_secret
from livecommerce.backends import make_backends
from livecommerce.config import Settings
from livecommerce.http import clips, deadlines, media, orders, routes
from livecommerce.http.keys import (
    BACKENDS,
    CONNECTIONS,
    DEMO_SECRET,
    HUB,
    METRICS,
    READY,
    SECRET,
    SERVICE,
    SETTINGS,
    USER_CONNECTIONS,
    VERIFY,
)
from livecommerce.http.ws import CLOSE_GOING_AWAY, watch_readers
from livecommerce.inventory.rules import Product
from livecommerce.rooms.hub import Hub
from livecommerce.rooms.service import RoomService
from livecommerce.rooms.state import Room

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parents[2] / "static"
DEMO_ROOM = "demo"
DEMO_HOST = "demo-host"
DEMO_LINEUP = (
    Product("mug-01", "Stoneware mug, speckled", 1800),
    Product("tee-02", "Organic cotton tee", 2500),
    Product("lamp-03", "Brass desk lamp", 8900),
)


def create_app(settings: Settings, *, clock: Callable[[], float] = time.time) -> web.Application:
    """Build the application for ``settings`` (which must pass ``Settings.check``)."""
    settings.check()
    app = web.Application(
        middlewares=[routes.error_middleware, deadlines.middleware],
        client_max_size=settings.limits.hard_max_frame,
    )
    app[SETTINGS] = settings
    app[SECRET] = secret = settings.secret or secrets.token_urlsafe(32)
    demo = demo_secret(secret) if settings.demo else None
    if demo is not None:
        app[DEMO_SECRET] = demo

    def verify(token: str, now: float) -> Principal:
        return verify_token(
            token,
            secret,
            now=now,
            demo=demo,
            audience=settings.token_audience,
            issuer=settings.token_issuer,
        )

    app[VERIFY] = verify
    app[CONNECTIONS] = set()
    app[USER_CONNECTIONS] = Counter()
    app[METRICS] = Counter()
    app[READY] = [False]

    async def backends_ctx(app: web.Application) -> AsyncIterator[None]:
        async with make_backends(settings) as backends:
            app[BACKENDS] = backends
            yield

    async def service_ctx(app: web.Application) -> AsyncIterator[None]:
        node = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(2)}"
        hub = Hub(
            app[BACKENDS],
            node=node,
            tick_s=settings.tick_ms / 1000,
            max_tick_s=settings.tick_max_ms / 1000,
            fanout_share=settings.fanout_share,
            presence_s=settings.presence_interval_ms / 1000,
            clock=clock,
            analytics=settings.analytics,
        )
        app[HUB] = hub
        app[SERVICE] = RoomService(settings, app[BACKENDS], hub, clock=clock)
        stop = asyncio.Event()
        service = app[SERVICE]
        tasks = [
            asyncio.create_task(_every(60, stop, _async(service.prune), "prune")),
            asyncio.create_task(
                _every(settings.sweep_interval_ms / 1000, stop, service.sweep, "sweep")
            ),
            asyncio.create_task(
                _every(settings.retention_interval_s, stop, service.forget_old, "retention")
            ),
        ]
        if settings.stall_s:
            watch = functools.partial(watch_readers, app)
            tasks.append(asyncio.create_task(_every(settings.stall_s / 2, stop, watch, "readers")))
        yield
        stop.set()
        await asyncio.wait(tasks, timeout=settings.drain_timeout_s)
        for task in tasks:
            task.cancel()
        await service.drain()
        await hub.close()

    async def demo_ctx(app: web.Application) -> AsyncIterator[None]:
        await _demo_room(app)
        yield

    async def ready_ctx(app: web.Application) -> AsyncIterator[None]:
        app[READY][0] = True
        yield
        app[READY][0] = False

    app.cleanup_ctx.append(backends_ctx)
    app.cleanup_ctx.append(service_ctx)
    if settings.demo:
        app.cleanup_ctx.append(demo_ctx)
    orders.setup(app)  # the bridge's context, after the service's
    clips.setup(app)  # the clip store, before the media context that fills it
    media.setup(app)  # WHIP/WHEP/HLS; its context closes every peer connection first
    app.cleanup_ctx.append(ready_ctx)
    app.on_shutdown.append(_drain)
    routes.setup(app, STATIC_DIR)
    return app


async def _every(
    interval: float, stop: asyncio.Event, work: Callable[[], Awaitable[object]], name: str
) -> None:
    """Run ``work`` every ``interval`` seconds until ``stop`` is set.

    The loop ends on the flag, not on cancellation: a cancel that lands inside a Redis
    client's timeout can be turned into a timeout error and lost (seen in teardown).
    """
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)
        if stop.is_set():
            return
        try:
            await work()
        except Exception:
            log.exception("%s failed; trying again", name)


def _async(fn: Callable[[], object]) -> Callable[[], Awaitable[object]]:
    async def run() -> object:
        return fn()

    return run


async def _demo_room(app: web.Application) -> None:
    """The demo's room, live, owned by the demo host."""
    rooms = app[BACKENDS].rooms
    room = Room(DEMO_ROOM, "Demo live show", DEMO_HOST, "scheduled", app[SERVICE].now_ms())
    if await rooms.create(room):
        for product in DEMO_LINEUP:
            await app[BACKENDS].inventory.put_product(DEMO_ROOM, product)
    await rooms.set_status(DEMO_ROOM, "scheduled", "live")


async def _drain(app: web.Application) -> None:
    """Close every WebSocket with 1001 and give them the drain timeout to finish."""
    app[READY][0] = False
    conns = [*app[CONNECTIONS]]
    if not conns:
        return
    log.info("draining %d connections", len(conns))
    tasks = [t for c in conns if (t := c.close(CLOSE_GOING_AWAY, "server going away"))]
    if tasks:
        await asyncio.wait(tasks, timeout=app[SETTINGS].drain_timeout_s)
