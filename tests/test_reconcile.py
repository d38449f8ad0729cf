"""``livecommerce orders reconcile``: what disagrees between our orders and the shop's."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from livecommerce.backends import make_backends
from livecommerce.config import Settings
from livecommerce.inventory.rules import Attempt, Order, Sale, order_id
from livecommerce.orders.tools import HOLD_GRACE_MS, differences
from livecommerce.protocol import encode_event
from tests.conftest import ID_KEY, ROOT, SECRET

NOW = 1_800_000_000_000
RECONCILE = [sys.executable, "-m", "livecommerce", "orders", "reconcile"]


def an_order(oid: str, status: str, expires_at: int = NOW + 60_000) -> Order:
    return Order(oid, "r1", "s1", "sku", "Mug", "u", 1, 100, "k", status, NOW, expires_at)  # type: ignore[arg-type]


def kinds(rows: list[dict[str, object]]) -> list[tuple[object, object]]:
    return sorted((r["order_id"], r["kind"]) for r in rows)


def test_differences_without_the_shops_export() -> None:
    orders = [
        an_order("r1.a", "held"),
        an_order("r1.b", "expired"),
        an_order("r1.c", "held", expires_at=NOW - HOLD_GRACE_MS - 1),
        an_order("r1.d", "paid"),
    ]
    found = differences(
        orders, dead={"r1.a": "HTTP 500"}, late={"r1.b": NOW}, shop=None, now_ms=NOW
    )
    assert kinds(found) == [
        ("r1.a", "not_delivered"),
        ("r1.b", "paid_after_expiry"),
        ("r1.c", "hold_not_released"),
    ]


def test_differences_with_the_shops_export() -> None:
    orders = [an_order("r1.a", "paid"), an_order("r1.b", "held"), an_order("r1.c", "expired")]
    shop = {"r1.a": "refunded", "r1.c": "cancelled", "r1.z": "paid"}
    found = differences(orders, dead={}, late={}, shop=shop, now_ms=NOW)
    assert kinds(found) == [
        ("r1.a", "status_mismatch"),
        ("r1.b", "unknown_to_shop"),
        ("r1.z", "unknown_here"),
    ]


@pytest.mark.redis
async def test_the_command_reads_the_servers_redis(redis_url: str, tmp_path: Path) -> None:
    settings = Settings(redis_url=redis_url, secret=SECRET)
    async with make_backends(settings) as b:
        past = 1_700_000_000_000  # 2023: every hold is long past its window now
        sale = Sale("s1", "r1", "sku", "Mug", 100, 10, 5, past, past + 60_000)
        await b.inventory.start_sale(sale, encode_event("sale.started", "r1", past, {}))
        attempts = [Attempt(order_id("r1", u, "k", ID_KEY), u, "k", 1) for u in ("u1", "u2")]
        outs = await b.inventory.reserve("r1", "s1", attempts, now_ms=past, hold_ms=60_000)
        paid, held = (o.order.id for o in outs if o.order is not None)
        await b.inventory.settle(paid, "paid", event_id=None, now_ms=past)
    export = tmp_path / "shop.jsonl"
    export.write_text(json.dumps({"order_id": paid, "status": "paid"}) + "\n")

    def run(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*RECONCILE, "--redis-url", redis_url, *extra],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
        )

    done = run("--shop-export", str(export))
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    # the held order expired long ago by the wall clock: not released, unknown to the shop
    assert done.returncode == 1, done.stderr
    assert kinds(rows) == [(held, "hold_not_released"), (held, "unknown_to_shop")]
    assert "2 orders checked, 2 differences" in done.stderr
    export.write_text("not json\n")
    assert run("--shop-export", str(export)).returncode == 2
