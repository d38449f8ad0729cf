"""The embedded backend: every store in this process's memory (one process only)."""

from __future__ import annotations

import secrets
from collections import deque
from dataclasses import dataclass, field, replace

from livecommerce.backends import (
    Backends,
    Kind,
    LogHead,
    LogSnapshot,
    Refusal,
    Sink,
)
from livecommerce.config import Settings
from livecommerce.inventory.rules import (
    Attempt,
    Ledger,
    Order,
    Outcome,
    Product,
    Sale,
    room_of_order,
)
from livecommerce.protocol import encode_event, sequence
from livecommerce.rooms.state import Room, Status

PRESENCE_TTL_MS = 5000


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
    announcement: bytes | None = None
    pinned: bytes | None = None


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
        sink = self._sinks.get(room)
        if sink is not None:
            sink(line, None)
        return log.seq

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
            log.seq, log.epoch, list(log.recent.values()), log.announcement, log.pinned
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
        self._likes: dict[str, int] = {}
        self._presence: dict[str, dict[str, tuple[int, int]]] = {}

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


class MemoryModerationStore:
    def __init__(self) -> None:
        self._bans: set[tuple[str, str]] = set()
        self._mutes: dict[tuple[str, str], int] = {}
        self._slow: dict[str, int] = {}
        self._last_chat: dict[tuple[str, str], int] = {}

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

    async def is_banned(self, room: str, user: str) -> bool:
        return (room, user) in self._bans

    async def set_slow(self, room: str, seconds: int) -> None:
        self._slow[room] = seconds
        if not seconds:
            for key in [k for k in self._last_chat if k[0] == room]:
                del self._last_chat[key]


class MemoryInventoryStore:
    """A :class:`Ledger` per room; events go through the memory event log."""

    def __init__(self, log: MemoryEventLog) -> None:
        self._log = log
        self._products: dict[str, dict[str, Product]] = {}
        self._ledgers: dict[str, Ledger] = {}
        self._outbox: dict[str, list[dict[str, str]]] = {}

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
        outcomes = [ledger.reserve(sale_id, a, now=now_ms, hold_ms=hold_ms) for a in attempts]
        for out in outcomes:
            if out.created and out.order is not None:
                entry = {k: str(v) for k, v in out.order.to_dict().items()}
                self._outbox.setdefault(room, []).append(entry)
        return [replace(o, order=None if o.order is None else replace(o.order)) for o in outcomes]

    async def pay(self, order_id: str, now_ms: int) -> tuple[Order | None, bool]:
        ledger = self._ledgers.get(room_of_order(order_id))
        if ledger is None or order_id not in ledger.orders:
            return None, False
        was_held = ledger.orders[order_id].status == "held"
        order, sold_out = ledger.pay(order_id)
        if sold_out is not None:
            await self._ended(sold_out, now_ms)
        return (None if order is None else replace(order)), was_held

    async def cancel(self, order_id: str) -> Order | None:
        ledger = self._ledgers.get(room_of_order(order_id))
        order = None if ledger is None else ledger.release(order_id, "cancelled")
        return None if order is None else replace(order)

    async def sweep(self, room: str, now_ms: int) -> list[Order]:
        ledger = self._ledger(room)
        released = ledger.expire_due(now_ms)
        for sale in ledger.end_due(now_ms):
            await self._ended(sale, now_ms)
        return [replace(o) for o in released]

    async def order(self, order_id: str) -> Order | None:
        ledger = self._ledgers.get(room_of_order(order_id))
        order = None if ledger is None else ledger.orders.get(order_id)
        return None if order is None else replace(order)

    async def user_orders(self, room: str, user: str) -> list[Order]:
        return [replace(o) for o in self._ledger(room).user_orders(user)]

    async def rooms_to_sweep(self) -> list[str]:
        return list(self._ledgers)

    async def outbox(self, room: str) -> list[dict[str, str]]:
        return list(self._outbox.get(room, []))


def memory_backends(settings: Settings) -> Backends:
    """Every store in memory, for one process."""
    log = MemoryEventLog(
        history_size=settings.history_size, recent_size=settings.limits.recent_chats
    )
    return Backends(
        engine="memory",
        rooms=MemoryRoomStore(),
        log=log,
        counters=MemoryCounters(),
        moderation=MemoryModerationStore(),
        inventory=MemoryInventoryStore(log),
    )
