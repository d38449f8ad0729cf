"""Product clips over HTTP: per room and the shoppable feed across rooms.

- ``GET /api/rooms/{room}/clips[?sku=]``: ``{"clips": [clip, ...]}``, newest first.
- ``GET /api/clips?limit=&cursor=``: ``{"clips": [...], "next": cursor or null}``,
  newest first across rooms; ``next`` is the ``cursor`` of the following page.

A clip is ``{"id", "room", "sku", "title", "price", "currency", "image", "started_at",
"ended_at", "duration_s", "playlist", "poster", "sale"}``: ``playlist`` and ``poster``
are paths under ``/hls`` (``poster`` null if no picture decoded), times unix ms,
``price`` the product's in the smallest currency unit, and ``sale`` the sku's open
flash sale in that room now (``{"id", "price", "remaining", "ends_at"}``) or null:
a client places an ``order`` for it over the room's WebSocket. See docs/media.md.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from livecommerce.backends import CLIP_CURSOR, Clip, open_clip_store
from livecommerce.http.keys import BACKENDS, CLIPS, SERVICE, SETTINGS
from livecommerce.http.routes import json_response, query_int, query_str, room_id
from livecommerce.inventory.rules import Sale

"""The clip store."""
SKU = re.compile(r".{1,64}", re.DOTALL)
FEED_LIMIT = 20
FEED_MAX = 100


def _sale(sales: list[Sale], sku: str, now_ms: int) -> dict[str, Any] | None:
    """The sku's open sale (the one ending last, if several), as a clip shows it."""
    open_ = [s for s in sales if s.sku == sku and s.status == "active" and s.ends_at > now_ms]
    if not open_:
        return None
    sale = max(open_, key=lambda s: s.ends_at)
    return {
        "id": sale.id,
        "price": sale.price,
        "remaining": sale.remaining,
        "ends_at": sale.ends_at,
    }


async def _public(request: web.Request, clips: list[Clip]) -> list[dict[str, Any]]:
    """The clips as the API shows them, with each room's open sales read once."""
    inventory = request.app[BACKENDS].inventory
    currency = request.app[SETTINGS].currency
    now = request.app[SERVICE].now_ms()
    sales: dict[str, list[Sale]] = {}
    for room in {c.room for c in clips}:
        sales[room] = await inventory.active_sales(room)
    return [
        {
            "id": c.id,
            "room": c.room,
            "sku": c.sku,
            "title": c.title,
            "price": c.price,
            "currency": currency,
            "image": c.image,
            "started_at": c.started_at,
            "ended_at": c.ended_at,
            "duration_s": c.duration_s,
            "playlist": c.playlist,
            "poster": c.poster_path,
            "sale": _sale(sales[c.room], c.sku, now),
        }
        for c in clips
    ]


async def room_clips(request: web.Request) -> web.Response:
    """``GET /api/rooms/{room}/clips[?sku=]``."""
    room = await request.app[SERVICE].room(room_id(request))
    sku = query_str(request, "sku", pattern=SKU, what="1 to 64 characters")
    clips = await request.app[CLIPS].room_clips(room.id, sku=sku)
    return json_response({"clips": await _public(request, clips)})


async def feed(request: web.Request) -> web.Response:
    """``GET /api/clips?limit=&cursor=``: the shoppable feed, newest first."""
    limit = query_int(request, "limit", default=FEED_LIMIT, lo=1, hi=FEED_MAX)
    cursor = query_str(
        request, "cursor", pattern=CLIP_CURSOR, what="pass the 'next' of the previous page"
    )
    clips, after = await request.app[CLIPS].feed(limit, cursor)
    return json_response({"clips": await _public(request, clips), "next": after})


async def clips_ctx(app: web.Application) -> AsyncIterator[None]:
    """The clip store (memory, or Redis with its own connections)."""
    async with open_clip_store(app[SETTINGS]) as store:
        app[CLIPS] = store
        yield


def setup(app: web.Application) -> None:
    """Add the clip routes and the store's context (before the media context, which
    records clips into it and must close first)."""
    app.router.add_get("/api/rooms/{room}/clips", room_clips)
    app.router.add_get("/api/clips", feed)
    app.cleanup_ctx.append(clips_ctx)
