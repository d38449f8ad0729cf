"""The Redis backend: any number of processes share rooms through one Redis, or
through a Redis Cluster (``redis+cluster://`` URLs; see ``docs/scaling.md``).

Every key of a room carries the hash tag ``{room}`` so a room maps to one Redis Cluster
slot, and every script touches the keys of one room only. The only cross-room keys are
three indexes, each one key read or written by single-key commands: ``lc:rooms`` (here),
``lc:sweep`` and ``lc:outboxes`` (``redis_inventory.py``). Scripts are constants with a
KEYS/ARGV header, registered once with :func:`register`; redis-py's ``Script`` reloads
them after NOSCRIPT.

On a cluster a room's lines go out with sharded pub/sub (``SPUBLISH``/``SSUBSCRIBE``,
Redis 7): only the shard that owns the room's slot sends them, to the processes
subscribed there, instead of every node relaying every line over the cluster bus.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from contextlib import asynccontextmanager
from contextvars import ContextVar
from functools import partial
from typing import Any, TypeVar, cast

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import ClusterPipeline, ClusterPubSub, RedisCluster
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException
from redis.exceptions import TimeoutError as RedisTimeoutError

from livecommerce.backends import (
    FLAGGED_SIZE,
    MODLOG_SIZE,
    Backends,
    Kind,
    LogHead,
    LogSnapshot,
    Refusal,
    Reported,
    Sink,
)
from livecommerce.config import Settings
from livecommerce.protocol import dumps, loads
from livecommerce.rooms.state import STATUSES, Room, Status

log = logging.getLogger(__name__)

PRESENCE_TTL_MS = 5000
ROOMS_INDEX = "lc:rooms"
BUYERS_INDEX = "lc:buyers"
"""Every user who ever paid for an order in any room (first-time buyers are new here)."""
REDIS_CONCURRENCY = 64
"""Redis commands (or pipelines) one process has in flight at most; more wait for a
turn. A burst of joins (a reconnect storm) would otherwise open a connection each."""

Client = aioredis.Redis | RedisCluster
"""One Redis or a Redis Cluster: the stores send the same commands to both."""

_T = TypeVar("_T")
_MESSAGE = frozenset(("message", b"message", "smessage", b"smessage"))
_SUBSCRIBED = frozenset(("subscribe", b"subscribe", "ssubscribe", b"ssubscribe"))
_PUBLISH = "redis.call('PUBLISH', "
_SPUBLISH = "redis.call('SPUBLISH', "


def key(room: str, name: str) -> str:
    """The Redis key ``name`` of ``room`` (hash-tagged on the room id)."""
    return f"lc:{{{room}}}:{name}"


def _fresh_epoch() -> str:
    return os.urandom(4).hex()


def register(r: Client, script: str) -> AsyncScript:
    """Register ``script`` (a constant of these modules) with ``r``.

    On a cluster its ``PUBLISH`` becomes ``SPUBLISH``: the line goes from the room's
    shard to the processes subscribed there. A plain ``PUBLISH`` would work too, but a
    cluster relays it to every node over its bus, so every line would cost every shard.
    """
    if isinstance(r, RedisCluster):
        script = script.replace(_PUBLISH, _SPUBLISH)
    return r.register_script(script)


_IN_TURN: ContextVar[bool] = ContextVar("livecommerce_redis_turn", default=False)


class GatedCluster(RedisCluster):
    """A :class:`RedisCluster` with at most ``concurrency`` commands or pipelines of
    this process in flight; the others wait for a turn.

    redis-py's cluster client has no blocking pool: past ``max_connections`` to a node
    it raises ``MaxConnectionsError`` (the failure that joins in a burst met on one
    Redis before its pool blocked: ``docs/benchmarks.md``, run R4). Each turn uses at
    most one connection per node, so ``concurrency`` plus a few (pub/sub) bounds them.
    A command sent within a turn (a pipeline resending a redirected command) takes no
    second turn, so turns cannot deadlock.
    """

    def __init__(self, *args: Any, concurrency: int = REDIS_CONCURRENCY, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._turns = asyncio.Semaphore(concurrency)

    async def in_turn(self, call: Callable[[], Awaitable[_T]]) -> _T:
        """``await call()`` within a turn."""
        if _IN_TURN.get():
            return await call()
        async with self._turns:
            token = _IN_TURN.set(True)
            try:
                return await call()
            finally:
                _IN_TURN.reset(token)

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        return await self.in_turn(partial(super().execute_command, *args, **kwargs))

    def pipeline(
        self, transaction: Any | None = None, shard_hint: Any | None = None
    ) -> ClusterPipeline:
        if shard_hint:
            raise RedisClusterException("shard_hint is deprecated in cluster mode")
        return _GatedPipeline(self, transaction)  # type: ignore[abstract]  # as redis-py's


class _GatedPipeline(ClusterPipeline):
    """A cluster pipeline that runs within a turn of its :class:`GatedCluster`."""

    async def execute(self, raise_on_error: bool = True, allow_redirections: bool = True) -> Any:
        client = cast(GatedCluster, self.cluster_client)
        run = partial(ClusterPipeline.execute, self, raise_on_error, allow_redirections)
        return await client.in_turn(run)


async def connect(settings: Settings) -> Client:
    """A client of ``settings.redis_url`` (one Redis, or a Redis Cluster), connected."""
    assert settings.redis_url is not None
    if settings.redis_cluster:
        url = settings.redis_url.replace("+cluster://", "://", 1)
        cluster = GatedCluster.from_url(
            url, max_connections=REDIS_CONCURRENCY + 8, health_check_interval=30
        )
        try:
            await cluster.initialize()  # the slot map, before any SSUBSCRIBE needs it
        except BaseException:
            await cluster.aclose()
            raise
        return cluster
    # A burst of joins (a reconnect storm) asks for many connections at once: they wait
    # for a free one instead of failing with "Too many connections".
    pool = aioredis.BlockingConnectionPool.from_url(
        settings.redis_url, max_connections=REDIS_CONCURRENCY, timeout=10, health_check_interval=30
    )
    r = aioredis.Redis.from_pool(pool)  # closing r closes the pool
    await r.ping()
    return r


# The room's event log in Lua, shared by every script that publishes. ``p`` is the
# room's key prefix ``lc:{room}:``: keys built from it share the room's hash tag, so
# they live in the script's slot on Redis Cluster as well.
LOG_LUA = """
-- A missing epoch means the room's history was lost: drop what is left of it and
-- start seq again under a fresh epoch.
local function ensure_epoch(p, fresh)
  local epoch = redis.call('GET', p .. 'epoch')
  if not epoch then
    epoch = fresh
    redis.call('SET', p .. 'epoch', epoch)
    redis.call('DEL', p .. 'seq', p .. 'log', p .. 'recent', p .. 'msgs', p .. 'ann',
               p .. 'pin', p .. 'media')
  end
  return epoch
end

-- Sequence ``body`` (a JSON object), keep it in the bounded history, publish it.
local function emit(p, body, maxlen, fresh)
  ensure_epoch(p, fresh)
  local seq = redis.call('INCR', p .. 'seq')
  local line = '{"seq":' .. seq .. ',' .. string.sub(body, 2)
  redis.call('XADD', p .. 'log', 'MAXLEN', maxlen, seq .. '-1', 'l', line)
  redis.call('PUBLISH', p .. 'ev', line)
  return seq, line
end
"""

PUBLISH = (
    """
-- KEYS: 1 the room's seq key (routing; every key is built from the prefix)
-- ARGV: 1 prefix, 2 fresh epoch, 3 body (a JSON object), 4 kind, 5 ref (msg id),
--       6 history size, 7 recent size
-- Returns the seq, or 0 for a chat.deleted of an unknown message.
"""
    + LOG_LUA
    + """
local p, kind, ref = ARGV[1], ARGV[4], ARGV[5]
ensure_epoch(p, ARGV[2])
if kind == 'chat.deleted' then
  if redis.call('ZREM', p .. 'msgs', ref) == 0 then return 0 end
  local needle = '"msg_id":"' .. ref .. '"'
  for _, item in ipairs(redis.call('LRANGE', p .. 'recent', 0, -1)) do
    if string.find(item, needle, 1, true) then
      redis.call('LREM', p .. 'recent', 1, item)
      break
    end
  end
end
local seq, line = emit(p, ARGV[3], ARGV[6], ARGV[2])
if kind == 'chat' then
  redis.call('ZADD', p .. 'chats', tonumber(string.match(line, '"ts":(%d+)') or '0'), line)
  redis.call('LPUSH', p .. 'recent', line)
  redis.call('LTRIM', p .. 'recent', 0, tonumber(ARGV[7]) - 1)
  redis.call('ZADD', p .. 'msgs', seq, ref)
  local extra = redis.call('ZCARD', p .. 'msgs') - tonumber(ARGV[6])
  if extra > 0 then redis.call('ZREMRANGEBYRANK', p .. 'msgs', 0, extra - 1) end
elseif kind == 'announcement' then
  redis.call('SET', p .. 'ann', line)
elseif kind == 'pin' then
  redis.call('SET', p .. 'pin', line)
elseif kind == 'unpin' then
  redis.call('DEL', p .. 'pin')
elseif kind == 'media' then
  redis.call('SET', p .. 'media', line)
end
return seq
"""
)

CONTEXT = """
-- KEYS: 1 the room's message ids (zset msg id -> seq), 2 the log (stream)
-- ARGV: 1 msg id, 2 chats wanted on each side
-- Returns the chat lines around the message, oldest first, or false if it is not in the
-- history. Looks at the 50 events on each side (the chats among them).
local seq = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not seq then return false end
seq = tonumber(seq)
local lo = math.max(1, seq - 50)
local chats, at = {}, nil
for _, e in ipairs(redis.call('XRANGE', KEYS[2], lo .. '-1', (seq + 50) .. '-1')) do
  local line = e[2][2]
  if string.find(line, '"type":"chat",', 1, true) then
    chats[#chats + 1] = line
    if string.find(line, '"msg_id":"' .. ARGV[1] .. '"', 1, true) then at = #chats end
  end
end
if not at then return false end
local n, out = tonumber(ARGV[2]), {}
for i = math.max(1, at - n), math.min(#chats, at + n) do out[#out + 1] = chats[i] end
return out
"""

REPORT = """
-- KEYS: 1 the target's reporters (set), 2 its reasons (hash reason -> count), 3 the
--       reporter's reports in the room (set of targets)
-- ARGV: 1 reporter, 2 reason, 3 target
-- Returns false if the reporter had reported it, else {reporters, reasons flat}.
if redis.call('SADD', KEYS[1], ARGV[1]) == 0 then return false end
redis.call('SADD', KEYS[3], ARGV[3])
redis.call('HINCRBY', KEYS[2], ARGV[2], 1)
return {redis.call('SCARD', KEYS[1]), redis.call('HGETALL', KEYS[2])}
"""

HISTORY = """
-- KEYS: 1 seq, 2 log, 3 epoch
-- ARGV: 1 after (seq), 2 epoch
-- Returns the lines after ARGV[1] in order, or false if the history lacks any of them.
if redis.call('GET', KEYS[3]) ~= ARGV[2] then return false end
local seq = tonumber(redis.call('GET', KEYS[1]) or '0')
local after = tonumber(ARGV[1])
if after > seq then return false end
if after == seq then return {} end
local entries = redis.call('XRANGE', KEYS[2], (after + 1) .. '-1', '+')
if #entries ~= seq - after then return false end
local out = {}
for i, e in ipairs(entries) do out[i] = e[2][2] end
return out
"""

SNAPSHOT = (
    """
-- KEYS: 1 the room's seq key (routing)
-- ARGV: 1 prefix, 2 fresh epoch, 3 '1' for the full snapshot, '0' for the head only
-- Returns {seq, epoch[, recent lines newest first, announcement, pinned, media]}.
"""
    + LOG_LUA
    + """
local p = ARGV[1]
local epoch = ensure_epoch(p, ARGV[2])
local seq = tonumber(redis.call('GET', p .. 'seq') or '0')
if ARGV[3] == '0' then return {seq, epoch} end
return {seq, epoch, redis.call('LRANGE', p .. 'recent', 0, -1), redis.call('GET', p .. 'ann'),
        redis.call('GET', p .. 'pin'), redis.call('GET', p .. 'media')}
"""
)

PRESENCE = """
-- KEYS: 1 presence (hash node -> "count:expires_ms")
-- ARGV: 1 node, 2 count, 3 now ms, 4 ttl ms
-- Returns the sum of counts of nodes that have not expired; drops the expired.
local now = tonumber(ARGV[3])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. ':' .. (now + tonumber(ARGV[4])))
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[4]) * 4)
local all = redis.call('HGETALL', KEYS[1])
local total = 0
for i = 1, #all, 2 do
  local count, expires = string.match(all[i + 1], '^(%d+):(%d+)$')
  if expires and tonumber(expires) > now then
    total = total + tonumber(count)
  else
    redis.call('HDEL', KEYS[1], all[i])
  end
end
return total
"""

ADMIT_CHAT = """
-- KEYS: 1 bans (set), 2 mutes (hash user -> until ms), 3 mod (hash: slow), 4 slow:<user>
-- ARGV: 1 user, 2 now ms, 3 '1' if exempt from slow mode
-- Returns false if admitted (and records it for slow mode), else {code, until ms}.
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 then return {'banned', 0} end
local now = tonumber(ARGV[2])
local muted = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
if muted > now then return {'muted', muted} end
local slow = tonumber(redis.call('HGET', KEYS[3], 'slow') or '0')
if slow > 0 and ARGV[3] ~= '1' then
  local last = redis.call('GET', KEYS[4])
  if last then return {'slow_mode', tonumber(last) + slow * 1000} end
  redis.call('SET', KEYS[4], now, 'PX', slow * 1000)
end
return false
"""

CREATE_ROOM = """
-- KEYS: 1 room (hash)
-- ARGV: field, value pairs
-- Returns 1 if created, 0 if the room exists.
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1
"""

SET_STATUS = """
-- KEYS: 1 room (hash)
-- ARGV: 1 old status, 2 new status
if redis.call('HGET', KEYS[1], 'status') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'status', ARGV[2])
return 1
"""


def _room(raw: Any) -> Room | None:
    if b"title" not in raw:
        return None
    status = raw[b"status"].decode()
    return Room(
        id=raw[b"id"].decode(),
        title=raw[b"title"].decode(),
        host=raw[b"host"].decode(),
        status=status if status in STATUSES else "ended",
        created_at=int(raw[b"created_at"]),
    )


class RedisRoomStore:
    def __init__(self, r: Client) -> None:
        self._r = r
        self._create = register(r, CREATE_ROOM)
        self._set_status = register(r, SET_STATUS)

    async def create(self, room: Room) -> bool:
        fields = [str(v) for kv in room.to_dict().items() for v in kv]
        if not await self._create(keys=[key(room.id, "room")], args=fields):
            return False
        await self._r.zadd(ROOMS_INDEX, {room.id: room.created_at})
        return True

    async def get(self, room_id: str) -> Room | None:
        return _room(await self._r.hgetall(key(room_id, "room")))

    async def list(self, status: Status | None = None) -> list[Room]:
        ids = await self._r.zrevrange(ROOMS_INDEX, 0, 499)
        async with self._r.pipeline(transaction=False) as pipe:
            for rid in ids:
                pipe.hgetall(key(rid.decode() if isinstance(rid, bytes) else str(rid), "room"))
            raws = await pipe.execute()
        rooms = [r for raw in raws if (r := _room(raw)) is not None]
        return [r for r in rooms if status is None or r.status == status]

    async def ids(self) -> builtins.list[str]:
        return [
            r.decode() if isinstance(r, bytes) else str(r)
            for r in await self._r.zrange(ROOMS_INDEX, 0, -1)
        ]

    async def set_status(self, room_id: str, old: Status, new: Status) -> bool:
        return bool(await self._set_status(keys=[key(room_id, "room")], args=[old, new]))


class RedisEventLog:
    """Publishes through one script; one pub/sub connection per process receives."""

    def __init__(self, r: Client, *, history_size: int, recent_size: int) -> None:
        self._r = r
        self._history_size = history_size
        self._recent_size = recent_size
        self._publish = register(r, PUBLISH)
        self._history = register(r, HISTORY)
        self._context = register(r, CONTEXT)
        self._snapshot = register(r, SNAPSHOT)
        self._pubsub: PubSub = r.pubsub(ignore_subscribe_messages=False)
        self._sinks: dict[bytes, Sink] = {}
        self._confirmed: dict[bytes, asyncio.Future[None]] = {}
        self._has_channels = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None

    async def publish(self, room: str, body: bytes, *, kind: Kind = "plain", ref: str = "") -> int:
        args: list[bytes | str | int] = [
            key(room, ""),
            _fresh_epoch(),
            body,
            kind,
            ref,
            self._history_size,
            self._recent_size,
        ]
        return int(await self._publish(keys=[key(room, "seq")], args=args))

    async def chats(self, room: str, start: int, limit: int) -> list[tuple[int, bytes]]:
        raw: list[tuple[bytes, float]] = await self._r.zrange(  # type: ignore[assignment]
            key(room, "chats"), start, start + limit - 1, withscores=True
        )
        return [(int(score), line) for line, score in raw]

    async def forget_chats(self, room: str, before_ms: int) -> int:
        return int(await self._r.zremrangebyscore(key(room, "chats"), "-inf", f"({before_ms}"))

    async def context(self, room: str, msg_id: str, around: int) -> list[bytes] | None:
        keys = [key(room, "msgs"), key(room, "log")]
        lines = await self._context(keys=keys, args=[msg_id, around])
        return None if lines is None else [bytes(ln) for ln in lines]

    async def send_private(self, room: str, user: str, line: bytes) -> None:
        await self._r.publish(key(room, "ev"), private_message(user, line))

    async def history(self, room: str, after: int, epoch: str) -> list[bytes] | None:
        keys = [key(room, "seq"), key(room, "log"), key(room, "epoch")]
        lines = await self._history(keys=keys, args=[after, epoch])
        return None if lines is None else list(lines)

    async def snapshot(self, room: str) -> LogSnapshot:
        seq, epoch, recent, ann, pin, media = await self._snapshot(
            keys=[key(room, "seq")], args=[key(room, ""), _fresh_epoch(), "1"]
        )
        return LogSnapshot(int(seq), epoch.decode(), list(reversed(recent)), ann, pin, media)

    async def head(self, room: str) -> LogHead:
        seq, epoch = await self._snapshot(
            keys=[key(room, "seq")], args=[key(room, ""), _fresh_epoch(), "0"]
        )
        return LogHead(int(seq), epoch.decode())

    async def subscribe(self, room: str, sink: Sink) -> LogHead:
        channel = key(room, "ev").encode()
        self._sinks[channel] = sink
        confirmed = self._confirmed[channel] = asyncio.get_running_loop().create_future()
        await self._listen(channel)
        await asyncio.wait_for(confirmed, 10)
        return await self.head(room)

    async def unsubscribe(self, room: str) -> None:
        channel = key(room, "ev").encode()
        self._sinks.pop(channel, None)
        self._confirmed.pop(channel, None)
        await self._unlisten(channel)

    async def _listen(self, channel: bytes) -> None:
        """Subscribe to ``channel`` and make sure its messages are read."""
        await self._pubsub.subscribe(channel)
        self._has_channels.set()
        if self._reader is None:
            self._reader = asyncio.create_task(self._read(), name="redis-pubsub")

    async def _unlisten(self, channel: bytes) -> None:
        await self._pubsub.unsubscribe(channel)

    async def _read(self) -> None:
        backoff = 0.05
        while True:
            await self._has_channels.wait()
            try:
                msg = await self._pubsub.get_message(timeout=1.0)
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                log.warning("redis pub/sub: %s; reconnecting", exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            except RuntimeError:  # no subscription left
                self._has_channels.clear()
                continue
            backoff = 0.05
            if msg is not None:
                self._dispatch(msg)

    def _dispatch(self, msg: dict[str, Any]) -> None:
        kind, channel, data = msg["type"], msg["channel"], msg["data"]
        if kind in _MESSAGE:
            sink = self._sinks.get(channel)
            if sink is None:
                return
            if data[:1] == b"@":
                user, line = read_private(data)
                sink(line, user)
            else:
                sink(data, None)
        elif kind in _SUBSCRIBED:
            fut = self._confirmed.get(channel)
            if fut is not None and not fut.done():
                fut.set_result(None)

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        await self._pubsub.aclose()


def private_message(user: str, line: bytes) -> bytes:
    """A line for one user's connections, framed ``@<length of user>:<user><line>``:
    a length, not a separator, so no user id or line can move the boundary (room lines
    are JSON objects and start with ``{``, never ``@``)."""
    who = user.encode()
    return b"@%d:%b%b" % (len(who), who, line)


def read_private(data: bytes) -> tuple[str, bytes]:
    """The user and the line of a :func:`private_message`."""
    size, _, rest = data[1:].partition(b":")
    n = int(size)
    return rest[:n].decode(), rest[n:]


class ShardedEventLog(RedisEventLog):
    """The event log on a Redis Cluster: lines go out with ``SPUBLISH`` from the shard
    that owns the room's slot, and this process ``SSUBSCRIBE``s there.

    redis-py keeps one pub/sub connection per shard this process listens to (and moves
    a room's subscription when its slot moves); one reader task per such connection
    hands its lines on, so a quiet shard never delays a busy one.
    """

    def __init__(self, r: RedisCluster, *, history_size: int, recent_size: int) -> None:
        super().__init__(r, history_size=history_size, recent_size=recent_size)
        self._cluster = r
        self._shards = cast(ClusterPubSub, self._pubsub)
        self._readers: dict[str, asyncio.Task[None]] = {}
        self._watcher: asyncio.Task[None] | None = None

    async def send_private(self, room: str, user: str, line: bytes) -> None:
        await self._cluster.spublish(key(room, "ev"), private_message(user, line))

    async def _listen(self, channel: bytes) -> None:
        await self._shards.ssubscribe(channel)
        self._start_readers()
        if self._watcher is None:
            self._watcher = asyncio.create_task(self._watch(), name="redis-spubsub-watch")

    async def _unlisten(self, channel: bytes) -> None:
        await self._shards.sunsubscribe(channel)

    def _start_readers(self) -> None:
        """A reader for every shard connection that has none (new subscriptions, or
        subscriptions moved by a failover or a resharding)."""
        for name in list(self._shards.node_pubsub_mapping):
            if name not in self._readers and self._cluster.get_node(node_name=name):
                task = asyncio.create_task(self._read_shard(name), name=f"redis-spubsub-{name}")
                self._readers[name] = task

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self._start_readers()

    async def _read_shard(self, name: str) -> None:
        """Read one shard's connection while redis-py keeps it (it closes it once its
        last subscription is gone)."""
        backoff = 0.05
        try:
            while name in self._shards.node_pubsub_mapping:
                node = self._cluster.get_node(node_name=name)
                if node is None:  # gone from the cluster; its rooms moved elsewhere
                    return
                try:
                    msg = await self._shards.get_sharded_message(target_node=node, timeout=1.0)
                except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                    log.warning("redis sharded pub/sub on %s: %s; reconnecting", name, exc)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 2.0)
                    continue
                except RuntimeError:  # its connection is being set up, or was closed
                    await asyncio.sleep(0.05)
                    continue
                except Exception:  # outlive a surprise; the hub repairs the lines lost
                    log.exception("redis sharded pub/sub on %s", name)
                    await asyncio.sleep(1.0)
                    continue
                backoff = 0.05
                if msg is not None:
                    self._dispatch(msg)
        finally:
            self._readers.pop(name, None)

    async def close(self) -> None:
        tasks = [*self._readers.values(), *([self._watcher] if self._watcher else [])]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._shards.aclose()


PEAK = """
-- KEYS: 1 the room's figures (hash)
-- ARGV: 1 viewers now, 2 the field (peak_viewers, or peak_viewers:<sku>)
-- Keeps the highest count seen in the field; returns it.
local peak = tonumber(redis.call('HGET', KEYS[1], ARGV[2]) or '0')
local now = tonumber(ARGV[1])
if now > peak then
  redis.call('HSET', KEYS[1], ARGV[2], now)
  return now
end
return peak
"""


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisCounters:
    def __init__(self, r: Client) -> None:
        self._r = r
        self._presence = register(r, PRESENCE)
        self._peak = register(r, PEAK)

    async def count(self, room: str, figures: dict[str, int]) -> None:
        async with self._r.pipeline(transaction=False) as pipe:
            for name, n in figures.items():
                pipe.hincrby(key(room, "stats"), name, n)
            await pipe.execute()

    async def note_viewers(self, room: str, viewers: int, *, sku: str | None = None) -> int:
        name = f"peak_viewers:{sku}" if sku else "peak_viewers"
        return int(await self._peak(keys=[key(room, "stats")], args=[viewers, name]))

    async def figures(self, room: str) -> dict[str, int]:
        raw = await self._r.hgetall(key(room, "stats"))
        return {_s(k): int(v) for k, v in raw.items()}

    async def add_likes(self, room: str, n: int) -> int:
        return int(await self._r.incrby(key(room, "likes"), n))

    async def note_joins(self, room: str, users: Collection[str]) -> None:
        async with self._r.pipeline(transaction=False) as pipe:
            pipe.hincrby(key(room, "stats"), "joins", len(users))
            pipe.pfadd(key(room, "uv"), *users)
            await pipe.execute()

    async def unique_viewers(self, room: str) -> int:
        return int(await self._r.pfcount(key(room, "uv")))

    async def note_buyer(self, room: str, user: str) -> None:
        if not await self._r.sadd(key(room, "buyers"), user):
            return
        first = bool(await self._r.sadd(BUYERS_INDEX, user))
        await self.count(room, {"buyers": 1, "first_time_buyers": int(first)})

    async def record_minute(self, room: str, minute: int, figures: dict[str, int]) -> bool:
        return bool(await self._r.hsetnx(key(room, "minutes"), str(minute), dumps(figures)))

    async def minutes(self, room: str) -> dict[int, dict[str, int]]:
        raw = await self._r.hgetall(key(room, "minutes"))
        return {int(m): loads(f) for m, f in raw.items()}

    async def note_ab_test(self, room: str, sale_id: str) -> None:
        await self._r.sadd(key(room, "abtests"), sale_id)

    async def ab_tests(self, room: str) -> list[str]:
        return sorted(_s(t) for t in await self._r.smembers(key(room, "abtests")))

    async def note_exposed(self, room: str, sale_id: str, arms: dict[str, list[str]]) -> None:
        async with self._r.pipeline(transaction=False) as pipe:
            for arm, users in arms.items():
                if users:
                    pipe.pfadd(key(room, f"abv:{sale_id}:{arm}"), *users)
            await pipe.execute()

    async def ab_counts(self, room: str, sale_id: str) -> dict[str, tuple[int, int]]:
        out = {}
        for arm in ("a", "b"):
            seen = await self._r.pfcount(key(room, f"abv:{sale_id}:{arm}"))
            ordered = await self._r.pfcount(key(room, f"abo:{sale_id}:{arm}"))
            out[arm] = (int(seen), int(ordered))
        return out

    async def forget_minutes(self, room: str, before_ms: int) -> int:
        minutes = await self._r.hkeys(key(room, "minutes"))
        old = [m for m in minutes if (int(m) + 1) * 60_000 <= before_ms]
        return int(await self._r.hdel(key(room, "minutes"), *old)) if old else 0

    async def report_presence(self, room: str, node: str, count: int, now_ms: int) -> int:
        args: list[str | int] = [node, count, now_ms, PRESENCE_TTL_MS]
        return int(await self._presence(keys=[key(room, "presence")], args=args))


FLAG = """
-- KEYS: 1 the review queue (zset msg id -> order of arrival); its messages are in
--       the hash named after it with ':msgs'
-- ARGV: 1 msg id, 2 entry, 3 most entries kept
local n = redis.call('INCR', KEYS[1] .. ':n')
redis.call('ZADD', KEYS[1], n, ARGV[1])
redis.call('HSET', KEYS[1] .. ':msgs', ARGV[1], ARGV[2])
local over = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[3])
if over > 0 then
  for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, over - 1)) do
    redis.call('HDEL', KEYS[1] .. ':msgs', id)
  end
  redis.call('ZREMRANGEBYRANK', KEYS[1], 0, over - 1)
end
return 1
"""

UNFLAG = """
-- KEYS: 1 the review queue; ARGV: 1 msg id. Returns 1 if it was queued.
redis.call('HDEL', KEYS[1] .. ':msgs', ARGV[1])
return redis.call('ZREM', KEYS[1], ARGV[1])
"""


class RedisModerationStore:
    def __init__(self, r: Client) -> None:
        self._r = r
        self._admit = register(r, ADMIT_CHAT)
        self._flag = register(r, FLAG)
        self._report = register(r, REPORT)
        self._unflag = register(r, UNFLAG)

    async def admit_chat(
        self, room: str, user: str, now_ms: int, *, slow_exempt: bool = False
    ) -> Refusal | None:
        keys = [key(room, "bans"), key(room, "mutes"), key(room, "mod"), key(room, f"slow:{user}")]
        out = await self._admit(keys=keys, args=[user, now_ms, "1" if slow_exempt else "0"])
        if out is None:
            return None
        code, until = out
        return cast(Refusal, (code.decode(), int(until)))

    async def mute(self, room: str, user: str, until_ms: int) -> None:
        await self._r.hset(key(room, "mutes"), user, until_ms)

    async def set_banned(self, room: str, user: str, banned: bool) -> bool:
        if banned:
            return bool(await self._r.sadd(key(room, "bans"), user))
        return bool(await self._r.srem(key(room, "bans"), user))

    async def set_leet(self, room: str, on: bool) -> None:
        await self._r.hset(key(room, "mod"), "leet", int(on))

    async def leet(self, room: str) -> bool:
        return bool(int(await self._r.hget(key(room, "mod"), "leet") or 0))

    async def note_staff(self, room: str, user: str, role: str) -> None:
        await self._r.hset(key(room, "staff"), user, role)

    async def staff_role(self, room: str, user: str) -> str | None:
        role = await self._r.hget(key(room, "staff"), user)
        return role.decode() if isinstance(role, bytes) else role

    async def banned(self, room: str, users: Collection[str]) -> set[str]:
        users = list(users)
        if not users:
            return set()
        flags = await self._r.smismember(key(room, "bans"), users)
        return {u for u, flag in zip(users, flags, strict=True) if flag}

    async def set_slow(self, room: str, seconds: int) -> None:
        await self._r.hset(key(room, "mod"), "slow", seconds)

    async def slow(self, room: str) -> int:
        return int(await self._r.hget(key(room, "mod"), "slow") or 0)

    async def change_filter(
        self, room: str, add: list[str], remove: list[str], action: str
    ) -> dict[str, str]:
        async with self._r.pipeline(transaction=True) as pipe:
            if remove:
                pipe.hdel(key(room, "filter"), *remove)
            if add:
                pipe.hset(key(room, "filter"), mapping=dict.fromkeys(add, action))
            pipe.hgetall(key(room, "filter"))
            *_, terms = await pipe.execute()
        return {_s(k): _s(v) for k, v in terms.items()}

    async def filter_terms(self, room: str) -> dict[str, str]:
        raw = await self._r.hgetall(key(room, "filter"))
        return {_s(k): _s(v) for k, v in raw.items()}

    async def flag(self, room: str, msg_id: str, entry: bytes) -> None:
        await self._flag(keys=[key(room, "flagged")], args=[msg_id, entry, FLAGGED_SIZE])

    async def unflag(self, room: str, msg_id: str) -> bool:
        return bool(await self._unflag(keys=[key(room, "flagged")], args=[msg_id]))

    async def flagged(self, room: str) -> list[bytes]:
        ids: Any = await self._r.zrange(key(room, "flagged"), 0, -1)
        if not ids:
            return []
        raw: list[Any] = await self._r.hmget(key(room, "flagged:msgs"), ids)
        return [bytes(e) for e in raw if e is not None]

    async def forget_actions(self, room: str, before_ms: int) -> int:
        # the log's entry ids are the unix ms they were added at
        return int(await self._r.xtrim(key(room, "modlog"), minid=before_ms, approximate=False))

    async def report(self, room: str, target: str, reporter: str, reason: str) -> Reported | None:
        keys = [
            key(room, f"reporters:{target}"),
            key(room, f"reasons:{target}"),
            key(room, f"ureports:{reporter}"),
        ]
        got = await self._report(keys=keys, args=[reporter, reason, target])
        if got is None:
            return None
        count, flat = got
        return Reported(
            int(count), {k.decode(): int(v) for k, v in zip(flat[::2], flat[1::2], strict=True)}
        )

    async def log_action(self, room: str, entry: bytes) -> None:
        await self._r.xadd(key(room, "modlog"), {"e": entry}, maxlen=MODLOG_SIZE, approximate=True)

    async def actions(self, room: str, limit: int) -> list[bytes]:
        if limit <= 0:
            return []
        raw: Any = await self._r.xrevrange(key(room, "modlog"), count=limit)
        return [bytes(fields[b"e"]) for _, fields in reversed(raw or [])]


@asynccontextmanager
async def open_redis_backends(settings: Settings) -> AsyncIterator[Backends]:
    """Connect to ``settings.redis_url`` (one Redis or a Redis Cluster) and yield the
    Redis stores."""
    r = await connect(settings)
    from livecommerce.backends.redis_inventory import RedisInventoryStore
    from livecommerce.backends.redis_outbox import RedisOutboxStore
    from livecommerce.backends.redis_privacy import RedisPrivacyStore
    from livecommerce.backends.redis_promotions import (
        RedisAuctionStore,
        RedisCouponStore,
        RedisGiveawayStore,
        RedisGroupStore,
    )

    sizes = {"history_size": settings.history_size, "recent_size": settings.limits.recent_chats}
    events = (
        ShardedEventLog(r, **sizes) if isinstance(r, RedisCluster) else RedisEventLog(r, **sizes)
    )
    try:
        yield Backends(
            engine="redis",
            rooms=RedisRoomStore(r),
            log=events,
            counters=RedisCounters(r),
            moderation=RedisModerationStore(r),
            inventory=RedisInventoryStore(r, history_size=settings.history_size),
            outbox=RedisOutboxStore(r),
            coupons=RedisCouponStore(r),
            giveaways=RedisGiveawayStore(r),
            groups=RedisGroupStore(r),
            auctions=RedisAuctionStore(r),
            privacy=RedisPrivacyStore(r),
        )
    finally:
        await events.close()
        await r.aclose()
