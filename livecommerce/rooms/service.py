"""What each command does, independent of the transport.

The WebSocket endpoint and the HTTP routes call in here; this module checks rights,
rate limits and content (in PROTOCOL.md's order: the shape was checked by the decoder),
talks to the stores and the hub, and raises :class:`~livecommerce.errors.Error`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import itertools
import logging
import os
import secrets
import time
from collections.abc import Callable, Collection, Coroutine, Mapping
from dataclasses import dataclass, replace
from typing import Any

from livecommerce import analytics
from livecommerce.auth import Principal, Role
from livecommerce.backends import (
    MODLOG_SIZE,
    STAFF,
    Backends,
    LogSnapshot,
    ModerationStore,
    RoomStore,
)
from livecommerce.batching import KeyedBatcher
from livecommerce.config import Settings
from livecommerce.errors import Error
from livecommerce.inventory.batcher import ReservationBatcher
from livecommerce.inventory.rules import (
    Attempt,
    Grant,
    Order,
    Outcome,
    Product,
    Sale,
    Settled,
    SettleKind,
    arm,
    order_id,
    order_id_key,
)
from livecommerce.moderation.rules import RateLimiter, refusal
from livecommerce.moderation.wordfilter import Term, WordFilter
from livecommerce.orders.sandbox import checkout_path
from livecommerce.promotions import draws
from livecommerce.promotions.auctions import Auction, BidRequest, BidResult, new_auction
from livecommerce.promotions.coupons import Claimed, ClaimRequest, Coupon, CouponEnd, new_coupon
from livecommerce.promotions.giveaways import (
    Giveaway,
    eligible,
    new_giveaway,
    room_of_giveaway,
    says_keyword,
)
from livecommerce.promotions.groups import FORMING_SHOWN, Deal, Group, new_deal
from livecommerce.protocol import ROOM_ID, dumps, encode_event, fragment, loads
from livecommerce.protocol.codec import FILTER_ACTIONS
from livecommerce.rooms.hub import Hub, Membership, Subscriber
from livecommerce.rooms.state import Room, Status, clean_text

log = logging.getLogger(__name__)

CHATTERS: frozenset[Role] = frozenset({"viewer", "moderator", "host", "admin"})
MODERATORS: frozenset[Role] = frozenset({"moderator", "host", "admin"})
HOSTS: frozenset[Role] = frozenset({"host", "admin"})
EXPORT_MAX = 500_000
"""The most chat messages one export holds."""
REPORT_CONTEXT = 3
"""Chat messages shown on each side of a reported one."""
REPORT_NOTE_CHARS = 200
SHOW = "show"
"""The review queue's id for reports of the show itself (message ids are never it)."""
RANKS: dict[str, int] = {"guest": 0, "viewer": 0, "moderator": 1, "host": 2, "admin": 3}
"""Who may mute or ban whom: only someone of a higher rank in the room."""


class RoomCache:
    """Rooms as this process read them, each read at most once at a time.

    Chats, likes and orders read their room on every command. Read from Redis each
    time, that is a round trip per order in a burst; cached with a plain expiry, the
    entry expires in the middle of a burst and every waiting handler sends its own read
    (a stampede), and the handlers that arrive after the refill overtake them in the
    order queue. So:

    - a room read less than ``fresh_s`` ago is served as it is;
    - one read between ``fresh_s`` and ``stale_s`` ago is served as it is while one
      background task reads it again;
    - an older or missing one is read, and every caller meanwhile waits on that one read.

    A room's host never changes. Its status changes are seen at once by the process that
    made them (:meth:`forget`) and within ``stale_s`` by the others; the inventory's
    scripts check a sale's own state atomically, so a stale status never sells a unit.
    """

    def __init__(
        self,
        store: RoomStore,
        *,
        fresh_s: float = 1.0,
        stale_s: float = 5.0,
        clock: Callable[[], float] = time.time,
        max_rooms: int = 10_000,
    ) -> None:
        self._store = store
        self._fresh_s = fresh_s
        self._stale_s = stale_s
        self._clock = clock
        self._max_rooms = max_rooms
        self._rooms: dict[str, tuple[float, Room]] = {}
        self._reads: dict[str, asyncio.Task[Room | None]] = {}
        self.reads = 0

    async def get(self, room_id: str) -> Room | None:
        """The room, or None if there is none."""
        room = self.peek(room_id)
        if room is not None:
            return room
        # A caller that stops waiting must not cancel the read the others wait on.
        return await asyncio.shield(self._read(room_id))

    def peek(self, room_id: str) -> Room | None:
        """The room if it is known without waiting (fresh, or stale with a refresh
        started), else None: then :meth:`get` reads it."""
        cached = self._rooms.get(room_id)
        if cached is None:
            return None
        age = self._clock() - cached[0]
        if age < self._fresh_s:
            return cached[1]
        if age < self._stale_s:
            self._read(room_id)
            return cached[1]
        return None

    def forget(self, room_id: str) -> None:
        """Drop what is known of the room (this process just changed it): the next
        caller reads it again, and a read already under way is not kept."""
        self._rooms.pop(room_id, None)
        self._reads.pop(room_id, None)

    def _read(self, room_id: str) -> asyncio.Task[Room | None]:
        task = self._reads.get(room_id)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._load(room_id))
            self._reads[room_id] = task
            task.add_done_callback(functools.partial(self._read_done, room_id))
        return task

    async def _load(self, room_id: str) -> Room | None:
        started = self._clock()
        self.reads += 1
        room = await self._store.get(room_id)
        if self._reads.get(room_id) is not asyncio.current_task():
            return room  # forgotten meanwhile: may predate the change
        if room is None:
            self._rooms.pop(room_id, None)
        else:
            if len(self._rooms) >= self._max_rooms:
                self._rooms.clear()
            self._rooms[room_id] = (started, room)
        return room

    def _read_done(self, room_id: str, task: asyncio.Task[Room | None]) -> None:
        if self._reads.get(room_id) is task:
            del self._reads[room_id]
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.warning("reading room %s failed: %r", room_id, exc)


class FilterCache:
    """Each room's compiled word filter, read again at most once a second (another
    process's change is seen within a second; this process's at once)."""

    def __init__(
        self, store: ModerationStore, *, ttl_s: float = 1.0, clock: Callable[[], float]
    ) -> None:
        self._store = store
        self._ttl_s = ttl_s
        self._clock = clock
        self._filters: dict[str, tuple[float, WordFilter]] = {}

    async def get(self, room: str) -> WordFilter:
        now = self._clock()
        cached = self._filters.get(room)
        if cached is not None and now - cached[0] < self._ttl_s:
            return cached[1]
        terms = await self._store.filter_terms(room)
        leet = await self._store.leet(room)
        words = WordFilter(
            (Term(t, a) for t, a in terms.items() if a in FILTER_ACTIONS),  # type: ignore[arg-type]
            leet=leet,
        )
        if len(self._filters) > 10_000:
            self._filters.clear()
        self._filters[room] = (now, words)
        return words

    def forget(self, room: str) -> None:
        self._filters.pop(room, None)


def _terms(terms: dict[str, str]) -> list[dict[str, str]]:
    return [{"text": t, "action": a} for t, a in sorted(terms.items())]


@dataclass(frozen=True, slots=True)
class RoomView:
    """What the joiners of one read are told: the room's part, alike for all, and each
    joiner's own part (bans and orders, by user id)."""

    snap: LogSnapshot
    likes: int
    sales: list[Sale]
    slow: int
    banned: set[str]
    orders: dict[str, list[Order]]
    coupons: list[Coupon]
    giveaway: Giveaway | None
    """The giveaway not drawn yet, if any."""
    deals: list[Deal]
    forming: list[Group]
    auction: Auction | None


class RoomViews:
    """Room views for joiners: one read of a room serves every joiner waiting for it.

    A joiner is a hub member (buffering) before it asks, and a read begins only after
    its joiners asked, so the lines after the read's ``seq`` reach each of them through
    the hub, as with a read of their own. At most one read of a room is under way at a
    time: joiners who ask while one is wait for the next, which begins at the end of
    the loop turn in which the running one ends, or in which its first joiner asked if
    none was running. A crowd arriving (or a reconnect storm) then costs one read per
    read time, whatever its size, and no joiner waits for more than two reads.
    """

    def __init__(self, backends: Backends, *, analytics: bool = True) -> None:
        self._b = backends
        self._analytics = analytics
        self._next: dict[str, tuple[asyncio.Future[RoomView], set[str]]] = {}
        self._running: set[str] = set()
        self._reads: set[asyncio.Task[None]] = set()
        self.reads = 0

    def get(self, room_id: str, user: str) -> asyncio.Future[RoomView]:
        """The view of a read that begins after this call (await it), with ``user``'s
        own part."""
        batch = self._next.get(room_id)
        if batch is None:
            loop = asyncio.get_running_loop()
            batch = self._next[room_id] = (loop.create_future(), set())
            if room_id not in self._running:
                self._running.add(room_id)
                loop.call_soon(self._start, room_id)
        batch[1].add(user)
        return batch[0]

    def _start(self, room_id: str) -> None:
        future, users = self._next.pop(room_id)
        task = asyncio.get_running_loop().create_task(self._read(room_id, users, future))
        self._reads.add(task)
        task.add_done_callback(self._reads.discard)
        task.add_done_callback(lambda _: self._done(room_id))

    def _done(self, room_id: str) -> None:
        if room_id in self._next:
            self._start(room_id)
        else:
            self._running.discard(room_id)

    async def _read(self, room_id: str, users: set[str], future: asyncio.Future[RoomView]) -> None:
        self.reads += 1
        b = self._b
        try:
            (snap, likes, sales, slow, banned, orders), promotions = await asyncio.gather(
                asyncio.gather(
                    b.log.snapshot(room_id),
                    b.counters.add_likes(room_id, 0),
                    b.inventory.active_sales(room_id),
                    b.moderation.slow(room_id),
                    b.moderation.banned(room_id, users),
                    b.inventory.orders_of(room_id, users),
                ),
                asyncio.gather(
                    b.counters.note_joins(room_id, users) if self._analytics else _nothing(),
                    b.coupons.live(room_id),
                    b.giveaways.current(room_id),
                    b.groups.deals(room_id),
                    b.groups.forming(room_id, FORMING_SHOWN),
                    b.auctions.current(room_id),
                ),
            )
            _, coupons, giveaway, deals, (forming, _), auction = promotions
            tested = [x for x in sales if x.price_b is not None]
            if tested and self._analytics:  # who saw which price, for the tests' report
                await asyncio.gather(*(
                    b.counters.note_exposed(room_id, x.id, _arms(x.id, users)) for x in tested
                ))  # fmt: skip
        except Exception as exc:
            if not future.done():
                future.set_exception(exc)
            future.exception()  # retrieved: no warning if every joiner gave up
            return
        if not future.done():
            view = RoomView(
                snap, likes, sales, slow, banned, orders, coupons, giveaway, deals, forming, auction
            )
            future.set_result(view)


@dataclass(frozen=True, slots=True)
class Joined:
    """The outcome of a join: the reply's data, the lines to replay after it, and the
    membership to :meth:`~Membership.go_live` once both are written."""

    data: dict[str, Any]
    replay: list[bytes]
    membership: Membership
    floor: int


class RoomService:
    """The live-room commands of one process."""

    def __init__(
        self,
        settings: Settings,
        backends: Backends,
        hub: Hub,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        # every process of a deployment names an order alike: keyed by the shared secret
        self._id_key = order_id_key(settings.secret) if settings.secret else os.urandom(32)
        self.backends = backends
        self.hub = hub
        self._clock = clock
        lim = settings.limits
        self._chat_limit = RateLimiter(lim.chat_rate, lim.chat_burst)
        self._like_limit = RateLimiter(lim.like_rate, lim.like_burst)
        self._order_limit = RateLimiter(lim.order_rate, lim.order_burst)
        self._commerce_limit = RateLimiter(lim.commerce_rate, lim.commerce_burst)
        self._staff_limit = RateLimiter(lim.staff_rate, lim.staff_burst)
        self._join_limit = RateLimiter(lim.join_rate, lim.join_burst)
        self._create_limit = RateLimiter(lim.create_rate, lim.create_burst)
        self._product_limit = RateLimiter(lim.product_rate, lim.product_burst)
        self.batcher = ReservationBatcher(
            backends.inventory,
            hold_ms=settings.hold_s * 1000,
            max_batch=settings.reserve_batch,
            clock=clock,
        )
        # claims of one coupon and bids on one lot are served like orders: in batches
        self._claims: KeyedBatcher[tuple[str, str], ClaimRequest, Claimed] = KeyedBatcher(
            lambda key, claims: backends.coupons.claim_many(*key, claims, self.now_ms()),
            max_batch=settings.reserve_batch,
        )
        self._bids: KeyedBatcher[tuple[str, str], BidRequest, BidResult] = KeyedBatcher(
            lambda key, bids: backends.auctions.bid_many(*key, bids, self.now_ms()),
            max_batch=settings.reserve_batch,
        )
        self._rooms = RoomCache(backends.rooms, clock=clock)
        self._views = RoomViews(backends, analytics=settings.analytics)
        self._filters = FilterCache(backends.moderation, clock=clock)
        self._ids = itertools.count(1)
        self._id_prefix = os.urandom(3).hex()
        self._background: set[asyncio.Task[None]] = set()

    def now_ms(self) -> int:
        return int(self._clock() * 1000)

    async def drain(self) -> None:
        """Wait for the orders, claims and bids already queued to be served."""
        await asyncio.gather(self.batcher.close(), self._claims.close(), self._bids.close())

    def new_id(self) -> str:
        """An id unique across processes: a random per-process prefix and a counter."""
        return f"{self._id_prefix}{next(self._ids):x}"

    def prune(self) -> None:
        """Forget idle rate-limit buckets (called now and then)."""
        now = self._clock()
        for limiter in (
            self._chat_limit,
            self._like_limit,
            self._order_limit,
            self._commerce_limit,
            self._staff_limit,
            self._join_limit,
            self._create_limit,
            self._product_limit,
        ):
            limiter.prune(now)

    # -- rooms -----------------------------------------------------------------------

    async def room(self, room_id: str) -> Room:
        """The room, as this process saw it lately (see :class:`RoomCache`).

        Raises:
            Error: ``not_found`` if there is no such room.
        """
        room = await self._rooms.get(room_id)
        if room is None:
            raise Error("not_found", f"no room {room_id!r}")
        return room

    async def _moderating(self, who: Principal, room_id: str) -> Room:
        """The room, for a staff action (announce, ``mod.*``) of ``who``: their right to
        it, then their rate of such actions.

        Raises:
            Error: ``not_found``, ``unauthorized``, ``forbidden``, ``rate_limited``.
        """
        room = await self.room_as(who, room_id, MODERATORS)
        self._staff_limit.check(who.id, self._clock())
        return room

    async def room_as(self, who: Principal, room_id: str, allowed: frozenset[Role]) -> Room:
        """The room, if ``who`` holds one of ``allowed`` in it (rights before limits)."""
        return _allowed(who, await self.room(room_id), allowed)

    async def create_room(self, who: Principal, *, title: str, room_id: str | None) -> Room:
        if who.role not in HOSTS:
            raise Error("forbidden", "only hosts and admins create rooms")
        self._create_limit.check(who.id, self._clock())
        if (
            room_id is not None
            and who.role == "host"
            and who.rooms is not None
            and (room_id not in who.rooms)
        ):
            raise Error("forbidden", f"your token does not cover room {room_id!r}")
        title = clean_text(title, 200)
        room = Room(
            id=room_id or f"r-{secrets.token_hex(5)}",
            title=title,
            host=who.id,
            status="scheduled",
            created_at=self.now_ms(),
        )
        if not await self.backends.rooms.create(room):
            raise Error("conflict", f"room {room.id!r} already exists")
        return room

    async def list_rooms(self, who: Principal, status: Status | None) -> list[Room]:
        """The rooms ``who`` may see, newest first: a scheduled room only to those who
        run it (its host, its staff, admins); the public sees a show once it is live."""
        rooms = await self.backends.rooms.list(status)
        return [
            r for r in rooms if r.status != "scheduled" or who.role_in(r.id, r.host) in MODERATORS
        ]

    async def describe(self, room_id: str) -> dict[str, Any]:
        """The room with its live figures (``GET /api/rooms/{room}``)."""
        room = await self.room(room_id)
        likes = await self.backends.counters.add_likes(room.id, 0)
        snap = await self.backends.log.snapshot(room.id)
        sales = await self.backends.inventory.active_sales(room.id)
        return {
            **room.to_dict(),
            "viewers": self.hub.viewers(room.id),
            "likes": likes,
            "pinned": _pinned(snap.pinned),
            "sales": [s.public() for s in sales],
            "media": _media(snap.media),
        }

    async def start(self, who: Principal, room_id: str) -> None:
        """Go live. Starting a live room again is a no-op; an ended room cannot."""
        room = await self.room_as(who, room_id, HOSTS)
        changed = await self.backends.rooms.set_status(room.id, "scheduled", "live")
        self._rooms.forget(room.id)
        if changed:
            await self._publish(room.id, "room.started", {})
        elif (await self.room(room.id)).status == "ended":
            raise Error("bad_request", "the room has ended")

    async def end(self, who: Principal, room_id: str) -> None:
        """End the show, live or still scheduled; ending it again is a no-op.

        Exactly one caller, on any process, wins the change and publishes ``room.ended``.
        """
        room = await self.room_as(who, room_id, HOSTS)
        rooms = self.backends.rooms
        changed = await rooms.set_status(room.id, "live", "ended") or await rooms.set_status(
            room.id, "scheduled", "ended"
        )
        self._rooms.forget(room.id)
        if changed:
            await self._publish(room.id, "room.ended", {})

    # -- membership ------------------------------------------------------------------

    async def join(
        self,
        who: Principal,
        conn: Subscriber,
        room_id: str,
        *,
        since: int | None,
        epoch: str | None,
    ) -> Joined:
        self._join_limit.check(who.id, self._clock())
        room = await self.room(room_id)
        role = who.role_in(room.id, room.host)
        staff = role in MODERATORS
        if staff:  # so that no moderator can mute or ban them (``_may_sanction``)
            await self.backends.moderation.note_staff(room.id, who.id, role)
        membership = await self.hub.attach(room.id, conn, staff=staff)
        try:
            # shared with the other joiners of the room (a banned joiner is a member
            # until its answer comes, buffering: it is sent nothing); asyncio.shield: a
            # joiner that gives up must not cancel the others' read
            view = await asyncio.shield(self._views.get(room.id, who.id))
            if who.id in view.banned:
                raise Error("banned", "you are banned from this room")
            snap = view.snap
            replay: list[bytes] = []
            recovered = False
            floor = snap.seq
            if since is not None and epoch == snap.epoch and since <= snap.seq:
                lines = await self.backends.log.history(room.id, since, snap.epoch)
                if lines is not None:
                    replay, recovered = lines, True
                    floor = max(floor, since + len(lines))
            orders = view.orders.get(who.id, [])
            now = self.now_ms()
            coupons = [c for c in view.coupons if c.open_at(now)]
            mine = await self.backends.coupons.claims_of(room.id, who.id) if coupons else {}
            giveaway = view.giveaway if view.giveaway and view.giveaway.open_at(now) else None
            entered = giveaway is not None and await self.backends.giveaways.seen(
                room.id, who.id, self.hub.node, here=True
            )
            deals = [d for d in view.deals if d.status == "active"]
            groups_mine = await self.backends.groups.mine(room.id, who.id) if view.deals else []
            moderation = self.backends.moderation
            if staff:
                flagged = [loads(e) for e in await moderation.flagged(room.id)]
                terms = await moderation.filter_terms(room.id)
        except BaseException:
            self.hub.detach(room.id, conn)
            raise
        snapshot: dict[str, Any] = {
            "room": room.id,
            "title": room.title,
            "host": room.host,
            "status": room.status,
            "seq": snap.seq,
            "epoch": snap.epoch,
            "viewers": self.hub.viewers(room.id),
            "likes": view.likes,
            "pinned": _pinned(snap.pinned),
            "sales": [s.public() for s in view.sales],
            "recent": [fragment(line) for line in snap.recent],
            "announcement": None if snap.announcement is None else fragment(snap.announcement),
            "orders": [self.pay_link(o).public() for o in orders],
            "slow": view.slow,
            "media": _media(snap.media),
            "coupons": [c.public() for c in coupons],
            "my_coupons": mine,
            "giveaway": None if giveaway is None else giveaway.public(),
            "my_entry": entered,
            "deals": [d.public() for d in deals],
            "groups": [g.public() for g in view.forming],
            "my_groups": [g.public() for g in groups_mine],
            "auction": None if view.auction is None else view.auction.public(),
            "arms": {x.id: arm(x.id, who.id) for x in view.sales if x.price_b is not None},
        }
        if staff:
            snapshot["flagged"] = flagged
            snapshot["filter"] = _terms(terms)
        return Joined({"snapshot": snapshot, "recovered": recovered}, replay, membership, floor)

    def leave(self, room_id: str, conn: Subscriber, *, watched_s: float = 0) -> None:
        """``conn`` leaves the room, having watched it ``watched_s`` seconds."""
        self.hub.detach(room_id, conn)
        if watched_s > 0 and self.settings.analytics:
            self.hub.add_figures(room_id, {"watch_ms": int(watched_s * 1000)})
        user = conn.user_id
        if self.hub.giveaway(room_id) is not None and not self.hub.here(room_id, user):
            self._soon(self._seen(room_id, user))

    async def _seen(self, room: str, user: str) -> None:
        """Tell the giveaway store whether ``user`` is still watching on this process."""
        here = self.hub.here(room, user)
        await self.backends.giveaways.seen(room, user, self.hub.node, here=here)

    def _soon(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` in the background (its failure logged)."""
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background_done)

    def _background_done(self, task: asyncio.Task[None]) -> None:
        self._background.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("background work failed", exc_info=exc)

    # -- talking ---------------------------------------------------------------------

    async def _publish(self, room: str, type_: str, fields: dict[str, Any], **kw: Any) -> int:
        body = encode_event(type_, room, self.now_ms(), fields)
        return await self.backends.log.publish(room, body, **kw)

    async def chat(
        self, who: Principal, room_id: str, text: str, *, watched_s: float = 0
    ) -> dict[str, Any]:
        room = await self.room_as(who, room_id, CHATTERS)
        self._chat_limit.check(who.id, self._clock())
        text = clean_text(text, self.settings.limits.chat_max_chars)
        room.require_live()
        staff = who.role_in(room.id, room.host) in MODERATORS
        words = await self._filters.get(room.id)
        verdict = words.check(text)
        if verdict.action == "block":  # before admission, so a refused message uses no slot
            raise Error("blocked_content", "this message has a blocked word")
        refused = await self.backends.moderation.admit_chat(
            room.id, who.id, self.now_ms(), slow_exempt=staff
        )
        if refused is not None:
            raise refusal(*refused)
        msg_id = self.new_id()
        user = {"id": who.id, "name": who.name}
        chat = {"msg_id": msg_id, "user": user, "text": verdict.text}
        seq = await self._publish(room.id, "chat", chat, kind="chat", ref=msg_id)
        flagged = [t.text for t in words.terms if t.action == "flag" and t.text in verdict.matched]
        if flagged:
            entry = {**chat, "chat_seq": seq, "terms": flagged, "ts": self.now_ms()}
            await self.backends.moderation.flag(room.id, msg_id, dumps(entry))
            await self._to_staff(room.id, "chat.flagged", entry)
        figures = {"chats": 1}
        if (sku := self.hub.pinned(room.id)) is not None:
            figures[f"chats:{sku}"] = 1
        await self.backends.counters.count(room.id, figures)
        reply: dict[str, Any] = {"msg_id": msg_id, "seq": seq}
        g = self.hub.giveaway(room.id)
        if g is not None and g["entry"] == "keyword" and says_keyword(text, g["keyword"]):
            with contextlib.suppress(Error):  # a chat is a chat, whether it enters or not
                reply["entered"] = await self._enter(who, room, g["id"], watched_s, by_keyword=True)
        return reply

    async def product_open(self, who: Principal, room_id: str, sku: str) -> None:
        """A viewer opened a product's card: one ``clicks`` for the room's figures."""
        room = await self.room(room_id)
        self._like_limit.check(who.id, self._clock())
        if self.settings.analytics:
            self.hub.add_figures(room.id, analytics.per_sku("clicks", sku, 1))

    async def like(self, who: Principal, room_id: str, count: int) -> None:
        room = await self.room_as(who, room_id, CHATTERS)
        self._like_limit.check(who.id, self._clock())
        room.require_live()
        if not self.hub.add_likes(room.id, count):
            await self.backends.counters.add_likes(room.id, count)

    async def media_changed(self, room_id: str, *, live: bool, hls: bool) -> None:
        """Tell the room its video state changed (the media relay and recorder call
        this): ``media.started`` when a publisher connects, ``media.updated`` when its
        HLS playlist becomes playable, ``media.ended`` when it stops. The snapshot's
        ``media`` is the latest of them."""
        type_ = "media.ended" if not live else "media.updated" if hls else "media.started"
        media = media_state(live=live, hls=hls)
        await self._publish(room_id, type_, {"media": media}, kind="media")

    async def announce(self, who: Principal, room_id: str, text: str) -> int:
        room = await self._moderating(who, room_id)
        text = clean_text(text, self.settings.limits.chat_max_chars)
        seq = await self._publish(
            room.id, "announcement", {"text": text, "by": who.id}, kind="announcement"
        )
        await self._log(who, room.id, "announce", None, {"text": text})
        return seq

    # -- moderation ------------------------------------------------------------------

    async def delete(self, who: Principal, room_id: str, msg_id: str) -> None:
        room = await self._moderating(who, room_id)
        seq = await self._publish(
            room.id, "chat.deleted", {"msg_id": msg_id}, kind="chat.deleted", ref=msg_id
        )
        if not seq:
            raise Error("not_found", f"no message {msg_id!r} in the room's history")
        await self._log(who, room.id, "delete", msg_id)
        if await self.backends.moderation.unflag(room.id, msg_id):
            await self._reviewed(who, room.id, msg_id, "deleted")

    async def approve(self, who: Principal, room_id: str, msg_id: str) -> None:
        """Take a flagged message off the review queue, leaving it published."""
        room = await self._moderating(who, room_id)
        if not await self.backends.moderation.unflag(room.id, msg_id):
            raise Error("not_found", f"message {msg_id!r} is not waiting for review")
        await self._log(who, room.id, "approve", msg_id)
        await self._reviewed(who, room.id, msg_id, "approved")

    async def report(
        self, who: Principal, room_id: str, reason: str, msg_id: str | None, note: str | None
    ) -> dict[str, Any]:
        """``who`` reports a chat message (``msg_id``) or the show (none) with a
        ``reason`` code. The first report of a target puts it on the staff's review
        queue, with the message and its neighbours (``report.raised``); later ones only
        count (``report.counted``). One report per user and target.

        Raises:
            Error: rights (signed-in users), ``rate_limited`` (the chat limit),
                ``not_found`` for a message not in the room's history.
        """
        room = await self.room_as(who, room_id, CHATTERS)
        self._chat_limit.check(who.id, self._clock())
        context: list[dict[str, Any]] = []
        if msg_id is not None:
            lines = await self.backends.log.context(room.id, msg_id, REPORT_CONTEXT)
            if lines is None:
                raise Error("not_found", f"no message {msg_id!r} in the room's history")
            context = [loads(line) for line in lines]
        target = msg_id or SHOW
        counted = await self.backends.moderation.report(room.id, target, who.id, reason)
        if counted is None:  # this user reported it already: nothing changes
            return {"reported": target, "new": False}
        report = {"count": counted.count, "reasons": counted.reasons}
        if counted.count > 1:
            await self._to_staff(room.id, "report.counted", {"msg_id": target, "report": report})
            return {"reported": target, "new": True}
        entry: dict[str, Any] = {"msg_id": target, "report": report, "ts": self.now_ms()}
        if msg_id is None:
            entry |= {
                "user": {"id": room.host, "name": "the show"},
                "text": "The show was reported",
            }
        else:
            reported = next(c for c in context if c["msg_id"] == msg_id)
            entry |= {"user": reported["user"], "text": reported["text"], "context": context}
        if note:
            entry["note"] = clean_text(note, REPORT_NOTE_CHARS)
        await self.backends.moderation.flag(room.id, target, dumps(entry))
        await self._to_staff(room.id, "report.raised", entry)
        return {"reported": target, "new": True}

    async def _reviewed(self, who: Principal, room: str, msg_id: str, action: str) -> None:
        await self._to_staff(
            room, "chat.reviewed", {"msg_id": msg_id, "action": action, "by": who.id}
        )

    async def change_filter(
        self,
        who: Principal,
        room_id: str,
        *,
        add: list[str],
        remove: list[str],
        action: str | None,
        leet: bool | None = None,
    ) -> list[dict[str, str]]:
        """Change the room's word filter (its terms; whether it folds leetspeak when
        ``leet`` is given); every term with its action."""
        room = await self._moderating(who, room_id)
        if add and action is None:
            raise Error("bad_request", "action (block, mask or flag) is needed to add terms")
        for term in add:
            try:
                WordFilter([Term(term, "block")])
            except ValueError:
                raise Error("bad_request", f"term {term!r} has no letters or digits") from None
        if add:
            known = await self.backends.moderation.filter_terms(room.id)
            cap = self.settings.limits.max_filter_terms
            if len(known.keys() | set(add)) - len(set(remove) - set(add)) > cap:
                raise Error("limit_exceeded", f"a room's word filter holds at most {cap} terms")
        terms = await self.backends.moderation.change_filter(room.id, add, remove, action or "")
        if leet is not None:
            await self.backends.moderation.set_leet(room.id, leet)
        self._filters.forget(room.id)
        if add or remove or leet is not None:
            details = {"add": add, "remove": remove, "action": action, "leet": leet}
            await self._log(who, room.id, "filter", None, details)
        return _terms(terms)

    async def modlog(self, who: Principal, room_id: str, limit: int) -> list[dict[str, Any]]:
        """The room's moderation log, oldest first (staff only)."""
        room = await self.room_as(who, room_id, MODERATORS)
        return [loads(e) for e in await self.backends.moderation.actions(room.id, limit)]

    async def show_report(self, who: Principal, room_id: str) -> dict[str, Any]:
        """The show's figures, live or after it ended (``analytics.report``): for the
        room's staff.

        Raises:
            Error: rights, ``not_found``.
        """
        room = await self.room_as(who, room_id, MODERATORS)
        c = self.backends.counters
        figures, likes, unique, minutes, products = await asyncio.gather(
            c.figures(room.id),
            c.add_likes(room.id, 0),
            c.unique_viewers(room.id),
            c.minutes(room.id),
            self.backends.inventory.products(room.id),
        )
        rep = analytics.report(
            figures=figures,
            likes=likes,
            viewers_now=self.hub.viewers(room.id),
            unique_viewers=unique,
            minutes=minutes,
            products=[(p.sku, p.title) for p in products],
        )
        tests = []
        for sale_id in await c.ab_tests(room.id):
            sale = await self.backends.inventory.sale(room.id, sale_id)
            if sale is None or sale.price_b is None:
                continue
            tests.append(analytics.ab_test(
                sale_id=sale.id, sku=sale.sku, title=sale.title,
                prices={"a": sale.price, "b": sale.price_b},
                counts=await c.ab_counts(room.id, sale.id),
                orders={g: figures.get(f"ab_orders:{sale.id}:{g}", 0) for g in ("a", "b")},
            ))  # fmt: skip
        return {"room": room.id, "title": room.title, "status": room.status,
                "at": self.now_ms(), **rep, "ab_tests": tests}  # fmt: skip

    async def my_data(self, who: Principal) -> dict[str, Any]:
        """Everything the server holds about ``who``, by room; each room's moderation
        log keeps that it was exported.

        Raises:
            Error: ``unauthorized`` for a guest.
        """
        if who.role == "guest":
            raise Error("unauthorized", "sign in to see your data")
        rooms = await self.backends.privacy.export(who.id)
        alias = self._alias(who.id)
        for room in rooms:  # the log names the user by their pseudonym only
            await self._log(
                Principal(id=alias, name=alias, role=who.role), room, "data.export", alias
            )
        return {"user": who.as_user(), "exported_at": self.now_ms(), "rooms": rooms}

    def _alias(self, user: str) -> str:
        """The user's pseudonym: stable, and no one without the secret can find the id."""
        return "erased-" + hmac.new(self._id_key, user.encode(), "sha256").hexdigest()[:16]

    async def erase_my_data(self, who: Principal) -> dict[str, Any]:
        """Erase ``who``'s data: their chat messages leave every screen (``chat.deleted``)
        and every store; everywhere else a pseudonym takes their id, so the rooms'
        figures, orders for the shop and bid logs stay whole. Each room's moderation
        log keeps that it was done, under the pseudonym.

        Raises:
            Error: ``unauthorized`` for a guest.
        """
        if who.role == "guest":
            raise Error("unauthorized", "sign in to erase your data")
        alias = self._alias(who.id)
        rooms = await self.backends.privacy.export(who.id)
        for room, data in rooms.items():
            for chat in data["chats"]:
                ref = chat["msg_id"]
                await self._publish(
                    room, "chat.deleted", {"msg_id": ref}, kind="chat.deleted", ref=ref
                )
        erased = await self.backends.privacy.erase(who.id, alias, who.name)
        gone = Principal(id=alias, name="Erased user", role=who.role)
        for room in rooms:
            await self._log(gone, room, "data.erase", alias, erased)
        return {"erased": erased, "alias": alias, "rooms": sorted(rooms)}

    async def export_chat(self, who: Principal, room_id: str) -> dict[str, Any]:
        """The room's chat as the archive keeps it, oldest first, each message with the
        moderation of it (deleted, and by whom), and the room's moderation log (staff
        only: host, moderators, admins).

        Raises:
            Error: rights, ``not_found``.
        """
        room = await self.room_as(who, room_id, MODERATORS)
        actions = [loads(e) for e in await self.backends.moderation.actions(room.id, MODLOG_SIZE)]
        deleted = {a["target"]: a for a in actions if a["action"] == "delete"}
        messages: list[dict[str, Any]] = []
        while len(messages) < EXPORT_MAX:
            page = await self.backends.log.chats(room.id, len(messages), 1000)
            for ts, line in page:
                chat = loads(line)
                message = {"seq": chat["seq"], "ts": ts, "msg_id": chat["msg_id"],
                           "user": chat["user"], "text": chat["text"]}  # fmt: skip
                if (gone := deleted.get(chat["msg_id"])) is not None:
                    message["deleted"] = {"at": gone["at"], "by": gone["by"]}
                messages.append(message)
            if len(page) < 1000:
                break
        return {"room": room.id, "title": room.title, "exported_at": self.now_ms(),
                "messages": messages, "actions": actions}  # fmt: skip

    async def _log(
        self,
        who: Principal,
        room: str,
        action: str,
        target: str | None,
        details: dict[str, Any] | None = None,
    ) -> None:
        """Keep a moderation action in the room's log and show it to the staff live."""
        entry = {
            "at": self.now_ms(),
            "by": {"id": who.id, "name": who.name},
            "action": action,
            "target": target,
            "details": details or {},
        }
        await self.backends.moderation.log_action(room, dumps(entry))
        await self._to_staff(room, "mod.logged", {"entry": entry})

    async def _to_staff(self, room: str, type_: str, fields: dict[str, Any]) -> None:
        line = encode_event(type_, room, self.now_ms(), fields)
        await self.backends.log.send_private(room, STAFF, line)

    async def _tell(self, room: str, user: str, fields: dict[str, Any]) -> None:
        line = encode_event("moderation", room, self.now_ms(), fields)
        await self.backends.log.send_private(room, user, line)

    async def _may_sanction(self, who: Principal, room: Room, user: str, what: str) -> None:
        """Only down the ranks: a moderator mutes or bans viewers, a host moderators
        too, an admin anyone but the host; nobody the room's host.

        Raises:
            Error: ``forbidden``.
        """
        if user == room.host:
            raise Error("forbidden", f"the room's host cannot be {what}")
        target = await self.backends.moderation.staff_role(room.id, user)
        mine = RANKS[who.role_in(room.id, room.host)]
        if target is not None and RANKS.get(target, 0) >= mine:
            raise Error("forbidden", f"a {target} of this room cannot be {what} by you")

    async def mute(self, who: Principal, room_id: str, user: str, seconds: int) -> None:
        room = await self._moderating(who, room_id)
        await self._may_sanction(who, room, user, "muted")
        until = self.now_ms() + seconds * 1000
        await self.backends.moderation.mute(room.id, user, until)
        await self._tell(room.id, user, {"action": "muted", "until": until})
        await self._log(who, room.id, "mute", user, {"seconds": seconds, "until": until})

    async def ban(self, who: Principal, room_id: str, user: str, banned: bool) -> None:
        room = await self._moderating(who, room_id)
        if banned:
            await self._may_sanction(who, room, user, "banned")
        changed = await self.backends.moderation.set_banned(room.id, user, banned)
        if changed and banned:
            await self._tell(room.id, user, {"action": "banned", "until": None})
        if changed:
            await self._log(who, room.id, "ban" if banned else "unban", user)

    async def slow(self, who: Principal, room_id: str, seconds: int) -> None:
        room = await self._moderating(who, room_id)
        await self.backends.moderation.set_slow(room.id, seconds)
        await self._publish(room.id, "room.slow", {"seconds": seconds})
        await self._log(who, room.id, "slow", None, {"seconds": seconds})

    # -- commerce --------------------------------------------------------------------

    async def put_product(self, who: Principal, room_id: str, product: Product) -> Product:
        room = await self.room_as(who, room_id, HOSTS)
        self._product_limit.check(who.id, self._clock())
        await self.backends.inventory.put_product(room.id, product)
        return product

    async def products(self, room_id: str) -> list[Product]:
        room = await self.room(room_id)
        return await self.backends.inventory.products(room.id)

    async def _product(self, room: str, sku: str) -> Product:
        for product in await self.backends.inventory.products(room):
            if product.sku == sku:
                return product
        raise Error("not_found", f"no product {sku!r} in the room's lineup")

    async def pin(self, who: Principal, room_id: str, sku: str) -> None:
        room = await self.room_as(who, room_id, HOSTS)
        self._commerce_limit.check(who.id, self._clock())
        product = await self._product(room.id, sku)
        await self._publish(room.id, "product.pinned", {"product": product.to_dict()}, kind="pin")

    async def unpin(self, who: Principal, room_id: str, sku: str) -> None:
        room = await self.room_as(who, room_id, HOSTS)
        self._commerce_limit.check(who.id, self._clock())
        pinned = _pinned((await self.backends.log.snapshot(room.id)).pinned)
        if pinned is None or pinned["sku"] != sku:
            raise Error("not_found", f"{sku!r} is not pinned")
        await self._publish(room.id, "product.unpinned", {"product": pinned}, kind="unpin")

    async def start_sale(
        self,
        who: Principal,
        room_id: str,
        *,
        sku: str,
        price: int,
        stock: int,
        limit_per_user: int,
        duration_s: int,
        price_b: int | None = None,
    ) -> Sale:
        """Open a flash sale; with ``price_b``, an A/B test of its price: each buyer pays
        their arm's (``inventory.rules.arm``), and the report compares the arms.

        Raises:
            Error: rights, ``rate_limited``, ``not_found`` (sku), ``room_not_live``,
                ``bad_request`` for a ``price_b`` equal to the price.
        """
        room = await self.room_as(who, room_id, HOSTS)
        self._commerce_limit.check(who.id, self._clock())
        product = await self._product(room.id, sku)
        room.require_live()
        if price_b == price:
            raise Error("bad_request", "price_b must differ from the price (or be left out)")
        now = self.now_ms()
        sale = Sale(
            id=f"s-{secrets.token_hex(5)}",
            room=room.id,
            sku=sku,
            title=product.title,
            price=price,
            stock=stock,
            limit_per_user=min(limit_per_user, stock),
            starts_at=now,
            ends_at=now + duration_s * 1000,
            price_b=price_b,
        )
        fields = {"sale": {k: v for k, v in sale.public().items() if k != "remaining"}}
        event = encode_event("sale.started", room.id, now, fields)
        if price_b is not None:
            await self.backends.counters.note_ab_test(room.id, sale.id)
        await self.backends.inventory.start_sale(sale, event)
        return sale

    async def stop_sale(self, who: Principal, room_id: str, sale_id: str) -> None:
        """Stop a sale; stopping an ended sale changes nothing."""
        room = await self.room_as(who, room_id, HOSTS)
        self._commerce_limit.check(who.id, self._clock())
        if await self.backends.inventory.sale(room.id, sale_id) is None:
            raise Error("not_found", f"no sale {sale_id!r}")
        await self.backends.inventory.stop_sale(room.id, sale_id, self.now_ms())

    async def order(
        self,
        who: Principal,
        room_id: str,
        *,
        sale_id: str,
        qty: int,
        key: str,
        coupon: str | None = None,
    ) -> Order:
        attempt = self._attempt(who, await self.room(room_id), key, qty, coupon)
        return self._placed(sale_id, await self.batcher.reserve(room_id, sale_id, attempt))

    def order_nowait(
        self,
        who: Principal,
        room_id: str,
        *,
        sale_id: str,
        qty: int,
        key: str,
        done: Callable[[Order | Error], None],
        coupon: str | None = None,
    ) -> bool:
        """:meth:`order` without a task or a future, when the room is known: the
        attempt joins the next batch and ``done`` gets the order or the refusal. False
        (nothing done) when the room must be read first: await :meth:`order` then.

        Raises:
            Error: the checks before the reservation (rights, rate, room live).
        """
        room = self._rooms.peek(room_id)
        if room is None:
            return False
        attempt = self._attempt(who, room, key, qty, coupon)

        def resolved(outcome: Outcome | Exception) -> None:
            if isinstance(outcome, Exception):
                log.error("reserving failed", exc_info=outcome)
                done(Error("internal", "internal error"))
                return
            try:
                done(self._placed(sale_id, outcome))
            except Error as err:
                done(err)

        self.batcher.submit((room_id, sale_id), attempt, resolved)
        return True

    def _attempt(
        self, who: Principal, room: Room, key: str, qty: int, coupon: str | None = None
    ) -> Attempt:
        """An order attempt, after the checks in their documented order."""
        _allowed(who, room, CHATTERS)
        self._order_limit.check(who.id, self._clock())
        room.require_live()
        oid = order_id(room.id, who.id, key, self._id_key)
        return Attempt(oid, who.id, key, qty, coupon)

    def _placed(self, sale_id: str, outcome: Outcome) -> Order:
        """The order of an outcome, with its payment page; its refusal raised."""
        if outcome.error == "not_found":
            raise Error("not_found", f"no sale {sale_id!r}")
        return self.pay_link(outcome.result())

    def pay_link(self, order: Order) -> Order:
        """The order with its payment page: the sandbox's is known before the bridge
        delivers the order, so every view of a hold has it at once."""
        if order.payment_url is None and self.settings.order_webhook_url is None:
            return replace(order, payment_url=checkout_path(order.id))
        return order

    async def get_order(self, who: Principal, oid: str) -> Order:
        _check_order_id(oid)
        order = await self.backends.inventory.order(oid)
        if order is None or (order.user != who.id and who.role != "admin"):
            raise Error("not_found", "no such order")  # others' orders do not exist
        return self.pay_link(order)

    async def _granted(self, room: str, grants: list[Grant], now: int, hold_ms: int) -> None:
        """Tell each user of the order a promotion just held for them (all at once)."""
        orders = [g.held(room, now=now, hold_ms=hold_ms) for g in grants]
        await asyncio.gather(*(self._order_updated(o) for o in orders))

    async def _order_updated(self, order: Order) -> None:
        fields = {"order": self.pay_link(order).public()}
        line = encode_event("order.updated", order.room, self.now_ms(), fields)
        await self.backends.log.send_private(order.room, order.user, line)

    async def confirm_payment(self, oid: str) -> Order:
        """The order system confirmed payment: the hold becomes paid (once).

        Raises:
            Error: ``not_found`` for an unknown order.
        """
        done = await self.settle(oid, "paid", event_id=None)
        assert done.order is not None  # settle raised not_found otherwise
        return done.order

    async def settle(self, oid: str, kind: SettleKind, *, event_id: str | None) -> Settled:
        """Apply an order-system callback (``docs/orders.md`` has the table); tell the
        buyer if it changed the order.

        Raises:
            Error: ``not_found`` for an unknown order.
        """
        _check_order_id(oid)
        done = await self.backends.inventory.settle(
            oid, kind, event_id=event_id, now_ms=self.now_ms()
        )
        if done.order is None:
            raise Error("not_found", "no such order")
        if done.applied:
            await self._order_updated(done.order)
            if done.order.status == "paid":
                await self.backends.counters.note_buyer(done.order.room, done.order.user)
        return done

    async def delivered(self, oid: str, payment_url: str | None) -> None:
        """The order system has the order; if it gave a payment page, the hold gets it
        and the buyer is told."""
        if payment_url is None:
            return
        order = await self.backends.inventory.set_payment_url(oid, payment_url)
        known = self.settings.order_webhook_url is None and payment_url == checkout_path(oid)
        if order is not None and order.status == "held" and not known:  # news to the buyer
            await self._order_updated(order)

    async def sweep(self) -> int:
        """Release expired holds and end sales past their time, in every room that may
        have them; tell each buyer. End the coupons whose window closed or that are all
        claimed, in the rooms this process serves. Returns how many holds were released."""
        released = 0
        for room in await self.backends.inventory.rooms_to_sweep():
            for order in await self.backends.inventory.sweep(room, self.now_ms()):
                released += 1
                await self._order_updated(order)
        for room in self.hub.rooms_with_coupons():
            now = self.now_ms()
            for coupon in await self.backends.coupons.live(room):
                if coupon.remaining and coupon.open_at(now):
                    continue
                reason: CouponEnd = "claimed" if not coupon.remaining else "expired"
                ended = await self.backends.coupons.end(room, coupon.id, reason)
                if ended is not None:  # one process wins the end, and says it
                    await self._coupon_ended(ended)
        for room in self.hub.rooms_with_groups():
            await self._fail_groups(room)
        for room, lot in self.hub.auctions():
            if lot["ends_at"] <= self.now_ms():
                await self._end_auction(room, lot["id"])
        for room, giveaway in self.hub.giveaways():
            if giveaway["ends_at"] <= self.now_ms():
                await self._draw(room, giveaway["id"])
        return released

    async def forget_old(self) -> dict[str, int]:
        """The retention sweeper: delete, in every room, what is older than its kind's
        retention (``Settings.retention``). Returns how many of each went."""
        keep, now, day = self.settings.retention, self.now_ms(), 86_400_000
        b, gone = self.backends, dict.fromkeys(("chats", "actions", "orders", "minutes"), 0)
        for room in await b.rooms.ids():
            gone["chats"] += await b.log.forget_chats(room, now - int(keep.chat_days * day))
            gone["actions"] += await b.moderation.forget_actions(
                room, now - int(keep.modlog_days * day)
            )
            gone["orders"] += await b.inventory.forget_orders(
                room, now - int(keep.orders_days * day)
            )
            gone["minutes"] += await b.counters.forget_minutes(
                room, now - int(keep.analytics_days * day)
            )
        if any(gone.values()):
            log.info("retention: deleted %s", gone)
        return gone

    # -- coupons ---------------------------------------------------------------------

    async def drop_coupon(self, who: Principal, room_id: str, a: Mapping[str, Any]) -> Coupon:
        """The host drops a coupon into the live room (``coupon.dropped`` to all).

        Raises:
            Error: rights, ``rate_limited``, ``room_not_live``, ``bad_request`` for a
                field outside its rule, ``not_found`` for a sku not in the lineup.
        """
        room = await self.room_as(who, room_id, HOSTS)
        self._commerce_limit.check(who.id, self._clock())
        room.require_live()
        coupon = new_coupon(
            coupon_id=f"c-{secrets.token_hex(5)}",
            room=room.id,
            kind=a.get("kind"),
            value=a.get("value"),
            min_total=a.get("min_total"),
            skus=a.get("skus"),
            quantity=a.get("quantity"),
            per_user=a.get("per_user"),
            minutes=a.get("minutes"),
            until=a.get("until"),
            watch_minutes=a.get("watch_minutes"),
            now=self.now_ms(),
        )
        if coupon.skus:
            lineup = {p.sku for p in await self.backends.inventory.products(room.id)}
            if missing := [s for s in coupon.skus if s not in lineup]:
                raise Error("not_found", f"not in the lineup: {', '.join(missing)}")
        await self.backends.coupons.drop(coupon)
        await self._publish(room.id, "coupon.dropped", {"coupon": coupon.public()})
        await self._log(who, room.id, "coupon.drop", coupon.id, coupon.public())
        return coupon

    async def stop_coupon(self, who: Principal, room_id: str, coupon_id: str) -> None:
        """The host stops a coupon; stopping an ended one changes nothing."""
        room = await self.room_as(who, room_id, HOSTS)
        self._commerce_limit.check(who.id, self._clock())
        ended = await self.backends.coupons.end(room.id, coupon_id, "stopped")
        if ended is None:
            if await self.backends.coupons.coupon(room.id, coupon_id) is None:
                raise Error("not_found", f"no coupon {coupon_id!r} in this room")
            return
        await self._coupon_ended(ended)
        await self._log(who, room.id, "coupon.stop", coupon_id)

    async def claim_coupon(
        self, who: Principal, room_id: str, coupon_id: str, *, watched_s: float
    ) -> dict[str, Any]:
        """One claim of ``who``, who has watched the show ``watched_s`` seconds.

        Raises:
            Error: rights (signed-in users), ``rate_limited``, ``room_not_live``,
                ``banned``, ``not_found``, ``not_eligible`` (the watch-time gate),
                ``coupon_ended``, ``limit_exceeded``, ``sold_out``.
        """
        room = await self.room_as(who, room_id, CHATTERS)
        self._order_limit.check(who.id, self._clock())
        room.require_live()
        claimed = await self._claims.ask((room.id, coupon_id), (who.id, watched_s))
        return {"coupon": claimed.result().public(), "mine": claimed.mine}

    async def _lineup_product(self, room: str, sku: str) -> Product:
        """The room's product ``sku``.

        Raises:
            Error: ``not_found`` if it is not in the lineup.
        """
        for product in await self.backends.inventory.products(room):
            if product.sku == sku:
                return product
        raise Error("not_found", f"not in the lineup: {sku}")

    async def _coupon_ended(self, coupon: Coupon) -> None:
        fields = {"coupon_id": coupon.id, "reason": coupon.reason}
        await self._publish(coupon.room, "coupon.ended", fields)

    # -- giveaways --------------------------------------------------------------------

    async def start_giveaway(self, who: Principal, room_id: str, a: Mapping[str, Any]) -> Giveaway:
        """The host starts a giveaway (``giveaway.started`` to all, with the seed's
        commitment); one at a time per room.

        Raises:
            Error: rights, ``rate_limited``, ``room_not_live``, ``bad_request`` for a
                field outside its rule, ``not_found`` for a sku not in the lineup,
                ``conflict`` while another giveaway is not drawn.
        """
        room = await self.room_as(who, room_id, HOSTS)
        self._commerce_limit.check(who.id, self._clock())
        room.require_live()
        product = None
        if (sku := a.get("sku")) is not None:
            product = (sku, (await self._lineup_product(room.id, sku)).title)
        seed = draws.new_seed()
        giveaway = new_giveaway(
            giveaway_id=f"{room.id}.g{secrets.token_hex(5)}",
            room=room.id,
            prize=a.get("prize"),
            product=product,
            count=a.get("winners"),
            duration_s=a.get("duration_s"),
            entry=a.get("entry"),
            keyword=a.get("keyword"),
            verified_only=a.get("verified_only"),
            watch_minutes=a.get("watch_minutes"),
            seed=seed,
            now=self.now_ms(),
        )
        if not await self.backends.giveaways.start(giveaway, seed):
            raise Error("conflict", "a giveaway is already running in this room")
        await self._publish(room.id, "giveaway.started", {"giveaway": giveaway.public()})
        await self._log(who, room.id, "giveaway.start", giveaway.id, giveaway.public())
        return giveaway

    async def enter_giveaway(
        self, who: Principal, room_id: str, gid: str, *, watched_s: float
    ) -> dict[str, Any]:
        """One entry of ``who`` (pressing Enter, or commenting the keyword: ``chat``).

        Raises:
            Error: rights (signed-in viewers; not the room's host), ``rate_limited``,
                ``room_not_live``, ``not_found``, ``not_eligible`` (verified only, or
                the watch time), then in one atomic step ``banned``, ``muted``,
                ``giveaway_closed``.
        """
        room = await self.room_as(who, room_id, CHATTERS)
        self._order_limit.check(who.id, self._clock())
        room.require_live()
        return await self._enter(who, room, gid, watched_s, by_keyword=False)

    async def _enter(
        self, who: Principal, room: Room, gid: str, watched_s: float, *, by_keyword: bool
    ) -> dict[str, Any]:
        if who.role_in(room.id, room.host) == "host":
            raise Error("forbidden", "a host may not enter their own giveaway")
        g = await self.backends.giveaways.get(room.id, gid)
        if g is None:
            raise Error("not_found", "no such giveaway in this room")
        if g.entry == "keyword" and not by_keyword:
            raise Error("bad_request", f"enter this giveaway by commenting {g.keyword!r}")
        if not eligible(g, verified=who.verified, watched_s=watched_s):
            data: dict[str, object] = {"verified_only": g.verified_only, "watch_s": g.watch_s}
            raise Error("not_eligible", "this giveaway is for other viewers", data=data)
        got = await self.backends.giveaways.enter(
            room.id, gid, who.id, self.now_ms(), self.hub.node
        )
        g = got.result()
        return {"giveaway_id": g.id, "entries": g.entries, "new": got.added}

    async def draw_giveaway(self, who: Principal, room_id: str, gid: str) -> Giveaway:
        """The host draws now, before the time is up.

        Raises:
            Error: rights, ``rate_limited``, ``not_found``, ``giveaway_closed`` (drawn
                or cancelled already).
        """
        room = await self.room_as(who, room_id, HOSTS)
        self._commerce_limit.check(who.id, self._clock())
        drawn = await self._draw(room.id, gid)
        if drawn is None:
            if await self.backends.giveaways.get(room.id, gid) is None:
                raise Error("not_found", "no such giveaway in this room")
            raise Error("giveaway_closed", "this giveaway is drawn or cancelled already")
        await self._log(who, room.id, "giveaway.draw", gid, {"winners": list(drawn.winners)})
        return drawn

    async def cancel_giveaway(self, who: Principal, room_id: str, gid: str) -> None:
        """The host cancels an open giveaway: no draw (``giveaway.cancelled``)."""
        room = await self.room_as(who, room_id, HOSTS)
        self._commerce_limit.check(who.id, self._clock())
        if await self.backends.giveaways.cancel(room.id, gid) is None:
            if await self.backends.giveaways.get(room.id, gid) is None:
                raise Error("not_found", "no such giveaway in this room")
            raise Error("giveaway_closed", "only an open giveaway can be cancelled")
        await self._publish(room.id, "giveaway.cancelled", {"giveaway_id": gid})
        await self._log(who, room.id, "giveaway.cancel", gid)

    async def _draw(self, room: str, gid: str) -> Giveaway | None:
        """Freeze the entrants, draw, and write the winners with their prize orders in
        one step; publish ``giveaway.drawn`` and tell each winner of their order. Safe to
        run again after a crash, or from two processes: the same seed and frozen
        entrants give the same winners, and only one call writes them. None if this
        call did not draw it."""
        store, now = self.backends.giveaways, self.now_ms()
        frozen = await store.freeze(room, gid, now)
        if frozen is None:
            return None
        g = frozen.giveaway
        proof = draws.make_proof(
            giveaway=gid, room=room, seed=frozen.seed, entrants=frozen.entrants, count=g.count
        )
        key, sku = f"giveaway:{gid}", g.sku or gid  # a prize of text: the giveaway's id
        grants = [
            Grant(order_id(room, w, key, self._id_key), w, key, gid, "giveaway", sku, g.prize, 0)
            for w in proof.winners
        ]
        hold_ms = self.settings.hold_s * 1000
        drawn = await store.finish(room, proof, grants, now_ms=now, hold_ms=hold_ms)
        if drawn is None:
            return None
        await self._publish(room, "giveaway.drawn", {"giveaway": drawn.public()})
        await self._granted(room, grants, now, hold_ms)
        return drawn

    async def giveaway_proof(self, gid: str) -> dict[str, Any]:
        """A drawn giveaway's proof (public: anyone may check a draw).

        Raises:
            Error: ``not_found`` for an unknown giveaway or one not drawn yet.
        """
        room = room_of_giveaway(gid)
        proof = await self.backends.giveaways.proof(room, gid) if ROOM_ID.fullmatch(room) else None
        if proof is None:
            raise Error("not_found", "no drawn giveaway with this id")
        return proof.to_json()

    # -- group buys -------------------------------------------------------------------

    async def start_deal(self, who: Principal, room_id: str, a: Mapping[str, Any]) -> Deal:
        """The host sells a product of the lineup by group (``deal.started`` to all).

        Raises:
            Error: rights, ``rate_limited``, ``room_not_live``, ``not_found`` for a sku
                not in the lineup, ``bad_request`` for a field outside its rule.
        """
        room = await self.room_as(who, room_id, HOSTS)
        self._commerce_limit.check(who.id, self._clock())
        room.require_live()
        product = await self._lineup_product(room.id, a["sku"])
        deal = new_deal(
            deal_id=f"d-{secrets.token_hex(5)}",
            room=room.id,
            product=(product.sku, product.title, product.price),
            price=a.get("price"),
            size=a.get("size"),
            window_minutes=a.get("window_minutes"),
            stock=a.get("stock"),
            now=self.now_ms(),
        )
        await self.backends.groups.start(deal)
        await self._publish(room.id, "deal.started", {"deal": deal.public()})
        await self._log(who, room.id, "deal.start", deal.id, deal.public())
        return deal

    async def stop_deal(self, who: Principal, room_id: str, deal_id: str) -> None:
        """No new groups of the deal; groups forming go on to fill or fail."""
        room = await self.room_as(who, room_id, HOSTS)
        self._commerce_limit.check(who.id, self._clock())
        if await self.backends.groups.stop(room.id, deal_id) is None:
            if await self.backends.groups.deal(room.id, deal_id) is None:
                raise Error("not_found", f"no deal {deal_id!r} in this room")
            return
        await self._publish(room.id, "deal.ended", {"deal_id": deal_id})
        await self._log(who, room.id, "deal.stop", deal_id)

    async def open_group(self, who: Principal, room_id: str, deal_id: str) -> dict[str, Any]:
        """``who`` opens a group of the deal, holding one unit at the group price.

        Raises:
            Error: rights (signed-in users), ``rate_limited``, ``room_not_live``, then in
                one atomic step ``not_found``, ``banned``, ``group_closed`` (the deal
                ended), ``conflict`` (in a forming group of this deal already),
                ``sold_out``.
        """
        room = await self.room_as(who, room_id, CHATTERS)
        self._order_limit.check(who.id, self._clock())
        room.require_live()
        gid = f"{room.id}.p{secrets.token_hex(5)}"
        oid = order_id(room.id, who.id, f"group:{gid}", self._id_key)
        got = await self.backends.groups.open(room.id, deal_id, gid, who.id, oid, self.now_ms())
        return {"group": got.result().public()}

    async def join_group(self, who: Principal, room_id: str, gid: str) -> dict[str, Any]:
        """``who`` takes a slot of a forming group (from its share link); the last slot
        fills it: every member's order is held at the group price in that same step.

        Raises:
            Error: rights, ``rate_limited``, ``room_not_live``, then in one atomic step
                ``not_found``, ``banned``, ``group_closed`` (filled, failed, or its window
                over), ``group_full``, ``conflict``, ``sold_out``.
        """
        room = await self.room_as(who, room_id, CHATTERS)
        self._order_limit.check(who.id, self._clock())
        room.require_live()
        oid = order_id(room.id, who.id, f"group:{gid}", self._id_key)
        now, hold_ms = self.now_ms(), self.settings.hold_s * 1000
        got = await self.backends.groups.join(
            room.id, gid, who.id, oid, now_ms=now, hold_ms=hold_ms
        )
        group = got.result()
        if got.filled:
            await self._publish(room.id, "group.filled", {"group": group.public()})
            deal = await self.backends.groups.deal(room.id, group.deal)
            assert deal is not None  # a group's deal is never deleted
            key = f"group:{gid}"
            grants = [
                Grant(order_id(room.id, m, key, self._id_key), m, key, gid, "group",
                      deal.sku, deal.title, deal.price)
                for m in group.members
            ]  # fmt: skip
            await self._granted(room.id, grants, now, hold_ms)
        return {"group": group.public(), "filled": got.filled}

    async def _fail_groups(self, room: str) -> None:
        """Fail the room's groups whose window ended short, and say so."""
        for group in await self.backends.groups.expire(room, self.now_ms()):
            await self._publish(room, "group.failed", {"group": group.public()})

    # -- auctions ---------------------------------------------------------------------

    async def start_auction(self, who: Principal, room_id: str, a: Mapping[str, Any]) -> Auction:
        """The host auctions a product of the lineup (``auction.started`` to all); one
        lot at a time per room.

        Raises:
            Error: rights, ``rate_limited``, ``room_not_live``, ``not_found`` for a sku
                not in the lineup, ``bad_request``, ``conflict`` while a lot is open.
        """
        room = await self.room_as(who, room_id, HOSTS)
        self._commerce_limit.check(who.id, self._clock())
        room.require_live()
        product = await self._lineup_product(room.id, a["sku"])
        lot = new_auction(
            auction_id=f"{room.id}.a{secrets.token_hex(5)}",
            room=room.id,
            product=(product.sku, product.title),
            seller=room.host,
            start_bid=a.get("start_bid"),
            duration_s=a.get("duration_s"),
            extend_s=a.get("extend_s"),
            max_extensions=a.get("max_extensions"),
            increments=a.get("increments"),
            now=self.now_ms(),
        )
        if not await self.backends.auctions.start(lot):
            raise Error("conflict", "an auction is already open in this room")
        await self._publish(room.id, "auction.started", {"auction": lot.public()})
        await self._log(who, room.id, "auction.start", lot.id, lot.public())
        return lot

    async def bid(
        self, who: Principal, room_id: str, aid: str, amount: int, ceiling: int | None
    ) -> dict[str, Any]:
        """One bid of ``who``: ``amount``, and ``ceiling`` for a proxy bid.

        Raises:
            Error: rights (signed-in users; not the seller), ``rate_limited``,
                ``room_not_live``, then in one atomic step ``not_found``, ``banned``,
                ``muted``, ``auction_closed``, ``bid_too_low`` (with ``price`` and
                ``min_bid``).
        """
        room = await self.room_as(who, room_id, CHATTERS)
        self._order_limit.check(who.id, self._clock())
        room.require_live()
        if who.id == room.host:
            raise Error("forbidden", "the seller may not bid on their own lot")
        request = BidRequest(who.id, who.name, amount, amount if ceiling is None else ceiling)
        got = await self._bids.ask((room.id, aid), request)
        lot = got.result()
        return {"auction": lot.public(), "leading": got.leading}

    async def _end_auction(self, room: str, aid: str) -> Auction | None:
        """End a lot whose clock ran out: the winner's hold at the hammer price in the
        same step, ``auction.ended`` to all, the winner told of their order. Once,
        whichever process gets there; None if this call did not end it."""
        store = self.backends.auctions
        for _ in range(5):  # a bid from a process whose clock lags may move the leader
            lot = await store.get(room, aid)
            if lot is None or lot.status != "open" or self.now_ms() < lot.ends_at:
                return None
            grant = None
            if lot.leader:
                key = f"auction:{aid}"
                oid = order_id(room, lot.leader, key, self._id_key)
                grant = Grant(oid, lot.leader, key, aid, "auction", lot.sku, lot.title, lot.price)
            now, hold_ms = self.now_ms(), self.settings.hold_s * 1000
            ended = await store.end(room, aid, lot.leader, grant, now_ms=now, hold_ms=hold_ms)
            if ended == "moved":
                continue
            if ended is None:
                return None
            await self._publish(room, "auction.ended", {"auction": ended.public()})
            if grant is not None:
                await self._granted(room, [grant], now, hold_ms)
            return ended
        return None

    async def auction_bids(self, aid: str) -> dict[str, Any]:
        """A lot and its bid log (public: anyone may check there were no phantom bids;
        each bid's proxy maximum is shown once the lot ended).

        Raises:
            Error: ``not_found``.
        """
        room = aid.partition(".")[0]
        lot = await self.backends.auctions.get(room, aid) if ROOM_ID.fullmatch(room) else None
        if lot is None:
            raise Error("not_found", "no auction with this id")
        bids = await self.backends.auctions.bids(room, aid)
        ended = lot.status == "ended"
        return {"auction": lot.public(), "bids": [b.public(reveal_max=ended) for b in bids]}


def _arms(sale_id: str, users: Collection[str]) -> dict[str, list[str]]:
    """``users`` by their arm of the sale's A/B test."""
    out: dict[str, list[str]] = {"a": [], "b": []}
    for user in users:
        out[arm(sale_id, user)].append(user)
    return out


async def _nothing() -> None:
    """An awaitable that does nothing (in place of work turned off)."""


def _allowed(who: Principal, room: Room, allowed: frozenset[Role]) -> Room:
    """``room``, if ``who`` holds one of ``allowed`` in it."""
    role = who.role_in(room.id, room.host)
    if role not in allowed:
        if role == "guest":
            raise Error("unauthorized", "sign in first")
        raise Error("forbidden", f"a {role} may not do this in room {room.id!r}")
    return room


def _check_order_id(oid: str) -> None:
    """Order ids are ``<room>.<20 hex>`` (``inventory.rules.order_id``)."""
    room, dot, digest = oid.partition(".")
    if not (dot and ROOM_ID.fullmatch(room) and len(digest) == 20 and digest.isalnum()):
        raise Error("not_found", "no such order")


def media_state(*, live: bool, hls: bool) -> dict[str, bool]:
    """The ``media`` object of PROTOCOL: whether the host publishes, and how to watch
    (WHEP while a publisher is connected; HLS once its live playlist has a segment)."""
    return {"live": live, "whep": live, "hls": live and hls}


def _media(line: bytes | None) -> dict[str, bool]:
    """The room's video state from its latest ``media.*`` line (none: not live)."""
    if line is None:
        return media_state(live=False, hls=False)
    media: dict[str, bool] = loads(line)["media"]
    return media


def _pinned(line: bytes | None) -> dict[str, Any] | None:
    """The product of a ``product.pinned`` line."""
    if line is None:
        return None
    product: dict[str, Any] = loads(line)["product"]
    return product
