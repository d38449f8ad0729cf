"""The live-room promotions on Redis: coupons and giveaways (``promotions`` has the rules).

Keys, after the room's prefix ``lc:{room}:`` (one hash tag, so a room's keys share a
slot on Redis Cluster): ``coupon:<id>`` (hash, the coupon with its ``claimed`` count),
``coupons`` (sorted set of active coupon ids by drop time), ``cclaims:<id>`` (hash
user -> claims), ``uclaims:<user>`` (set of the coupons the user claimed), and, written
by the order script (``redis_inventory.RESERVE``), ``cspent:<id>`` (hash user -> claims
spent on held or paid orders). A claim is one script: the window, the user's count and the quantity
are checked and both counts raised in one step, so no burst from any number of
connections and processes claims more than the quantity, or twice for one user.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Literal

from livecommerce.backends.redis import Client, key, register
from livecommerce.backends.redis_inventory import (
    _SALE_LUA,
    _pairs,
    _str,
    grant_args,
    index_orders,
)
from livecommerce.inventory.rules import Grant
from livecommerce.promotions.auctions import Auction, Bid, BidRefusal, BidRequest, BidResult
from livecommerce.promotions.coupons import Claimed, ClaimRefusal, ClaimRequest, Coupon, CouponEnd
from livecommerce.promotions.draws import Proof
from livecommerce.promotions.giveaways import Entered, EntryRefusal, Frozen, Giveaway
from livecommerce.promotions.groups import Deal, Group, Joined, JoinRefusal
from livecommerce.protocol import dumps, loads

DROP = """
-- KEYS: 1 the coupon (hash), 2 the room's active coupons (zset)
-- ARGV: 1 the coupon's id, 2 its drop time (ms), then field, value pairs
-- Returns 1 if kept, 0 if the id is taken.
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
return 1
"""

CLAIMS = """
-- KEYS: 1 the coupon (hash)
-- ARGV: 1 prefix, 2 the coupon's id, 3 now (ms), then per claim: user, seconds watched
-- Serves the claims in order (CouponBook.claim each, with the room's bans): the
-- coupon's claims (hash cclaims:<id>, user -> count) and the user's claimed coupons
-- (set uclaims:<user>: the orders' "best" coupon is looked for there) raised together.
-- Returns {per claim {refusal or '', the user's claims}, the coupon's fields and values}.
local p, cid, now = ARGV[1], ARGV[2], tonumber(ARGV[3])
local c = redis.call('HMGET', KEYS[1], 'status', 'quantity', 'claimed', 'per_user', 'ends_at',
                     'watch_s')
local out = {}
if not c[1] then
  for i = 4, #ARGV, 2 do out[#out + 1] = {'not_found', 0} end
  return {out, {}}
end
local claimed, ends_at = tonumber(c[3]), tonumber(c[5])
local closed = c[1] ~= 'active' or (ends_at > 0 and now >= ends_at)
for i = 4, #ARGV, 2 do
  local user = ARGV[i]
  local mine = tonumber(redis.call('HGET', p .. 'cclaims:' .. cid, user) or '0')
  local r = ''
  if redis.call('SISMEMBER', p .. 'bans', user) == 1 then r = 'banned'
  elseif tonumber(ARGV[i + 1]) < tonumber(c[6]) then r = 'not_eligible'
  elseif closed then r = 'coupon_ended'
  elseif mine >= tonumber(c[4]) then r = 'limit_exceeded'
  elseif claimed >= tonumber(c[2]) then r = 'sold_out'
  else
    mine, claimed = mine + 1, claimed + 1
    redis.call('HSET', p .. 'cclaims:' .. cid, user, mine)
    redis.call('SADD', p .. 'uclaims:' .. user, cid)
  end
  out[#out + 1] = {r, mine}
end
local granted = claimed - tonumber(c[3])
if granted > 0 then
  redis.call('HSET', KEYS[1], 'claimed', claimed)
  redis.call('HINCRBY', p .. 'stats', 'coupon_claims', granted)
end
return {out, redis.call('HGETALL', KEYS[1])}
"""

END = """
-- KEYS: 1 the coupon (hash), 2 the room's active coupons (zset)
-- ARGV: 1 the coupon's id, 2 the reason
-- Returns 1 if this call ended it.
if redis.call('HGET', KEYS[1], 'status') ~= 'active' then return 0 end
redis.call('HSET', KEYS[1], 'status', 'ended', 'reason', ARGV[2])
redis.call('ZREM', KEYS[2], ARGV[1])
return 1
"""

_REFUSALS: dict[bytes, ClaimRefusal] = {
    b"not_found": "not_found",
    b"banned": "banned",
    b"not_eligible": "not_eligible",
    b"coupon_ended": "coupon_ended",
    b"limit_exceeded": "limit_exceeded",
    b"sold_out": "sold_out",
}


def _coupon(raw: dict[Any, Any]) -> Coupon | None:
    if not raw:
        return None
    return Coupon.from_record({k.decode(): v.decode() for k, v in raw.items()})


class RedisCouponStore:
    def __init__(self, r: Client) -> None:
        self._r = r
        self._drop = register(r, DROP)
        self._claims = register(r, CLAIMS)
        self._end = register(r, END)

    async def drop(self, coupon: Coupon) -> bool:
        record = coupon.to_record()
        pairs = [v for kv in record.items() for v in kv]
        keys = [key(coupon.room, f"coupon:{coupon.id}"), key(coupon.room, "coupons")]
        return bool(await self._drop(keys=keys, args=[coupon.id, coupon.starts_at, *pairs]))

    async def claim(
        self, room: str, coupon_id: str, user: str, now_ms: int, watched_s: float = 0
    ) -> Claimed:
        return (await self.claim_many(room, coupon_id, [(user, watched_s)], now_ms))[0]

    async def claim_many(
        self, room: str, coupon_id: str, claims: list[ClaimRequest], now_ms: int
    ) -> list[Claimed]:
        args: list[Any] = [key(room, ""), coupon_id, now_ms]
        for user, watched_s in claims:
            args += [user, watched_s]
        out, flat = await self._claims(keys=[key(room, f"coupon:{coupon_id}")], args=args)
        coupon = _coupon(dict(zip(flat[::2], flat[1::2], strict=True)))
        return [
            Claimed(coupon, int(mine), _REFUSALS.get(refusal) if refusal else None)
            for refusal, mine in out
        ]

    async def end(self, room: str, coupon_id: str, reason: CouponEnd) -> Coupon | None:
        keys = [key(room, f"coupon:{coupon_id}"), key(room, "coupons")]
        if not await self._end(keys=keys, args=[coupon_id, reason]):
            return None
        return await self.coupon(room, coupon_id)

    async def coupon(self, room: str, coupon_id: str) -> Coupon | None:
        return _coupon(await self._r.hgetall(key(room, f"coupon:{coupon_id}")))

    async def _live_ids(self, room: str) -> list[str]:
        ids: list[bytes] = await self._r.zrange(key(room, "coupons"), 0, -1)  # type: ignore[assignment]
        return [i.decode() for i in ids]

    async def live(self, room: str) -> list[Coupon]:
        ids = await self._live_ids(room)
        if not ids:
            return []
        async with self._r.pipeline(transaction=False) as pipe:
            for cid in ids:
                pipe.hgetall(key(room, f"coupon:{cid}"))
            raws = await pipe.execute()
        return [c for raw in raws if (c := _coupon(raw)) is not None and c.status == "active"]

    async def claims_of(self, room: str, user: str) -> dict[str, int]:
        ids = await self._live_ids(room)
        if not ids:
            return {}
        async with self._r.pipeline(transaction=False) as pipe:
            for cid in ids:
                pipe.hget(key(room, f"cclaims:{cid}"), user)
            counts = await pipe.execute()
        return {cid: int(n) for cid, n in zip(ids, counts, strict=True) if n}


# -- giveaways -----------------------------------------------------------------------
# Keys, after the room's prefix: ``giveaway`` (string: the id of the giveaway not yet
# drawn), ``gaw:<id>`` (hash, the giveaway), ``gseed:<id>`` (its secret seed, hex),
# ``gaws`` (sorted set of every giveaway's id by start),
# ``gent:<id>`` (set of entrants), ``ghere:<id>`` (set of "<node>\n<user>": where an
# entrant is watching), ``gfrozen:<id>`` (the entrants frozen at the draw, one per
# line), ``gproof:<id>`` (the proof's JSON).

GIVEAWAY_START = """
-- KEYS: 1 the room's current giveaway (string), 2 the giveaway (hash), 3 its seed,
--       4 the room's giveaways (zset id -> start)
-- ARGV: 1 id, 2 seed hex, 3 start ms, then field, value pairs
-- Returns 1 if kept, 0 while another is not drawn yet (or the id is taken).
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
if not redis.call('SET', KEYS[1], ARGV[1], 'NX') then return 0 end
redis.call('HSET', KEYS[2], unpack(ARGV, 4))
redis.call('SET', KEYS[3], ARGV[2])
redis.call('ZADD', KEYS[4], ARGV[3], ARGV[1])
return 1
"""

GIVEAWAY_ENTER = """
-- KEYS: 1 the giveaway (hash), 2 its entrants (set), 3 where they watch (set),
--       4 the room's bans (set), 5 its mutes (hash user -> until ms), 6 its figures
-- ARGV: 1 user, 2 node, 3 now ms
-- Returns {refusal or '', 1 if added, the giveaway's fields and values}.
local g = redis.call('HMGET', KEYS[1], 'status', 'ends_at')
if not g[1] then return {'not_found', 0, {}} end
local r, added = '', 0
if redis.call('SISMEMBER', KEYS[4], ARGV[1]) == 1 then r = 'banned'
elseif tonumber(redis.call('HGET', KEYS[5], ARGV[1]) or '0') > tonumber(ARGV[3]) then
  r = 'muted'
elseif g[1] ~= 'open' or tonumber(ARGV[3]) >= tonumber(g[2]) then r = 'giveaway_closed'
else
  added = redis.call('SADD', KEYS[2], ARGV[1])
  if added == 1 then
    redis.call('HINCRBY', KEYS[1], 'entries', 1)
    redis.call('HINCRBY', KEYS[6], 'giveaway_entries', 1)
  end
  redis.call('SADD', KEYS[3], ARGV[2] .. '\\n' .. ARGV[1])
end
return {r, added, redis.call('HGETALL', KEYS[1])}
"""

GIVEAWAY_SEEN = """
-- KEYS: 1 the room's current giveaway (string)
-- ARGV: 1 prefix, 2 user, 3 node, 4 '1' if the user joined on node, '' if they left it
-- Only while a giveaway is open: a leaver's place goes, an entrant who joins is back.
-- Returns 1 if the user joined and is an entrant.
local gid = redis.call('GET', KEYS[1])
if not gid or redis.call('HGET', ARGV[1] .. 'gaw:' .. gid, 'status') ~= 'open' then
  return 0
end
local here, mark = ARGV[1] .. 'ghere:' .. gid, ARGV[3] .. '\\n' .. ARGV[2]
if ARGV[4] == '' then
  redis.call('SREM', here, mark)
  return 0
end
if redis.call('SISMEMBER', ARGV[1] .. 'gent:' .. gid, ARGV[2]) == 0 then return 0 end
redis.call('SADD', here, mark)
return 1
"""

GIVEAWAY_FREEZE = """
-- KEYS: 1 the giveaway (hash), 2 its entrants, 3 where they watch, 4 the frozen entrants
--       (string), 5 the room's presence (hash node -> "count:expires ms"), 6 the seed
-- ARGV: 1 now ms
-- open -> drawing: the entrants watching on a live node, sorted, are frozen. Returns
-- {status, frozen entrants (text), seed hex}, or {status} once drawn or cancelled.
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {} end
if status == 'open' then
  local now, live, present = tonumber(ARGV[1]), {}, {}
  local nodes = redis.call('HGETALL', KEYS[5])
  for i = 1, #nodes, 2 do
    local expires = string.match(nodes[i + 1], ':(%d+)$')
    if expires and tonumber(expires) > now then live[nodes[i]] = true end
  end
  for _, mark in ipairs(redis.call('SMEMBERS', KEYS[3])) do
    local node, user = string.match(mark, '^([^\\n]*)\\n(.*)$')
    if live[node] and redis.call('SISMEMBER', KEYS[2], user) == 1 then present[user] = true end
  end
  local frozen = {}
  for user in pairs(present) do frozen[#frozen + 1] = user end
  table.sort(frozen)
  redis.call('SET', KEYS[4], table.concat(frozen, '\\n'))
  redis.call('HSET', KEYS[1], 'status', 'drawing')
  status = 'drawing'
end
if status ~= 'drawing' then return {status} end
return {status, redis.call('GET', KEYS[4]), redis.call('GET', KEYS[6])}
"""

GIVEAWAY_FINISH = (
    """
-- KEYS: 1 the giveaway (hash), 2 the room's current giveaway (string), 3 the proof
-- ARGV: 1 prefix, 2 room, 3 id, 4 now ms, 5 hold ms, 6 proof JSON, 7 winners (lines),
--       8 entrants' digest, then per winner the 8 fields of a grant
-- drawing -> drawn, the proof kept and every winner's prize order held, in one step.
-- Returns 1 if this call drew it.
"""
    + _SALE_LUA
    + """
if redis.call('HGET', KEYS[1], 'status') ~= 'drawing' then return 0 end
redis.call('HSET', KEYS[1], 'status', 'drawn', 'winners', ARGV[7], 'entrants_digest', ARGV[8])
redis.call('SET', KEYS[3], ARGV[6])
if redis.call('GET', KEYS[2]) == ARGV[3] then redis.call('DEL', KEYS[2]) end
local now, hold = tonumber(ARGV[4]), tonumber(ARGV[5])
for i = 9, #ARGV, 8 do
  grant(ARGV[1], ARGV[2], {unpack(ARGV, i, i + 7)}, now, hold)
end
return 1
"""
)

GIVEAWAY_CANCEL = """
-- KEYS: 1 the giveaway (hash), 2 the room's current giveaway (string)
-- ARGV: 1 id
-- open -> cancelled. Returns 1 if this call cancelled it.
if redis.call('HGET', KEYS[1], 'status') ~= 'open' then return 0 end
redis.call('HSET', KEYS[1], 'status', 'cancelled')
if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end
return 1
"""

_ENTRY_REFUSALS: dict[bytes, EntryRefusal] = {
    b"not_found": "not_found",
    b"giveaway_closed": "giveaway_closed",
    b"banned": "banned",
    b"muted": "muted",
}


def _giveaway(raw: dict[Any, Any]) -> Giveaway | None:
    if not raw:
        return None
    return Giveaway.from_record({k.decode(): v.decode() for k, v in raw.items()})


class RedisGiveawayStore:
    def __init__(self, r: Client) -> None:
        self._r = r
        self._start = register(r, GIVEAWAY_START)
        self._enter = register(r, GIVEAWAY_ENTER)
        self._seen = register(r, GIVEAWAY_SEEN)
        self._freeze = register(r, GIVEAWAY_FREEZE)
        self._finish = register(r, GIVEAWAY_FINISH)
        self._cancel = register(r, GIVEAWAY_CANCEL)

    async def start(self, giveaway: Giveaway, seed: bytes) -> bool:
        room, gid = giveaway.room, giveaway.id
        pairs = [v for kv in giveaway.to_record().items() for v in kv]
        keys = [
            key(room, "giveaway"),
            key(room, f"gaw:{gid}"),
            key(room, f"gseed:{gid}"),
            key(room, "gaws"),
        ]
        args: list[Any] = [gid, seed.hex(), giveaway.starts_at, *pairs]
        return bool(await self._start(keys=keys, args=args))

    async def enter(self, room: str, gid: str, user: str, now_ms: int, node: str) -> Entered:
        keys = [
            key(room, f"gaw:{gid}"),
            key(room, f"gent:{gid}"),
            key(room, f"ghere:{gid}"),
            key(room, "bans"),
            key(room, "mutes"),
            key(room, "stats"),
        ]
        refusal, added, flat = await self._enter(keys=keys, args=[user, node, now_ms])
        g = _giveaway(dict(zip(flat[::2], flat[1::2], strict=True)))
        return Entered(g, bool(added), _ENTRY_REFUSALS.get(refusal) if refusal else None)

    async def seen(self, room: str, user: str, node: str, *, here: bool) -> bool:
        args = [key(room, ""), user, node, "1" if here else ""]
        return bool(await self._seen(keys=[key(room, "giveaway")], args=args))

    async def freeze(self, room: str, gid: str, now_ms: int) -> Frozen | None:
        keys = [
            key(room, f"gaw:{gid}"),
            key(room, f"gent:{gid}"),
            key(room, f"ghere:{gid}"),
            key(room, f"gfrozen:{gid}"),
            key(room, "presence"),
            key(room, f"gseed:{gid}"),
        ]
        got = await self._freeze(keys=keys, args=[now_ms])
        if len(got) < 3:
            return None
        g = await self.get(room, gid)
        assert g is not None  # it exists: the script just froze it
        entrants = [e for e in got[1].decode().split("\n") if e]
        return Frozen(g, entrants, bytes.fromhex(got[2].decode()))

    async def finish(
        self, room: str, proof: Proof, grants: list[Grant], *, now_ms: int, hold_ms: int
    ) -> Giveaway | None:
        gid = proof.giveaway
        if grants:
            await index_orders(self._r, room, now_ms)
        keys = [key(room, f"gaw:{gid}"), key(room, "giveaway"), key(room, f"gproof:{gid}")]
        args: list[Any] = [key(room, ""), room, gid, now_ms, hold_ms, dumps(proof.to_json())]
        args += ["\n".join(proof.winners), proof.entrants_digest, *grant_args(grants)]
        if not await self._finish(keys=keys, args=args):
            return None
        return await self.get(room, gid)

    async def cancel(self, room: str, gid: str) -> Giveaway | None:
        keys = [key(room, f"gaw:{gid}"), key(room, "giveaway")]
        if not await self._cancel(keys=keys, args=[gid]):
            return None
        return await self.get(room, gid)

    async def get(self, room: str, gid: str) -> Giveaway | None:
        return _giveaway(await self._r.hgetall(key(room, f"gaw:{gid}")))

    async def current(self, room: str) -> Giveaway | None:
        gid = await self._r.get(key(room, "giveaway"))
        return None if gid is None else await self.get(room, _str(gid))

    async def entered(self, room: str, gid: str, user: str) -> bool:
        return bool(await self._r.sismember(key(room, f"gent:{gid}"), user))

    async def proof(self, room: str, gid: str) -> Proof | None:
        raw = await self._r.get(key(room, f"gproof:{gid}"))
        return None if raw is None else Proof.from_json(loads(raw))


# -- group buys ----------------------------------------------------------------------
# Keys, after the room's prefix: ``deal:<id>`` (hash, the deal with its ``remaining``),
# ``deals`` (sorted set of deal ids by start), ``grp:<id>`` (hash, a group), ``gmem:<id>``
# (list, its members in the order they joined), ``gord:<id>`` (hash member -> the id of
# the order the group's fill gives them), ``dmember:<deal>`` (hash user -> the forming
# group they are in), ``gforming`` (sorted set of forming group ids by end time),
# ``grps`` (sorted set of every group's id by opening).

_GROUP_LUA = (
    _SALE_LUA
    + """
local function is_banned(p, user) return redis.call('SISMEMBER', p .. 'bans', user) == 1 end
local function group_reply(p, gid, r, filled)
  return {r, filled, redis.call('HGETALL', p .. 'grp:' .. gid),
          redis.call('LRANGE', p .. 'gmem:' .. gid, 0, -1)}
end
-- Add user (whose order id is oid) to a forming group; fill it with its last member:
-- every member's order held at the group price, in this same step.
local function add_member(p, room, gid, deal, user, oid, now, hold)
  local dk, gk = p .. 'deal:' .. deal, p .. 'grp:' .. gid
  local n = redis.call('RPUSH', p .. 'gmem:' .. gid, user)
  redis.call('HSET', p .. 'gord:' .. gid, user, oid)
  redis.call('HSET', p .. 'dmember:' .. deal, user, gid)
  redis.call('HINCRBY', dk, 'remaining', -1)
  if n < tonumber(redis.call('HGET', gk, 'size')) then return 0 end
  redis.call('HSET', gk, 'status', 'filled')
  redis.call('ZREM', p .. 'gforming', gid)
  local d = redis.call('HMGET', dk, 'sku', 'title', 'price')
  add(p, 'groups_filled', d[1], 1)
  for _, member in ipairs(redis.call('LRANGE', p .. 'gmem:' .. gid, 0, -1)) do
    redis.call('HDEL', p .. 'dmember:' .. deal, member)
    local order = redis.call('HGET', p .. 'gord:' .. gid, member)
    grant(p, room, {order, member, 'group:' .. gid, gid, 'group', d[1], d[2], d[3]}, now, hold)
  end
  return 1
end
"""
)

DEAL_START = """
-- KEYS: 1 the deal (hash), 2 the room's deals (zset)
-- ARGV: 1 id, 2 start ms, then field, value pairs. Returns 1 if kept (0: id taken).
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
return 1
"""

DEAL_STOP = """
-- KEYS: 1 the deal (hash). Returns 1 if this call ended it.
if redis.call('HGET', KEYS[1], 'status') ~= 'active' then return 0 end
redis.call('HSET', KEYS[1], 'status', 'ended')
return 1
"""

GROUP_OPEN = (
    """
-- KEYS: 1 the deal (hash)
-- ARGV: 1 prefix, 2 room, 3 deal id, 4 new group id, 5 user, 6 the user's order id,
--       7 now ms
-- Returns {refusal or '', 0, the group's fields, its members}.
"""
    + _GROUP_LUA
    + """
local p, deal, gid, user, now = ARGV[1], ARGV[3], ARGV[4], ARGV[5], tonumber(ARGV[7])
local d = redis.call('HMGET', KEYS[1], 'status', 'remaining', 'size', 'window_s')
if not d[1] then return {'not_found', 0, {}, {}} end
if is_banned(p, user) then return {'banned', 0, {}, {}} end
if d[1] ~= 'active' then return {'group_closed', 0, {}, {}} end
if redis.call('HEXISTS', p .. 'dmember:' .. deal, user) == 1 then
  return {'already_in_group', 0, {}, {}}
end
if tonumber(d[2]) < 1 then return {'sold_out', 0, {}, {}} end
local ends = now + tonumber(d[4]) * 1000
redis.call('HSET', p .. 'grp:' .. gid, 'id', gid, 'room', ARGV[2], 'deal', deal, 'size', d[3],
           'opened_at', num(now), 'ends_at', num(ends), 'status', 'forming')
redis.call('ZADD', p .. 'gforming', ends, gid)
redis.call('ZADD', p .. 'grps', now, gid)
add(p, 'groups_opened', redis.call('HGET', KEYS[1], 'sku'), 1)
add_member(p, ARGV[2], gid, deal, user, ARGV[6], now, 0)
return group_reply(p, gid, '', 0)
"""
)

GROUP_JOIN = (
    """
-- KEYS: 1 the group (hash)
-- ARGV: 1 prefix, 2 room, 3 group id, 4 user, 5 the user's order id, 6 now ms, 7 hold ms
-- Returns {refusal or '', 1 if this join filled it, the group's fields, its members}.
"""
    + _GROUP_LUA
    + """
local p, gid, user, now = ARGV[1], ARGV[3], ARGV[4], tonumber(ARGV[6])
local g = redis.call('HMGET', KEYS[1], 'status', 'ends_at', 'size', 'deal')
if not g[1] then return {'not_found', 0, {}, {}} end
if is_banned(p, user) then return group_reply(p, gid, 'banned', 0) end
if g[1] ~= 'forming' or now >= tonumber(g[2]) then return group_reply(p, gid, 'group_closed', 0) end
local members = redis.call('LRANGE', p .. 'gmem:' .. gid, 0, -1)
for _, m in ipairs(members) do
  if m == user then return group_reply(p, gid, '', 0) end
end
if #members >= tonumber(g[3]) then return group_reply(p, gid, 'group_full', 0) end
if redis.call('HEXISTS', p .. 'dmember:' .. g[4], user) == 1 then
  return group_reply(p, gid, 'already_in_group', 0)
end
if tonumber(redis.call('HGET', p .. 'deal:' .. g[4], 'remaining')) < 1 then
  return group_reply(p, gid, 'sold_out', 0)
end
local filled = add_member(p, ARGV[2], gid, g[4], user, ARGV[5], now, tonumber(ARGV[7]))
return group_reply(p, gid, '', filled)
"""
)

GROUP_EXPIRE = """
-- KEYS: 1 the room's forming groups (zset id -> end ms)
-- ARGV: 1 prefix, 2 now ms, 3 batch
-- Fails up to ARGV[3] forming groups whose window ended: each member's hold released,
-- the units back to the deal. Returns their ids.
local p, failed = ARGV[1], {}
for _, gid in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[2],
                                'LIMIT', 0, tonumber(ARGV[3]))) do
  local gk = p .. 'grp:' .. gid
  local deal = redis.call('HGET', gk, 'deal')
  local members = redis.call('LRANGE', p .. 'gmem:' .. gid, 0, -1)
  redis.call('HSET', gk, 'status', 'failed')
  redis.call('HINCRBY', p .. 'deal:' .. deal, 'remaining', #members)
  for _, m in ipairs(members) do redis.call('HDEL', p .. 'dmember:' .. deal, m) end
  redis.call('ZREM', KEYS[1], gid)
  failed[#failed + 1] = gid
end
return failed
"""

GROUPS_FORMING = """
-- KEYS: 1 the room's forming groups (zset)
-- ARGV: 1 prefix
-- Returns, per forming group, {its fields, its members}: one trip whatever their number.
local out = {}
for _, gid in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  out[#out + 1] = {redis.call('HGETALL', ARGV[1] .. 'grp:' .. gid),
                   redis.call('LRANGE', ARGV[1] .. 'gmem:' .. gid, 0, -1)}
end
return out
"""

_JOIN_REFUSALS: dict[bytes, JoinRefusal] = {
    r.encode(): r
    for r in ("not_found", "group_closed", "group_full", "sold_out", "already_in_group", "banned")
}


def _deal(raw: dict[Any, Any]) -> Deal | None:
    if not raw:
        return None
    return Deal.from_record({_str(k): _str(v) for k, v in raw.items()})


def _group(raw: dict[Any, Any], members: list[Any]) -> Group | None:
    if not raw:
        return None
    r = {_str(k): _str(v) for k, v in raw.items()}
    return Group(
        id=r["id"],
        room=r["room"],
        deal=r["deal"],
        size=int(r["size"]),
        opened_at=int(r["opened_at"]),
        ends_at=int(r["ends_at"]),
        members=[_str(m) for m in members],
        status=r["status"],  # type: ignore[arg-type]
    )


class RedisGroupStore:
    def __init__(self, r: Client) -> None:
        self._r = r
        self._start = register(r, DEAL_START)
        self._stop = register(r, DEAL_STOP)
        self._open = register(r, GROUP_OPEN)
        self._join = register(r, GROUP_JOIN)
        self._expire = register(r, GROUP_EXPIRE)
        self._forming = register(r, GROUPS_FORMING)

    async def start(self, deal: Deal) -> bool:
        pairs = [v for kv in deal.to_record().items() for v in kv]
        keys = [key(deal.room, f"deal:{deal.id}"), key(deal.room, "deals")]
        return bool(await self._start(keys=keys, args=[deal.id, deal.starts_at, *pairs]))

    async def stop(self, room: str, deal_id: str) -> Deal | None:
        if not await self._stop(keys=[key(room, f"deal:{deal_id}")], args=[]):
            return None
        return await self.deal(room, deal_id)

    async def deal(self, room: str, deal_id: str) -> Deal | None:
        return _deal(await self._r.hgetall(key(room, f"deal:{deal_id}")))

    async def deals(self, room: str) -> list[Deal]:
        ids: list[Any] = await self._r.zrange(key(room, "deals"), 0, -1)
        async with self._r.pipeline(transaction=False) as pipe:
            for did in ids:
                pipe.hgetall(key(room, f"deal:{_str(did)}"))
            raws = await pipe.execute()
        return [d for raw in raws if (d := _deal(raw)) is not None]

    def _joined(self, reply: list[Any]) -> Joined:
        refusal, filled, flat, members = reply
        group = _group(_pairs(flat), members)
        return Joined(group, bool(filled), _JOIN_REFUSALS.get(refusal) if refusal else None)

    async def open(
        self, room: str, deal_id: str, group_id: str, user: str, order_id: str, now_ms: int
    ) -> Joined:
        args: list[Any] = [key(room, ""), room, deal_id, group_id, user, order_id, now_ms]
        return self._joined(await self._open(keys=[key(room, f"deal:{deal_id}")], args=args))

    async def join(
        self, room: str, group_id: str, user: str, order_id: str, *, now_ms: int, hold_ms: int
    ) -> Joined:
        await index_orders(self._r, room, now_ms)
        args: list[Any] = [key(room, ""), room, group_id, user, order_id, now_ms, hold_ms]
        return self._joined(await self._join(keys=[key(room, f"grp:{group_id}")], args=args))

    async def expire(self, room: str, now_ms: int) -> list[Group]:
        args: list[Any] = [key(room, ""), now_ms, 200]
        ids = await self._expire(keys=[key(room, "gforming")], args=args)
        groups = [await self.group(room, _str(gid)) for gid in ids]
        return [g for g in groups if g is not None]

    async def group(self, room: str, group_id: str) -> Group | None:
        async with self._r.pipeline(transaction=False) as pipe:
            pipe.hgetall(key(room, f"grp:{group_id}"))
            pipe.lrange(key(room, f"gmem:{group_id}"), 0, -1)
            raw, members = await pipe.execute()
        return _group(raw, members)

    async def forming(self, room: str, limit: int) -> tuple[list[Group], int]:
        raw = await self._forming(keys=[key(room, "gforming")], args=[key(room, "")])
        groups = [g for flat, members in raw if (g := _group(_pairs(flat), members)) is not None]
        groups.sort(key=lambda g: (g.needed, g.ends_at, g.id))
        return groups[:limit], len(groups)

    async def mine(self, room: str, user: str) -> list[Group]:
        deals: list[Any] = await self._r.zrange(key(room, "deals"), 0, -1)
        found = []
        for did in deals:
            gid = await self._r.hget(key(room, f"dmember:{_str(did)}"), user)
            if gid is not None and (g := await self.group(room, _str(gid))) is not None:
                found.append(g)
        return found


# -- auctions ------------------------------------------------------------------------
# Keys, after the room's prefix: ``auction`` (string: the open lot's id), ``auc:<id>``
# (hash, the lot with its price, leader and the leader's maximum), ``abids:<id>``
# (list, the append-only bid log: one JSON object per accepted bid), ``aucs`` (sorted
# set of every lot's id by start).

AUCTION_START = """
-- KEYS: 1 the room's open lot (string), 2 the lot (hash), 3 the room's lots (zset)
-- ARGV: 1 id, 2 start ms, then field, value pairs
-- Returns 1 if kept, 0 while another lot is open (or the id is taken).
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
if not redis.call('SET', KEYS[1], ARGV[1], 'NX') then return 0 end
redis.call('HSET', KEYS[2], unpack(ARGV, 3))
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])
return 1
"""

AUCTION_BIDS = """
-- KEYS: 1 the lot (hash), 2 its bid log (list), 3 the room's bans (set), 4 its mutes,
--       5 its figures
-- ARGV: 1 now ms, then per bid: user, name, amount, ceiling (the proxy maximum)
-- promotions.auctions.place_bid for each bid in order, each accepted one logged, in one
-- step. Returns {per bid {refusal or '', 1 if the bidder leads, 1 if the clock was set
-- back, price, leader, leader's name, leader's max, ends_at, extensions, bids}, the
-- lot's fields after the last}.
local f = redis.call('HMGET', KEYS[1], 'status', 'ends_at', 'start_bid', 'price', 'leader',
                     'leader_max', 'bands', 'extend_s', 'max_extensions', 'extensions', 'bids',
                     'leader_name')
local out = {}
if not f[1] then
  for i = 2, #ARGV, 4 do out[#out + 1] = {'not_found'} end
  return {out, {}}
end
local now = tonumber(ARGV[1])
local function inc(price)
  local step = nil
  for from, s in string.gmatch(f[7], '(%d+):(%d+)') do
    if step == nil or price >= tonumber(from) then step = tonumber(s) end
  end
  return step
end
local ends_at, price, leader, lmax = tonumber(f[2]), tonumber(f[4]), f[5], tonumber(f[6])
local lname, bids, done = f[12], tonumber(f[11]), tonumber(f[10])
local window, cap = tonumber(f[8]) * 1000, tonumber(f[9])
for i = 2, #ARGV, 4 do
  local user, name, amount = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
  local ceiling = math.max(tonumber(ARGV[i + 3]), amount)
  local least = tonumber(f[3])
  if leader ~= '' then least = price + inc(price) end
  local r, extended = '', 0
  if redis.call('SISMEMBER', KEYS[3], user) == 1 then r = 'banned'
  elseif tonumber(redis.call('HGET', KEYS[4], user) or '0') > now then r = 'muted'
  elseif f[1] ~= 'open' or now >= ends_at then r = 'auction_closed'
  elseif amount < least then r = 'bid_too_low'
  else
    if leader == '' then
      leader, lname, lmax, price = user, name, ceiling, amount
    elseif user == leader then
      lmax = math.max(lmax, ceiling)
    elseif ceiling > lmax then
      price = math.min(ceiling, math.max(amount, lmax + inc(lmax)))
      leader, lname, lmax = user, name, ceiling
    else
      price = math.min(lmax, ceiling + inc(ceiling))
    end
    bids = bids + 1
    if window > 0 and now >= ends_at - window and (cap < 0 or done < cap) then
      ends_at, done, extended = now + window, done + 1, 1
    end
    redis.call('RPUSH', KEYS[2], cjson.encode({seq = bids, user = user, name = name,
      amount = amount, max = ceiling, at = now, price = price, leader = leader}))
  end
  local leading = 0
  if r == '' and leader == user then leading = 1 end
  out[#out + 1] = {r, leading, extended, price, leader, lname, lmax, ends_at, done, bids}
end
redis.call('HSET', KEYS[1], 'price', price, 'leader', leader, 'leader_name', lname,
           'leader_max', lmax, 'bids', bids, 'ends_at', ends_at, 'extensions', done)
local accepted = bids - tonumber(f[11])
if accepted > 0 then redis.call('HINCRBY', KEYS[5], 'auction_bids', accepted) end
return {out, redis.call('HGETALL', KEYS[1])}
"""

AUCTION_END = (
    """
-- KEYS: 1 the lot (hash), 2 the room's open lot (string)
-- ARGV: 1 prefix, 2 room, 3 id, 4 now ms, 5 hold ms, 6 the leader the caller read,
--       then the 8 fields of the winner's grant (none without a leader)
-- Ends the lot once its clock ran out, the winner's hold at the hammer price written
-- in the same step. Returns 1 if this call ended it, 0 if not open or not due yet,
-- 'moved' if the leader is not the one the caller read (read again).
"""
    + _SALE_LUA
    + """
local f = redis.call('HMGET', KEYS[1], 'status', 'ends_at', 'leader')
if f[1] ~= 'open' or tonumber(ARGV[4]) < tonumber(f[2]) then return 0 end
if f[3] ~= ARGV[6] then return 'moved' end
redis.call('HSET', KEYS[1], 'status', 'ended')
if redis.call('GET', KEYS[2]) == ARGV[3] then redis.call('DEL', KEYS[2]) end
if #ARGV >= 14 then
  grant(ARGV[1], ARGV[2], {unpack(ARGV, 7, 14)}, tonumber(ARGV[4]), tonumber(ARGV[5]))
end
return 1
"""
)

_BID_REFUSALS: dict[bytes, BidRefusal] = {
    b"not_found": "not_found",
    b"auction_closed": "auction_closed",
    b"bid_too_low": "bid_too_low",
    b"banned": "banned",
    b"muted": "muted",
}


def _auction(raw: dict[Any, Any]) -> Auction | None:
    if not raw:
        return None
    return Auction.from_record({_str(k): _str(v) for k, v in raw.items()})


class RedisAuctionStore:
    def __init__(self, r: Client) -> None:
        self._r = r
        self._start = register(r, AUCTION_START)
        self._bids = register(r, AUCTION_BIDS)
        self._end = register(r, AUCTION_END)

    async def start(self, auction: Auction) -> bool:
        pairs = [v for kv in auction.to_record().items() for v in kv]
        keys = [
            key(auction.room, "auction"),
            key(auction.room, f"auc:{auction.id}"),
            key(auction.room, "aucs"),
        ]
        return bool(await self._start(keys=keys, args=[auction.id, auction.starts_at, *pairs]))

    async def bid(
        self, room: str, aid: str, *, user: str, name: str, amount: int, ceiling: int, now_ms: int
    ) -> BidResult:
        request = BidRequest(user, name, amount, ceiling)
        return (await self.bid_many(room, aid, [request], now_ms))[0]

    async def bid_many(
        self, room: str, aid: str, bids: list[BidRequest], now_ms: int
    ) -> list[BidResult]:
        keys = [
            key(room, f"auc:{aid}"),
            key(room, f"abids:{aid}"),
            key(room, "bans"),
            key(room, "mutes"),
            key(room, "stats"),
        ]
        args: list[Any] = [now_ms]
        for b in bids:
            args += [b.user, b.name, b.amount, b.ceiling]
        out, flat = await self._bids(keys=keys, args=args)
        lot = _auction(_pairs(flat))
        if lot is None:
            return [BidResult(None, refused="not_found") for _ in bids]
        results = []
        for refusal, leading, extended, *state in out:
            price, leader, name, lmax, ends_at, extensions, count = state
            after = replace(
                lot, price=int(price), leader=_str(leader), leader_name=_str(name),
                leader_max=int(lmax), ends_at=int(ends_at), extensions=int(extensions),
                bids=int(count),
            )  # fmt: skip
            why = _BID_REFUSALS.get(refusal) if refusal else None
            results.append(BidResult(after, bool(leading), bool(extended), why))
        return results

    async def end(
        self, room: str, aid: str, leader: str, grant: Grant | None, *, now_ms: int, hold_ms: int
    ) -> Auction | Literal["moved"] | None:
        if grant is not None:
            await index_orders(self._r, room, now_ms)
        args: list[Any] = [key(room, ""), room, aid, now_ms, hold_ms, leader]
        args += grant_args([grant] if grant is not None else [])
        done = await self._end(keys=[key(room, f"auc:{aid}"), key(room, "auction")], args=args)
        if done in (b"moved", "moved"):
            return "moved"
        return await self.get(room, aid) if done else None

    async def get(self, room: str, aid: str) -> Auction | None:
        return _auction(await self._r.hgetall(key(room, f"auc:{aid}")))

    async def current(self, room: str) -> Auction | None:
        aid = await self._r.get(key(room, "auction"))
        return None if aid is None else await self.get(room, _str(aid))

    async def bids(self, room: str, aid: str) -> list[Bid]:
        raw: list[Any] = await self._r.lrange(key(room, f"abids:{aid}"), 0, -1)
        return [_bid(loads(entry)) for entry in raw]


def _bid(d: dict[str, Any]) -> Bid:
    return Bid(
        seq=int(d["seq"]),
        user=str(d["user"]),
        name=str(d["name"]),
        amount=int(d["amount"]),
        max=int(d["max"]),
        at=int(d["at"]),
        price=int(d["price"]),
        leader=str(d["leader"]),
    )
