"""Live coupons: the pure rules (issue 14), examples and a Hypothesis state machine."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from livecommerce.errors import Error
from livecommerce.promotions.coupons import Coupon, CouponBook, new_coupon

NOW = 1_800_000_000_000


def drop(**kw: Any) -> Coupon:
    fields: dict[str, Any] = {
        "coupon_id": "c1",
        "room": "demo",
        "kind": "amount",
        "value": 300,
        "min_total": None,
        "skus": None,
        "quantity": 10,
        "per_user": None,
        "minutes": None,
        "until": None,
        "watch_minutes": None,
        "now": NOW,
    }
    fields.update(kw)
    return new_coupon(**fields)


def test_a_drop_with_defaults() -> None:
    c = drop()
    assert (c.per_user, c.min_total, c.skus, c.ends_at, c.watch_s) == (1, 0, (), 0, 0)
    assert c.public()["remaining"] == 10
    timed = drop(minutes=15, watch_minutes=2, skus=["mug-01", "mug-01"])
    assert timed.ends_at == NOW + 15 * 60_000 and timed.watch_s == 120
    assert timed.skus == ("mug-01",)
    assert Coupon.from_record(timed.to_record()) == timed


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("kind", "free"),
        ("value", 0),
        ("value", "300"),
        ("value", True),
        ("quantity", 0),
        ("quantity", 1_000_001),
        ("per_user", 0),
        ("per_user", 101),
        ("minutes", 0),
        ("minutes", 24 * 60 + 1),
        ("until", NOW),
        ("watch_minutes", -1),
        ("skus", "mug-01"),
        ("skus", [""]),
        ("min_total", -1),
    ],
)
def test_bad_drops_are_refused_with_the_rule(field: str, value: Any) -> None:
    with pytest.raises(Error) as refused:
        drop(**{field: value})
    assert refused.value.code == "bad_request"
    assert field in refused.value.message or "kind" in refused.value.message


def test_percent_is_5_to_90_and_window_is_minutes_or_until() -> None:
    for bad in (4, 91):
        with pytest.raises(Error, match="from 5 to 90"):
            drop(kind="percent", value=bad)
    assert drop(kind="percent", value=90).value == 90
    with pytest.raises(Error, match="not both"):
        drop(minutes=5, until=NOW + 600_000)
    assert drop(until=NOW + 600_000).ends_at == NOW + 600_000


def test_the_discount_and_why_a_coupon_does_not_apply() -> None:
    off = drop(value=300, min_total=2000, skus=["mug-01"])
    assert off.discount(sku="mug-01", total=2500) == 300
    with pytest.raises(Error, match="at least 2000") as refused:
        off.discount(sku="mug-01", total=1999)
    assert refused.value.code == "coupon_not_applicable"
    with pytest.raises(Error, match="mug-01"):
        off.discount(sku="tee-02", total=5000)
    pct = drop(kind="percent", value=15)
    assert pct.discount(sku="any", total=1999) == 299  # rounded down
    assert drop(value=5000).discount(sku="x", total=1800) == 1800  # never below zero


def test_claims_stop_at_the_quantity_and_the_per_user_limit() -> None:
    book = CouponBook()
    assert book.drop(drop(quantity=3, per_user=2))
    assert not book.drop(drop(quantity=3))  # the id is taken
    assert book.claim("c1", "u1", NOW).mine == 1
    assert book.claim("c1", "u1", NOW).mine == 2
    assert book.claim("c1", "u1", NOW).refused == "limit_exceeded"
    assert book.claim("c1", "u2", NOW).mine == 1
    assert book.claim("c1", "u3", NOW).refused == "sold_out"
    assert book.claim("nope", "u3", NOW).refused == "not_found"
    assert book.due(NOW) == ["c1"]  # every one claimed: the sweeper ends it
    with pytest.raises(Error) as refused:
        book.claim("c1", "u3", NOW).result()
    assert refused.value.code == "sold_out"


def test_a_coupon_ends_with_its_window_or_when_stopped() -> None:
    book = CouponBook()
    book.drop(drop(minutes=1))
    assert book.claim("c1", "u1", NOW + 59_999).refused is None
    assert book.claim("c1", "u2", NOW + 60_000).refused == "coupon_ended"
    assert book.due(NOW + 60_000) == ["c1"]
    ended = book.end("c1", "expired")
    assert ended is not None and ended.reason == "expired"
    assert book.end("c1", "stopped") is None  # once


USERS = [f"u{i}" for i in range(5)]


class CouponMachine(RuleBasedStateMachine):
    """Any sequence of claims and ends: never more claims than the quantity, never more
    than per_user for one user, and nothing claimed once ended."""

    @initialize(quantity=st.integers(1, 8), per_user=st.integers(1, 3))
    def start(self, quantity: int, per_user: int) -> None:
        self.book = CouponBook()
        self.book.drop(drop(quantity=quantity, per_user=per_user, minutes=10))
        self.granted: dict[str, int] = {}
        self.now = NOW

    @rule(user=st.sampled_from(USERS))
    def claim(self, user: str) -> None:
        coupon = self.book.coupons["c1"]
        was_open = coupon.open_at(self.now)
        before = coupon.claimed
        got = self.book.claim("c1", user, self.now)
        if got.refused is None:
            assert was_open
            self.granted[user] = self.granted.get(user, 0) + 1
            assert coupon.claimed == before + 1
        else:
            assert coupon.claimed == before

    @rule(ms=st.integers(0, 4 * 60_000))
    def time_passes(self, ms: int) -> None:
        self.now += ms

    @rule()
    def stop(self) -> None:
        self.book.end("c1", "stopped")

    @invariant()
    def counts_hold(self) -> None:
        coupon = self.book.coupons["c1"]
        assert 0 <= coupon.claimed <= coupon.quantity
        assert sum(self.granted.values()) == coupon.claimed
        assert all(n <= coupon.per_user for n in self.granted.values())
        assert {u: n for (_, u), n in self.book.claims.items()} == self.granted


TestCouponMachine = CouponMachine.TestCase
