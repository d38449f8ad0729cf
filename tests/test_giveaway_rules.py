"""Giveaways: the pure rules (issue 14), examples and a Hypothesis state machine."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from livecommerce.errors import Error
from livecommerce.promotions import draws
from livecommerce.promotions.giveaways import (
    Giveaway,
    GiveawayBook,
    eligible,
    new_giveaway,
    says_keyword,
)

NOW = 1_800_000_000_000
SEED = bytes(range(32))


def start(**kw: Any) -> Giveaway:
    fields: dict[str, Any] = {
        "giveaway_id": "demo.g1",
        "room": "demo",
        "prize": "A signed mug",
        "product": None,
        "count": 1,
        "duration_s": 60,
        "entry": "button",
        "keyword": None,
        "verified_only": None,
        "watch_minutes": None,
        "seed": SEED,
        "now": NOW,
    }
    fields.update(kw)
    return new_giveaway(**fields)


def test_a_start_with_defaults_publishes_the_commitment_not_the_seed() -> None:
    g = start()
    assert (g.count, g.entry, g.keyword, g.watch_s, g.verified_only) == (1, "button", "", 0, False)
    assert g.ends_at == NOW + 60_000 and g.commitment == draws.commitment(SEED)
    public = g.public()
    assert SEED.hex() not in str(public) and "winners" not in public
    assert public["rule"].startswith("Winners are drawn among the entrants still watching")
    assert Giveaway.from_record(g.to_record()) == g


def test_a_product_prize_takes_its_title() -> None:
    g = start(prize=None, product=("mug-01", "Blue mug"))
    assert (g.prize, g.sku) == ("Blue mug", "mug-01")


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"prize": ""}, "prize"),
        ({"prize": "x" * 81}, "prize"),
        ({"prize": None}, "prize"),
        ({"count": 0}, "winners"),
        ({"count": 101}, "winners"),
        ({"duration_s": 29}, "duration_s"),
        ({"duration_s": 901}, "duration_s"),
        ({"duration_s": 60.0}, "duration_s"),
        ({"entry": "shout"}, "entry"),
        ({"entry": "keyword"}, "keyword"),
        ({"entry": "keyword", "keyword": "two words"}, "keyword"),
        ({"entry": "keyword", "keyword": "x" * 33}, "keyword"),
        ({"keyword": "mug"}, "keyword"),
        ({"verified_only": "yes"}, "verified_only"),
        ({"watch_minutes": 1}, "watch_minutes"),  # 60 s: not a minute under 60 s
        ({"duration_s": 150, "watch_minutes": 2}, "watch_minutes"),
        ({"watch_minutes": -1}, "watch_minutes"),
    ],
)
def test_every_field_is_checked(fields: dict[str, Any], says: str) -> None:
    with pytest.raises(Error) as info:
        start(**fields)
    assert info.value.code == "bad_request" and says in info.value.message


def test_watch_time_must_be_a_minute_under_the_duration() -> None:
    assert start(duration_s=180, watch_minutes=2).watch_s == 120


def test_keyword_entries() -> None:
    g = start(entry="keyword", keyword=" LuckyMug ")
    assert g.keyword == "luckymug"
    assert says_keyword("luckymug", g.keyword)
    assert says_keyword("I want it LUCKYMUG!!", g.keyword)
    assert not says_keyword("luckymugs please", g.keyword)
    assert not says_keyword("lucky mug", g.keyword)


def test_eligibility() -> None:
    g = start(duration_s=300, watch_minutes=2, verified_only=True)
    assert not eligible(g, verified=False, watched_s=600)
    assert not eligible(g, verified=True, watched_s=119)
    assert eligible(g, verified=True, watched_s=120)


def test_one_at_a_time_and_one_entry_each() -> None:
    book = GiveawayBook()
    assert book.start(start(), SEED)
    assert not book.start(start(giveaway_id="demo.g2"), SEED)
    assert book.enter("demo.g1", "ana", NOW).added
    again = book.enter("demo.g1", "ana", NOW)
    assert again.refused is None and not again.added
    assert book.giveaways["demo.g1"].entries == 1
    assert book.enter("demo.g1", "bo", NOW + 60_000).refused == "giveaway_closed"
    assert book.enter("demo.nope", "bo", NOW).refused == "not_found"


def test_a_leaver_is_not_drawn_and_a_returner_is() -> None:
    book = GiveawayBook()
    book.start(start(count=3), SEED)
    for user in ("ana", "bo", "cy"):
        book.enter("demo.g1", user, NOW)
    book.seen("bo", here=False)
    book.seen("cy", here=False)
    assert book.seen("cy", here=True)  # came back
    assert not book.seen("dee", here=True)  # never entered
    frozen = book.freeze("demo.g1")
    assert frozen is not None and frozen[1] == ["ana", "cy"]
    assert book.enter("demo.g1", "dee", NOW).refused == "giveaway_closed"
    assert book.freeze("demo.g1") == frozen  # drawing: the same entrants again
    proof = draws.make_proof(
        giveaway="demo.g1", room="demo", seed=SEED, entrants=frozen[1], count=3
    )
    drawn = book.finish("demo.g1", proof)
    assert drawn is not None and sorted(drawn.winners) == ["ana", "cy"] and book.current is None
    assert book.finish("demo.g1", proof) is None and book.freeze("demo.g1") is None
    assert drawn.public()["proof"] == "/api/giveaways/demo.g1/proof"


def test_cancel() -> None:
    book = GiveawayBook()
    book.start(start(), SEED)
    assert book.cancel("demo.g1") is not None
    assert book.cancel("demo.g1") is None and book.freeze("demo.g1") is None
    assert book.start(start(giveaway_id="demo.g2"), SEED)  # the room may run another


USERS = ["ana", "bo", "cy", "dee", "eve"]


class GiveawayMachine(RuleBasedStateMachine):
    """Any sequence of entries, comings and goings, draws and time: one entry per user,
    no entry after the close, and the winners are exactly the draw of the entrants who
    were watching when it closed."""

    @initialize(count=st.integers(1, 4))
    def begin(self, count: int) -> None:
        self.book = GiveawayBook()
        self.book.start(start(count=count), SEED)
        self.now = NOW
        self.entered: set[str] = set()
        self.watching: set[str] = set()

    @rule(user=st.sampled_from(USERS))
    def enter(self, user: str) -> None:
        g = self.book.giveaways["demo.g1"]
        was_open = g.open_at(self.now)
        got = self.book.enter("demo.g1", user, self.now)
        assert (got.refused is None) == was_open
        if was_open:
            assert got.added == (user not in self.entered)
            self.entered.add(user)
            self.watching.add(user)

    @rule(user=st.sampled_from(USERS), here=st.booleans())
    def comes_or_goes(self, user: str, here: bool) -> None:
        if self.book.giveaways["demo.g1"].status != "open":
            return
        self.book.seen(user, here=here)
        if not here:
            self.watching.discard(user)
        elif user in self.entered:
            self.watching.add(user)

    @rule(ms=st.integers(0, 40_000))
    def time_passes(self, ms: int) -> None:
        self.now += ms

    @rule()
    def draw(self) -> None:
        g = self.book.giveaways["demo.g1"]
        was = g.status
        frozen = self.book.freeze("demo.g1")
        if was in ("drawn", "cancelled"):
            assert frozen is None
            return
        assert frozen is not None
        if was == "open":
            assert frozen[1] == sorted(self.watching)
        proof = draws.make_proof(
            giveaway="demo.g1", room="demo", seed=SEED, entrants=frozen[1], count=g.count
        )
        drawn = self.book.finish("demo.g1", proof)
        assert drawn is not None
        assert list(drawn.winners) == draws.draw(SEED, sorted(self.watching), g.count)
        assert set(drawn.winners) <= self.entered
        assert not draws.verify(proof)

    @invariant()
    def one_entry_each(self) -> None:
        if hasattr(self, "book"):
            g = self.book.giveaways["demo.g1"]
            assert g.entries == len(self.entered) == len(self.book.entrants["demo.g1"])


TestGiveawayMachine = GiveawayMachine.TestCase
