"""Typed application state (``web.AppKey``), one key per resource."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from aiohttp import web

from livecommerce.backends import Backends
from livecommerce.config import Settings
from livecommerce.rooms.hub import Hub
from livecommerce.rooms.service import RoomService

if TYPE_CHECKING:
    from livecommerce.http.ws import Connection

SETTINGS = web.AppKey("settings", Settings)
SECRET = web.AppKey("secret", str)
"""The token secret in force (the configured one, or a throwaway one in demo mode)."""
BACKENDS = web.AppKey("backends", Backends)
HUB = web.AppKey("hub", Hub)
SERVICE = web.AppKey("service", RoomService)
CONNECTIONS: web.AppKey[set[Connection]] = web.AppKey("connections")
METRICS = web.AppKey("metrics", Counter[str])
READY = web.AppKey("ready", list[bool])
"""One element, True once every resource is up (``/healthz``)."""
