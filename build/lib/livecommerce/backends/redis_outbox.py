"""The order bridge's outbox on Redis: one stream per room, one consumer group.

The reservation script writes ``lc:{room}:outbox`` (one entry per new hold). The bridge's
workers share the consumer group ``bridge`` on every room's stream; an entry stays in the
group's pending list until a worker acknowledges it (delivered) or buries it, and
either takes it out of the stream (so a stream holds what is yet to be delivered, not
every hold ever made; an XDEL lost after its XACK leaves one delivered entry, never
read again). Beside the
stream, under the same hash tag: ``outbox:failures`` (hash entry id -> failed deliveries)
and ``outbox:dead`` (stream of dead letters: the entry's fields plus ``reason``,
``failures``, ``at`` and ``entry``). ``lc:outboxes`` (set) lists the rooms that have an
outbox: a room joins it when its first sale starts, before any hold can exist.

On a Redis Cluster every command but the read works as on one Redis (each names one
room's keys). One XREADGROUP may only name streams of one slot, so there the rooms'
streams are read one slot at a time, in one pipeline (a round trip per node); see
:meth:`RedisOutboxStore._read_cluster`.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Any

from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import ResponseError

from livecommerce.backends import DeadLetter, OutboxEntry
from livecommerce.backends.redis import Client, key, register
from livecommerce.backends.redis_inventory import OUTBOX_INDEX

GROUP = "bridge"
CLUSTER_POLL_S = 0.05
"""On a cluster with streams in several slots, how often a waiting read looks again."""
_DEAD_META = ("reason", "failures", "at", "entry")

BURY = """
-- KEYS: 1 the room's outbox stream
-- ARGV: 1 prefix, 2 entry id, 3 reason, 4 now ms, 5 group
-- Moves the entry to the dead letters (acknowledged, out of the stream), once: 1 if
-- this call did.
local p, id = ARGV[1], ARGV[2]
if redis.call('XACK', KEYS[1], ARGV[5], id) == 0 then return 0 end
local e = redis.call('XRANGE', KEYS[1], id, id)
local fields = {}
if e[1] then fields = e[1][2] end
local failures = redis.call('HGET', p .. 'outbox:failures', id) or '0'
redis.call('XADD', p .. 'outbox:dead', '*', 'reason', ARGV[3], 'failures', failures,
           'at', ARGV[4], 'entry', id, unpack(fields))
redis.call('HDEL', p .. 'outbox:failures', id)
redis.call('XDEL', KEYS[1], id)
return 1
"""

REDRIVE = """
-- KEYS: 1 the room's dead letters
-- ARGV: 1 prefix, 2 dead letter id
-- Moves a dead letter back to the outbox as a new entry: 1 if it existed.
local e = redis.call('XRANGE', KEYS[1], ARGV[2], ARGV[2])
if not e[1] then return 0 end
local f, fields = e[1][2], {}
for i = 1, #f, 2 do
  local name = f[i]
  if name ~= 'reason' and name ~= 'failures' and name ~= 'at' and name ~= 'entry' then
    fields[#fields + 1] = name
    fields[#fields + 1] = f[i + 1]
  end
end
redis.call('XADD', ARGV[1] .. 'outbox', '*', unpack(fields))
redis.call('XDEL', KEYS[1], ARGV[2])
return 1
"""


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _fields(raw: Any) -> dict[str, str]:
    if isinstance(raw, dict):
        return {_s(k): _s(v) for k, v in raw.items()}
    flat = list(raw or [])
    return {_s(flat[i]): _s(flat[i + 1]) for i in range(0, len(flat), 2)}


def _room_of_stream(stream: Any) -> str:
    name = _s(stream)  # lc:{room}:outbox
    return name[name.index("{") + 1 : name.index("}")]


class RedisOutboxStore:
    def __init__(self, r: Client) -> None:
        self._r = r
        self._grouped: set[str] = set()
        self._kept: dict[str, deque[OutboxEntry]] = {}
        self._bury = register(r, BURY)
        self._redrive = register(r, REDRIVE)

    async def rooms(self) -> list[str]:
        return sorted(_s(m) for m in await self._r.smembers(OUTBOX_INDEX))

    async def _streams(self) -> list[str]:
        """Every room's stream, each with the group created (once per process)."""
        rooms = await self.rooms()
        for room in rooms:
            if room not in self._grouped:
                try:  # from the start: entries written before the group are delivered too
                    await self._r.xgroup_create(key(room, "outbox"), GROUP, id="0", mkstream=True)
                except ResponseError as exc:
                    if "BUSYGROUP" not in str(exc):
                        raise
                self._grouped.add(room)
        return [key(room, "outbox") for room in rooms]

    async def _entries(self, stream: Any, raw: list[Any]) -> list[OutboxEntry]:
        room = _room_of_stream(stream)
        live = [(_s(eid), fields) for eid, fields in raw if fields is not None]
        if not live:
            return []
        failures = await self._r.hmget(key(room, "outbox:failures"), [eid for eid, _ in live])
        return [
            OutboxEntry(f"{room}/{eid}", room, _fields(fields), int(n or 0))
            for (eid, fields), n in zip(live, failures, strict=True)
        ]

    async def read(self, consumer: str, count: int, *, block_ms: int) -> list[OutboxEntry]:
        # XREADGROUP's COUNT is per stream: what one call hands over beyond ``count`` is
        # pending on this consumer already, so it is kept here for the next read.
        kept = self._kept.setdefault(consumer, deque())
        if not kept:
            streams = await self._streams()
            if not streams:  # no room has an outbox yet: wait as a blocking read would
                await asyncio.sleep(block_ms / 1000)
                return []
            if isinstance(self._r, RedisCluster):
                got: Any = await self._read_cluster(consumer, streams, count, block_ms)
            else:
                got = await self._r.xreadgroup(
                    GROUP, consumer, {s: ">" for s in streams}, count=count, block=block_ms or None
                )
            for stream, raw in got or []:
                kept.extend(await self._entries(stream, raw))
        return [kept.popleft() for _ in range(min(count, len(kept)))]

    async def _read_cluster(
        self, consumer: str, streams: list[str], count: int, block_ms: int
    ) -> list[Any]:
        """XREADGROUP on a cluster, one command per slot. A wait blocks in Redis (on the
        node of the slot) when every stream is in one slot; with several it cannot, so
        the read looks again every ``CLUSTER_POLL_S`` until ``block_ms`` passed."""
        by_slot: dict[int, dict[Any, Any]] = {}
        for stream in streams:
            by_slot.setdefault(key_slot(stream.encode()), {})[stream] = ">"
        if len(by_slot) == 1:
            [only] = by_slot.values()
            got: Any = await self._r.xreadgroup(
                GROUP, consumer, only, count=count, block=block_ms or None
            )
            return list(got or [])
        deadline = time.monotonic() + block_ms / 1000
        while True:
            async with self._r.pipeline(transaction=False) as pipe:
                for group in by_slot.values():
                    pipe.xreadgroup(GROUP, consumer, group, count=count)
                replies = await pipe.execute()
            found = [item for reply in replies for item in reply or []]
            left = deadline - time.monotonic()
            if found or left <= 0:
                return found
            await asyncio.sleep(min(CLUSTER_POLL_S, left))

    async def reclaim(self, consumer: str, *, min_idle_ms: int, count: int) -> list[OutboxEntry]:
        out: list[OutboxEntry] = []
        for stream in await self._streams():
            if len(out) >= count:
                break
            reply: Any = await self._r.xautoclaim(
                stream, GROUP, consumer, min_idle_ms, "0-0", count=count - len(out)
            )
            out += await self._entries(stream, reply[1])
        return out

    async def touch(self, consumer: str, entries: list[OutboxEntry]) -> None:
        by_room: dict[str, list[Any]] = {}
        for e in entries:
            by_room.setdefault(e.room, []).append(e.id.rpartition("/")[2])
        for room, ids in by_room.items():
            await self._r.xclaim(key(room, "outbox"), GROUP, consumer, 0, ids, justid=True)

    async def ack(self, entries: list[OutboxEntry]) -> None:
        if not entries:
            return
        by_room: dict[str, list[str]] = {}
        failed: dict[str, list[str]] = {}
        for e in entries:
            eid = e.id.rpartition("/")[2]
            by_room.setdefault(e.room, []).append(eid)
            if e.failures:  # only failed entries have a count to clear
                failed.setdefault(e.room, []).append(eid)
        async with self._r.pipeline(transaction=False) as pipe:
            for room, ids in by_room.items():  # delivered: out of the stream too
                pipe.xack(key(room, "outbox"), GROUP, *ids)
                pipe.xdel(key(room, "outbox"), *ids)
            for room, ids in failed.items():
                pipe.hdel(key(room, "outbox:failures"), *ids)
            await pipe.execute()

    async def failed(self, entry: OutboxEntry) -> int:
        eid = entry.id.rpartition("/")[2]
        return int(await self._r.hincrby(key(entry.room, "outbox:failures"), eid, 1))

    async def bury(self, entry: OutboxEntry, reason: str, now_ms: int) -> None:
        eid = entry.id.rpartition("/")[2]
        args: list[str | int] = [key(entry.room, ""), eid, reason, now_ms, GROUP]
        await self._bury(keys=[key(entry.room, "outbox")], args=args)

    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        out: list[DeadLetter] = []
        for room in await self.rooms():
            dead: Any = await self._r.xrange(key(room, "outbox:dead"), count=limit)
            for did, raw in dead or []:
                f = _fields(raw)
                meta = {name: f.pop(name, "") for name in _DEAD_META}
                out.append(
                    DeadLetter(
                        f"{room}/{_s(did)}",
                        room,
                        f,
                        meta["reason"],
                        int(meta["failures"] or 0),
                        int(meta["at"] or 0),
                    )
                )
        return sorted(out, key=lambda d: (d.at_ms, d.id))[:limit]

    async def redrive(self, dead_id: str) -> bool:
        room, _, did = dead_id.rpartition("/")
        if not room or not did:
            return False
        try:
            done = await self._redrive(keys=[key(room, "outbox:dead")], args=[key(room, ""), did])
        except ResponseError:  # not a stream id
            return False
        return bool(done)

    async def backlog(self) -> int:
        # a stream holds what is pending or unread: delivered entries leave it (the
        # group's own lag is unknown to Redis once its last-read entry is deleted)
        total = 0
        for stream in await self._streams():
            total += int(await self._r.xlen(stream))
        return total
