"""Product clips on Redis (or Redis Cluster).

Keys:

- ``lc:{room}:clips`` (hash): clip id -> the clip as JSON.
- ``lc:{room}:clips:order`` (sorted set, every score 0): the room's clips by
  :attr:`~livecommerce.backends.Clip.order_key` (end time, room, id), read in
  lexicographic order.
- ``lc:clips`` (sorted set, every score 0): every room's clips by order key: the
  shoppable feed. Its member names the room and the clip, and is the feed's cursor.

A room's two keys share its hash tag and change together in one script; the feed is a
key of its own slot, written after the room's keys and cleaned after them, so a reader
of the feed may meet a clip that is gone (it is skipped) but never one not yet stored.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from livecommerce.backends import Clip
from livecommerce.backends.redis import Client, connect, key, register
from livecommerce.config import Settings
from livecommerce.protocol import dumps, loads

FEED = "lc:clips"

ADD = """
-- KEYS: 1 the room's clips (hash), 2 the room's order (sorted set)
-- ARGV: 1 clip id, 2 the clip as JSON, 3 its order key
-- Stores the clip (replacing an older version and its place in the order).
local old = redis.call('HGET', KEYS[1], ARGV[1])
if old then
  local c = cjson.decode(old)
  redis.call('ZREM', KEYS[2], string.format('%013d:%s:%s', c.ended_at, c.room, c.id))
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], 0, ARGV[3])
return 1
"""

FORGET = """
-- KEYS: 1 the room's clips (hash), 2 the room's order (sorted set)
-- ARGV: 1 clip id, 2 its order key
-- Forgets the clip; returns its JSON, or false if it was gone.
local c = redis.call('HGET', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[2])
return c
"""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _clip(raw: Any) -> Clip | None:
    return None if raw is None else Clip.from_record(loads(raw))


class RedisClipStore:
    def __init__(self, r: Client) -> None:
        self._r = r
        self._add = register(r, ADD)
        self._forget = register(r, FORGET)

    async def add(self, clip: Clip) -> None:
        keys = [key(clip.room, "clips"), key(clip.room, "clips:order")]
        await self._add(keys=keys, args=[clip.id, dumps(clip.to_record()), clip.order_key])
        await self._r.zadd(FEED, {clip.order_key: 0})

    async def get(self, room: str, clip_id: str) -> Clip | None:
        return _clip(await self._r.hget(key(room, "clips"), clip_id))

    async def room_clips(self, room: str, *, sku: str | None = None) -> list[Clip]:
        order = await self._r.zrange(key(room, "clips:order"), "+", "-", desc=True, bylex=True)
        if not order:
            return []
        ids = [_text(m).rsplit(":", 1)[1] for m in order]
        raw = await self._r.hmget(key(room, "clips"), ids)
        clips = [c for r in raw if (c := _clip(r)) is not None]
        return [c for c in clips if sku is None or c.sku == sku]

    async def feed(self, limit: int, cursor: str | None = None) -> tuple[list[Clip], str | None]:
        top = "+" if cursor is None else f"({cursor}"
        members = [
            _text(m)
            for m in await self._r.zrange(
                FEED, top, "-", desc=True, bylex=True, offset=0, num=limit + 1
            )
        ]
        more = len(members) > limit
        members = members[:limit]
        by_room: dict[str, list[str]] = {}
        for m in members:
            _, room, clip_id = m.split(":")
            by_room.setdefault(room, []).append(clip_id)
        found: dict[str, Clip] = {}
        for room, ids in by_room.items():
            raw = await self._r.hmget(key(room, "clips"), ids)
            for r in raw:
                if (clip := _clip(r)) is not None:
                    found[clip.order_key] = clip
        clips = [found[m] for m in members if m in found]
        return clips, (members[-1] if more and members else None)

    async def delete_ended_before(self, ms: int, *, limit: int = 1000) -> list[Clip]:
        members = [
            _text(m)
            for m in await self._r.zrange(FEED, "-", f"({ms:013d}", bylex=True, offset=0, num=limit)
        ]
        gone: list[Clip] = []
        for m in members:
            _, room, clip_id = m.split(":")
            raw = await self._forget(
                keys=[key(room, "clips"), key(room, "clips:order")], args=[clip_id, m]
            )
            if (clip := _clip(raw)) is not None:
                gone.append(clip)
        if members:
            await self._r.zrem(FEED, *members)
        return gone


@asynccontextmanager
async def open_redis_clip_store(settings: Settings) -> AsyncIterator[RedisClipStore]:
    """A clip store on ``settings.redis_url`` (its own connections, closed on exit)."""
    r = await connect(settings)
    try:
        yield RedisClipStore(r)
    finally:
        await r.aclose()
