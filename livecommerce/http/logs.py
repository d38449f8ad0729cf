"""The access log: one line per request, with nothing in it that acts for someone.

A path can carry a capability: an order id (its checkout page, ``/api/orders/{id}``) or
a WebRTC session id (its URL ends the session). Those segments are written as ``…``;
the query string and the client's address are left out (personal data, and cursors).
"""

from __future__ import annotations

import logging
import re

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

log = logging.getLogger("livecommerce.access")

_SECRET_SEGMENTS = re.compile(
    r"(?<=/sandbox/checkout/)[^/?]+"
    r"|(?<=/api/orders/)(?!events\b)[^/?]+"
    r"|(?<=/whip/)[^/?]+|(?<=/whep/)[^/?]+"
)


def redact(path: str) -> str:
    """``path`` with its order and session ids written as ``…``."""
    return _SECRET_SEGMENTS.sub("…", path)


class AccessLogger(AbstractAccessLogger):
    """``GET /api/orders/… 200 512 0.004s``: method, redacted path, status, size, time."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info(
            "%s %s %d %d %.3fs",
            request.method,
            redact(request.path),
            response.status,
            response.body_length,
            time,
        )
