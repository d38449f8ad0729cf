"""The auction store's contract, on the memory and the Redis engine (issue 14)."""

from __future__ import annotations

import asyncio
import random
from dataclasses import replace

from livecommerce.backends import Backends
from livecommerce.inventory.rules import Grant
from livecommerce.promotions.auctions import AuctionBook, replay
from tests.test_auction_rules import NOW, lot


def _grant(user: str, price: int) -> Grant:
    return Grant("demo.0000000000000000a1b2", user, "auction:demo.a1", "demo.a1", "auction",
                 "mug-01", "Blue mug", price)  # fmt: skip


async def test_start_bid_end_and_the_winners_hold(backends: Backends) -> None:
    store = backends.auctions
    assert await store.start(lot())
    assert not await store.start(lot(auction_id="demo.a2"))  # one lot at a time
    assert (await store.current("demo")) == lot()
    low = await store.bid("demo", "demo.a1", user="ana", name="Ana", amount=999, ceiling=0,
                          now_ms=NOW)  # fmt: skip
    assert low.refused == "bid_too_low" and low.auction is not None
    assert low.auction.min_bid() == 1000
    got = await store.bid("demo", "demo.a1", user="ana", name="Ana", amount=1000, ceiling=5000,
                          now_ms=NOW)  # fmt: skip
    assert got.leading and got.auction is not None and got.auction.price == 1000
    bo = await store.bid("demo", "demo.a1", user="bo", name="Bo", amount=2000, ceiling=2000,
                         now_ms=NOW + 1)  # fmt: skip
    assert not bo.leading and bo.auction is not None
    assert (bo.auction.price, bo.auction.leader, bo.auction.leader_name) == (2100, "ana", "Ana")
    nope = await store.bid("demo", "demo.nope", user="bo", name="Bo", amount=5000, ceiling=0,
                           now_ms=NOW)  # fmt: skip
    assert nope.refused == "not_found"
    log = await store.bids("demo", "demo.a1")
    assert [(b.seq, b.user, b.amount, b.max, b.price, b.leader) for b in log] == [
        (1, "ana", 1000, 5000, 1000, "ana"),
        (2, "bo", 2000, 2000, 2100, "ana"),
    ]
    assert await store.end("demo", "demo.a1", "ana", _grant("ana", 2100),
                           now_ms=NOW + 59_999, hold_ms=1) is None  # fmt: skip
    moved = await store.end("demo", "demo.a1", "bo", _grant("bo", 2100),
                            now_ms=NOW + 60_000, hold_ms=600_000)  # fmt: skip
    assert moved == "moved"
    ended = await store.end("demo", "demo.a1", "ana", _grant("ana", 2100),
                            now_ms=NOW + 60_000, hold_ms=600_000)  # fmt: skip
    assert ended not in (None, "moved") and ended.status == "ended"  # type: ignore[union-attr]
    assert await store.end("demo", "demo.a1", "ana", None, now_ms=NOW + 70_000, hold_ms=1) is None
    order = await backends.inventory.order("demo.0000000000000000a1b2")
    assert order is not None
    assert (order.user, order.price, order.status, order.source) == ("ana", 2100, "held", "auction")
    late = await store.bid("demo", "demo.a1", user="cy", name="Cy", amount=9000, ceiling=0,
                           now_ms=NOW + 1)  # fmt: skip
    assert late.refused == "auction_closed"
    assert await store.current("demo") is None


async def test_banned_and_muted_cannot_bid(backends: Backends) -> None:
    store = backends.auctions
    await store.start(lot())
    await backends.moderation.set_banned("demo", "bad", True)
    await backends.moderation.mute("demo", "loud", NOW + 1000)
    for user, why in (("bad", "banned"), ("loud", "muted")):
        got = await store.bid("demo", "demo.a1", user=user, name=user, amount=1000, ceiling=0,
                              now_ms=NOW)  # fmt: skip
        assert got.refused == why
    assert await store.bids("demo", "demo.a1") == []


async def test_the_store_agrees_with_the_rules_bid_for_bid(backends: Backends) -> None:
    """300 random bids, plain and proxy, with time passing into the anti-sniping window:
    the store (Lua on Redis) and the pure rules say the same after every one."""
    rng = random.Random(14)
    model = AuctionBook()
    model.start(lot(duration_s=30, extend_s=5, max_extensions=20))
    await backends.auctions.start(lot(duration_s=30, extend_s=5, max_extensions=20))
    now = NOW
    for _ in range(300):
        now += rng.randrange(0, 300)
        user = rng.choice(["ana", "bo", "cy", "dee", "eve"])
        least = model.auctions["demo.a1"].min_bid()
        amount = least + rng.choice([-100, 0, 0, 50, 700]) if least > 100 else least
        ceiling = amount + rng.choice([0, 0, 300, 2500])
        want = model.bid("demo.a1", user=user, name=user, amount=amount, ceiling=ceiling, now=now)
        got = await backends.auctions.bid("demo", "demo.a1", user=user, name=user, amount=amount,
                                          ceiling=ceiling, now_ms=now)  # fmt: skip
        assert (got.refused, got.leading, got.extended) == (
            want.refused,
            want.leading,
            want.extended,
        )
        assert got.auction == replace(model.auctions["demo.a1"])
    log = await backends.auctions.bids("demo", "demo.a1")
    assert log == model.logs["demo.a1"]
    lot_now = model.auctions["demo.a1"]
    assert replay(lot_now, log) == (lot_now.price, lot_now.leader)


async def test_a_burst_of_bids_replays_to_the_same_price(backends: Backends) -> None:
    store = backends.auctions
    await store.start(lot(duration_s=300))
    rng = random.Random(7)

    async def bidder(i: int) -> None:
        for _ in range(10):
            current = await store.get("demo", "demo.a1")
            assert current is not None
            amount = current.min_bid() + rng.randrange(0, 3) * 100
            await store.bid("demo", "demo.a1", user=f"u{i}", name=f"U{i}", amount=amount,
                            ceiling=amount + rng.randrange(0, 4) * 500, now_ms=NOW + 1)  # fmt: skip

    await asyncio.gather(*(bidder(i) for i in range(50)))
    final = await store.get("demo", "demo.a1")
    log = await store.bids("demo", "demo.a1")
    assert final is not None and len(log) == final.bids > 0
    assert replay(final, log) == (final.price, final.leader)
