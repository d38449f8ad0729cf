"""Social-commerce mechanics of a live room: live coupons, giveaways (with their
provably fair draws), group buys and live auctions. Pure rules; their stores are in
``backends``."""

from __future__ import annotations

from typing import Any

from livecommerce.errors import Error


def whole(name: str, v: Any, lo: int, hi: int) -> int:
    """``v`` if it is an integer from ``lo`` to ``hi``.

    Raises:
        Error: ``bad_request``, naming the field and its bounds.
    """
    if type(v) is not int or not lo <= v <= hi:
        raise Error("bad_request", f"{name} must be an integer from {lo} to {hi}")
    return v
