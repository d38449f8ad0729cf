"""The embedded backend: every store in this process's memory (one process only)."""

from __future__ import annotations

import secrets
from collections import deque
from dataclasses import dataclass, field

from livecommerce.backends import (
    Backends,
    Kind,
    LogHead,
    LogSnapshot,
    Refusal,
    Sink,
)
from livecommerce.config import Settings
from livecommerce.protocol import sequence
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
        return LogSnapshot(log.seq, log.epoch, list(log.recent.values()), log.announcement)

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


def memory_backends(settings: Settings) -> Backends:
    """Every store in memory, for one process."""
    return Backends(
        engine="memory",
        rooms=MemoryRoomStore(),
        log=MemoryEventLog(
            history_size=settings.history_size, recent_size=settings.limits.recent_chats
        ),
        counters=MemoryCounters(),
        moderation=MemoryModerationStore(),
    )
