"""The sandbox shop: the demo's order system, in process.

With no ``--order-webhook-url``, the bridge hands each ``order.held`` webhook to this
shop instead of posting it; the shop checks the signature as a real one would, keeps the
order, and answers with its checkout page. The page's buttons send signed callbacks
(``order.paid``, ``order.cancelled``) through the same handler as
``POST /api/orders/events``.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from livecommerce.errors import Error
from livecommerce.orders.webhooks import envelope, sign, verify
from livecommerce.protocol import dumps, loads

Callback = Callable[[bytes, Mapping[str, str]], Awaitable[tuple[int, dict[str, Any]]]]


def checkout_path(order_id: str) -> str:
    """The sandbox checkout page of an order (relative to the server)."""
    return f"/sandbox/checkout/{order_id}"


class SandboxShop:
    """Receives webhooks and sends callbacks, signed with ``key``."""

    def __init__(
        self, key: bytes, callback: Callback, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._key = key
        self._callback = callback
        self._clock = clock
        self.orders: dict[str, dict[str, Any]] = {}
        self.deliveries: Counter[str] = Counter()

    async def receive(self, body: bytes, headers: Mapping[str, str]) -> tuple[int, bytes]:
        """Take one ``order.held`` webhook (the bridge's transport, or its HTTP route)."""
        try:
            verify(self._key, headers, body, now=self._clock())
            doc = loads(body)
            data = doc["data"]
            oid = data["id"]
            if doc.get("type") != "order.held" or not isinstance(oid, str):
                raise ValueError("not an order.held webhook")
        except Error as err:
            return 401, dumps({"error": err.message})
        except (ValueError, KeyError, TypeError) as exc:
            return 400, dumps({"error": str(exc)})
        self.deliveries[oid] += 1
        self.orders.setdefault(oid, data)
        return 200, dumps({"payment_url": checkout_path(oid)})

    async def report(self, order_id: str, kind: str) -> tuple[int, dict[str, Any]]:
        """What the checkout page's buttons do: a signed ``order.<kind>`` callback."""
        now = self._clock()
        body = envelope(f"order.{kind}", {"order_id": order_id}, now)
        headers = sign(self._key, f"sandbox-{kind}-{order_id}", int(now), body)
        return await self._callback(body, headers)
