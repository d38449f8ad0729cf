"""The coupon store's contract, on the memory and the Redis engine (issue 14)."""

from __future__ import annotations

import asyncio
import multiprocessing
import random
from collections import Counter
from dataclasses import replace

import redis

from livecommerce.backends import Backends, make_backends
from livecommerce.config import Settings
from livecommerce.promotions.coupons import Coupon
from tests.test_coupon_rules import NOW, drop


async def test_drop_list_claim_and_end(backends: Backends) -> None:
    store = backends.coupons
    coupon = drop(quantity=3, per_user=2, skus=["mug-01"], minutes=10)
    assert await store.drop(coupon)
    assert not await store.drop(replace(coupon, quantity=99))  # the id is taken
    assert await store.live("demo") == [coupon]
    assert await store.live("other") == []
    first = await store.claim("demo", "c1", "u1", NOW)
    assert first.refused is None and first.mine == 1
    assert first.coupon is not None and first.coupon.claimed == 1
    assert (await store.claim("demo", "c1", "u1", NOW)).mine == 2
    assert (await store.claim("demo", "c1", "u1", NOW)).refused == "limit_exceeded"
    assert (await store.claim("demo", "c1", "u2", NOW)).mine == 1
    sold = await store.claim("demo", "c1", "u3", NOW)
    assert sold.refused == "sold_out" and sold.mine == 0
    assert (await store.claim("demo", "nope", "u3", NOW)).refused == "not_found"
    assert await store.claims_of("demo", "u1") == {"c1": 2}
    assert await store.claims_of("demo", "u9") == {}
    ended = await store.end("demo", "c1", "claimed")
    assert ended is not None and (ended.status, ended.reason, ended.claimed) == (
        "ended",
        "claimed",
        3,
    )
    assert await store.end("demo", "c1", "stopped") is None  # once
    assert await store.live("demo") == []
    assert (await store.coupon("demo", "c1")) == ended
    assert (await store.claim("demo", "c1", "u4", NOW)).refused == "coupon_ended"


async def test_the_watch_time_gate_is_checked_in_the_same_step(backends: Backends) -> None:
    await backends.coupons.drop(drop(watch_minutes=2))
    early = await backends.coupons.claim("demo", "c1", "u1", NOW, watched_s=119.5)
    assert early.refused == "not_eligible" and early.coupon is not None
    assert early.coupon.claimed == 0
    ok = await backends.coupons.claim("demo", "c1", "u1", NOW, watched_s=120)
    assert ok.refused is None and ok.mine == 1


async def test_a_claim_after_the_window_is_refused(backends: Backends) -> None:
    await backends.coupons.drop(drop(minutes=1))
    assert (await backends.coupons.claim("demo", "c1", "u1", NOW + 59_999)).refused is None
    late = await backends.coupons.claim("demo", "c1", "u2", NOW + 60_000)
    assert late.refused == "coupon_ended"


async def test_a_burst_of_claims_grants_exactly_the_quantity(backends: Backends) -> None:
    """1,000 concurrent claims from 300 users on a coupon of 100, 2 per user."""
    store = backends.coupons
    await store.drop(drop(quantity=100, per_user=2))
    users = [f"u{random.randrange(300)}" for _ in range(1000)]
    got = await asyncio.gather(*(store.claim("demo", "c1", u, NOW) for u in users))
    granted = Counter(u for u, g in zip(users, got, strict=True) if g.refused is None)
    assert sum(granted.values()) == 100
    assert max(granted.values()) <= 2
    coupon = await store.coupon("demo", "c1")
    assert coupon is not None and coupon.claimed == 100 and coupon.remaining == 0
    for user, n in granted.items():
        assert (await store.claims_of("demo", user)).get("c1") == n


def _hammer(
    redis_url: str, offset: int, claims: int, out: multiprocessing.Queue[list[str]]
) -> None:
    """A process of its own: ``claims`` concurrent claims by users of 2,000."""
    from livecommerce.backends import make_backends

    async def run() -> list[str]:
        settings = Settings(secret="s" * 32, sandbox_shop=True, redis_url=redis_url)
        async with make_backends(settings) as b:
            rng = random.Random(offset)
            users = [f"u{rng.randrange(2000)}" for _ in range(claims)]
            got = await asyncio.gather(*(b.coupons.claim("demo", "c1", u, NOW) for u in users))
            return [u for u, g in zip(users, got, strict=True) if g.refused is None]

    out.put(asyncio.run(run()))


async def test_5000_claims_over_two_processes_grant_exactly_100(redis_url: str) -> None:
    """The litemall bug (a coupon of 1 claimed 9 times by 64 requests), at scale: 5,000
    concurrent claims from 2,000 users in two processes on one Redis, one per user."""
    settings = Settings(secret="s" * 32, sandbox_shop=True, redis_url=redis_url)
    async with make_backends(settings) as backends:
        await backends.coupons.drop(drop(quantity=100))
        ctx = multiprocessing.get_context("spawn")
        out: multiprocessing.Queue[list[str]] = ctx.Queue()
        procs = [ctx.Process(target=_hammer, args=(redis_url, i, 2500, out)) for i in range(2)]
        for p in procs:
            p.start()
        winners = [u for _ in procs for u in await asyncio.to_thread(out.get, True, 120)]
        for p in procs:
            await asyncio.to_thread(p.join, 30)
            assert p.exitcode == 0
        assert len(winners) == 100
        assert len(set(winners)) == 100  # none twice
        coupon = await backends.coupons.coupon("demo", "c1")
        assert coupon is not None and coupon.claimed == 100
    with redis.Redis.from_url(redis_url) as r:
        claims = r.hgetall("lc:{demo}:cclaims:c1")
    assert sorted(k.decode() for k in claims) == sorted(winners)
    assert set(claims.values()) == {b"1"}


def test_coupon_records_round_trip() -> None:
    c: Coupon = drop(kind="percent", value=15, skus=["a", "b"], until=NOW + 3_600_000)
    assert Coupon.from_record(c.to_record()) == c
