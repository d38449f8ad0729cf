"""One error tree for the whole server.

The pure core raises :class:`Error` with one of the protocol's error codes; the edges
(the WebSocket endpoint and the HTTP routes) translate it into a reply or a response.
"""

from __future__ import annotations

from typing import Final, Literal

ErrorCode = Literal[
    "unauthorized",
    "forbidden",
    "bad_request",
    "not_found",
    "conflict",
    "too_large",
    "rate_limited",
    "muted",
    "banned",
    "slow_mode",
    "blocked_content",
    "room_not_live",
    "sale_not_active",
    "sold_out",
    "limit_exceeded",
    "coupon_ended",
    "coupon_not_applicable",
    "not_eligible",
    "giveaway_closed",
    "group_full",
    "group_closed",
    "bid_too_low",
    "auction_closed",
    "internal",
]

HTTP_STATUS: Final[dict[str, int]] = {
    "unauthorized": 401,
    "forbidden": 403,
    "bad_request": 400,
    "not_found": 404,
    "conflict": 409,
    "too_large": 413,
    "rate_limited": 429,
    "muted": 403,
    "banned": 403,
    "slow_mode": 429,
    "blocked_content": 400,
    "room_not_live": 409,
    "sale_not_active": 409,
    "sold_out": 409,
    "limit_exceeded": 409,
    "coupon_ended": 409,
    "coupon_not_applicable": 409,
    "not_eligible": 403,
    "giveaway_closed": 409,
    "group_full": 409,
    "group_closed": 409,
    "bid_too_low": 409,
    "auction_closed": 409,
    "internal": 500,
}


class Error(Exception):
    """A refusal the client is told about, with a protocol error code.

    Args:
        code: one of the protocol's error codes.
        message: a human-readable explanation; never contains secrets.
        data: optional structured detail (for example ``{"until": ms}`` for ``muted``).
    """

    def __init__(self, code: ErrorCode, message: str, *, data: dict[str, object] | None = None):
        super().__init__(message)
        self.code: ErrorCode = code
        self.message = message
        self.data = data

    @property
    def status(self) -> int:
        """The HTTP status that fits this error."""
        return HTTP_STATUS[self.code]

    def __repr__(self) -> str:
        return f"Error({self.code!r}, {self.message!r})"


class ConfigError(Exception):
    """The server's settings cannot work; raised before anything starts."""
