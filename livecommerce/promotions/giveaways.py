"""Giveaways (lucky bags): the rules. Pure: no I/O, time (unix ms) is an argument.

A host starts one giveaway at a time in a live room: a prize (a product of the lineup,
or free text), how many win, how long entries are open (30 s to 15 min) and how one
enters: press Enter, or comment a keyword; optionally only viewers whose token says
``verified`` (the shop decides what that means: a follower, a verified buyer), or who
watched the show a while (at least a minute less than the duration).

Its life::

    open --(time up, or the host draws)--> drawing --(winners written)--> drawn
      \\--(the host cancels)--> cancelled

``drawing`` freezes the entrants (no entry gets in after it) and holds until the
winners and their prize orders are written in one step; a process that dies in between
leaves it ``drawing`` and the next sweep finishes the same draw, from the same seed and
the same frozen entrants (``promotions.draws``). For every giveaway, at every moment:
one entry per user, and only entrants present at the draw can win (a winner who left
before it is not drawn: the rule the viewers are shown).

:class:`GiveawayBook` keeps a room's giveaways for the memory engine; the Redis engine
runs the same steps as Lua scripts (``backends/redis_promotions.py``), and one contract
suite checks that both agree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from livecommerce.errors import Error
from livecommerce.promotions import draws, whole

EntryRule = Literal["button", "keyword"]
GiveawayStatus = Literal["open", "drawing", "drawn", "cancelled"]
EntryRefusal = Literal["not_found", "giveaway_closed", "not_eligible", "banned", "muted"]

MIN_DURATION_S = 30
MAX_DURATION_S = 15 * 60
MAX_WINNERS = 100
MAX_PRIZE_CHARS = 80
MAX_KEYWORD_CHARS = 32
RULE_TEXT = "Winners are drawn among the entrants still watching at the draw."
"""The rule the viewers are shown (``giveaway.started``'s ``rule``)."""


@dataclass(slots=True)
class Giveaway:
    """A giveaway with its live count of entries."""

    id: str
    room: str
    prize: str
    """What is won: the product's title, or the host's text."""
    sku: str
    """The product won ('' for a prize described by text alone): winners get an order
    of it at price 0."""
    count: int
    """How many win."""
    entry: EntryRule
    keyword: str
    """``keyword`` entries: the word to comment (case-folded); '' otherwise."""
    verified_only: bool
    watch_s: int
    starts_at: int
    ends_at: int
    commitment: str
    """SHA-256 of the secret seed, published at the start."""
    status: GiveawayStatus = "open"
    entries: int = 0
    winners: tuple[str, ...] = ()
    entrants_digest: str = ""

    def open_at(self, now: int) -> bool:
        return self.status == "open" and now < self.ends_at

    def public(self) -> dict[str, Any]:
        """The protocol's ``giveaway`` object."""
        out: dict[str, Any] = {
            "id": self.id,
            "prize": self.prize,
            "sku": self.sku or None,
            "count": self.count,
            "entry": self.entry,
            "keyword": self.keyword or None,
            "verified_only": self.verified_only,
            "watch_s": self.watch_s,
            "starts_at": self.starts_at,
            "ends_at": self.ends_at,
            "commitment": self.commitment,
            "status": self.status,
            "entries": self.entries,
            "rule": RULE_TEXT,
        }
        if self.status == "drawn":
            out["winners"] = list(self.winners)
            out["entrants_digest"] = self.entrants_digest
            out["proof"] = proof_path(self.id)
        return out

    def to_record(self) -> dict[str, str]:
        """As flat strings (a Redis hash), without the seed (kept apart)."""
        return {
            "id": self.id,
            "room": self.room,
            "prize": self.prize,
            "sku": self.sku,
            "count": str(self.count),
            "entry": self.entry,
            "keyword": self.keyword,
            "verified_only": "1" if self.verified_only else "",
            "watch_s": str(self.watch_s),
            "starts_at": str(self.starts_at),
            "ends_at": str(self.ends_at),
            "commitment": self.commitment,
            "status": self.status,
            "entries": str(self.entries),
            "winners": "\n".join(self.winners),
            "entrants_digest": self.entrants_digest,
        }

    @classmethod
    def from_record(cls, r: dict[str, str]) -> Giveaway:
        return cls(
            id=r["id"],
            room=r["room"],
            prize=r["prize"],
            sku=r["sku"],
            count=int(r["count"]),
            entry="keyword" if r["entry"] == "keyword" else "button",
            keyword=r["keyword"],
            verified_only=bool(r["verified_only"]),
            watch_s=int(r["watch_s"]),
            starts_at=int(r["starts_at"]),
            ends_at=int(r["ends_at"]),
            commitment=r["commitment"],
            status=r["status"],  # type: ignore[arg-type]
            entries=int(r["entries"]),
            winners=tuple(w for w in r["winners"].split("\n") if w),
            entrants_digest=r["entrants_digest"],
        )


def proof_path(giveaway_id: str) -> str:
    """Where a drawn giveaway's proof is served."""
    return f"/api/giveaways/{giveaway_id}/proof"


def room_of_giveaway(giveaway_id: str) -> str:
    """The room of a giveaway id (``<room>.g-<hex>``; room ids never hold a dot)."""
    return giveaway_id.partition(".")[0]


def new_giveaway(
    *,
    giveaway_id: str,
    room: str,
    prize: Any,
    product: tuple[str, str] | None,
    count: Any,
    duration_s: Any,
    entry: Any,
    keyword: Any,
    verified_only: Any,
    watch_minutes: Any,
    seed: bytes,
    now: int,
) -> Giveaway:
    """A giveaway started at ``now``. ``product``: the (sku, title) of the lineup's
    product it gives away, if any (then ``prize`` may be left out: the title).

    Raises:
        Error: ``bad_request``, naming the field and its rule.
    """

    if prize is None and product is not None:
        prize = product[1][:MAX_PRIZE_CHARS]
    if type(prize) is not str or not prize.strip() or len(prize) > MAX_PRIZE_CHARS:
        raise Error("bad_request", f"prize: 1 to {MAX_PRIZE_CHARS} characters, or a sku")
    count = whole("winners", 1 if count is None else count, 1, MAX_WINNERS)
    duration_s = whole("duration_s", duration_s, MIN_DURATION_S, MAX_DURATION_S)
    if entry not in ("button", "keyword"):
        raise Error("bad_request", "entry must be button or keyword")
    word = ""
    if entry == "keyword":
        if type(keyword) is not str or not 0 < len(keyword.strip()) <= MAX_KEYWORD_CHARS:
            raise Error("bad_request", f"keyword: 1 to {MAX_KEYWORD_CHARS} characters")
        word = keyword.strip().casefold()
        if any(c.isspace() for c in word):
            raise Error("bad_request", "keyword: one word, no spaces")
    elif keyword is not None:
        raise Error("bad_request", "keyword is for entry by keyword")
    if verified_only is not None and type(verified_only) is not bool:
        raise Error("bad_request", "verified_only must be true or false")
    minutes = whole("watch_minutes", 0 if watch_minutes is None else watch_minutes, 0, 14)
    if minutes and minutes * 60 > duration_s - 60:
        raise Error("bad_request", "watch_minutes must be at least 1 minute under the duration")
    return Giveaway(
        id=giveaway_id,
        room=room,
        prize=prize.strip(),
        sku=product[0] if product is not None else "",
        count=count,
        entry=entry,
        keyword=word,
        verified_only=bool(verified_only),
        watch_s=minutes * 60,
        starts_at=now,
        ends_at=now + duration_s * 1000,
        commitment=draws.commitment(seed),
    )


def says_keyword(text: str, keyword: str) -> bool:
    """Whether a chat message enters by ``keyword``: one of its words, case-folded
    (punctuation around it does not count against it)."""
    return any(w.strip(".,!?;:'\"()[]") == keyword for w in text.casefold().split())


@dataclass(frozen=True, slots=True)
class Entered:
    """One entry's outcome: the giveaway as it now is (None if unknown), whether this
    call added the entry (False: the user was in already), or why it was refused."""

    giveaway: Giveaway | None
    added: bool = False
    refused: EntryRefusal | None = None

    def result(self) -> Giveaway:
        """The giveaway, or the refusal raised as the protocol's error."""
        if self.refused is None and self.giveaway is not None:
            return self.giveaway
        messages = {
            "not_found": "no such giveaway in this room",
            "giveaway_closed": "entries for this giveaway are closed",
            "not_eligible": "this giveaway is for other viewers",
            "banned": "you are banned from this room",
            "muted": "you are muted in this room",
        }
        code = self.refused or "not_found"
        raise Error(code, messages[code])


@dataclass(frozen=True, slots=True)
class Frozen:
    """A giveaway whose entries are closed: its present entrants, sorted, and its seed."""

    giveaway: Giveaway
    entrants: list[str]
    seed: bytes


def eligible(g: Giveaway, *, verified: bool, watched_s: float) -> bool:
    """Whether a viewer meets the giveaway's conditions (checked before the store)."""
    return (verified or not g.verified_only) and watched_s >= g.watch_s


@dataclass
class GiveawayBook:
    """One room's giveaways (the memory engine's store, the rules' model).

    ``present`` holds the entrants watching now; an entrant whose last connection
    leaves is taken out of it, and one who comes back is put back.
    """

    giveaways: dict[str, Giveaway] = field(default_factory=dict)
    seeds: dict[str, bytes] = field(default_factory=dict)
    entrants: dict[str, set[str]] = field(default_factory=dict)
    present: dict[str, set[str]] = field(default_factory=dict)
    frozen: dict[str, list[str]] = field(default_factory=dict)
    proofs: dict[str, draws.Proof] = field(default_factory=dict)
    current: str | None = None
    """The giveaway not yet drawn (open or drawing), if any: one at a time."""

    def start(self, g: Giveaway, seed: bytes) -> bool:
        """Add ``g``; False (nothing changes) while another is not drawn yet."""
        if self.current is not None or g.id in self.giveaways:
            return False
        self.giveaways[g.id], self.seeds[g.id] = g, seed
        self.entrants[g.id], self.present[g.id] = set(), set()
        self.current = g.id
        return True

    def enter(self, gid: str, user: str, now: int) -> Entered:
        """One entry (the caller checked eligibility and sanctions)."""
        g = self.giveaways.get(gid)
        if g is None:
            return Entered(None, refused="not_found")
        if not g.open_at(now):
            return Entered(g, refused="giveaway_closed")
        self.present[gid].add(user)
        if user in self.entrants[gid]:
            return Entered(g)
        self.entrants[gid].add(user)
        g.entries += 1
        return Entered(g, added=True)

    def seen(self, user: str, *, here: bool) -> bool:
        """The user came back (``here``) or their last connection left the room, while
        a giveaway is open. True if they came back and are an entrant."""
        gid = self.current
        if gid is None or self.giveaways[gid].status != "open":
            return False
        if not here:
            self.present[gid].discard(user)
            return False
        if user in self.entrants[gid]:
            self.present[gid].add(user)
            return True
        return False

    def freeze(self, gid: str) -> tuple[Giveaway, list[str], bytes] | None:
        """Close entries: ``open`` becomes ``drawing`` with the present entrants frozen
        (a ``drawing`` one gives the same list again). None once drawn or cancelled."""
        g = self.giveaways.get(gid)
        if g is None or g.status not in ("open", "drawing"):
            return None
        if g.status == "open":
            g.status = "drawing"
            self.frozen[gid] = sorted(self.entrants[gid] & self.present[gid])
        return g, self.frozen[gid], self.seeds[gid]

    def finish(self, gid: str, proof: draws.Proof) -> Giveaway | None:
        """``drawing`` becomes ``drawn`` with the proof's winners; None if it was not
        drawing (so winners are written once)."""
        g = self.giveaways.get(gid)
        if g is None or g.status != "drawing":
            return None
        g.status, g.winners, g.entrants_digest = (
            "drawn",
            tuple(proof.winners),
            proof.entrants_digest,
        )
        self.proofs[gid] = proof
        self.current = None
        return g

    def cancel(self, gid: str) -> Giveaway | None:
        """An open giveaway ends with no draw; None if it was not open."""
        g = self.giveaways.get(gid)
        if g is None or g.status != "open":
            return None
        g.status = "cancelled"
        self.current = None
        return g
