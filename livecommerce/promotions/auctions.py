"""Live auctions: the rules. Pure: no I/O, time (unix ms) is an argument.

The host auctions one lot at a time: a product of the lineup, a starting bid, a
duration (10 s to 5 min), the increments by price band, and either anti-sniping (a bid
in the last N seconds sets the clock back to N, optionally at most so many times) or
sudden death (the clock never moves).

A bid names an ``amount`` (at least the starting bid, then the price plus the
increment) and may name a ``max``: a proxy bid, which the server raises for the
bidder, one increment at a time, up to that maximum, as others bid (the way eBay's
proxy bidding works). So with a leader whose maximum is L and a challenger whose
ceiling (``max``, or the amount) is C:

- C > L: the challenger leads, at ``min(C, max(amount, L + increment(L)))``;
- C <= L: the leader stays ahead, at ``min(L, C + increment(C))`` (a tie goes to the
  earlier bid);
- the leader bidding again raises their own maximum; the price does not move.

Every accepted bid is appended to the lot's bid log; replaying the log through
:func:`replay` gives the same price and winner (the test of "no phantom bids"). When
the clock runs out the lot ends once: the leader, if any, gets a hold at the hammer
price through the order path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from livecommerce.errors import Error
from livecommerce.promotions import whole

AuctionStatus = Literal["open", "ended"]
BidRefusal = Literal["not_found", "auction_closed", "bid_too_low", "banned", "muted"]

MIN_DURATION_S, MAX_DURATION_S = 10, 300
MAX_PRICE = 10_000_000_000
MAX_BANDS = 20
DEFAULT_BANDS: tuple[tuple[int, int], ...] = (
    (0, 100),
    (3_000, 200),
    (5_000, 300),
    (10_000, 500),
    (30_000, 1_000),
    (100_000, 2_000),
    (200_000, 5_000),
)
"""(from price, increment) in minor units: +1 from 1, +2 from 30, +3 from 50, +5 from
100, +10 from 300, +20 from 1,000, +50 from 2,000 (in major units)."""


def increment(bands: tuple[tuple[int, int], ...], price: int) -> int:
    """The least raise over ``price``: the step of the last band that starts at or
    below it."""
    step = bands[0][1]
    for start, s in bands:
        if price >= start:
            step = s
    return step


@dataclass(slots=True)
class Auction:
    """A lot and its live state (the leader's maximum is not public)."""

    id: str
    room: str
    sku: str
    title: str
    seller: str
    start_bid: int
    starts_at: int
    ends_at: int
    extend_s: int
    """A bid in the last ``extend_s`` seconds sets the clock back to it (0: sudden death)."""
    max_extensions: int
    """How many times the clock may be set back (-1: no cap)."""
    bands: tuple[tuple[int, int], ...] = DEFAULT_BANDS
    status: AuctionStatus = "open"
    price: int = 0
    leader: str = ""
    leader_name: str = ""
    leader_max: int = 0
    bids: int = 0
    extensions: int = 0

    def min_bid(self) -> int:
        """The least amount a bid may name now."""
        return self.price + increment(self.bands, self.price) if self.leader else self.start_bid

    def public(self) -> dict[str, Any]:
        """The protocol's ``auction`` object."""
        return {
            "id": self.id,
            "sku": self.sku,
            "title": self.title,
            "start_bid": self.start_bid,
            "starts_at": self.starts_at,
            "ends_at": self.ends_at,
            "extend_s": self.extend_s,
            "max_extensions": None if self.max_extensions < 0 else self.max_extensions,
            "extensions": self.extensions,
            "increments": [list(b) for b in self.bands],
            "status": self.status,
            "price": self.price,
            "min_bid": self.min_bid(),
            "leader": {"id": self.leader, "name": self.leader_name} if self.leader else None,
            "bids": self.bids,
        }

    def to_record(self) -> dict[str, str]:
        """As flat strings (a Redis hash)."""
        return {
            "id": self.id,
            "room": self.room,
            "sku": self.sku,
            "title": self.title,
            "seller": self.seller,
            "start_bid": str(self.start_bid),
            "starts_at": str(self.starts_at),
            "ends_at": str(self.ends_at),
            "extend_s": str(self.extend_s),
            "max_extensions": str(self.max_extensions),
            "bands": ",".join(f"{a}:{b}" for a, b in self.bands),
            "status": self.status,
            "price": str(self.price),
            "leader": self.leader,
            "leader_name": self.leader_name,
            "leader_max": str(self.leader_max),
            "bids": str(self.bids),
            "extensions": str(self.extensions),
        }

    @classmethod
    def from_record(cls, r: dict[str, str]) -> Auction:
        bands = tuple(
            (int(a), int(b)) for a, b in (pair.split(":") for pair in r["bands"].split(","))
        )
        return cls(
            id=r["id"],
            room=r["room"],
            sku=r["sku"],
            title=r["title"],
            seller=r["seller"],
            start_bid=int(r["start_bid"]),
            starts_at=int(r["starts_at"]),
            ends_at=int(r["ends_at"]),
            extend_s=int(r["extend_s"]),
            max_extensions=int(r["max_extensions"]),
            bands=bands,
            status="ended" if r["status"] == "ended" else "open",
            price=int(r["price"]),
            leader=r["leader"],
            leader_name=r["leader_name"],
            leader_max=int(r["leader_max"]),
            bids=int(r["bids"]),
            extensions=int(r["extensions"]),
        )


def new_auction(
    *,
    auction_id: str,
    room: str,
    product: tuple[str, str],
    seller: str,
    start_bid: Any,
    duration_s: Any,
    extend_s: Any,
    max_extensions: Any,
    increments: Any,
    now: int,
) -> Auction:
    """A lot of ``product`` (sku, title) opened at ``now`` by ``seller``.

    Raises:
        Error: ``bad_request``, naming the field and its rule.
    """

    start_bid = whole("start_bid", start_bid, 1, MAX_PRICE)
    duration_s = whole("duration_s", duration_s, MIN_DURATION_S, MAX_DURATION_S)
    extend_s = whole("extend_s", 10 if extend_s is None else extend_s, 0, 60)
    cap = -1 if max_extensions is None else whole("max_extensions", max_extensions, 0, 100)
    bands = DEFAULT_BANDS
    if increments is not None:
        ok = (
            type(increments) is list
            and 0 < len(increments) <= MAX_BANDS
            and all(
                type(b) is list
                and len(b) == 2
                and all(type(x) is int for x in b)
                and 0 <= b[0] <= MAX_PRICE
                and 0 < b[1] <= MAX_PRICE
                for b in increments
            )
        )
        if not ok or increments[0][0] != 0:
            raise Error(
                "bad_request",
                f"increments: 1 to {MAX_BANDS} [from, step] pairs, the first from 0, steps > 0",
            )
        starts = [b[0] for b in increments]
        if starts != sorted(set(starts)):
            raise Error("bad_request", "increments: each band must start above the one before")
        bands = tuple((b[0], b[1]) for b in increments)
    return Auction(
        id=auction_id,
        room=room,
        sku=product[0],
        title=product[1],
        seller=seller,
        start_bid=start_bid,
        starts_at=now,
        ends_at=now + duration_s * 1000,
        extend_s=extend_s,
        max_extensions=cap,
        bands=bands,
    )


@dataclass(frozen=True, slots=True)
class Bid:
    """One accepted bid, as the bid log keeps it."""

    seq: int
    user: str
    name: str
    amount: int
    max: int
    at: int
    price: int
    """The price after it."""
    leader: str
    """The leader after it."""

    def public(self, *, reveal_max: bool) -> dict[str, Any]:
        """As ``GET /api/auctions/{id}/bids`` shows it (the maximum once the lot ended)."""
        out: dict[str, Any] = {
            "seq": self.seq,
            "user": self.user,
            "name": self.name,
            "amount": self.amount,
            "at": self.at,
            "price": self.price,
            "leader": self.leader,
        }
        out["max"] = self.max if reveal_max else None
        return out


@dataclass(frozen=True, slots=True)
class BidRequest:
    """One bid to serve."""

    user: str
    name: str
    amount: int
    ceiling: int
    """The proxy maximum (the amount for a plain bid)."""


@dataclass(frozen=True, slots=True)
class BidResult:
    """One bid's outcome: the lot as it now is (None if unknown), whether the bidder
    leads, whether the clock was set back, or why it was refused."""

    auction: Auction | None
    leading: bool = False
    extended: bool = False
    refused: BidRefusal | None = None

    def result(self) -> Auction:
        if self.refused is None and self.auction is not None:
            return self.auction
        code = self.refused or "not_found"
        if code == "bid_too_low" and self.auction is not None:
            a = self.auction
            raise Error(
                "bid_too_low",
                f"bid at least {a.min_bid()}",
                data={"price": a.price, "min_bid": a.min_bid()},
            )
        messages = {
            "not_found": "no such auction in this room",
            "auction_closed": "this auction has ended",
            "banned": "you are banned from this room",
            "muted": "you are muted in this room",
        }
        raise Error(code, messages[code])


def place_bid(
    a: Auction, *, user: str, name: str, amount: int, ceiling: int, now: int
) -> BidResult:
    """Apply one bid to ``a`` (in place): the rules of the module's docstring. The
    caller checked sanctions and that the bidder is not the seller. ``ceiling`` is the
    bid's ``max`` (or its amount)."""
    if a.status != "open" or now >= a.ends_at:
        return BidResult(a, refused="auction_closed")
    ceiling = max(ceiling, amount)
    if amount < a.min_bid():
        return BidResult(a, refused="bid_too_low")
    if not a.leader:
        a.leader, a.leader_name, a.leader_max, a.price = user, name, ceiling, amount
    elif user == a.leader:
        a.leader_max = max(a.leader_max, ceiling)
    elif ceiling > a.leader_max:
        a.price = min(ceiling, max(amount, a.leader_max + increment(a.bands, a.leader_max)))
        a.leader, a.leader_name, a.leader_max = user, name, ceiling
    else:
        a.price = min(a.leader_max, ceiling + increment(a.bands, ceiling))
    a.bids += 1
    extended = False
    window = a.extend_s * 1000
    if (
        window
        and now >= a.ends_at - window
        and (a.max_extensions < 0 or a.extensions < a.max_extensions)
    ):
        a.ends_at, a.extensions, extended = now + window, a.extensions + 1, True
    return BidResult(a, leading=a.leader == user, extended=extended)


def replay(a: Auction, bids: list[Bid]) -> tuple[int, str]:
    """The price and leader that the bid log gives, bid after bid, from the lot as it
    opened (time is each bid's own; the clock is not checked)."""
    fresh = Auction(
        id=a.id,
        room=a.room,
        sku=a.sku,
        title=a.title,
        seller=a.seller,
        start_bid=a.start_bid,
        starts_at=a.starts_at,
        ends_at=2**62,
        extend_s=0,
        max_extensions=-1,
        bands=a.bands,
    )
    for b in bids:
        got = place_bid(fresh, user=b.user, name=b.name, amount=b.amount, ceiling=b.max, now=b.at)
        assert got.refused is None, (b, got.refused)
    return fresh.price, fresh.leader


@dataclass
class AuctionBook:
    """One room's lots and bid logs (the memory engine's store, the rules' model)."""

    auctions: dict[str, Auction] = field(default_factory=dict)
    logs: dict[str, list[Bid]] = field(default_factory=dict)
    current: str | None = None
    """The open lot, if any: one at a time."""

    def start(self, a: Auction) -> bool:
        if self.current is not None or a.id in self.auctions:
            return False
        self.auctions[a.id], self.logs[a.id], self.current = a, [], a.id
        return True

    def bid(
        self, aid: str, *, user: str, name: str, amount: int, ceiling: int, now: int
    ) -> BidResult:
        a = self.auctions.get(aid)
        if a is None:
            return BidResult(None, refused="not_found")
        got = place_bid(a, user=user, name=name, amount=amount, ceiling=ceiling, now=now)
        if got.refused is None:
            log = self.logs[aid]
            log.append(
                Bid(len(log) + 1, user, name, amount, max(ceiling, amount), now, a.price, a.leader)
            )
        return got

    def end(self, aid: str, now: int) -> Auction | None:
        """End the lot once its clock ran out; None if it is not open or not due."""
        a = self.auctions.get(aid)
        if a is None or a.status != "open" or now < a.ends_at:
            return None
        a.status = "ended"
        if self.current == aid:
            self.current = None
        return a
