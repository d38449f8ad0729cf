"""The live-room promotions on Redis: coupons (``promotions.coupons`` has the rules).

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

from typing import Any

from livecommerce.backends.redis import Client, key, register
from livecommerce.promotions.coupons import Claimed, ClaimRefusal, Coupon, CouponEnd

DROP = """
-- KEYS: 1 the coupon (hash), 2 the room's active coupons (zset)
-- ARGV: 1 the coupon's id, 2 its drop time (ms), then field, value pairs
-- Returns 1 if kept, 0 if the id is taken.
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
return 1
"""

CLAIM = """
-- KEYS: 1 the coupon (hash), 2 its claims (hash user -> count), 3 the user's claimed
--       coupons (set of ids: the orders' "best" coupon is looked for there)
-- ARGV: 1 user, 2 now (ms), 3 seconds the user has watched
-- Returns {refusal or '', the user's claims, the coupon's fields and values}.
local c = redis.call('HMGET', KEYS[1], 'status', 'quantity', 'claimed', 'per_user', 'ends_at',
                     'watch_s')
if not c[1] then return {'not_found', 0, {}} end
local claimed, mine = tonumber(c[3]), tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
local ends_at, r = tonumber(c[5]), ''
if tonumber(ARGV[3]) < tonumber(c[6]) then r = 'not_eligible'
elseif c[1] ~= 'active' or (ends_at > 0 and tonumber(ARGV[2]) >= ends_at) then
  r = 'coupon_ended'
elseif mine >= tonumber(c[4]) then r = 'limit_exceeded'
elseif claimed >= tonumber(c[2]) then r = 'sold_out'
else
  mine = mine + 1
  redis.call('HSET', KEYS[1], 'claimed', claimed + 1)
  redis.call('HSET', KEYS[2], ARGV[1], mine)
  redis.call('SADD', KEYS[3], redis.call('HGET', KEYS[1], 'id'))
end
return {r, mine, redis.call('HGETALL', KEYS[1])}
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
        self._claim = register(r, CLAIM)
        self._end = register(r, END)

    async def drop(self, coupon: Coupon) -> bool:
        record = coupon.to_record()
        pairs = [v for kv in record.items() for v in kv]
        keys = [key(coupon.room, f"coupon:{coupon.id}"), key(coupon.room, "coupons")]
        return bool(await self._drop(keys=keys, args=[coupon.id, coupon.starts_at, *pairs]))

    async def claim(
        self, room: str, coupon_id: str, user: str, now_ms: int, watched_s: float = 0
    ) -> Claimed:
        keys = [
            key(room, f"coupon:{coupon_id}"),
            key(room, f"cclaims:{coupon_id}"),
            key(room, f"uclaims:{user}"),
        ]
        refusal, mine, flat = await self._claim(keys=keys, args=[user, now_ms, watched_s])
        coupon = _coupon(dict(zip(flat[::2], flat[1::2], strict=True)))
        return Claimed(coupon, int(mine), _REFUSALS.get(refusal) if refusal else None)

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
