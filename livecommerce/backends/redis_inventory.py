"""Flash sales on Redis: the rules of ``inventory.rules`` as Lua scripts.

Every key of a room shares the prefix ``lc:{room}:`` and so its hash tag; a script
declares one of them for routing and builds the rest from the prefix (they are in the
same Redis Cluster slot). Scripts are registered once; redis-py reloads them after a
NOSCRIPT (a ``SCRIPT FLUSH`` or a restarted Redis).

Keys, after the prefix: ``products`` (hash sku -> product JSON), ``sale:<id>`` (hash),
``sales`` (set of open sale ids), ``units:<sale>`` (hash user -> held and paid units),
``ordr:<order id>`` (hash), ``uord:<user>`` (zset of the user's order ids), ``holds``
(zset order id -> expiry ms), ``outbox`` (stream, one entry per hold). Outside any room:
``lc:sweep`` (zset room -> last sale start ms), the rooms the sweeper visits. The order
bridge's keys are in ``redis_outbox.py``; callbacks add ``evt:<event id>`` (string, for a
week) and ``late`` (hash order id -> ms of a payment that came after the hold expired).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from livecommerce.backends.redis import LOG_LUA, Client, _fresh_epoch, key, register
from livecommerce.inventory.rules import (
    BEST,
    Attempt,
    Grant,
    Order,
    Outcome,
    Product,
    Sale,
    Settled,
    SettleKind,
    room_of_order,
)
from livecommerce.protocol import dumps, loads

Arg = bytes | str | int
SWEEP_INDEX = "lc:sweep"
OUTBOX_INDEX = "lc:outboxes"
SWEEP_BATCH = 200
SWEEP_GRACE_MS = 60_000
EVENT_MEMORY_MS = 7 * 24 * 3600 * 1000
"""How long a callback's event id is remembered (longer than any sender retries)."""

_SALE_LUA = (
    LOG_LUA
    + """
local function num(x) return string.format('%.0f', x) end

-- End an open sale once, publishing sale.ended in the same step.
local function end_sale(p, room, sid, reason, now, maxlen, fresh)
  local sk = p .. 'sale:' .. sid
  if redis.call('HGET', sk, 'status') ~= 'active' then return false end
  redis.call('HSET', sk, 'status', 'ended', 'reason', reason)
  redis.call('SREM', p .. 'sales', sid)
  emit(p, '{"type":"sale.ended","room":"' .. room .. '","ts":' .. num(now) ..
          ',"sale_id":"' .. sid .. '","reason":"' .. reason .. '"}', maxlen, fresh)
  return true
end

-- Add n to a figure of the room (analytics.py names them), in all and for the sku.
local function add(p, figure, sku, n)
  if n == 0 then return end  -- and never -0, which HINCRBY refuses
  redis.call('HINCRBY', p .. 'stats', figure, n)
  redis.call('HINCRBY', p .. 'stats', figure .. ':' .. sku, n)
end

-- Count a payment (sign 1) or its refund (-1) in the room's figures.
local function count_sold(p, o, sign)
  local qty, price, sku = tonumber(o[2]), tonumber(o[3]), o[4]
  add(p, 'units_sold', sku, sign * qty)
  add(p, 'revenue', sku, sign * qty * price)
  add(p, 'paid_orders', sku, sign)
  add(p, 'paid_gmv', sku, sign * (qty * price - tonumber(o[6] or '0')))
end

-- Pay a hold (the caller checked it is held); end its sale once every unit is paid.
local function pay_hold(p, room, oid, now, maxlen, fresh)
  local ok = p .. 'ordr:' .. oid
  local o = redis.call('HMGET', ok, 'sale', 'qty', 'price', 'sku', 'source', 'discount')
  local qty = tonumber(o[2])
  count_sold(p, o, 1)
  redis.call('HSET', ok, 'status', 'paid')
  redis.call('ZREM', p .. 'holds', oid)
  if o[5] then return end  -- granted by a promotion: no sale's units
  local sk = p .. 'sale:' .. o[1]
  redis.call('HINCRBY', sk, 'held', -qty)
  local sold = redis.call('HINCRBY', sk, 'sold', qty)
  if sold == tonumber(redis.call('HGET', sk, 'stock')) then
    end_sale(p, room, o[1], 'sold_out', now, maxlen, fresh)
  end
end

-- End a hold as expired or cancelled: its units go back, once, and the coupon it
-- spent is the buyer's again.
local function release(p, oid, status)
  local ok = p .. 'ordr:' .. oid
  if redis.call('HGET', ok, 'status') ~= 'held' then return false end
  local o = redis.call('HMGET', ok, 'sale', 'qty', 'user', 'coupon', 'source', 'price', 'sku',
                       'discount')
  local qty = tonumber(o[2])
  redis.call('HSET', ok, 'status', status)
  redis.call('ZREM', p .. 'holds', oid)
  add(p, 'gmv', o[7], -(qty * tonumber(o[6]) - tonumber(o[8] or '0')))
  if o[4] then add(p, 'coupons_spent', o[7], -1) end
  if o[5] then return true end
  local sk = p .. 'sale:' .. o[1]
  redis.call('HINCRBY', sk, 'held', -qty)
  redis.call('HINCRBY', sk, 'remaining', qty)
  redis.call('HINCRBY', p .. 'units:' .. o[1], o[3], -qty)
  if o[4] then redis.call('HINCRBY', p .. 'cspent:' .. o[4], o[3], -1) end
  return true
end

-- Hold an order a promotion gives (g: order id, user, key, src, source, sku, title,
-- price), written as RESERVE writes a sale's, and sent to the shop through the outbox.
-- Its hash has a 'source' field (a sale's has none). False if the order exists.
local function grant(p, room, g, now, hold)
  local ok = p .. 'ordr:' .. g[1]
  if redis.call('EXISTS', ok) == 1 then return false end
  local expires = now + hold
  redis.call('HSET', ok, 'id', g[1], 'room', room, 'sale', g[4], 'sku', g[6], 'title', g[7],
             'user', g[2], 'qty', 1, 'price', g[8], 'key', g[3], 'status', 'held',
             'created_at', num(now), 'expires_at', num(expires), 'discount', 0,
             'source', g[5])
  redis.call('ZADD', p .. 'uord:' .. g[2], now, g[1])
  redis.call('ZADD', p .. 'holds', expires, g[1])
  add(p, 'orders', g[6], 1)
  add(p, 'gmv', g[6], tonumber(g[8]))
  redis.call('XADD', p .. 'outbox', '*', 'id', g[1], 'room', room, 'sale', g[4], 'sku', g[6],
             'title', g[7], 'qty', 1, 'price', g[8], 'user', g[2], 'created_at', num(now),
             'expires_at', num(expires), 'coupon', '', 'discount', 0, 'source', g[5])
  return true
end
"""
)

START_SALE = (
    """
-- KEYS: 1 the sale's hash (routing)
-- ARGV: 1 prefix, 2 fresh epoch, 3 history size, 4 sale.started body, 5 sale id,
--       6.. the sale's fields and values
"""
    + _SALE_LUA
    + """
local p = ARGV[1]
redis.call('HSET', KEYS[1], unpack(ARGV, 6))
redis.call('SADD', p .. 'sales', ARGV[5])
emit(p, ARGV[4], ARGV[3], ARGV[2])
return 1
"""
)

STOP_SALE = (
    """
-- KEYS: 1 the sale's hash (routing)
-- ARGV: 1 prefix, 2 fresh epoch, 3 history size, 4 room, 5 sale id, 6 now ms
-- Returns 1 if this call ended the sale.
"""
    + _SALE_LUA
    + """
if end_sale(ARGV[1], ARGV[4], ARGV[5], 'stopped', tonumber(ARGV[6]), ARGV[3], ARGV[2]) then
  return 1
end
return 0
"""
)

RESERVE = (
    """
-- KEYS: 1 the sale's hash
-- ARGV: 1 prefix, 2 room, 3 sale id, 4 now ms, 5 hold ms,
--       then per attempt: order id, user, key, qty, coupon id ('' for none)
-- Serves the attempts in order. Returns, per attempt, an error code, or
-- {created 0|1, status, created_at, expires_at, price, discount} for the order its
-- key names. A coupon is checked after the stock (claimed and unspent by the buyer,
-- for the sale's product, the order at its minimum) and one claim of it is spent with
-- the hold ('coupon_not_applicable:<rule>' otherwise). Work is bounded by the number
-- of attempts (the caller sends at most a few hundred).
"""
    + _SALE_LUA
    + """
-- What a coupon takes off an order of sku worth total, or false and the rule missed.
local function coupon_off(p, cid, user, sku, total)
  local c = redis.call('HMGET', p .. 'coupon:' .. cid, 'kind', 'value', 'min_total', 'skus')
  local claimed = tonumber(redis.call('HGET', p .. 'cclaims:' .. cid, user) or '0')
  local spent = tonumber(redis.call('HGET', p .. 'cspent:' .. cid, user) or '0')
  if not c[1] or claimed - spent < 1 then return false, 'unclaimed' end
  if c[4] ~= '' and not string.find('\\n' .. c[4] .. '\\n', '\\n' .. sku .. '\\n', 1, true) then
    return false, 'sku'
  end
  if total < tonumber(c[3]) then return false, 'min_total' end
  local off = tonumber(c[2])
  if c[1] == 'percent' then off = math.floor(total * off / 100) end
  return math.min(off, total)
end

local p, room, sid = ARGV[1], ARGV[2], ARGV[3]
local now, hold = tonumber(ARGV[4]), tonumber(ARGV[5])
local s = redis.call('HMGET', KEYS[1], 'status', 'ends_at', 'remaining', 'limit_per_user',
                     'price', 'sku', 'title', 'price_b')
local out = {}
for i = 6, #ARGV, 5 do
  local oid, user, k, qty = ARGV[i], ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 3])
  local cid = ARGV[i + 4]
  -- the user's price: in an A/B test, arm b's when SHA-1("<sale>:<user>") starts odd
  local price, arm = tonumber(s[5]), 'a'
  if s[8] and s[8] ~= '' then
    if tonumber(string.sub(redis.sha1hex(sid .. ':' .. user), 1, 1), 16) % 2 == 1 then
      price, arm = tonumber(s[8]), 'b'
    end
  end
  local ok = p .. 'ordr:' .. oid
  local e = redis.call('HMGET', ok, 'sale', 'qty', 'status', 'created_at', 'expires_at', 'price',
                       'discount', 'coupon')
  local r, off, rule = nil, 0, nil
  if not s[1] then r = 'not_found'
  elseif e[1] then
    if e[1] ~= sid or tonumber(e[2]) ~= qty then r = 'key_reused'
    else
      r = {0, e[3], tonumber(e[4]), tonumber(e[5]), tonumber(e[6]), tonumber(e[7] or '0'),
           e[8] or ''}
    end
  elseif s[1] ~= 'active' or now >= tonumber(s[2]) then r = 'sale_not_active'
  else
    local units = tonumber(redis.call('HGET', p .. 'units:' .. sid, user) or '0')
    local remaining = tonumber(s[3])
    if units + qty > tonumber(s[4]) then r = 'limit_exceeded'
    elseif remaining < qty then r = 'sold_out'
    elseif cid == '*' then  -- "best": the buyer's claimed coupon that takes the most off
      local best, most = '', 0
      for _, id in ipairs(redis.call('SMEMBERS', p .. 'uclaims:' .. user)) do
        local o = coupon_off(p, id, user, s[6], qty * price)
        if o and (best == '' or o > most) then best, most = id, o end
      end
      cid, off = best, most
    elseif cid ~= '' then
      off, rule = coupon_off(p, cid, user, s[6], qty * price)
      if not off then r = 'coupon_not_applicable:' .. rule end
    end
    if not r then
      s[3] = remaining - qty
      local expires = now + hold
      redis.call('HINCRBY', KEYS[1], 'remaining', -qty)
      redis.call('HINCRBY', KEYS[1], 'held', qty)
      redis.call('HINCRBY', p .. 'units:' .. sid, user, qty)
      redis.call('HSET', ok, 'id', oid, 'room', room, 'sale', sid, 'sku', s[6], 'title', s[7],
                 'user', user, 'qty', qty, 'price', price, 'key', k, 'status', 'held',
                 'created_at', num(now), 'expires_at', num(expires), 'discount', off)
      if cid ~= '' then
        redis.call('HSET', ok, 'coupon', cid)
        redis.call('HINCRBY', p .. 'cspent:' .. cid, user, 1)
      end
      redis.call('ZADD', p .. 'uord:' .. user, now, oid)
      redis.call('ZADD', p .. 'holds', expires, oid)
      add(p, 'orders', s[6], 1)
      add(p, 'gmv', s[6], qty * price - off)
      if s[8] and s[8] ~= '' then  -- the test's arms: orders, and who ordered
        redis.call('HINCRBY', p .. 'stats', 'ab_orders:' .. sid .. ':' .. arm, 1)
        redis.call('PFADD', p .. 'abo:' .. sid .. ':' .. arm, user)
      end
      if cid ~= '' then add(p, 'coupons_spent', s[6], 1) end
      redis.call('XADD', p .. 'outbox', '*', 'id', oid, 'room', room, 'sale', sid,
                 'sku', s[6], 'title', s[7], 'qty', qty, 'price', price, 'user', user,
                 'created_at', num(now), 'expires_at', num(expires), 'coupon', cid,
                 'discount', off)
      r = {1, 'held', now, expires, price, off, cid}
    end
  end
  out[#out + 1] = r
end
return out
"""
)

PAY = (
    """
-- KEYS: 1 the order's hash
-- ARGV: 1 prefix, 2 fresh epoch, 3 history size, 4 room, 5 order id, 6 now ms
-- Returns {status after the call, 1 if this call paid it}, or false for no such order.
"""
    + _SALE_LUA
    + """
local p, oid = ARGV[1], ARGV[5]
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return false end
if status ~= 'held' then return {status, 0} end
pay_hold(p, ARGV[4], oid, tonumber(ARGV[6]), ARGV[3], ARGV[2])
return {'paid', 1}
"""
)

SETTLE = (
    """
-- KEYS: 1 the order's hash
-- ARGV: 1 prefix, 2 fresh epoch, 3 history size, 4 room, 5 order id, 6 now ms,
--       7 kind (paid, cancelled, refunded), 8 event id ('' for none), 9 event memory ms
-- Ledger.settle in one step, with the event id remembered in the same step.
-- Returns false for no such order, else {status after, 1 if changed, 1 if a late
-- payment, 1 if the event id was seen before}.
"""
    + _SALE_LUA
    + """
local p, room, oid, now, kind = ARGV[1], ARGV[4], ARGV[5], tonumber(ARGV[6]), ARGV[7]
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return false end
if ARGV[8] ~= '' and not redis.call('SET', p .. 'evt:' .. ARGV[8], oid, 'NX', 'PX', ARGV[9]) then
  return {status, 0, 0, 1}
end
if status == 'held' then
  if kind == 'paid' then
    pay_hold(p, room, oid, now, ARGV[3], ARGV[2])
    return {'paid', 1, 0, 0}
  end
  release(p, oid, 'cancelled')
  return {'cancelled', 1, 0, 0}
end
if status == 'paid' and kind ~= 'paid' then
  local o = redis.call('HMGET', KEYS[1], 'sale', 'qty', 'price', 'sku', 'user', 'discount',
                       'source')
  local qty = tonumber(o[2])
  redis.call('HSET', KEYS[1], 'status', 'refunded')
  count_sold(p, o, -1)
  local sk = p .. 'sale:' .. o[1]
  if not o[7] and redis.call('HGET', sk, 'status') == 'active' then
    redis.call('HINCRBY', sk, 'sold', -qty)
    redis.call('HINCRBY', sk, 'remaining', qty)
    redis.call('HINCRBY', p .. 'units:' .. o[1], o[5], -qty)
  end
  return {'refunded', 1, 0, 0}
end
if kind == 'paid' and status == 'expired' then
  redis.call('HSET', p .. 'late', oid, now)
  return {status, 0, 1, 0}
end
return {status, 0, 0, 0}
"""
)

SET_PAYMENT_URL = """
-- KEYS: 1 the order's hash
-- ARGV: 1 the URL
-- Returns 1 if the order exists (and now has the URL).
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'payment_url', ARGV[1])
return 1
"""

CANCEL = (
    """
-- KEYS: 1 the order's hash
-- ARGV: 1 prefix, 2 order id
-- Returns 1 if this call released the hold.
"""
    + _SALE_LUA
    + """
if release(ARGV[1], ARGV[2], 'cancelled') then return 1 end
return 0
"""
)

SWEEP = (
    """
-- KEYS: 1 the room's holds (routing)
-- ARGV: 1 prefix, 2 fresh epoch, 3 history size, 4 room, 5 now ms, 6 batch
-- Releases up to ARGV[6] holds past their expiry and ends the open sales past their
-- end time. Returns {released order ids, 1 if nothing is left to sweep}.
"""
    + _SALE_LUA
    + """
local p, room, now = ARGV[1], ARGV[4], tonumber(ARGV[5])
local released = {}
for _, oid in ipairs(redis.call('ZRANGEBYSCORE', p .. 'holds', '-inf', now,
                                'LIMIT', 0, tonumber(ARGV[6]))) do
  if release(p, oid, 'expired') then
    released[#released + 1] = oid
  else
    redis.call('ZREM', p .. 'holds', oid)
  end
end
for _, sid in ipairs(redis.call('SMEMBERS', p .. 'sales')) do
  if tonumber(redis.call('HGET', p .. 'sale:' .. sid, 'ends_at')) <= now then
    end_sale(p, room, sid, 'expired', now, ARGV[3], ARGV[2])
  end
end
local idle = 0
if redis.call('ZCARD', p .. 'holds') == 0 and redis.call('SCARD', p .. 'sales') == 0 then
  idle = 1
end
return {released, idle}
"""
)

FORGET_ROOM = """
-- KEYS: 1 lc:sweep
-- ARGV: 1 room, 2 the score read before its sweep, 3 oldest score that may be dropped
-- Drops an idle room from the sweep index unless a sale started there since.
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and score == ARGV[2] and tonumber(score) <= tonumber(ARGV[3]) then
  redis.call('ZREM', KEYS[1], ARGV[1])
  return 1
end
return 0
"""

STOCK = """
-- KEYS: 1 the room's open sales (set)
-- ARGV: 1 prefix
-- Returns {sale id, remaining, ...} for every open sale.
local out = {}
for _, sid in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  out[#out + 1] = sid
  out[#out + 1] = redis.call('HGET', ARGV[1] .. 'sale:' .. sid, 'remaining')
end
return out
"""

ORDERS_OF = """
-- KEYS: 1 the room's open sales (set; for routing only)
-- ARGV: 1 prefix, 2.. users
-- Returns, per user in the order given, that user's orders: each a flat list of
-- field, value pairs (as HGETALL); an empty list for a user with none.
local out = {}
for i = 2, #ARGV do
  local orders = {}
  for _, oid in ipairs(redis.call('ZRANGE', ARGV[1] .. 'uord:' .. ARGV[i], 0, -1)) do
    local fields = redis.call('HGETALL', ARGV[1] .. 'ordr:' .. oid)
    if #fields > 0 then
      orders[#orders + 1] = fields
    end
  end
  out[#out + 1] = orders
end
return out
"""

_SALE_INTS = (
    "price",
    "stock",
    "limit_per_user",
    "starts_at",
    "ends_at",
    "remaining",
    "held",
    "sold",
)
_ORDER_INTS = ("qty", "price", "created_at", "expires_at")


def _text(raw: dict[Any, Any]) -> dict[str, str]:
    return {
        (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
        for k, v in raw.items()
    }


def _sale(raw: dict[Any, Any]) -> Sale | None:
    if not raw:
        return None
    f: dict[str, Any] = _text(raw)
    for name in _SALE_INTS:
        f[name] = int(f[name])
    f["reason"] = f.get("reason") or None
    f["price_b"] = int(f["price_b"]) if f.get("price_b") else None
    return Sale(**f)


def _order(raw: dict[Any, Any]) -> Order | None:
    if not raw:
        return None
    f: dict[str, Any] = _text(raw)
    for name in _ORDER_INTS:
        f[name] = int(f[name])
    f["discount"] = int(f.get("discount") or 0)
    f["coupon"] = f.get("coupon") or None
    f["source"] = f.get("source") or "sale"
    return Order(**f)


def grant_args(grants: list[Grant]) -> list[Arg]:
    """The ARGV of the Lua ``grant`` function, 8 per grant, for a script to walk."""
    out: list[Arg] = []
    for g in grants:
        out += [g.order_id, g.user, g.key, g.src, g.source, g.sku, g.title, g.price]
    return out


async def index_orders(r: Client, room: str, now_ms: int) -> None:
    """Before a script may hold orders in ``room``: the sweeper and the bridge look
    there (as ``start_sale`` does for a sale's)."""
    await r.zadd(SWEEP_INDEX, {room: now_ms}, gt=True)
    await r.sadd(OUTBOX_INDEX, room)


class RedisInventoryStore:
    def __init__(self, r: Client, *, history_size: int) -> None:
        self._r = r
        self._history = history_size
        self._start = register(r, START_SALE)
        self._stop = register(r, STOP_SALE)
        self._reserve = register(r, RESERVE)
        self._pay = register(r, PAY)
        self._cancel = register(r, CANCEL)
        self._settle = register(r, SETTLE)
        self._set_payment_url = register(r, SET_PAYMENT_URL)
        self._sweep = register(r, SWEEP)
        self._forget = register(r, FORGET_ROOM)
        self._stock = register(r, STOCK)
        self._orders_of = register(r, ORDERS_OF)

    async def put_product(self, room: str, product: Product) -> None:
        await self._r.hset(key(room, "products"), product.sku, dumps(product.to_dict()))

    async def products(self, room: str) -> list[Product]:
        raw = await self._r.hgetall(key(room, "products"))
        return sorted((Product(**loads(v)) for v in raw.values()), key=lambda p: p.sku)

    async def start_sale(self, sale: Sale, event: bytes) -> None:
        await self._r.zadd(SWEEP_INDEX, {sale.room: sale.starts_at})
        await self._r.sadd(OUTBOX_INDEX, sale.room)  # before any hold of the sale exists
        fields = [str(v) for kv in _sale_fields(sale) for v in kv]
        args: list[Arg] = [key(sale.room, ""), _fresh_epoch(), self._history, event, sale.id]
        args += fields
        await self._start(keys=[key(sale.room, f"sale:{sale.id}")], args=args)

    async def stop_sale(self, room: str, sale_id: str, now_ms: int) -> bool:
        args: list[Arg] = [key(room, ""), _fresh_epoch(), self._history, room, sale_id, now_ms]
        return bool(await self._stop(keys=[key(room, f"sale:{sale_id}")], args=args))

    async def sale(self, room: str, sale_id: str) -> Sale | None:
        return _sale(await self._r.hgetall(key(room, f"sale:{sale_id}")))

    async def active_sales(self, room: str) -> list[Sale]:
        ids = await self._r.smembers(key(room, "sales"))
        async with self._r.pipeline(transaction=False) as pipe:
            for sid in sorted(ids):
                pipe.hgetall(key(room, f"sale:{_str(sid)}"))
            raws = await pipe.execute()
        return [s for raw in raws if (s := _sale(raw)) is not None and s.status == "active"]

    async def stock(self, room: str) -> dict[str, int]:
        flat = await self._stock(keys=[key(room, "sales")], args=[key(room, "")])
        return {_str(flat[i]): int(flat[i + 1]) for i in range(0, len(flat), 2)}

    async def reserve(
        self, room: str, sale_id: str, attempts: list[Attempt], *, now_ms: int, hold_ms: int
    ) -> list[Outcome]:
        args: list[Arg] = [key(room, ""), room, sale_id, now_ms, hold_ms]
        for a in attempts:
            args += [a.order_id, a.user, a.key, a.qty, "*" if a.coupon == BEST else a.coupon or ""]
        results = await self._reserve(keys=[key(room, f"sale:{sale_id}")], args=args)
        sale: Sale | None = None
        outcomes = []
        for a, r in zip(attempts, results, strict=True):
            if isinstance(r, bytes | str):
                outcomes.append(Outcome(error=_str(r)))
                continue
            if sale is None:
                sale = await self.sale(room, sale_id)
                assert sale is not None  # it exists: the script just served from it
            created, status, created_at, expires_at, price, discount, coupon = r
            order = Order(
                id=a.order_id,
                room=room,
                sale=sale_id,
                sku=sale.sku,
                title=sale.title,
                user=a.user,
                qty=a.qty,
                price=int(price),
                key=a.key,
                status=_str(status),  # type: ignore[arg-type]
                created_at=int(created_at),
                expires_at=int(expires_at),
                coupon=_str(coupon) or None,
                discount=int(discount),
            )
            outcomes.append(Outcome(order=order, created=bool(created)))
        return outcomes

    async def pay(self, order_id: str, now_ms: int) -> tuple[Order | None, bool]:
        room = room_of_order(order_id)
        args: list[Arg] = [key(room, ""), _fresh_epoch(), self._history, room, order_id, now_ms]
        result = await self._pay(keys=[key(room, f"ordr:{order_id}")], args=args)
        if result is None:
            return None, False
        return await self.order(order_id), bool(result[1])

    async def settle(
        self, order_id: str, kind: SettleKind, *, event_id: str | None, now_ms: int
    ) -> Settled:
        room = room_of_order(order_id)
        args: list[Arg] = [key(room, ""), _fresh_epoch(), self._history, room, order_id, now_ms]
        args += [kind, event_id or "", EVENT_MEMORY_MS]
        result = await self._settle(keys=[key(room, f"ordr:{order_id}")], args=args)
        if not result:
            return Settled(None, applied=False)
        _, applied, late, duplicate = result
        return Settled(
            await self.order(order_id),
            applied=bool(applied),
            late=bool(late),
            duplicate=bool(duplicate),
        )

    async def set_payment_url(self, order_id: str, url: str) -> Order | None:
        room = room_of_order(order_id)
        if not await self._set_payment_url(keys=[key(room, f"ordr:{order_id}")], args=[url]):
            return None
        return await self.order(order_id)

    async def late_payments(self, room: str) -> dict[str, int]:
        raw = await self._r.hgetall(key(room, "late"))
        return {_str(k): int(v) for k, v in raw.items()}

    async def orders(self, room: str) -> list[Order]:
        found = []
        async for k in self._r.scan_iter(match=key(room, "ordr:*"), count=1000):
            if (order := _order(await self._r.hgetall(k))) is not None:
                found.append(order)
        return sorted(found, key=lambda o: (o.created_at, o.id))

    async def cancel(self, order_id: str) -> Order | None:
        room = room_of_order(order_id)
        args = [key(room, ""), order_id]
        if not await self._cancel(keys=[key(room, f"ordr:{order_id}")], args=args):
            return None
        return await self.order(order_id)

    async def sweep(self, room: str, now_ms: int) -> list[Order]:
        score = await self._r.zscore(SWEEP_INDEX, room)
        args: list[Arg] = [key(room, ""), _fresh_epoch(), self._history, room, now_ms, SWEEP_BATCH]
        released, idle = await self._sweep(keys=[key(room, "holds")], args=args)
        if idle and score is not None:
            await self._forget(
                keys=[SWEEP_INDEX], args=[room, _score(score), now_ms - SWEEP_GRACE_MS]
            )
        orders = [await self.order(_str(oid)) for oid in released]
        return [o for o in orders if o is not None]

    async def order(self, order_id: str) -> Order | None:
        room = room_of_order(order_id)
        return _order(await self._r.hgetall(key(room, f"ordr:{order_id}")))

    async def orders_of(self, room: str, users: Collection[str]) -> dict[str, list[Order]]:
        # one script whatever the crowd (a command per user cost the server more than
        # the rest of a joiner's reads)
        users = list(users)
        if not users:
            return {}
        args = [key(room, ""), *users]
        per_user = await self._orders_of(keys=[key(room, "sales")], args=args)
        result: dict[str, list[Order]] = {}
        for user, flats in zip(users, per_user, strict=True):
            orders = [o for flat in flats if (o := _order(_pairs(flat))) is not None]
            if orders:
                result[user] = orders
        return result

    async def forget_orders(self, room: str, before_ms: int) -> int:
        gone = 0
        async for k in self._r.scan_iter(match=key(room, "ordr:*"), count=1000):
            order = _order(await self._r.hgetall(k))
            if order is None or order.status == "held" or order.created_at >= before_ms:
                continue
            async with self._r.pipeline(transaction=False) as pipe:
                pipe.delete(k)
                pipe.zrem(key(room, f"uord:{order.user}"), order.id)
                await pipe.execute()
            gone += 1
        return gone

    async def rooms_to_sweep(self) -> list[str]:
        return [_str(r) for r in await self._r.zrange(SWEEP_INDEX, 0, -1)]

    async def outbox(self, room: str) -> list[dict[str, str]]:
        entries = await self._r.xrange(key(room, "outbox"))
        return [_text(fields or {}) for _, fields in entries or []]


def _sale_fields(sale: Sale) -> list[tuple[str, Any]]:
    fields = [(k, v) for k, v in Sale.__dataclass_fields__.items()]
    return [
        (name, getattr(sale, name) if getattr(sale, name) is not None else "") for name, _ in fields
    ]


def _pairs(flat: list[Any]) -> dict[Any, Any]:
    """A flat ``[field, value, ...]`` list (HGETALL inside a script) as a dict."""
    return dict(zip(flat[::2], flat[1::2], strict=True))


def _str(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _score(score: float) -> str:
    """A zset score as Redis prints it (integers without a decimal point)."""
    return str(int(score)) if score == int(score) else repr(score)
