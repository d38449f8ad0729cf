"""The order commands: ``livecommerce bridge`` and ``livecommerce orders reconcile``."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import sys
from typing import Any, TextIO

from livecommerce.backends import make_backends
from livecommerce.config import Settings
from livecommerce.errors import ConfigError
from livecommerce.inventory.rules import Order
from livecommerce.orders.bridge import HttpTransport, make_bridge
from livecommerce.orders.webhooks import webhook_key
from livecommerce.protocol import dumps, loads
from livecommerce.rooms.hub import Hub
from livecommerce.rooms.service import RoomService

log = logging.getLogger(__name__)

HOLD_GRACE_MS = 60_000
"""A hold this long past its expiry should have been released by a sweeper."""


async def bridge_main(settings: Settings) -> int:
    """Bridge workers on the server's Redis until SIGTERM or SIGINT."""
    assert settings.order_webhook_url is not None and settings.secret is not None
    async with make_backends(settings) as backends:
        hub = Hub(backends, node=f"bridge-{socket.gethostname()}", tick_s=0.05, presence_s=1.0)
        service = RoomService(settings, backends, hub)
        transport = HttpTransport(
            settings.order_webhook_url,
            timeout_s=settings.bridge_timeout_s,
            connections=settings.bridge_concurrency,
        )
        key = webhook_key(settings.order_webhook_secret, settings.secret)
        bridge = make_bridge(backends.outbox, transport, key, service.delivered, settings)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, bridge.stop)
        print(f"bridge {bridge.consumer} delivering to {transport.url}", flush=True)
        try:
            await bridge.run()
        finally:
            await transport.close()
            await hub.close()
        log.info("bridge stopped: %d delivered, %d buried", bridge.delivered, bridge.buried)
    return 0


# Our statuses, and the shop statuses that agree with each.
_AGREES = {
    "held": {"held", "pending", "created", "awaiting_payment"},
    "paid": {"paid"},
    "expired": {"expired", "cancelled"},
    "cancelled": {"cancelled", "expired"},
    "refunded": {"refunded"},
}


def _load_export(path: str) -> dict[str, str]:
    """``order_id`` -> ``status`` from the shop's JSON lines."""
    shop: dict[str, str] = {}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = loads(line)
                shop[str(row["order_id"])] = str(row["status"])
            except (ValueError, KeyError, TypeError) as exc:
                raise ConfigError(f"{path}:{n}: want {{order_id, status}}: {exc}") from exc
    return shop


def differences(
    orders: list[Order],
    *,
    dead: dict[str, str],
    late: dict[str, int],
    shop: dict[str, str] | None,
    now_ms: int,
) -> list[dict[str, Any]]:
    """What does not agree, one dict per difference (``kind`` says which).

    - ``not_delivered``: the bridge gave up on the order (a dead letter).
    - ``paid_after_expiry``: the shop reported a payment for a hold that had expired;
      the units went back on sale, so the shop must refund it.
    - ``hold_not_released``: still held well past its expiry (is a sweeper running?).
    - with the shop's export: ``unknown_to_shop`` (we hold or sold it, the shop has no
      such order), ``status_mismatch``, and ``unknown_here`` (the shop has an order id we
      do not).
    """
    out: list[dict[str, Any]] = []
    for o in orders:
        base = {"order_id": o.id, "room": o.room, "status": o.status}
        if o.id in dead:
            out.append({**base, "kind": "not_delivered", "reason": dead[o.id]})
        if o.id in late:
            out.append({**base, "kind": "paid_after_expiry", "at": late[o.id]})
        if o.status == "held" and o.expires_at + HOLD_GRACE_MS < now_ms:
            out.append({**base, "kind": "hold_not_released", "expires_at": o.expires_at})
        if shop is None:
            continue
        theirs = shop.get(o.id)
        if theirs is None:
            if o.status in ("held", "paid") and o.id not in dead:
                out.append({**base, "kind": "unknown_to_shop"})
        elif theirs not in _AGREES[o.status] and o.id not in late:
            out.append({**base, "kind": "status_mismatch", "shop_status": theirs})
    if shop is not None:
        ours = {o.id for o in orders}
        out += [
            {"order_id": oid, "kind": "unknown_here", "shop_status": status}
            for oid, status in sorted(shop.items())
            if oid not in ours
        ]
    return out


async def reconcile_main(
    settings: Settings,
    rooms: list[str] | None,
    shop_export: str | None,
    *,
    out: TextIO = sys.stdout,
    now_ms: int | None = None,
) -> int:
    """Print the differences as JSON lines, a summary on stderr; 1 if any."""
    import time

    shop = _load_export(shop_export) if shop_export else None
    async with make_backends(settings) as backends:
        inventory = backends.inventory
        dead = {
            d.fields.get("id", ""): d.reason
            for d in await backends.outbox.dead_letters(limit=1_000_000)
        }
        orders: list[Order] = []
        late: dict[str, int] = {}
        for room in rooms or await backends.outbox.rooms():
            orders += await inventory.orders(room)
            late.update(await inventory.late_payments(room))
    if shop is not None and rooms:
        shop = {k: v for k, v in shop.items() if k.partition(".")[0] in rooms}
    now = now_ms if now_ms is not None else int(time.time() * 1000)
    found = differences(orders, dead=dead, late=late, shop=shop, now_ms=now)
    for row in found:
        out.write(dumps(row).decode() + "\n")
    print(f"{len(orders)} orders checked, {len(found)} differences", file=sys.stderr)
    return 1 if found else 0
