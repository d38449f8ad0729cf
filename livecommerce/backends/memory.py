"""The embedded backend: every store in this process's memory (one process only)."""

from __future__ import annotations

import asyncio
import bisect
import builtins
import contextlib
import itertools
import secrets
import time
from collections import deque
from collections.abc import Callable, Collection
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from livecommerce import analytics
from livecommerce.backends import (
    ERASED_NAME,
    FLAGGED_SIZE,
    MODLOG_SIZE,
    Backends,
    Clip,
    DeadLetter,
    Kind,
    LogHead,
    LogSnapshot,
    OutboxEntry,
    Refusal,
    Reported,
    Sink,
    pseudonymous,
)
from livecommerce.config import Settings
from livecommerce.inventory.rules import (
    BEST,
    Attempt,
    Grant,
    Ledger,
    Order,
    Outcome,
    Product,
    Sale,
    Settled,
    SettleKind,
    arm,
    room_of_order,
)
from livecommerce.promotions.auctions import Auction, AuctionBook, Bid, BidRequest, BidResult
from livecommerce.promotions.coupons import Claimed, ClaimRequest, Coupon, CouponBook, CouponEnd
from livecommerce.promotions.draws import Proof
from livecommerce.promotions.giveaways import Entered, Frozen, Giveaway, GiveawayBook
from livecommerce.promotions.groups import Deal, Group, GroupBook, Joined
from livecommerce.protocol import dumps, encode_event, loads, sequence
from livecommerce.rooms.state import Room, Status

PRESENCE_TTL_MS = 5000
MAX_EVENT_IDS = 1_000_000
"""Callback event ids remembered (the Redis engine remembers them for a week)."""


class MemoryRoomStore:
    def __init__(self) -> None:
        self._rooms: dict[str, Room] = {}

    async def create(self, room: Room) -> bool:
        if room.id in self._rooms:
            return False
        self._rooms[room.id] = room
        return True

    async def get(self, room_id: str) -> Room | None:
        return self._rooms.get(room_id)

    async def list(self, status: Status | None = None) -> list[Room]:
        rooms = [r for r in self._rooms.values() if status is None or r.status == status]
        return sorted(rooms, key=lambda r: (-r.created_at, r.id))

    async def ids(self) -> builtins.list[str]:
        return list(self._rooms)

    async def set_status(self, room_id: str, old: Status, new: Status) -> bool:
        room = self._rooms.get(room_id)
        if room is None or room.status != old:
            return False
        self._rooms[room_id] = Room(room.id, room.title, room.host, new, room.created_at)
        return True


@dataclass
class _Log:
    epoch: str
    size: int
    recent_size: int
    seq: int = 0
    lines: deque[bytes] = field(default_factory=deque)
    recent: dict[str, bytes] = field(default_factory=dict)
    msg_ids: dict[str, None] = field(default_factory=dict)
    chats: list[tuple[int, bytes]] = field(default_factory=list)
    """Every chat line with its time (ms), oldest first: the room's chat archive."""
    announcement: bytes | None = None
    pinned: bytes | None = None
    media: bytes | None = None


_CHAT = b'"type":"chat",'


class MemoryEventLog:
    def __init__(self, *, history_size: int, recent_size: int) -> None:
        self._history_size = history_size
        self._recent_size = recent_size
        self._logs: dict[str, _Log] = {}
        self._sinks: dict[str, Sink] = {}

    def _log(self, room: str) -> _Log:
        log = self._logs.get(room)
        if log is None:
            log = self._logs[room] = _Log(
                secrets.token_hex(4), self._history_size, self._recent_size
            )
        return log

    async def publish(self, room: str, body: bytes, *, kind: Kind = "plain", ref: str = "") -> int:
        log = self._log(room)
        if kind == "chat.deleted":
            if ref not in log.msg_ids:
                return 0
            del log.msg_ids[ref]
            log.recent.pop(ref, None)
        log.seq += 1
        line = sequence(log.seq, body)
        log.lines.append(line)
        if len(log.lines) > log.size:
            log.lines.popleft()
        if kind == "chat":
            log.chats.append((loads(body).get("ts", 0), line))
            log.recent[ref] = line
            if len(log.recent) > log.recent_size:
                del log.recent[next(iter(log.recent))]
            log.msg_ids[ref] = None
            if len(log.msg_ids) > log.size:
                del log.msg_ids[next(iter(log.msg_ids))]
        elif kind == "announcement":
            log.announcement = line
        elif kind == "pin":
            log.pinned = line
        elif kind == "unpin":
            log.pinned = None
        elif kind == "media":
            log.media = line
        sink = self._sinks.get(room)
        if sink is not None:
            sink(line, None)
        return log.seq

    async def chats(self, room: str, start: int, limit: int) -> list[tuple[int, bytes]]:
        return self._log(room).chats[start : start + limit]

    async def forget_chats(self, room: str, before_ms: int) -> int:
        log = self._log(room)
        kept = [(t, ln) for t, ln in log.chats if t >= before_ms]
        gone, log.chats = len(log.chats) - len(kept), kept
        return gone

    async def context(self, room: str, msg_id: str, around: int) -> list[bytes] | None:
        log = self._log(room)
        if msg_id not in log.msg_ids:
            return None
        chats = [ln for ln in log.lines if _CHAT in ln[:40]]
        needle = f'"msg_id":"{msg_id}"'.encode()
        at = next((i for i, ln in enumerate(chats) if needle in ln), None)
        return None if at is None else chats[max(0, at - around) : at + around + 1]

    async def send_private(self, room: str, user: str, line: bytes) -> None:
        sink = self._sinks.get(room)
        if sink is not None:
            sink(line, user)

    async def history(self, room: str, after: int, epoch: str) -> list[bytes] | None:
        log = self._log(room)
        if epoch != log.epoch or after > log.seq:
            return None
        missing = log.seq - after
        if missing > len(log.lines):
            return None
        return list(log.lines)[len(log.lines) - missing :] if missing else []

    async def snapshot(self, room: str) -> LogSnapshot:
        log = self._log(room)
        return LogSnapshot(
            log.seq, log.epoch, list(log.recent.values()), log.announcement, log.pinned, log.media
        )

    async def subscribe(self, room: str, sink: Sink) -> LogHead:
        self._sinks[room] = sink
        return await self.head(room)

    async def unsubscribe(self, room: str) -> None:
        self._sinks.pop(room, None)

    async def head(self, room: str) -> LogHead:
        log = self._log(room)
        return LogHead(log.seq, log.epoch)


class MemoryCounters:
    def __init__(self) -> None:
        self._figures: dict[str, dict[str, int]] = {}
        self._likes: dict[str, int] = {}
        self._presence: dict[str, dict[str, tuple[int, int]]] = {}
        self._viewers: dict[str, set[str]] = {}
        self._buyers: dict[str, set[str]] = {}
        self._ever_bought: set[str] = set()
        self._minutes: dict[str, dict[int, dict[str, int]]] = {}
        self._ab_tests: dict[str, set[str]] = {}
        self._ab_users: dict[tuple[str, str, str, str], set[str]] = {}

    async def add_likes(self, room: str, n: int) -> int:
        total = self._likes.get(room, 0) + n
        self._likes[room] = total
        return total

    async def report_presence(self, room: str, node: str, count: int, now_ms: int) -> int:
        nodes = self._presence.setdefault(room, {})
        nodes[node] = (count, now_ms + PRESENCE_TTL_MS)
        for name in [n for n, (_, exp) in nodes.items() if exp <= now_ms]:
            del nodes[name]
        return sum(c for c, _ in nodes.values())

    async def count(self, room: str, figures: dict[str, int]) -> None:
        mine = self._figures.setdefault(room, {})
        for name, n in figures.items():
            mine[name] = mine.get(name, 0) + n

    async def note_viewers(self, room: str, viewers: int, *, sku: str | None = None) -> int:
        mine = self._figures.setdefault(room, {})
        name = f"peak_viewers:{sku}" if sku else "peak_viewers"
        mine[name] = max(mine.get(name, 0), viewers)
        return mine[name]

    async def figures(self, room: str) -> dict[str, int]:
        return dict(self._figures.get(room, {}))

    async def note_joins(self, room: str, users: Collection[str]) -> None:
        await self.count(room, {"joins": len(users)})
        self._viewers.setdefault(room, set()).update(users)

    async def unique_viewers(self, room: str) -> int:
        return len(self._viewers.get(room, ()))

    async def note_buyer(self, room: str, user: str) -> None:
        buyers = self._buyers.setdefault(room, set())
        if user in buyers:
            return
        buyers.add(user)
        first = user not in self._ever_bought
        self._ever_bought.add(user)
        await self.count(room, {"buyers": 1, "first_time_buyers": int(first)})

    async def record_minute(self, room: str, minute: int, figures: dict[str, int]) -> bool:
        kept = self._minutes.setdefault(room, {})
        if minute in kept:
            return False
        kept[minute] = dict(figures)
        return True

    async def minutes(self, room: str) -> dict[int, dict[str, int]]:
        return {m: dict(f) for m, f in self._minutes.get(room, {}).items()}

    async def note_ab_test(self, room: str, sale_id: str) -> None:
        self._ab_tests.setdefault(room, set()).add(sale_id)

    async def ab_tests(self, room: str) -> list[str]:
        return sorted(self._ab_tests.get(room, ()))

    async def note_exposed(self, room: str, sale_id: str, arms: dict[str, list[str]]) -> None:
        for group, users in arms.items():
            self._ab_users.setdefault((room, sale_id, group, "seen"), set()).update(users)

    def note_ordered(self, room: str, sale_id: str, arm: str, user: str) -> None:
        """(The memory inventory's part of what Redis counts in its order script.)"""
        self._ab_users.setdefault((room, sale_id, arm, "ordered"), set()).add(user)

    async def ab_counts(self, room: str, sale_id: str) -> dict[str, tuple[int, int]]:
        return {
            group: (
                len(self._ab_users.get((room, sale_id, group, "seen"), ())),
                len(self._ab_users.get((room, sale_id, group, "ordered"), ())),
            )
            for group in ("a", "b")
        }

    async def forget_minutes(self, room: str, before_ms: int) -> int:
        kept = self._minutes.get(room, {})
        old = [m for m in kept if (m + 1) * 60_000 <= before_ms]
        for m in old:
            del kept[m]
        return len(old)


class MemoryModerationStore:
    def __init__(self) -> None:
        self._bans: set[tuple[str, str]] = set()
        self._mutes: dict[tuple[str, str], int] = {}
        self._slow: dict[str, int] = {}
        self._last_chat: dict[tuple[str, str], int] = {}
        self._filters: dict[str, dict[str, str]] = {}
        self._flagged: dict[str, dict[str, bytes]] = {}
        self._log: dict[str, deque[bytes]] = {}
        self._staff: dict[tuple[str, str], str] = {}
        self._leet: dict[str, bool] = {}
        self._reporters: dict[tuple[str, str], set[str]] = {}
        self._reasons: dict[tuple[str, str], dict[str, int]] = {}

    async def slow(self, room: str) -> int:
        return self._slow.get(room, 0)

    async def change_filter(
        self, room: str, add: list[str], remove: list[str], action: str
    ) -> dict[str, str]:
        terms = self._filters.setdefault(room, {})
        for term in remove:
            terms.pop(term, None)
        for term in add:
            terms[term] = action
        return dict(terms)

    async def filter_terms(self, room: str) -> dict[str, str]:
        return dict(self._filters.get(room, {}))

    async def flag(self, room: str, msg_id: str, entry: bytes) -> None:
        queue = self._flagged.setdefault(room, {})
        queue[msg_id] = entry
        while len(queue) > FLAGGED_SIZE:
            del queue[next(iter(queue))]

    async def unflag(self, room: str, msg_id: str) -> bool:
        return self._flagged.get(room, {}).pop(msg_id, None) is not None

    async def flagged(self, room: str) -> list[bytes]:
        return list(self._flagged.get(room, {}).values())

    async def log_action(self, room: str, entry: bytes) -> None:
        self._log.setdefault(room, deque(maxlen=MODLOG_SIZE)).append(entry)

    async def actions(self, room: str, limit: int) -> list[bytes]:
        entries = self._log.get(room, deque())
        return list(entries)[-limit:] if limit > 0 else []

    def sanction(self, room: str, user: str, now_ms: int) -> Literal["banned", "muted"] | None:
        """Whether the user is banned or muted now (the promotion stores ask)."""
        if (room, user) in self._bans:
            return "banned"
        return "muted" if self._mutes.get((room, user), 0) > now_ms else None

    async def forget_actions(self, room: str, before_ms: int) -> int:
        entries = self._log.get(room)
        if not entries:
            return 0
        kept = [e for e in entries if loads(e)["at"] >= before_ms]
        gone = len(entries) - len(kept)
        self._log[room] = deque(kept, MODLOG_SIZE)
        return gone

    async def report(self, room: str, target: str, reporter: str, reason: str) -> Reported | None:
        reporters = self._reporters.setdefault((room, target), set())
        if reporter in reporters:
            return None
        reporters.add(reporter)
        reasons = self._reasons.setdefault((room, target), {})
        reasons[reason] = reasons.get(reason, 0) + 1
        return Reported(len(reporters), dict(reasons))

    async def admit_chat(
        self, room: str, user: str, now_ms: int, *, slow_exempt: bool = False
    ) -> Refusal | None:
        key = (room, user)
        if key in self._bans:
            return ("banned", 0)
        muted = self._mutes.get(key, 0)
        if muted > now_ms:
            return ("muted", muted)
        slow_ms = self._slow.get(room, 0) * 1000
        if slow_ms and not slow_exempt:
            last = self._last_chat.get(key, 0)
            if last and now_ms - last < slow_ms:
                return ("slow_mode", last + slow_ms)
            self._last_chat[key] = now_ms
        return None

    async def mute(self, room: str, user: str, until_ms: int) -> None:
        self._mutes[(room, user)] = until_ms

    async def set_banned(self, room: str, user: str, banned: bool) -> bool:
        key = (room, user)
        if banned == (key in self._bans):
            return False
        if banned:
            self._bans.add(key)
        else:
            self._bans.discard(key)
        return True

    async def banned(self, room: str, users: Collection[str]) -> set[str]:
        return {u for u in users if (room, u) in self._bans}

    async def set_leet(self, room: str, on: bool) -> None:
        self._leet[room] = on

    async def leet(self, room: str) -> bool:
        return self._leet.get(room, False)

    async def note_staff(self, room: str, user: str, role: str) -> None:
        self._staff[(room, user)] = role

    async def staff_role(self, room: str, user: str) -> str | None:
        return self._staff.get((room, user))

    async def set_slow(self, room: str, seconds: int) -> None:
        self._slow[room] = seconds
        if not seconds:
            for key in [k for k in self._last_chat if k[0] == room]:
                del self._last_chat[key]


class MemoryOutboxStore:
    """Every room's outbox as a list, with the bookkeeping of a consumer group."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._entries: dict[str, list[dict[str, str] | None]] = {}
        """room -> entries by number (None once acknowledged or buried)."""
        self._unread: deque[tuple[str, int]] = deque()
        self._pending: dict[tuple[str, int], tuple[str, float]] = {}
        """(room, n) -> (consumer, last touched)."""
        self._failures: dict[tuple[str, int], int] = {}
        self._dead: dict[tuple[str, int], DeadLetter] = {}
        self._dead_ids = itertools.count(1)
        self._arrived = asyncio.Event()

    def append(self, room: str, fields: dict[str, str]) -> None:
        entries = self._entries.setdefault(room, [])
        entries.append(fields)
        self._unread.append((room, len(entries) - 1))
        self._arrived.set()

    def entries(self, room: str) -> list[dict[str, str]]:
        """The room's entries not yet delivered (nor buried), oldest first."""
        return [dict(f) for f in self._entries.get(room, []) if f is not None]

    def _entry(self, room: str, n: int) -> OutboxEntry:
        fields = self._entries[room][n]
        assert fields is not None
        return OutboxEntry(f"{room}/{n}", room, dict(fields), self._failures.get((room, n), 0))

    @staticmethod
    def _key(entry_id: str) -> tuple[str, int]:
        room, _, n = entry_id.rpartition("/")
        return room, int(n)

    async def read(self, consumer: str, count: int, *, block_ms: int) -> list[OutboxEntry]:
        if not self._unread and block_ms > 0:
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), block_ms / 1000)
        out: list[OutboxEntry] = []
        now = self._clock()
        while self._unread and len(out) < count:
            room, n = self._unread.popleft()
            self._pending[(room, n)] = (consumer, now)
            out.append(self._entry(room, n))
        return out

    async def reclaim(self, consumer: str, *, min_idle_ms: int, count: int) -> list[OutboxEntry]:
        now = self._clock()
        out: list[OutboxEntry] = []
        for k, (_, touched) in list(self._pending.items()):
            if len(out) >= count:
                break
            if (now - touched) * 1000 >= min_idle_ms:
                self._pending[k] = (consumer, now)
                out.append(self._entry(*k))
        return out

    async def touch(self, consumer: str, entries: list[OutboxEntry]) -> None:
        now = self._clock()
        for e in entries:
            k = self._key(e.id)
            if k in self._pending:
                self._pending[k] = (consumer, now)

    def _done(self, k: tuple[str, int]) -> None:
        self._pending.pop(k, None)
        self._failures.pop(k, None)
        self._entries[k[0]][k[1]] = None

    async def ack(self, entries: list[OutboxEntry]) -> None:
        for entry in entries:
            k = self._key(entry.id)
            if k in self._pending:
                self._done(k)

    async def failed(self, entry: OutboxEntry) -> int:
        k = self._key(entry.id)
        self._failures[k] = self._failures.get(k, 0) + 1
        return self._failures[k]

    async def bury(self, entry: OutboxEntry, reason: str, now_ms: int) -> None:
        k = self._key(entry.id)
        if k not in self._pending:
            return
        n = next(self._dead_ids)
        failures = self._failures.get(k, 0)
        self._dead[(entry.room, n)] = DeadLetter(
            f"{entry.room}/{n}", entry.room, dict(entry.fields), reason, failures, now_ms
        )
        self._done(k)

    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        return sorted(self._dead.values(), key=lambda d: (d.at_ms, d.id))[:limit]

    async def redrive(self, dead_id: str) -> bool:
        try:
            dead = self._dead.pop(self._key(dead_id))
        except (KeyError, ValueError):
            return False
        self.append(dead.room, dict(dead.fields))
        return True

    async def backlog(self) -> int:
        return sum(1 for entries in self._entries.values() for f in entries if f is not None)

    async def rooms(self) -> list[str]:
        return sorted(self._entries)


def _best_coupon(book: CouponBook, ledger: Ledger, sale_id: str, a: Attempt) -> str | None:
    """The buyer's claimed, unspent coupon that takes the most off this attempt."""
    sale = ledger.sales.get(sale_id)
    if sale is None:
        return None
    total, best, most = sale.price_for(a.user) * a.qty, None, -1
    for cid in book.claimed_by.get(a.user, ()):
        coupon = book.coupons[cid]
        if book.spendable(cid, a.user) < 1:
            continue
        if coupon.missed_rule(sku=sale.sku, total=total) is None:
            off = coupon.discount(sku=sale.sku, total=total)
            if off > most:
                best, most = cid, off
    return best


def _entry(order: Order) -> dict[str, str]:
    """An order as its outbox entry."""
    return {k: str(v) for k, v in order.to_dict().items() if v is not None}


class MemoryInventoryStore:
    """A :class:`Ledger` per room; events go through the memory event log."""

    def __init__(
        self,
        log: MemoryEventLog,
        outbox: MemoryOutboxStore,
        counters: MemoryCounters,
        coupons: MemoryCouponStore | None = None,
    ) -> None:
        self._log = log
        self._counters = counters
        self._coupons = coupons or MemoryCouponStore()
        self._products: dict[str, dict[str, Product]] = {}
        self._ledgers: dict[str, Ledger] = {}
        self._outbox = outbox
        self._events: dict[tuple[str, str], None] = {}
        self._late: dict[str, dict[str, int]] = {}

    def _ledger(self, room: str) -> Ledger:
        ledger = self._ledgers.get(room)
        if ledger is None:
            ledger = self._ledgers[room] = Ledger(room)
        return ledger

    async def put_product(self, room: str, product: Product) -> None:
        self._products.setdefault(room, {})[product.sku] = product

    async def products(self, room: str) -> list[Product]:
        return sorted(self._products.get(room, {}).values(), key=lambda p: p.sku)

    async def start_sale(self, sale: Sale, event: bytes) -> None:
        self._ledger(sale.room).start(sale)
        await self._log.publish(sale.room, event)

    async def _ended(self, sale: Sale, now_ms: int) -> None:
        body = encode_event(
            "sale.ended", sale.room, now_ms, {"sale_id": sale.id, "reason": sale.reason}
        )
        await self._log.publish(sale.room, body)

    async def stop_sale(self, room: str, sale_id: str, now_ms: int) -> bool:
        sale = self._ledger(room).end(sale_id, "stopped")
        if sale is not None:
            await self._ended(sale, now_ms)
        return sale is not None

    async def sale(self, room: str, sale_id: str) -> Sale | None:
        sale = self._ledger(room).sales.get(sale_id)
        return None if sale is None else replace(sale)

    async def active_sales(self, room: str) -> list[Sale]:
        return [replace(s) for s in self._ledger(room).active()]

    async def stock(self, room: str) -> dict[str, int]:
        return {s.id: s.remaining for s in self._ledger(room).active()}

    async def reserve(
        self, room: str, sale_id: str, attempts: list[Attempt], *, now_ms: int, hold_ms: int
    ) -> list[Outcome]:
        ledger = self._ledger(room)
        book = self._coupons.book(room)
        outcomes = []
        for a in attempts:  # in order, each coupon claim spent before the next attempt
            if a.coupon == BEST:
                a = replace(a, coupon=_best_coupon(book, ledger, sale_id, a))
            coupon = None if a.coupon is None else book.coupons.get(a.coupon)
            spendable = 0 if a.coupon is None else book.spendable(a.coupon, a.user)
            out = ledger.reserve(
                sale_id, a, now=now_ms, hold_ms=hold_ms, coupon=coupon, spendable=spendable
            )
            if out.created and a.coupon is not None:
                book.spend(a.coupon, a.user, 1)
            sale = ledger.sales.get(sale_id)
            if out.created and sale is not None and sale.price_b is not None:
                group = arm(sale_id, a.user)
                await self._counters.count(room, {f"ab_orders:{sale_id}:{group}": 1})
                self._counters.note_ordered(room, sale_id, group, a.user)
            outcomes.append(out)
        for out in outcomes:
            if out.created and out.order is not None:
                await self._counters.count(room, analytics.held(out.order))
                self._outbox.append(room, _entry(out.order))
        return [replace(o, order=None if o.order is None else replace(o.order)) for o in outcomes]

    async def grant(
        self, room: str, grants: list[Grant], *, now_ms: int, hold_ms: int
    ) -> list[Order]:
        """Hold the orders promotions give (the ones whose ids are new), each sent to
        the shop like a sale's. Called by the memory promotion stores in the same step
        as the promotion's own change (one process: nothing runs in between)."""
        ledger = self._ledger(room)
        held = [o for g in grants if (o := ledger.grant(g, now=now_ms, hold_ms=hold_ms))]
        for order in held:
            await self._counters.count(room, analytics.held(order))
            self._outbox.append(room, _entry(order))
        return [replace(o) for o in held]

    async def pay(self, order_id: str, now_ms: int) -> tuple[Order | None, bool]:
        ledger = self._ledgers.get(room_of_order(order_id))
        if ledger is None or order_id not in ledger.orders:
            return None, False
        was_held = ledger.orders[order_id].status == "held"
        order, sold_out = ledger.pay(order_id)
        if was_held and order is not None:
            await self._count_sold(order, 1)
        if sold_out is not None:
            await self._ended(sold_out, now_ms)
        return (None if order is None else replace(order)), was_held

    async def _give_back(self, order: Order) -> None:
        """A hold ended unpaid: out of the GMV; the coupon it spent is the buyer's again."""
        await self._counters.count(order.room, analytics.released(order))
        if order.coupon is not None:
            self._coupons.book(order.room).spend(order.coupon, order.user, -1)

    async def cancel(self, order_id: str) -> Order | None:
        ledger = self._ledgers.get(room_of_order(order_id))
        order = None if ledger is None else ledger.release(order_id, "cancelled")
        if order is not None:
            await self._give_back(order)
        return None if order is None else replace(order)

    async def sweep(self, room: str, now_ms: int) -> list[Order]:
        ledger = self._ledger(room)
        released = ledger.expire_due(now_ms)
        for order in released:
            await self._give_back(order)
        for sale in ledger.end_due(now_ms):
            await self._ended(sale, now_ms)
        return [replace(o) for o in released]

    async def order(self, order_id: str) -> Order | None:
        ledger = self._ledgers.get(room_of_order(order_id))
        order = None if ledger is None else ledger.orders.get(order_id)
        return None if order is None else replace(order)

    async def orders_of(self, room: str, users: Collection[str]) -> dict[str, list[Order]]:
        ledger = self._ledger(room)
        mine = {u: [replace(o) for o in ledger.user_orders(u)] for u in users}
        return {u: orders for u, orders in mine.items() if orders}

    async def rooms_to_sweep(self) -> list[str]:
        return list(self._ledgers)

    async def forget_orders(self, room: str, before_ms: int) -> int:
        ledger = self._ledgers.get(room)
        if ledger is None:
            return 0
        old = [
            o.id for o in ledger.orders.values() if o.status != "held" and o.created_at < before_ms
        ]
        for oid in old:
            del ledger.orders[oid]
        return len(old)

    async def outbox(self, room: str) -> list[dict[str, str]]:
        return self._outbox.entries(room)

    async def settle(
        self, order_id: str, kind: SettleKind, *, event_id: str | None, now_ms: int
    ) -> Settled:
        room = room_of_order(order_id)
        ledger = self._ledgers.get(room)
        if ledger is None or order_id not in ledger.orders:
            return Settled(None, applied=False)
        if event_id is not None:
            if (room, event_id) in self._events:
                order = replace(ledger.orders[order_id])
                return Settled(order, applied=False, duplicate=True)
            if len(self._events) >= MAX_EVENT_IDS:  # forget the oldest (insertion order)
                del self._events[next(iter(self._events))]
            self._events[(room, event_id)] = None
        before = ledger.orders[order_id].status
        done = ledger.settle(order_id, kind)
        if done.order is not None and done.applied:
            if before == "held" and done.order.status == "paid":
                await self._count_sold(done.order, 1)
            elif before == "held":  # cancelled before it was paid
                await self._give_back(done.order)
            elif before == "paid":
                await self._count_sold(done.order, -1)
        if done.sold_out is not None:
            await self._ended(done.sold_out, now_ms)
        if done.late:
            self._late.setdefault(room, {})[order_id] = now_ms
        return replace(done, order=None if done.order is None else replace(done.order))

    async def _count_sold(self, order: Order, sign: int) -> None:
        await self._counters.count(order.room, analytics.sold(order, sign))

    async def set_payment_url(self, order_id: str, url: str) -> Order | None:
        ledger = self._ledgers.get(room_of_order(order_id))
        order = None if ledger is None else ledger.orders.get(order_id)
        if order is None:
            return None
        order.payment_url = url
        return replace(order)

    async def late_payments(self, room: str) -> dict[str, int]:
        return dict(self._late.get(room, {}))

    async def orders(self, room: str) -> list[Order]:
        ledger = self._ledgers.get(room)
        orders = [] if ledger is None else ledger.orders.values()
        return sorted((replace(o) for o in orders), key=lambda o: (o.created_at, o.id))


class MemoryClipStore:
    """Clips in this process's memory, ordered by :attr:`Clip.order_key`."""

    def __init__(self) -> None:
        self._clips: dict[tuple[str, str], Clip] = {}
        self._order: list[str] = []
        """Order keys, oldest first."""
        self._by_key: dict[str, Clip] = {}

    async def add(self, clip: Clip) -> None:
        old = self._clips.get((clip.room, clip.id))
        if old is not None:
            self._forget(old)
        self._clips[(clip.room, clip.id)] = clip
        bisect.insort(self._order, clip.order_key)
        self._by_key[clip.order_key] = clip

    def _forget(self, clip: Clip) -> None:
        del self._clips[(clip.room, clip.id)]
        i = bisect.bisect_left(self._order, clip.order_key)
        if i < len(self._order) and self._order[i] == clip.order_key:
            del self._order[i]
        self._by_key.pop(clip.order_key, None)

    async def get(self, room: str, clip_id: str) -> Clip | None:
        return self._clips.get((room, clip_id))

    async def room_clips(self, room: str, *, sku: str | None = None) -> list[Clip]:
        found = [
            c for c in self._clips.values() if c.room == room and (sku is None or c.sku == sku)
        ]
        return sorted(found, key=lambda c: c.order_key, reverse=True)

    async def feed(self, limit: int, cursor: str | None = None) -> tuple[list[Clip], str | None]:
        end = len(self._order) if cursor is None else bisect.bisect_left(self._order, cursor)
        keys = self._order[max(0, end - limit) : end][::-1]
        clips = [self._by_key[k] for k in keys]
        more = end - limit > 0
        return clips, (keys[-1] if clips and more else None)

    async def delete_ended_before(self, ms: int, *, limit: int = 1000) -> list[Clip]:
        bound = f"{ms:013d}"
        old = [self._by_key[k] for k in self._order[:limit] if k < bound]
        for clip in old:
            self._forget(clip)
        return old


class MemoryGiveawayStore:
    """A :class:`~livecommerce.promotions.giveaways.GiveawayBook` per room; winners'
    orders are held by the inventory store in the same step as the draw."""

    def __init__(
        self,
        inventory: MemoryInventoryStore,
        moderation: MemoryModerationStore,
        counters: MemoryCounters,
    ) -> None:
        self._books: dict[str, GiveawayBook] = {}
        self._inventory = inventory
        self._moderation = moderation
        self._counters = counters

    def _book(self, room: str) -> GiveawayBook:
        return self._books.setdefault(room, GiveawayBook())

    async def start(self, giveaway: Giveaway, seed: bytes) -> bool:
        return self._book(giveaway.room).start(replace(giveaway), seed)

    async def enter(self, room: str, gid: str, user: str, now_ms: int, node: str) -> Entered:
        book = self._book(room)
        if gid in book.giveaways and (why := self._moderation.sanction(room, user, now_ms)):
            return Entered(replace(book.giveaways[gid]), refused=why)
        got = book.enter(gid, user, now_ms)
        if got.added:
            await self._counters.count(room, {"giveaway_entries": 1})
        return replace(got, giveaway=None if got.giveaway is None else replace(got.giveaway))

    async def seen(self, room: str, user: str, node: str, *, here: bool) -> bool:
        return self._book(room).seen(user, here=here)

    async def freeze(self, room: str, gid: str, now_ms: int) -> Frozen | None:
        got = self._book(room).freeze(gid)
        return None if got is None else Frozen(replace(got[0]), list(got[1]), got[2])

    async def finish(
        self, room: str, proof: Proof, grants: list[Grant], *, now_ms: int, hold_ms: int
    ) -> Giveaway | None:
        drawn = self._book(room).finish(proof.giveaway, proof)
        if drawn is None:
            return None
        await self._inventory.grant(room, grants, now_ms=now_ms, hold_ms=hold_ms)
        return replace(drawn)

    async def cancel(self, room: str, gid: str) -> Giveaway | None:
        got = self._book(room).cancel(gid)
        return None if got is None else replace(got)

    async def get(self, room: str, gid: str) -> Giveaway | None:
        got = self._book(room).giveaways.get(gid)
        return None if got is None else replace(got)

    async def current(self, room: str) -> Giveaway | None:
        book = self._book(room)
        return None if book.current is None else replace(book.giveaways[book.current])

    async def entered(self, room: str, gid: str, user: str) -> bool:
        return user in self._book(room).entrants.get(gid, ())

    async def proof(self, room: str, gid: str) -> Proof | None:
        return self._book(room).proofs.get(gid)


class MemoryGroupStore:
    """A :class:`~livecommerce.promotions.groups.GroupBook` per room; a fill's orders
    are held by the inventory store in the same step."""

    def __init__(
        self,
        inventory: MemoryInventoryStore,
        moderation: MemoryModerationStore,
        counters: MemoryCounters,
    ) -> None:
        self._books: dict[str, GroupBook] = {}
        self._orders: dict[tuple[str, str], str] = {}
        """(group, member) -> the id of the order the fill gives the member."""
        self._inventory = inventory
        self._moderation = moderation
        self._counters = counters

    def _book(self, room: str) -> GroupBook:
        return self._books.setdefault(room, GroupBook())

    async def start(self, deal: Deal) -> bool:
        return self._book(deal.room).start(replace(deal))

    async def stop(self, room: str, deal_id: str) -> Deal | None:
        got = self._book(room).stop(deal_id)
        return None if got is None else replace(got)

    async def deal(self, room: str, deal_id: str) -> Deal | None:
        got = self._book(room).deals.get(deal_id)
        return None if got is None else replace(got)

    async def deals(self, room: str) -> list[Deal]:
        return [replace(d) for d in self._book(room).deals.values()]

    def _copy(self, got: Joined) -> Joined:
        g = got.group
        return replace(got, group=None if g is None else replace(g, members=list(g.members)))

    async def open(
        self, room: str, deal_id: str, group_id: str, user: str, order_id: str, now_ms: int
    ) -> Joined:
        book = self._book(room)
        if deal_id in book.deals and self._moderation.sanction(room, user, 0) == "banned":
            return Joined(None, refused="banned")
        got = book.open(deal_id, group_id, user, now_ms)
        if got.refused is None:
            self._orders[(group_id, user)] = order_id
            sku = book.deals[deal_id].sku
            await self._counters.count(room, analytics.per_sku("groups_opened", sku, 1))
        return self._copy(got)

    async def join(
        self, room: str, group_id: str, user: str, order_id: str, *, now_ms: int, hold_ms: int
    ) -> Joined:
        book = self._book(room)
        group = book.groups.get(group_id)
        if group is not None and self._moderation.sanction(room, user, 0) == "banned":
            return self._copy(Joined(group, refused="banned"))
        got = book.join(group_id, user, now_ms)
        if got.refused is None:
            self._orders.setdefault((group_id, user), order_id)
        if got.filled and got.group is not None:
            deal = book.deals[got.group.deal]
            key = f"group:{group_id}"
            grants = [
                Grant(self._orders[(group_id, m)], m, key, group_id, "group", deal.sku,
                      deal.title, deal.price)
                for m in got.group.members
            ]  # fmt: skip
            await self._inventory.grant(room, grants, now_ms=now_ms, hold_ms=hold_ms)
            await self._counters.count(room, analytics.per_sku("groups_filled", deal.sku, 1))
        return self._copy(got)

    async def expire(self, room: str, now_ms: int) -> list[Group]:
        failed = self._book(room).expire_due(now_ms)
        return [replace(g, members=list(g.members)) for g in failed]

    async def group(self, room: str, group_id: str) -> Group | None:
        g = self._book(room).groups.get(group_id)
        return None if g is None else replace(g, members=list(g.members))

    async def forming(self, room: str, limit: int) -> tuple[list[Group], int]:
        live = self._book(room).forming()
        return [replace(g, members=list(g.members)) for g in live[:limit]], len(live)

    async def mine(self, room: str, user: str) -> list[Group]:
        book = self._book(room)
        return [
            replace(book.groups[gid], members=list(book.groups[gid].members))
            for (deal, member), gid in book.member_of.items()
            if member == user
        ]


class MemoryAuctionStore:
    """An :class:`~livecommerce.promotions.auctions.AuctionBook` per room; the winner's
    hold is written by the inventory store in the same step as the end."""

    def __init__(
        self,
        inventory: MemoryInventoryStore,
        moderation: MemoryModerationStore,
        counters: MemoryCounters,
    ) -> None:
        self._books: dict[str, AuctionBook] = {}
        self._inventory = inventory
        self._moderation = moderation
        self._counters = counters

    def _book(self, room: str) -> AuctionBook:
        return self._books.setdefault(room, AuctionBook())

    async def start(self, auction: Auction) -> bool:
        return self._book(auction.room).start(replace(auction))

    async def bid(
        self, room: str, aid: str, *, user: str, name: str, amount: int, ceiling: int, now_ms: int
    ) -> BidResult:
        request = BidRequest(user, name, amount, ceiling)
        return (await self.bid_many(room, aid, [request], now_ms))[0]

    async def bid_many(
        self, room: str, aid: str, bids: list[BidRequest], now_ms: int
    ) -> list[BidResult]:
        book, out = self._book(room), []
        for b in bids:
            lot = book.auctions.get(aid)
            if lot is not None and (why := self._moderation.sanction(room, b.user, now_ms)):
                out.append(BidResult(replace(lot), refused=why))
                continue
            got = book.bid(aid, user=b.user, name=b.name, amount=b.amount, ceiling=b.ceiling,
                           now=now_ms)  # fmt: skip
            out.append(replace(got, auction=None if got.auction is None else replace(got.auction)))
        if accepted := sum(1 for b in out if b.refused is None):
            await self._counters.count(room, {"auction_bids": accepted})
        return out

    async def end(
        self, room: str, aid: str, leader: str, grant: Grant | None, *, now_ms: int, hold_ms: int
    ) -> Auction | Literal["moved"] | None:
        book = self._book(room)
        lot = book.auctions.get(aid)
        if lot is not None and lot.status == "open" and lot.leader != leader:
            return "moved"
        ended = book.end(aid, now_ms)
        if ended is None:
            return None
        if grant is not None:
            await self._inventory.grant(room, [grant], now_ms=now_ms, hold_ms=hold_ms)
        return replace(ended)

    async def get(self, room: str, aid: str) -> Auction | None:
        lot = self._book(room).auctions.get(aid)
        return None if lot is None else replace(lot)

    async def current(self, room: str) -> Auction | None:
        book = self._book(room)
        return None if book.current is None else replace(book.auctions[book.current])

    async def bids(self, room: str, aid: str) -> list[Bid]:
        return list(self._book(room).logs.get(aid, []))


class MemoryCouponStore:
    """A :class:`~livecommerce.promotions.coupons.CouponBook` per room."""

    def __init__(
        self,
        moderation: MemoryModerationStore | None = None,
        counters: MemoryCounters | None = None,
    ) -> None:
        self._books: dict[str, CouponBook] = {}
        self._moderation = moderation or MemoryModerationStore()
        self._counters = counters or MemoryCounters()

    def book(self, room: str) -> CouponBook:
        """The room's coupons and claims (the inventory store spends them)."""
        return self._books.setdefault(room, CouponBook())

    async def drop(self, coupon: Coupon) -> bool:
        return self.book(coupon.room).drop(replace(coupon))

    async def claim(
        self, room: str, coupon_id: str, user: str, now_ms: int, watched_s: float = 0
    ) -> Claimed:
        return (await self.claim_many(room, coupon_id, [(user, watched_s)], now_ms))[0]

    async def claim_many(
        self, room: str, coupon_id: str, claims: list[ClaimRequest], now_ms: int
    ) -> list[Claimed]:
        book, out = self.book(room), []
        for user, watched_s in claims:
            if coupon_id in book.coupons and self._moderation.sanction(room, user, 0) == "banned":
                got = Claimed(
                    book.coupons[coupon_id], book.claims.get((coupon_id, user), 0), "banned"
                )
            else:
                got = book.claim(coupon_id, user, now_ms, watched_s)
            out.append(replace(got, coupon=None if got.coupon is None else replace(got.coupon)))
        if granted := sum(1 for c in out if c.refused is None):
            await self._counters.count(room, {"coupon_claims": granted})
        return out

    async def end(self, room: str, coupon_id: str, reason: CouponEnd) -> Coupon | None:
        ended = self.book(room).end(coupon_id, reason)
        return None if ended is None else replace(ended)

    async def coupon(self, room: str, coupon_id: str) -> Coupon | None:
        coupon = self.book(room).coupons.get(coupon_id)
        return None if coupon is None else replace(coupon)

    async def live(self, room: str) -> list[Coupon]:
        return [replace(c) for c in self.book(room).coupons.values() if c.status == "active"]

    async def claims_of(self, room: str, user: str) -> dict[str, int]:
        book = self.book(room)
        return {
            c.id: n
            for c in book.coupons.values()
            if c.status == "active" and (n := book.claims.get((c.id, user), 0))
        }


def memory_backends(settings: Settings) -> Backends:
    """Every store in memory, for one process."""
    log = MemoryEventLog(
        history_size=settings.history_size, recent_size=settings.limits.recent_chats
    )
    outbox = MemoryOutboxStore()
    counters = MemoryCounters()
    moderation = MemoryModerationStore()
    coupons = MemoryCouponStore(moderation, counters)
    inventory = MemoryInventoryStore(log, outbox, counters, coupons)
    privacy = MemoryPrivacyStore()
    backends = Backends(
        engine="memory",
        rooms=MemoryRoomStore(),
        log=log,
        counters=counters,
        moderation=moderation,
        inventory=inventory,
        outbox=outbox,
        coupons=coupons,
        giveaways=MemoryGiveawayStore(inventory, moderation, counters),
        groups=MemoryGroupStore(inventory, moderation, counters),
        auctions=MemoryAuctionStore(inventory, moderation, counters),
        privacy=privacy,
    )
    privacy.bind(backends)
    return backends


class MemoryPrivacyStore:
    """A user's data across the memory engine's stores (``redis_privacy`` says what is
    kept where and what erasing does; the same here)."""

    _b: Backends

    def bind(self, backends: Backends) -> None:
        """The stores whose data it exports and erases (made before it)."""
        self._b = backends

    def _rooms(self) -> set[str]:
        log = self._b.log
        assert isinstance(log, MemoryEventLog)
        return set(log._logs)

    async def export(self, user: str) -> dict[str, dict[str, Any]]:
        b, out = self._b, {}
        for room in sorted(self._rooms()):
            chats = [loads(ln) for _, ln in await b.log.chats(room, 0, 10**9)]
            chats = [c for c in chats if c["user"]["id"] == user]
            orders = [
                o.to_dict()
                for os in (await b.inventory.orders_of(room, [user])).values()
                for o in os
            ]
            book = _coupons(b).book(room)
            claims = {cid: book.claims.get((cid, user), 0) for cid in book.claimed_by.get(user, [])}
            gbook = _giveaways(b)._book(room)
            entries = sorted(g for g, who in gbook.entrants.items() if user in who)
            groups = sorted(
                g.id for g in _groups(b)._book(room).groups.values() if user in g.members
            )
            abook = _auctions(b)._book(room)
            bids = [
                {"auction": aid, **asdict(x)}
                for aid, log in abook.logs.items()
                for x in log
                if x.user == user
            ]
            mod = _moderation(b)
            reports = sorted(
                t for (r, t), who in mod._reporters.items() if r == room and user in who
            )
            data = {
                "chats": chats, "orders": orders, "coupon_claims": claims,
                "giveaway_entries": entries, "groups": groups, "bids": bids, "reports": reports,
            }  # fmt: skip
            if any(data.values()):
                out[room] = data
        return out

    async def erase(self, user: str, alias: str, name: str) -> dict[str, int]:
        b = self._b
        done = dict.fromkeys(("chats", "orders", "coupon_claims", "entries", "groups",
                              "bids", "reports"), 0)  # fmt: skip
        log = b.log
        assert isinstance(log, MemoryEventLog)
        needle = b'"user":{"id":' + dumps(user)
        needle_any = dumps(user)  # how the id appears in JSON
        for room in self._rooms():
            rl = log._log(room)

            def mine(ln: bytes) -> bool:
                return needle in ln and loads(ln)["user"]["id"] == user

            done["chats"] += sum(1 for _, ln in rl.chats if mine(ln))
            rl.chats = [(t, ln) for t, ln in rl.chats if not mine(ln)]
            rl.lines = deque(ln for ln in rl.lines if needle_any not in ln)
            rl.recent = {k: ln for k, ln in rl.recent.items() if not mine(ln)}
            inventory = b.inventory
            assert isinstance(inventory, MemoryInventoryStore)
            ledger = inventory._ledger(room)
            for order in ledger.orders.values():
                if order.user == user:
                    order.user = alias
                    done["orders"] += 1
            for k in [k for k in ledger.units if k[1] == user]:
                ledger.units[(k[0], alias)] = ledger.units.pop(k)
            book = _coupons(b).book(room)
            for table in (book.claims, book.spent):
                for k in [k for k in table if k[1] == user]:
                    table[(k[0], alias)] = table.pop(k)
            if user in book.claimed_by:
                done["coupon_claims"] += len(book.claimed_by[user])
                book.claimed_by[alias] = book.claimed_by.pop(user)
            gbook = _giveaways(b)._book(room)
            for gid, who in gbook.entrants.items():
                if user in who:
                    who.discard(user)
                    who.add(alias)
                    done["entries"] += 1
                gbook.present[gid].discard(user)
                if gid in gbook.frozen:
                    gbook.frozen[gid] = [alias if e == user else e for e in gbook.frozen[gid]]
                g = gbook.giveaways[gid]
                g.winners = tuple(alias if w == user else w for w in g.winners)
                if (proof := gbook.proofs.get(gid)) is not None:  # erasure outranks the proof
                    gbook.proofs[gid] = replace(
                        proof,
                        entrants=[alias if e == user else e for e in proof.entrants],
                        winners=[alias if w == user else w for w in proof.winners],
                    )
            gstore = _groups(b)
            grbook = gstore._book(room)
            for group in grbook.groups.values():
                if user in group.members:
                    group.members = [alias if m == user else m for m in group.members]
                    done["groups"] += 1
                    if (oid := gstore._orders.pop((group.id, user), None)) is not None:
                        gstore._orders[(group.id, alias)] = oid
            for k in [k for k in grbook.member_of if k[1] == user]:
                grbook.member_of[(k[0], alias)] = grbook.member_of.pop(k)
            abook = _auctions(b)._book(room)
            for aid, bids in abook.logs.items():
                done["bids"] += sum(1 for x in bids if x.user == user)
                abook.logs[aid] = [
                    replace(x, user=alias if x.user == user else x.user,
                            name=ERASED_NAME if x.user == user else x.name,
                            leader=alias if x.leader == user else x.leader)
                    for x in bids
                ]  # fmt: skip
                lot = abook.auctions[aid]
                if lot.leader == user:
                    lot.leader, lot.leader_name = alias, ERASED_NAME
            mod = _moderation(b)
            for (r, _), who in mod._reporters.items():
                if r == room and user in who:
                    who.discard(user)
                    who.add(alias)
                    done["reports"] += 1
            if room in mod._log:
                mod._log[room] = deque(
                    (pseudonymous(e, user, alias, name) for e in mod._log[room]), MODLOG_SIZE
                )
            queue = mod._flagged.get(room, {})
            for msg_id, entry in queue.items():
                queue[msg_id] = pseudonymous(entry, user, alias, name)
            mod._mutes.pop((room, user), None)
            mod._staff.pop((room, user), None)
            mod._last_chat.pop((room, user), None)
            counters = b.counters
            assert isinstance(counters, MemoryCounters)
            buyers = counters._buyers.get(room, set())
            if user in buyers:
                buyers.discard(user)
                buyers.add(alias)
        counters = b.counters
        assert isinstance(counters, MemoryCounters)
        if user in counters._ever_bought:
            counters._ever_bought.discard(user)
            counters._ever_bought.add(alias)
        return done


def _coupons(b: Backends) -> MemoryCouponStore:
    assert isinstance(b.coupons, MemoryCouponStore)
    return b.coupons


def _giveaways(b: Backends) -> MemoryGiveawayStore:
    assert isinstance(b.giveaways, MemoryGiveawayStore)
    return b.giveaways


def _groups(b: Backends) -> MemoryGroupStore:
    assert isinstance(b.groups, MemoryGroupStore)
    return b.groups


def _auctions(b: Backends) -> MemoryAuctionStore:
    assert isinstance(b.auctions, MemoryAuctionStore)
    return b.auctions


def _moderation(b: Backends) -> MemoryModerationStore:
    assert isinstance(b.moderation, MemoryModerationStore)
    return b.moderation
