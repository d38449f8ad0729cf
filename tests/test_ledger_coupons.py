"""Spending coupons on orders: a Hypothesis state machine over the flash-sale ledger
with coupons (issue 14), through the memory engine's stores (the Redis engine runs the
same rules in its scripts, checked against it by the contract and WS suites).

Any sequence of claims, orders (no coupon, a coupon by id, or "best"), payments,
cancellations and expiries keeps: a user never has more claims spent than claimed; a
claim is spent by exactly the user's orders that carry the coupon and were held, paid
or refunded (it is given back when a hold expires or is cancelled, not by a refund of
a paid order: the coupon was used); a discount is the coupon's
for the order's total, never more than the total; the sale's units add up."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from livecommerce.backends.memory import (
    MemoryCounters,
    MemoryCouponStore,
    MemoryEventLog,
    MemoryInventoryStore,
    MemoryOutboxStore,
)
from livecommerce.inventory.rules import BEST, Attempt, Sale
from tests.test_coupon_rules import NOW, drop

T = TypeVar("T")
USERS = ["ana", "bo", "cy"]
HOLD_MS = 60_000


def run(work: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(work)


class LedgerWithCoupons(RuleBasedStateMachine):
    @initialize(
        kind=st.sampled_from(["amount", "percent"]),
        min_total=st.sampled_from([0, 2000]),
        per_user=st.integers(1, 2),
    )
    def begin(self, kind: str, min_total: int, per_user: int) -> None:
        self.coupons = MemoryCouponStore()
        self.store = MemoryInventoryStore(
            MemoryEventLog(history_size=100, recent_size=10),
            MemoryOutboxStore(),
            MemoryCounters(),
            self.coupons,
        )
        value = 300 if kind == "amount" else 20
        coupon = drop(kind=kind, value=value, min_total=min_total or None, quantity=5,
                      per_user=per_user)  # fmt: skip
        run(self.coupons.drop(coupon))
        sale = Sale("s1", "demo", "mug-01", "Mug", 1200, 12, 3, NOW, NOW + 3_600_000)
        run(self.store.start_sale(sale, b'{"type":"sale.started"}'))
        self.now = NOW
        self.n = 0

    @rule(user=st.sampled_from(USERS))
    def claim(self, user: str) -> None:
        run(self.coupons.claim("demo", "c1", user, self.now))

    @rule(user=st.sampled_from(USERS), qty=st.integers(1, 3), how=st.sampled_from(["", "c1", BEST]))
    def order(self, user: str, qty: int, how: str) -> None:
        self.n += 1
        attempt = Attempt(f"demo.{self.n:020d}", user, f"k{self.n}", qty, how or None)
        (out,) = run(self.store.reserve("demo", "s1", [attempt], now_ms=self.now, hold_ms=HOLD_MS))
        if out.order is not None and out.order.coupon is not None:
            coupon = self.coupons.book("demo").coupons["c1"]
            total = out.order.price * out.order.qty
            assert out.order.discount == coupon.discount(sku="mug-01", total=total)
            assert 0 < out.order.discount <= total
        if how == "c1" and out.order is None:
            assert out.error is not None

    @rule(pick=st.integers(0, 50), what=st.sampled_from(["pay", "cancel", "refund"]))
    def settle(self, pick: int, what: str) -> None:
        orders = run(self.store.orders("demo"))
        if orders:
            order = orders[pick % len(orders)]
            kind = {"pay": "paid", "cancel": "cancelled", "refund": "refunded"}[what]
            run(self.store.settle(order.id, kind, event_id=None, now_ms=self.now))  # type: ignore[arg-type]

    @rule(ms=st.integers(0, 90_000))
    def time_passes(self, ms: int) -> None:
        self.now += ms
        run(self.store.sweep("demo", self.now))

    @invariant()
    def claims_and_spends_agree(self) -> None:
        if not hasattr(self, "store"):
            return
        book = self.coupons.book("demo")
        orders = run(self.store.orders("demo"))
        for user in USERS:
            carrying = sum(
                1
                for o in orders
                if o.user == user and o.coupon == "c1" and o.status in ("held", "paid", "refunded")
            )
            spent = book.spent.get(("c1", user), 0)
            assert spent == carrying, (user, spent, carrying)
            assert 0 <= spent <= book.claims.get(("c1", user), 0)
        sale = run(self.store.sale("demo", "s1"))
        assert sale is not None and sale.remaining + sale.held + sale.sold == sale.stock


TestLedgerWithCoupons = LedgerWithCoupons.TestCase
TestLedgerWithCoupons.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
