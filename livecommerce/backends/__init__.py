"""Store interfaces, and the one place that picks their implementation.

Every store is a :class:`typing.Protocol` with a memory implementation (one process,
the embedded default) and a Redis one (any number of processes). One contract suite in
``tests/test_contract_*.py`` runs against both. All of one room's Redis keys share the
hash tag ``{room}`` so that a room lives on one Redis Cluster slot.
"""

from __future__ import annotations

import builtins
import re
from collections.abc import AsyncIterator, Callable, Collection
from contextlib import asynccontextmanager
from dataclasses import dataclass, fields
from typing import Any, Literal, Protocol

from livecommerce.config import Settings
from livecommerce.inventory.rules import (
    Attempt,
    Grant,
    Order,
    Outcome,
    Product,
    Sale,
    Settled,
    SettleKind,
)
from livecommerce.promotions.auctions import Auction, Bid, BidRequest, BidResult
from livecommerce.promotions.coupons import Claimed, ClaimRequest, Coupon, CouponEnd
from livecommerce.promotions.draws import Proof
from livecommerce.promotions.giveaways import Entered, Frozen, Giveaway
from livecommerce.promotions.groups import Deal, Group, Joined
from livecommerce.protocol import dumps
from livecommerce.rooms.state import Room, Status

Sink = Callable[[bytes, str | None], None]
"""Receives a room's lines in publish order: ``(line, None)`` for a room event,
``(line, user_id)`` for an event private to that user."""

STAFF = ""
"""The private target of events for a room's staff (host, moderators, admins): no user
id is empty, so no user gets them by name."""

Kind = Literal["plain", "chat", "chat.deleted", "announcement", "pin", "unpin", "media"]
Refusal = tuple[Literal["banned", "muted", "slow_mode"], int]
"""A refused chat: the error code and until when (ms; 0 for a ban)."""


@dataclass(frozen=True, slots=True)
class Reported:
    """A target's reports after one more: how many reporters, and their reasons."""

    count: int
    reasons: dict[str, int]


MODLOG_SIZE = 10_000
FLAGGED_SIZE = 500


@dataclass(frozen=True, slots=True)
class LogHead:
    """Where a room's history stands: its last seq and its epoch."""

    seq: int
    epoch: str


@dataclass(frozen=True, slots=True)
class LogSnapshot:
    """A room's history state, consistent with ``seq``."""

    seq: int
    epoch: str
    recent: list[bytes]
    """The last chat lines, oldest first, without deleted ones."""
    announcement: bytes | None
    pinned: bytes | None
    """The line that pinned the product now pinned, if any."""
    media: bytes | None = None
    """The latest ``media.*`` line (the room's video state), if any."""


class RoomStore(Protocol):
    """Durable room descriptions."""

    async def create(self, room: Room) -> bool:
        """Store a new room; False (and nothing changes) if the id is taken."""

    async def get(self, room_id: str) -> Room | None:
        """The room, or None."""

    async def list(self, status: Status | None = None) -> list[Room]:
        """All rooms (optionally of one status), newest first."""

    async def ids(self) -> builtins.list[str]:
        """Every room's id, however many (the retention sweeper and a user's data walk
        them)."""

    async def set_status(self, room_id: str, old: Status, new: Status) -> bool:
        """Compare-and-set the status; True only for the caller that changed it."""


class EventLog(Protocol):
    """A room's sequenced events: assign seq, keep bounded history, deliver to processes.

    ``publish`` is atomic: the seq is the next integer, the line enters the history
    (bounded to ``history_size``) and goes to every subscribed process, all or nothing.
    Subscribers get lines in seq order; a subscriber that misses lines (a lost
    connection) sees a gap and fills it with :meth:`history`.
    """

    async def publish(self, room: str, body: bytes, *, kind: Kind = "plain", ref: str = "") -> int:
        """Sequence ``body`` (an encoded event, see ``protocol.sequence``) and publish it.

        ``kind`` keeps the snapshot's state in step: ``chat`` remembers the line as a
        recent chat with message id ``ref``; ``chat.deleted`` forgets message ``ref``;
        ``announcement`` remembers the line as the latest announcement; ``pin``
        remembers it as the pinned product's line, ``unpin`` forgets that; ``media``
        remembers the line as the room's video state.

        Returns:
            The seq, or 0 when ``kind`` is ``chat.deleted`` and ``ref`` is not a known
            message (then nothing is published).
        """

    async def chats(self, room: str, start: int, limit: int) -> list[tuple[int, bytes]]:
        """The room's chat archive: up to ``limit`` chat lines (each with its time, ms)
        from the ``start``-th on, oldest first. Unlike the history it is not bounded by a
        count: deleted messages stay in it (a chat export shows them with the
        moderation log); the retention sweeper and a user's erasure change it."""

    async def forget_chats(self, room: str, before_ms: int) -> int:
        """Delete the archive's chat lines older than ``before_ms``; how many."""

    async def context(self, room: str, msg_id: str, around: int) -> list[bytes] | None:
        """The chat message ``msg_id`` with up to ``around`` chat messages before and
        after it, oldest first, as the room's history has them; None if the message is
        not in the history (unknown, deleted or too old)."""

    async def send_private(self, room: str, user: str, line: bytes) -> None:
        """Deliver ``line`` to ``user``'s connections in ``room`` on every process."""

    async def history(self, room: str, after: int, epoch: str) -> list[bytes] | None:
        """Every line with seq > ``after``, in order; None if the history no longer
        holds all of them or ``epoch`` is not the room's current epoch."""

    async def snapshot(self, room: str) -> LogSnapshot:
        """The room's history state (creating its epoch if it has none)."""

    async def subscribe(self, room: str, sink: Sink) -> LogHead:
        """Start delivering the room's lines to ``sink``; return the head as of a moment
        after the subscription took effect (lines after it will reach ``sink``)."""

    async def unsubscribe(self, room: str) -> None:
        """Stop delivering the room's lines."""

    async def head(self, room: str) -> LogHead:
        """The room's current head."""


class Counters(Protocol):
    """Coalesced, unsequenced room figures: likes and presence."""

    async def add_likes(self, room: str, n: int) -> int:
        """Add ``n`` (may be 0) likes; return the room's total."""

    async def report_presence(self, room: str, node: str, count: int, now_ms: int) -> int:
        """Record that ``node`` has ``count`` viewers in ``room`` now; return the sum over
        nodes that reported within the last few seconds (a node that died drops out)."""

    async def count(self, room: str, figures: dict[str, int]) -> None:
        """Add to the room's figures (``chats``, ...; the inventory adds ``orders``,
        ``units_sold`` and ``revenue``, and the same per product as ``<name>:<sku>``)."""

    async def note_viewers(self, room: str, viewers: int, *, sku: str | None = None) -> int:
        """Keep the room's peak of viewers (with ``sku``: the peak while that product
        was pinned); return it."""

    async def figures(self, room: str) -> dict[str, int]:
        """The room's figures as counted so far (absent ones are 0)."""

    async def note_joins(self, room: str, users: Collection[str]) -> None:
        """``users`` joined (each a view): ``joins`` grows by their number, and they
        count among the room's unique viewers (a HyperLogLog on Redis)."""

    async def unique_viewers(self, room: str) -> int:
        """How many distinct users joined the room (estimated within 1 % on Redis)."""

    async def note_buyer(self, room: str, user: str) -> None:
        """``user`` paid for an order in ``room``: counted among its ``buyers`` once,
        and among its ``first_time_buyers`` if they never bought in any room before."""

    async def record_minute(self, room: str, minute: int, figures: dict[str, int]) -> bool:
        """Keep the room's figures as they were at the end of ``minute`` (unix minutes),
        unless another process did first; True if this call kept them."""

    async def minutes(self, room: str) -> dict[int, dict[str, int]]:
        """The figures kept at the end of each minute, by minute."""

    async def forget_minutes(self, room: str, before_ms: int) -> int:
        """Delete the minutes that ended before ``before_ms``; how many."""

    async def note_ab_test(self, room: str, sale_id: str) -> None:
        """The sale is an A/B test of its price (the report lists the room's tests)."""

    async def ab_tests(self, room: str) -> list[str]:
        """The room's A/B-tested sales."""

    async def note_exposed(self, room: str, sale_id: str, arms: dict[str, list[str]]) -> None:
        """These users saw the sale at their arm's price (by arm)."""

    async def ab_counts(self, room: str, sale_id: str) -> dict[str, tuple[int, int]]:
        """By arm: (users who saw it, users who ordered), the latter counted with the
        orders (estimated within 1 % on Redis)."""


class ModerationStore(Protocol):
    """Mutes, bans and slow mode, shared by every process of a room."""

    async def admit_chat(
        self, room: str, user: str, now_ms: int, *, slow_exempt: bool = False
    ) -> Refusal | None:
        """Decide one chat atomically: refused if banned, muted, or (unless
        ``slow_exempt``) within slow mode; otherwise admitted, and the time is recorded
        for slow mode."""

    async def mute(self, room: str, user: str, until_ms: int) -> None:
        """Mute ``user`` until ``until_ms``."""

    async def set_banned(self, room: str, user: str, banned: bool) -> bool:
        """Ban or unban; True if that changed anything."""

    async def set_leet(self, room: str, on: bool) -> None:
        """Whether the room's word filter folds leetspeak."""

    async def leet(self, room: str) -> bool:
        """See :meth:`set_leet` (off until set)."""

    async def note_staff(self, room: str, user: str, role: str) -> None:
        """Remember that ``user`` acts as ``role`` (moderator, host, admin) in ``room``."""

    async def staff_role(self, room: str, user: str) -> str | None:
        """The role ``user`` was last seen acting as in ``room``, or None (a viewer)."""

    async def banned(self, room: str, users: Collection[str]) -> set[str]:
        """Those of ``users`` who are banned in ``room`` (one read for a crowd of
        joiners)."""

    async def set_slow(self, room: str, seconds: int) -> None:
        """Set the room's slow mode (0 = off)."""

    async def slow(self, room: str) -> int:
        """The room's slow mode in seconds (0 = off)."""

    async def change_filter(
        self, room: str, add: list[str], remove: list[str], action: str
    ) -> dict[str, str]:
        """Add terms with ``action`` (replacing a term's action) and remove terms;
        return every term of the room's word filter with its action."""

    async def filter_terms(self, room: str) -> dict[str, str]:
        """The room's word filter: term -> action."""

    async def flag(self, room: str, msg_id: str, entry: bytes) -> None:
        """Queue a flagged message for review (``entry`` is its JSON)."""

    async def unflag(self, room: str, msg_id: str) -> bool:
        """Take a message off the review queue; True if it was there."""

    async def flagged(self, room: str) -> list[bytes]:
        """The review queue, oldest first."""

    async def forget_actions(self, room: str, before_ms: int) -> int:
        """Delete the moderation log's entries older than ``before_ms``; how many."""

    async def report(self, room: str, target: str, reporter: str, reason: str) -> Reported | None:
        """Count ``reporter``'s report of ``target`` (a message id, or ``show``) with
        ``reason``: one per reporter and target. None if they had reported it already."""

    async def log_action(self, room: str, entry: bytes) -> None:
        """Append to the room's moderation log (kept across restarts on Redis; the
        last ``MODLOG_SIZE`` entries)."""

    async def actions(self, room: str, limit: int) -> list[bytes]:
        """The last ``limit`` entries of the moderation log, oldest first."""


class InventoryStore(Protocol):
    """Lineups, flash sales and holds (the rules of ``inventory.rules``, atomically).

    Events that must happen exactly once happen in the same atomic step as the change
    that causes them, through the room's event log: ``sale.started`` with the start,
    ``sale.ended`` with the stop, the end time or the last unit paid.
    """

    async def put_product(self, room: str, product: Product) -> None:
        """Add or replace a product of the room's lineup."""

    async def products(self, room: str) -> list[Product]:
        """The room's lineup, by sku."""

    async def start_sale(self, sale: Sale, event: bytes) -> None:
        """Open ``sale`` and publish ``event`` (its ``sale.started``), atomically."""

    async def stop_sale(self, room: str, sale_id: str, now_ms: int) -> bool:
        """End an active sale as ``stopped``; True (and ``sale.ended`` published) only
        for the call that ended it."""

    async def sale(self, room: str, sale_id: str) -> Sale | None:
        """The sale with its counts, or None."""

    async def active_sales(self, room: str) -> list[Sale]:
        """The room's open sales with their counts."""

    async def stock(self, room: str) -> dict[str, int]:
        """``remaining`` of each open sale (read every tick by the hub)."""

    async def reserve(
        self, room: str, sale_id: str, attempts: list[Attempt], *, now_ms: int, hold_ms: int
    ) -> list[Outcome]:
        """Serve ``attempts`` in order, atomically as a whole (see ``Ledger.reserve``);
        each new hold is written with its outbox entry."""

    async def pay(self, order_id: str, now_ms: int) -> tuple[Order | None, bool]:
        """Confirm payment of a hold (see ``Ledger.pay``); publishes ``sale.ended`` if
        the sale sold out. Returns the order as it now is (None if unknown) and whether
        this call is the one that paid it."""

    async def cancel(self, order_id: str) -> Order | None:
        """Release a hold as ``cancelled``; the order if this call released it."""

    async def settle(
        self, order_id: str, kind: SettleKind, *, event_id: str | None, now_ms: int
    ) -> Settled:
        """Apply an order-system event (``Ledger.settle``), publishing ``sale.ended`` if
        it sold the sale out. With ``event_id``, the id is remembered in the same atomic
        step, and an id seen before changes nothing (``duplicate``). A payment for an
        expired hold is recorded for :meth:`late_payments`."""

    async def set_payment_url(self, order_id: str, url: str) -> Order | None:
        """Give the order its payment page; the order, or None if unknown."""

    async def late_payments(self, room: str) -> dict[str, int]:
        """Orders of the room paid after their hold expired: order id -> ms."""

    async def orders(self, room: str) -> list[Order]:
        """Every order of the room, oldest first (reconciliation, not the hot path)."""

    async def sweep(self, room: str, now_ms: int) -> list[Order]:
        """Release the room's holds past their window (each exactly once, whoever else
        sweeps) and end its sales past their end time; return the released orders."""

    async def order(self, order_id: str) -> Order | None:
        """The order, or None."""

    async def orders_of(self, room: str, users: Collection[str]) -> dict[str, list[Order]]:
        """Each of ``users``' orders in the room, oldest first; users with none are
        left out (one read for a crowd of joiners)."""

    async def forget_orders(self, room: str, before_ms: int) -> int:
        """Delete the orders that ended (paid, expired, cancelled, refunded) and were
        placed before ``before_ms``; how many."""

    async def rooms_to_sweep(self) -> list[str]:
        """Rooms that may have holds or open sales."""

    async def outbox(self, room: str) -> list[dict[str, str]]:
        """The room's outbox entries not yet delivered nor buried, oldest first (the
        order bridge consumes them, and each leaves once acknowledged)."""


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """One outbox entry: a new hold for the order system. ``id`` is
    ``<room>/<entry id>``; ``fields`` the order as the reservation wrote it."""

    id: str
    room: str
    fields: dict[str, str]
    failures: int = 0


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An entry given up on, with why, after how many failures, and when (ms)."""

    id: str
    room: str
    fields: dict[str, str]
    reason: str
    failures: int
    at_ms: int


class OutboxStore(Protocol):
    """The order bridge's view of every room's outbox, shared by its workers (a Redis
    consumer group): each entry is handed to one worker at a time, stays pending until
    acknowledged or buried, and a dead worker's entries can be taken over.

    Rooms join the outbox when their first sale starts.
    """

    async def read(self, consumer: str, count: int, *, block_ms: int) -> list[OutboxEntry]:
        """Up to ``count`` entries no worker has had yet, now pending on ``consumer``;
        waits up to ``block_ms`` when there are none."""

    async def reclaim(self, consumer: str, *, min_idle_ms: int, count: int) -> list[OutboxEntry]:
        """Up to ``count`` pending entries untouched for ``min_idle_ms`` (their worker
        died or hung), now pending on ``consumer``."""

    async def touch(self, consumer: str, entries: list[OutboxEntry]) -> None:
        """Keep ``entries`` claimed by ``consumer`` (resets their idle time)."""

    async def ack(self, entries: list[OutboxEntry]) -> None:
        """The entries were delivered: they are done with."""

    async def failed(self, entry: OutboxEntry) -> int:
        """Count a failed delivery of the entry; return its failures so far."""

    async def bury(self, entry: OutboxEntry, reason: str, now_ms: int) -> None:
        """Move the entry to the dead letters, atomically (no longer pending)."""

    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """Dead letters of every room, oldest first."""

    async def redrive(self, dead_id: str) -> bool:
        """Put a dead letter back in its room's outbox as a new entry (its failures
        start again at 0); False if there is no such dead letter."""

    async def backlog(self) -> int:
        """Entries neither delivered nor buried (read or not yet)."""

    async def rooms(self) -> list[str]:
        """The rooms with an outbox."""


class CouponStore(Protocol):
    """Live coupons and their claims (``promotions.coupons`` has the rules)."""

    async def drop(self, coupon: Coupon) -> bool:
        """Keep a new coupon; False (and nothing changes) if its id is taken."""

    async def claim(
        self, room: str, coupon_id: str, user: str, now_ms: int, watched_s: float = 0
    ) -> Claimed:
        """One claim (``claim_many`` of one)."""

    async def claim_many(
        self, room: str, coupon_id: str, claims: list[ClaimRequest], now_ms: int
    ) -> list[Claimed]:
        """Claims served in order in one atomic step, each over the room's bans, the
        gate, the window, the user's count and the quantity (``CouponBook.claim``),
        whatever the connections and processes."""

    async def end(self, room: str, coupon_id: str, reason: CouponEnd) -> Coupon | None:
        """End an active coupon; the coupon if this call ended it (once), else None."""

    async def coupon(self, room: str, coupon_id: str) -> Coupon | None:
        """The coupon, active or ended, or None."""

    async def live(self, room: str) -> list[Coupon]:
        """The room's active coupons, oldest first."""

    async def claims_of(self, room: str, user: str) -> dict[str, int]:
        """The user's claims of the room's active coupons, by coupon id (none: absent)."""


class GiveawayStore(Protocol):
    """Giveaways, their entries and draws (``promotions.giveaways`` has the rules).

    ``node`` names the process that serves a user's connections: an entrant is present
    while some live process (one whose presence report has not expired) has them.
    """

    async def start(self, giveaway: Giveaway, seed: bytes) -> bool:
        """Keep a new giveaway and its secret seed; False (nothing changes) while the
        room has another one not yet drawn."""

    async def enter(self, room: str, gid: str, user: str, now_ms: int, node: str) -> Entered:
        """One entry, atomic over the window, bans and mutes and the one-per-user rule
        (the caller checked the giveaway's own conditions)."""

    async def seen(self, room: str, user: str, node: str, *, here: bool) -> bool:
        """The user joined the room on ``node`` (``here``), or their last connection on
        it left: an entrant's presence for the draw. Only while a giveaway is open;
        True if the user joined and is one of its entrants."""

    async def freeze(self, room: str, gid: str, now_ms: int) -> Frozen | None:
        """Close entries (``open`` to ``drawing``), freezing the present entrants; a
        ``drawing`` giveaway gives the same entrants and seed again. None once drawn,
        cancelled or unknown."""

    async def finish(
        self, room: str, proof: Proof, grants: list[Grant], *, now_ms: int, hold_ms: int
    ) -> Giveaway | None:
        """In one step: ``drawing`` to ``drawn`` with the proof kept, and the winners'
        prize orders held (``grants``). None if it was not drawing (so this happens once)."""

    async def cancel(self, room: str, gid: str) -> Giveaway | None:
        """End an open giveaway without a draw; None if it was not open."""

    async def get(self, room: str, gid: str) -> Giveaway | None:
        """The giveaway, whatever its status, or None."""

    async def current(self, room: str) -> Giveaway | None:
        """The room's giveaway not yet drawn (open or drawing), if any."""

    async def entered(self, room: str, gid: str, user: str) -> bool:
        """Whether the user is an entrant."""

    async def proof(self, room: str, gid: str) -> Proof | None:
        """A drawn giveaway's proof."""


class GroupStore(Protocol):
    """Group buys: deals, their groups and the fills (``promotions.groups``)."""

    async def start(self, deal: Deal) -> bool:
        """Keep a new deal; False (nothing changes) if its id is taken."""

    async def stop(self, room: str, deal_id: str) -> Deal | None:
        """No new groups of the deal (forming ones go on); None if it was not active."""

    async def deal(self, room: str, deal_id: str) -> Deal | None:
        """The deal, active or ended, or None."""

    async def deals(self, room: str) -> list[Deal]:
        """Every deal of the room, oldest first."""

    async def open(
        self, room: str, deal_id: str, group_id: str, user: str, order_id: str, now_ms: int
    ) -> Joined:
        """A new group with ``user`` its first member (holding one unit); ``order_id``
        names the order the fill will give them. One atomic step."""

    async def join(
        self, room: str, group_id: str, user: str, order_id: str, *, now_ms: int, hold_ms: int
    ) -> Joined:
        """Take a slot, in one atomic step over the window, the size, the user's other
        groups and the deal's units; the last slot fills the group, holding every
        member's order (``hold_ms`` to pay) in that same step. Joining a group one is in
        already answers it again, unchanged."""

    async def expire(self, room: str, now_ms: int) -> list[Group]:
        """Fail the forming groups whose window ended (holds released, units back)."""

    async def group(self, room: str, group_id: str) -> Group | None:
        """The group, whatever its status, or None."""

    async def forming(self, room: str, limit: int) -> tuple[list[Group], int]:
        """Up to ``limit`` forming groups, closest to filling first, and how many form."""

    async def mine(self, room: str, user: str) -> list[Group]:
        """The forming groups ``user`` is in."""


class AuctionStore(Protocol):
    """Live auctions: lots, bids and their log (``promotions.auctions`` has the rules)."""

    async def start(self, auction: Auction) -> bool:
        """Keep a new lot; False (nothing changes) while another lot of the room is open."""

    async def bid(
        self, room: str, aid: str, *, user: str, name: str, amount: int, ceiling: int, now_ms: int
    ) -> BidResult:
        """One bid (``bid_many`` of one)."""

    async def bid_many(
        self, room: str, aid: str, bids: list[BidRequest], now_ms: int
    ) -> list[BidResult]:
        """Bids served in order in one atomic step, each (``place_bid``) over bans,
        mutes, the clock and the price and appended to the bid log; the clock set back
        by one that came in the anti-sniping window."""

    async def end(
        self, room: str, aid: str, leader: str, grant: Grant | None, *, now_ms: int, hold_ms: int
    ) -> Auction | Literal["moved"] | None:
        """End the lot once its clock ran out, with ``grant`` (the hold at the hammer
        price of ``leader``, the leader the caller read; None without bids) written in
        the same step. None if it is not open or not due; ``"moved"`` if the leader is
        not ``leader`` any more (read it again)."""

    async def get(self, room: str, aid: str) -> Auction | None:
        """The lot, open or ended, or None."""

    async def current(self, room: str) -> Auction | None:
        """The room's open lot, if any."""

    async def bids(self, room: str, aid: str) -> list[Bid]:
        """The lot's bid log, oldest first."""


ERASED_NAME = "Erased user"


def pseudonymous(text: bytes, user: str, alias: str, name: str) -> bytes:
    """JSON ``text`` with ``user`` in ``alias``'s name: their ``user`` object (id and
    ``name``) becomes the erased user's, and any other mention of the id the alias."""
    whole = b'{"id":' + dumps(user) + b',"name":' + dumps(name) + b"}"
    text = text.replace(whole, dumps({"id": alias, "name": ERASED_NAME}))
    return text.replace(dumps(user), dumps(alias))


class PrivacyStore(Protocol):
    """Everything the server holds about one user, to export or to erase
    (``backends/redis_privacy.py`` lists where it lives)."""

    async def export(self, user: str) -> dict[str, dict[str, Any]]:
        """By room: the user's chats, orders, coupon claims, giveaway entries, groups,
        bids and reports (rooms with none are left out)."""

    async def erase(self, user: str, alias: str, name: str) -> dict[str, int]:
        """Remove the user's chat lines (archive, history, recent) and put ``alias`` in
        their place everywhere else (their ``{id, name}`` with ``name`` as the erased
        user's), aggregates kept; how many of each kind."""


@dataclass(frozen=True, slots=True)
class Clip:
    """A product's clip: the segments of a stream while the product was pinned.

    Its files live with the stream's segments: the VOD playlist at
    ``/hls/{room}/{stream}/clip-{id}.m3u8`` and, if a picture decoded, the poster at
    ``.../clip-{id}.jpg``. Times are unix ms; ``title``, ``price`` and ``image`` are the
    product's when it was pinned.
    """

    id: str
    room: str
    stream: str
    sku: str
    title: str
    price: int
    image: str | None
    started_at: int
    ended_at: int
    duration_s: float
    poster: bool = True

    @property
    def playlist(self) -> str:
        return f"/hls/{self.room}/{self.stream}/clip-{self.id}.m3u8"

    @property
    def poster_path(self) -> str | None:
        return f"/hls/{self.room}/{self.stream}/clip-{self.id}.jpg" if self.poster else None

    @property
    def order_key(self) -> str:
        """Sorts clips oldest first (and, in the feed, names the clip): the end time,
        zero-padded, the room and the id."""
        return f"{self.ended_at:013d}:{self.room}:{self.id}"

    def to_record(self) -> dict[str, Any]:
        """Every field, for a store."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Clip:
        """The clip of :meth:`to_record` (fields it lacks take their defaults)."""
        return cls(**{f.name: record[f.name] for f in fields(cls) if f.name in record})


CLIP_CURSOR = re.compile(r"\d{13}:[a-z0-9][a-z0-9_-]{0,63}:[a-z0-9]{1,32}")
"""A feed cursor: a clip's :attr:`Clip.order_key`."""


class ClipStore(Protocol):
    """Every room's clips, shared by the processes of a deployment."""

    async def add(self, clip: Clip) -> None:
        """Store a finished clip (again: replaces it)."""

    async def get(self, room: str, clip_id: str) -> Clip | None:
        """The clip, or None."""

    async def room_clips(self, room: str, *, sku: str | None = None) -> list[Clip]:
        """The room's clips (only ``sku``'s, if given), newest first (by end)."""

    async def feed(self, limit: int, cursor: str | None = None) -> tuple[list[Clip], str | None]:
        """Clips of every room, newest first: up to ``limit`` after ``cursor`` (a
        previous page's next cursor, or None for the first page), and the cursor of
        the page after (None when there is no more)."""

    async def delete_ended_before(self, ms: int, *, limit: int = 1000) -> list[Clip]:
        """Forget up to ``limit`` clips that ended before ``ms``, oldest first, and
        return them (for their files to be deleted). Idempotent: processes sweeping at
        the same time may each return a clip; it is forgotten all the same."""


@asynccontextmanager
async def open_clip_store(settings: Settings) -> AsyncIterator[ClipStore]:
    """The clip store ``settings`` ask for (Redis with ``redis_url``, else memory)."""
    if settings.redis_url:
        from livecommerce.backends.redis_clips import open_redis_clip_store

        async with open_redis_clip_store(settings) as store:
            yield store
    else:
        from livecommerce.backends.memory import MemoryClipStore

        yield MemoryClipStore()


@dataclass(frozen=True, slots=True)
class Backends:
    """The stores of one process, and the name of their engine."""

    engine: Literal["memory", "redis"]
    rooms: RoomStore
    log: EventLog
    counters: Counters
    moderation: ModerationStore
    inventory: InventoryStore
    outbox: OutboxStore
    coupons: CouponStore
    giveaways: GiveawayStore
    groups: GroupStore
    auctions: AuctionStore
    privacy: PrivacyStore


@asynccontextmanager
async def make_backends(settings: Settings) -> AsyncIterator[Backends]:
    """Open the stores ``settings`` ask for, and close them on exit."""
    if settings.redis_url:
        from livecommerce.backends.redis import open_redis_backends

        async with open_redis_backends(settings) as backends:
            yield backends
    else:
        from livecommerce.backends.memory import memory_backends

        yield memory_backends(settings)
