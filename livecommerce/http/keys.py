"""Typed application state (``web.AppKey``), one key per resource."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING

from aiohttp import web

from livecommerce.auth import Principal
from livecommerce.backends import Backends, ClipStore
from livecommerce.config import Settings
from livecommerce.rooms.hub import Hub
from livecommerce.rooms.service import RoomService

if TYPE_CHECKING:
    from livecommerce.http.ws import Connection

SETTINGS = web.AppKey("settings", Settings)
SECRET = web.AppKey("secret", str)
"""The configured secret, or a throwaway one in demo mode: what order ids and the
sandbox's webhook key derive from."""
DEMO_SECRET = web.AppKey("demo_secret", str)
"""Demo mode: what the demo sign-in signs with (``auth.tokens.demo_secret``)."""
VERIFY: web.AppKey[Callable[[str, float], Principal]] = web.AppKey("verify")
"""``app[VERIFY](token, now)``: the principal of a token, by this server's rules."""
BACKENDS = web.AppKey("backends", Backends)
CLIPS: web.AppKey[ClipStore] = web.AppKey("clips")
HUB = web.AppKey("hub", Hub)
SERVICE = web.AppKey("service", RoomService)
CONNECTIONS: web.AppKey[set[Connection]] = web.AppKey("connections")
USER_CONNECTIONS = web.AppKey("user_connections", Counter[str])
"""Open WebSocket connections of each signed-in user in this process."""
METRICS = web.AppKey("metrics", Counter[str])
READY = web.AppKey("ready", list[bool])
"""One element, True once every resource is up (``/healthz``)."""
