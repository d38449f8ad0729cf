"""The giveaway store's contract, on the memory and the Redis engine (issue 14)."""

from __future__ import annotations

import asyncio

from livecommerce.backends import Backends
from livecommerce.inventory.rules import Grant
from livecommerce.promotions import draws
from tests.test_giveaway_rules import NOW, SEED, start

NODE = "n1"


async def _live_node(backends: Backends, node: str = NODE, at: int = NOW) -> None:
    """The node's presence report (Redis counts entrants only on live processes)."""
    await backends.counters.report_presence("demo", node, 1, at)


def _grants(proof: draws.Proof, sku: str = "mug-01") -> list[Grant]:
    return [
        Grant(f"demo.{i:020d}", w, f"giveaway:{proof.giveaway}", proof.giveaway, "giveaway",
              sku, "Blue mug", 0)
        for i, w in enumerate(proof.winners)
    ]  # fmt: skip


async def test_start_enter_freeze_finish(backends: Backends) -> None:
    store = backends.giveaways
    await _live_node(backends)
    g = start(count=2, prize=None, product=("mug-01", "Blue mug"))
    assert await store.start(g, SEED)
    assert not await store.start(start(giveaway_id="demo.g2"), SEED)  # one at a time
    assert await store.current("demo") == g
    assert await store.current("other") is None
    first = await store.enter("demo", "demo.g1", "ana", NOW, NODE)
    assert first.added and first.refused is None and first.giveaway is not None
    assert first.giveaway.entries == 1
    again = await store.enter("demo", "demo.g1", "ana", NOW, NODE)
    assert not again.added and again.refused is None
    for user in ("bo", "cy", "dee"):
        assert (await store.enter("demo", "demo.g1", user, NOW, NODE)).added
    assert (await store.enter("demo", "demo.nope", "bo", NOW, NODE)).refused == "not_found"
    late = await store.enter("demo", "demo.g1", "eve", NOW + 60_000, NODE)
    assert late.refused == "giveaway_closed"
    assert await store.entered("demo", "demo.g1", "ana")
    assert not await store.entered("demo", "demo.g1", "eve")
    assert not await store.seen("demo", "dee", NODE, here=False)  # dee left
    await _live_node(backends, at=NOW + 60_000)
    frozen = await store.freeze("demo", "demo.g1", NOW + 60_000)
    assert frozen is not None and frozen.entrants == ["ana", "bo", "cy"] and frozen.seed == SEED
    assert frozen.giveaway.status == "drawing"
    assert (await store.enter("demo", "demo.g1", "eve", NOW, NODE)).refused == "giveaway_closed"
    assert await store.freeze("demo", "demo.g1", NOW + 70_000) == frozen  # the same again
    proof = draws.make_proof(
        giveaway="demo.g1", room="demo", seed=SEED, entrants=frozen.entrants, count=2
    )
    grants = _grants(proof)
    drawn = await store.finish("demo", proof, grants, now_ms=NOW + 60_000, hold_ms=600_000)
    assert drawn is not None and drawn.status == "drawn"
    assert list(drawn.winners) == proof.winners and drawn.entrants_digest == proof.entrants_digest
    assert await store.finish("demo", proof, grants, now_ms=NOW, hold_ms=1) is None  # once
    assert await store.freeze("demo", "demo.g1", NOW) is None
    assert await store.proof("demo", "demo.g1") == proof
    assert await store.current("demo") is None
    for grant in grants:  # the prizes: zero-price held orders, sent to the shop
        order = await backends.inventory.order(grant.order_id)
        assert order is not None
        assert (order.user, order.price, order.status, order.source, order.sale) == (
            grant.user, 0, "held", "giveaway", "demo.g1",
        )  # fmt: skip
    outbox = await backends.inventory.outbox("demo")
    assert sorted(e["user"] for e in outbox) == sorted(proof.winners)
    assert {e["source"] for e in outbox} == {"giveaway"}
    assert await store.start(start(giveaway_id="demo.g2"), SEED)  # the next may start


async def test_a_prize_hold_expires_and_can_be_paid(backends: Backends) -> None:
    store = backends.giveaways
    await _live_node(backends)
    await store.start(start(count=2), SEED)
    for user in ("ana", "bo"):
        await store.enter("demo", "demo.g1", user, NOW, NODE)
    frozen = await store.freeze("demo", "demo.g1", NOW)
    assert frozen is not None
    proof = draws.make_proof(
        giveaway="demo.g1", room="demo", seed=SEED, entrants=frozen.entrants, count=2
    )
    paid, lapsed = _grants(proof)
    await store.finish("demo", proof, [paid, lapsed], now_ms=NOW, hold_ms=1000)
    order, changed = await backends.inventory.pay(paid.order_id, NOW + 10)
    assert changed and order is not None and order.status == "paid"
    released = await backends.inventory.sweep("demo", NOW + 2000)
    assert [o.id for o in released] == [lapsed.order_id]
    assert (await backends.inventory.order(lapsed.order_id)).status == "expired"  # type: ignore[union-attr]
    refunded = await backends.inventory.settle(paid.order_id, "refunded", event_id=None, now_ms=NOW)
    assert refunded.order is not None and refunded.order.status == "refunded"


async def test_banned_and_muted_users_cannot_enter(backends: Backends) -> None:
    store = backends.giveaways
    await store.start(start(), SEED)
    await backends.moderation.set_banned("demo", "bad", True)
    await backends.moderation.mute("demo", "loud", NOW + 1000)
    assert (await store.enter("demo", "demo.g1", "bad", NOW, NODE)).refused == "banned"
    assert (await store.enter("demo", "demo.g1", "loud", NOW, NODE)).refused == "muted"
    assert (await store.enter("demo", "demo.g1", "loud", NOW + 1000, NODE)).added  # mute over
    g = await store.get("demo", "demo.g1")
    assert g is not None and g.entries == 1


async def test_cancel(backends: Backends) -> None:
    store = backends.giveaways
    await store.start(start(), SEED)
    cancelled = await store.cancel("demo", "demo.g1")
    assert cancelled is not None and cancelled.status == "cancelled"
    assert await store.cancel("demo", "demo.g1") is None
    assert await store.freeze("demo", "demo.g1", NOW) is None
    assert await store.current("demo") is None


async def test_a_burst_of_entries_counts_each_user_once(backends: Backends) -> None:
    store = backends.giveaways
    await store.start(start(), SEED)
    users = [f"u{i % 300}" for i in range(1500)]
    got = await asyncio.gather(*(store.enter("demo", "demo.g1", u, NOW, NODE) for u in users))
    assert sum(e.added for e in got) == 300
    g = await store.get("demo", "demo.g1")
    assert g is not None and g.entries == 300


async def test_entrants_on_a_dead_process_are_not_drawn(backends: Backends) -> None:
    """Redis: an entrant counts as watching while a live process has them; a process
    whose presence report expired (killed) holds no one. One process: no such case."""
    if backends.engine != "redis":
        return
    store = backends.giveaways
    await backends.counters.report_presence("demo", "alive", 1, NOW + 58_000)
    await backends.counters.report_presence("demo", "dead", 1, NOW - 120_000)
    await store.start(start(), SEED)
    await store.enter("demo", "demo.g1", "ana", NOW, "alive")
    await store.enter("demo", "demo.g1", "bo", NOW, "dead")
    await store.enter("demo", "demo.g1", "cy", NOW, "dead")
    await store.seen("demo", "cy", "alive", here=True)  # cy watches on the live one too
    frozen = await store.freeze("demo", "demo.g1", NOW + 60_000)
    assert frozen is not None and frozen.entrants == ["ana", "cy"]
