"""``create_app(settings)``: the whole server as one aiohttp application.

Every resource is opened in a ``cleanup_ctx`` and closed in reverse order; on shutdown
every WebSocket client gets close 1001 before the stores go away.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from aiohttp import web

from livecommerce.backends import make_backends
from livecommerce.config import Settings
from livecommerce.http import routes
from livecommerce.http.keys import (
    BACKENDS,
    CONNECTIONS,
    HUB,
    METRICS,
    READY,
    SECRET,
    SERVICE,
    SETTINGS,
)
from livecommerce.http.ws import CLOSE_GOING_AWAY
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
        middlewares=[routes.error_middleware], client_max_size=settings.limits.hard_max_frame
    )
    app[SETTINGS] = settings
    app[SECRET] = settings.secret or secrets.token_urlsafe(32)
    app[CONNECTIONS] = set()
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
            presence_s=settings.presence_interval_ms / 1000,
            clock=clock,
        )
        app[HUB] = hub
        app[SERVICE] = RoomService(settings, app[BACKENDS], hub, clock=clock)
        tasks = [
            asyncio.create_task(_prune(app[SERVICE])),
            asyncio.create_task(_sweep(app[SERVICE], settings.sweep_interval_ms / 1000)),
        ]
        yield
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await app[SERVICE].batcher.close()
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
    app.cleanup_ctx.append(ready_ctx)
    app.on_shutdown.append(_drain)
    routes.setup(app, STATIC_DIR)
    return app


async def _prune(service: RoomService) -> None:
    while True:
        await asyncio.sleep(60)
        service.prune()


async def _sweep(service: RoomService, interval: float) -> None:
    """Release expired holds and end sales past their time, now and then, forever."""
    while True:
        await asyncio.sleep(interval)
        try:
            await service.sweep()
        except Exception:
            log.exception("sweep failed; trying again")


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
