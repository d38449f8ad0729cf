"""Group buys: the pure rules (issue 14), examples and a Hypothesis state machine."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from livecommerce.errors import Error
from livecommerce.promotions.groups import Deal, GroupBook, new_deal

NOW = 1_800_000_000_000


def deal(**kw: Any) -> Deal:
    fields: dict[str, Any] = {
        "deal_id": "d1",
        "room": "demo",
        "product": ("mug-01", "Blue mug", 1800),
        "price": 1200,
        "size": 3,
        "window_minutes": 10,
        "stock": 30,
        "now": NOW,
    }
    fields.update(kw)
    return new_deal(**fields)


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"price": 1801}, "price"),
        ({"price": -1}, "price"),
        ({"size": 1}, "size"),
        ({"size": 51}, "size"),
        ({"window_minutes": 0}, "window_minutes"),
        ({"window_minutes": 1441}, "window_minutes"),
        ({"stock": 2}, "stock"),  # less than one group
        ({"stock": 1.5}, "stock"),
    ],
)
def test_every_field_is_checked(fields: dict[str, Any], says: str) -> None:
    with pytest.raises(Error) as info:
        deal(**fields)
    assert info.value.code == "bad_request" and says in info.value.message


def test_a_deal_round_trips_and_says_what_it_is() -> None:
    d = deal()
    assert Deal.from_record(d.to_record()) == d
    assert d.public()["remaining"] == 30 and d.window_s == 600


def test_a_group_fills_with_its_last_member() -> None:
    book = GroupBook()
    book.start(deal())
    opened = book.open("d1", "g1", "ana", NOW)
    assert opened.refused is None and opened.group is not None
    assert opened.group.members == ["ana"] and opened.group.needed == 2
    assert book.open("d1", "g2", "ana", NOW).refused == "already_in_group"
    assert book.join("g1", "ana", NOW).refused is None  # in already: the same answer
    assert not book.join("g1", "bo", NOW).filled
    last = book.join("g1", "cy", NOW)
    assert last.filled and last.group is not None and last.group.status == "filled"
    assert book.join("g1", "dee", NOW).refused == "group_closed"
    assert book.deals["d1"].remaining == 27
    assert book.open("d1", "g3", "ana", NOW).refused is None  # filled: free to go again


def test_a_group_short_at_the_end_fails_and_gives_the_units_back() -> None:
    book = GroupBook()
    book.start(deal(stock=3))
    book.open("d1", "g1", "ana", NOW)
    book.join("g1", "bo", NOW)
    assert book.open("d1", "g2", "cy", NOW).refused is None
    assert book.open("d1", "g3", "dee", NOW).refused == "sold_out"
    assert book.join("g1", "eve", NOW + 600_000).refused == "group_closed"
    failed = book.expire_due(NOW + 600_000)
    assert {g.id for g in failed} == {"g1", "g2"} and book.deals["d1"].remaining == 3
    assert book.open("d1", "g4", "ana", NOW + 600_000).refused is None


def test_full_and_stopped() -> None:
    book = GroupBook()
    book.start(deal(size=2))
    book.open("d1", "g1", "ana", NOW)
    book.join("g1", "bo", NOW)
    assert book.join("g1", "cy", NOW).refused == "group_closed"  # filled
    book.stop("d1")
    assert book.open("d1", "g2", "cy", NOW).refused == "group_closed"
    assert book.stop("d1") is None


USERS = ["ana", "bo", "cy", "dee", "eve", "fay"]


class GroupMachine(RuleBasedStateMachine):
    """Any sequence of opens, joins, time and expiries: units are never oversold or
    lost, a user is in one forming group per deal, a filled group has exactly its size."""

    @initialize(size=st.integers(2, 4), stock=st.integers(4, 10))
    def begin(self, size: int, stock: int) -> None:
        self.book = GroupBook()
        self.book.start(deal(size=size, stock=stock))
        self.now = NOW
        self.n = 0

    @rule(user=st.sampled_from(USERS))
    def open(self, user: str) -> None:
        self.n += 1
        self.book.open("d1", f"g{self.n}", user, self.now)

    @rule(user=st.sampled_from(USERS), pick=st.integers(0, 20))
    def join(self, user: str, pick: int) -> None:
        ids = sorted(self.book.groups)
        if ids:
            self.book.join(ids[pick % len(ids)], user, self.now)

    @rule(ms=st.integers(0, 400_000))
    def time_passes(self, ms: int) -> None:
        self.now += ms

    @rule()
    def expire(self) -> None:
        for g in self.book.expire_due(self.now):
            assert g.status == "failed" and len(g.members) < g.size

    @invariant()
    def units_add_up(self) -> None:
        if not hasattr(self, "book"):
            return
        d = self.book.deals["d1"]
        held = sum(
            len(g.members) for g in self.book.groups.values() if g.status in ("forming", "filled")
        )
        assert d.remaining >= 0 and d.remaining + held == d.stock
        forming_of: dict[str, int] = {}
        for g in self.book.groups.values():
            assert len(g.members) <= g.size and len(set(g.members)) == len(g.members)
            if g.status == "filled":
                assert len(g.members) == g.size
            if g.status == "forming":
                for m in g.members:
                    forming_of[m] = forming_of.get(m, 0) + 1
        assert all(n == 1 for n in forming_of.values())


TestGroupMachine = GroupMachine.TestCase
