"""Live auctions: the pure rules (issue 14), examples and a Hypothesis state machine."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from livecommerce.errors import Error
from livecommerce.promotions.auctions import (
    DEFAULT_BANDS,
    Auction,
    AuctionBook,
    increment,
    new_auction,
    place_bid,
    replay,
)

NOW = 1_800_000_000_000


def lot(**kw: Any) -> Auction:
    fields: dict[str, Any] = {
        "auction_id": "demo.a1",
        "room": "demo",
        "product": ("mug-01", "Blue mug"),
        "seller": "host1",
        "start_bid": 1000,
        "duration_s": 60,
        "extend_s": None,
        "max_extensions": None,
        "increments": None,
        "now": NOW,
    }
    fields.update(kw)
    return new_auction(**fields)


def test_the_default_increments_by_price_band() -> None:
    assert [increment(DEFAULT_BANDS, p) for p in (0, 100, 2999, 3000, 4999, 5000)] == [
        100, 100, 100, 200, 200, 300,
    ]  # fmt: skip
    assert [increment(DEFAULT_BANDS, p) for p in (10_000, 30_000, 100_000, 200_000, 10**9)] == [
        500, 1000, 2000, 5000, 5000,
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"start_bid": 0}, "start_bid"),
        ({"duration_s": 9}, "duration_s"),
        ({"duration_s": 301}, "duration_s"),
        ({"extend_s": 61}, "extend_s"),
        ({"max_extensions": -1}, "max_extensions"),
        ({"increments": []}, "increments"),
        ({"increments": [[100, 5]]}, "increments"),  # the first band must start at 0
        ({"increments": [[0, 0]]}, "increments"),
        ({"increments": [[0, 5], [0, 7]]}, "increments"),
        ({"increments": [[0, 5], [500]]}, "increments"),
    ],
)
def test_every_field_is_checked(fields: dict[str, Any], says: str) -> None:
    with pytest.raises(Error) as info:
        lot(**fields)
    assert info.value.code == "bad_request" and says in info.value.message


def test_a_lot_round_trips() -> None:
    a = lot(increments=[[0, 50], [2000, 100]], max_extensions=3)
    assert Auction.from_record(a.to_record()) == a
    assert a.public()["min_bid"] == 1000 and a.public()["leader"] is None


def test_bids_proxies_and_the_price() -> None:
    a = lot()
    assert place_bid(a, user="ana", name="Ana", amount=999, ceiling=0, now=NOW).refused == (
        "bid_too_low"
    )
    first = place_bid(a, user="ana", name="Ana", amount=1000, ceiling=5000, now=NOW)
    assert first.leading and (a.price, a.leader, a.leader_max) == (1000, "ana", 5000)
    assert a.min_bid() == 1100
    # bo bids 2000: ana's proxy answers at 2000 + 100 (bo's ceiling plus its increment)
    bo = place_bid(a, user="bo", name="Bo", amount=2000, ceiling=2000, now=NOW)
    assert not bo.leading and (a.price, a.leader) == (2100, "ana")
    # cy's proxy goes past ana's maximum: cy leads at ana's max plus its increment
    cy = place_bid(a, user="cy", name="Cy", amount=2200, ceiling=9000, now=NOW)
    assert cy.leading and (a.price, a.leader) == (5300, "cy")
    # the leader raising their maximum does not move the price
    place_bid(a, user="cy", name="Cy", amount=5600, ceiling=12000, now=NOW)
    assert (a.price, a.leader, a.leader_max) == (5300, "cy", 12000)
    # a tie goes to the earlier bid
    place_bid(a, user="dee", name="Dee", amount=12000, ceiling=12000, now=NOW)
    assert (a.price, a.leader) == (12000, "cy")
    assert a.bids == 5


def test_anti_sniping_sets_the_clock_back_with_a_cap() -> None:
    a = lot(extend_s=10, max_extensions=1)
    late = NOW + 55_000  # in the last 10 seconds
    got = place_bid(a, user="ana", name="Ana", amount=1000, ceiling=1000, now=late)
    assert got.extended and a.ends_at == late + 10_000 and a.extensions == 1
    again = place_bid(a, user="bo", name="Bo", amount=1100, ceiling=1100, now=late + 9_000)
    assert not again.extended and a.ends_at == late + 10_000  # the cap
    assert place_bid(
        a, user="cy", name="Cy", amount=5000, ceiling=5000, now=late + 10_000
    ).refused == ("auction_closed")


def test_sudden_death_never_extends() -> None:
    a = lot(extend_s=0)
    got = place_bid(a, user="ana", name="Ana", amount=1000, ceiling=1000, now=NOW + 59_999)
    assert not got.extended and a.ends_at == NOW + 60_000


def test_the_end_is_once_and_only_when_due() -> None:
    book = AuctionBook()
    assert book.start(lot())
    assert not book.start(lot(auction_id="demo.a2"))  # one lot at a time
    book.bid("demo.a1", user="ana", name="Ana", amount=1000, ceiling=1000, now=NOW)
    assert book.end("demo.a1", NOW + 59_999) is None
    ended = book.end("demo.a1", NOW + 60_000)
    assert ended is not None and ended.status == "ended" and book.current is None
    assert book.end("demo.a1", NOW + 70_000) is None
    assert book.start(lot(auction_id="demo.a2"))


USERS = ["ana", "bo", "cy", "dee"]


class AuctionMachine(RuleBasedStateMachine):
    """Any sequence of bids (plain and proxy) and time: the price never falls, never
    passes the leader's maximum, every accepted bid is logged, and replaying the log
    gives the price and leader."""

    @initialize(extend=st.sampled_from([0, 10]), cap=st.sampled_from([None, 0, 2]))
    def begin(self, extend: int, cap: int | None) -> None:
        self.book = AuctionBook()
        self.book.start(lot(extend_s=extend, max_extensions=cap))
        self.now = NOW

    @rule(user=st.sampled_from(USERS), over=st.integers(0, 3000), proxy=st.integers(0, 5000))
    def bid(self, user: str, over: int, proxy: int) -> None:
        a = self.book.auctions["demo.a1"]
        before, ends_before = a.price, a.ends_at
        amount = a.min_bid() + over
        got = self.book.bid(
            "demo.a1", user=user, name=user.title(), amount=amount, ceiling=amount + proxy,
            now=self.now,
        )  # fmt: skip
        if got.refused is None:
            assert a.price >= before and a.price <= a.leader_max
            assert a.ends_at >= ends_before
        else:
            assert got.refused == "auction_closed" and self.now >= a.ends_at

    @rule(ms=st.integers(0, 30_000))
    def time_passes(self, ms: int) -> None:
        self.now += ms

    @invariant()
    def the_log_replays(self) -> None:
        if not hasattr(self, "book"):
            return
        a = self.book.auctions["demo.a1"]
        log = self.book.logs["demo.a1"]
        assert len(log) == a.bids
        assert [b.seq for b in log] == list(range(1, len(log) + 1))
        if log:
            assert replay(a, log) == (a.price, a.leader)
            assert (log[-1].price, log[-1].leader) == (a.price, a.leader)


TestAuctionMachine = AuctionMachine.TestCase
