"""The group-buy store's contract, on the memory and the Redis engine (issue 14)."""

from __future__ import annotations

import asyncio

from livecommerce.backends import Backends
from tests.test_group_rules import NOW, deal

HOLD = 600_000


def oid(group: str, user: str) -> str:
    """A stand-in for the service's order id (``<room>.`` and 20 characters)."""
    return f"demo.{(group + user).encode().hex()[:20]:0>20}"


async def test_open_join_fill(backends: Backends) -> None:
    store = backends.groups
    assert await store.start(deal())
    assert not await store.start(deal())  # the id is taken
    assert [d.id for d in await store.deals("demo")] == ["d1"]
    opened = await store.open("demo", "d1", "demo.p1", "ana", oid("p1", "ana"), NOW)
    assert opened.refused is None and opened.group is not None
    assert (opened.group.members, opened.group.needed, opened.group.ends_at) == (
        ["ana"], 2, NOW + 600_000,
    )  # fmt: skip
    again = await store.open("demo", "d1", "demo.p2", "ana", oid("p2", "ana"), NOW)
    assert again.refused == "already_in_group"
    bo = await store.join("demo", "demo.p1", "bo", oid("p1", "bo"), now_ms=NOW, hold_ms=HOLD)
    assert not bo.filled and bo.group is not None and bo.group.members == ["ana", "bo"]
    same = await store.join("demo", "demo.p1", "bo", oid("p1", "bo"), now_ms=NOW, hold_ms=HOLD)
    assert same.refused is None and not same.filled
    assert [g.id for g in await store.mine("demo", "bo")] == ["demo.p1"]
    forming, total = await store.forming("demo", 20)
    assert total == 1 and forming[0].members == ["ana", "bo"]
    cy = await store.join("demo", "demo.p1", "cy", oid("p1", "cy"), now_ms=NOW, hold_ms=HOLD)
    assert cy.filled and cy.group is not None and cy.group.status == "filled"
    for member in ("ana", "bo", "cy"):
        order = await backends.inventory.order(oid("p1", member))
        assert order is not None
        assert (order.user, order.price, order.status, order.source, order.sale) == (
            member, 1200, "held", "group", "demo.p1",
        )  # fmt: skip
        assert order.expires_at == NOW + HOLD
    late = await store.join("demo", "demo.p1", "dee", oid("p1", "dee"), now_ms=NOW, hold_ms=HOLD)
    assert late.refused == "group_closed"
    assert await store.mine("demo", "bo") == [] and (await store.forming("demo", 20))[1] == 0
    d = await store.deal("demo", "d1")
    assert d is not None and d.remaining == 27
    assert (await store.group("demo", "demo.p1")).status == "filled"  # type: ignore[union-attr]
    outbox = await backends.inventory.outbox("demo")
    assert sorted(e["user"] for e in outbox) == ["ana", "bo", "cy"]


async def test_a_group_short_at_its_end_fails(backends: Backends) -> None:
    store = backends.groups
    await store.start(deal(stock=3))
    await store.open("demo", "d1", "demo.p1", "ana", oid("p1", "ana"), NOW)
    await store.join("demo", "demo.p1", "bo", oid("p1", "bo"), now_ms=NOW, hold_ms=HOLD)
    await store.open("demo", "d1", "demo.p2", "cy", oid("p2", "cy"), NOW + 1000)
    sold = await store.open("demo", "d1", "demo.p3", "dee", oid("p3", "dee"), NOW)
    assert sold.refused == "sold_out"
    assert await store.expire("demo", NOW + 599_999) == []
    failed = await store.expire("demo", NOW + 600_000)
    assert [(g.id, g.status, g.members) for g in failed] == [("demo.p1", "failed", ["ana", "bo"])]
    d = await store.deal("demo", "d1")
    assert d is not None and d.remaining == 2
    assert await store.mine("demo", "ana") == []
    assert await backends.inventory.outbox("demo") == []  # no order for a failed group
    reopened = await store.open("demo", "d1", "demo.p4", "ana", oid("p4", "ana"), NOW + 600_000)
    assert reopened.refused is None


async def test_banned_stopped_full_and_unknown(backends: Backends) -> None:
    store = backends.groups
    await store.start(deal(size=2))
    await backends.moderation.set_banned("demo", "bad", True)
    assert (await store.open("demo", "d1", "demo.p1", "bad", "x", NOW)).refused == "banned"
    await store.open("demo", "d1", "demo.p1", "ana", oid("p1", "ana"), NOW)
    joined = await store.join("demo", "demo.p1", "bad", "x", now_ms=NOW, hold_ms=HOLD)
    assert joined.refused == "banned"
    assert (await store.open("demo", "nope", "demo.p2", "bo", "x", NOW)).refused == "not_found"
    unknown = await store.join("demo", "demo.nope", "bo", "x", now_ms=NOW, hold_ms=HOLD)
    assert unknown.refused == "not_found"
    stopped = await store.stop("demo", "d1")
    assert stopped is not None and stopped.status == "ended"
    assert await store.stop("demo", "d1") is None
    assert (await store.open("demo", "d1", "demo.p3", "bo", "x", NOW)).refused == "group_closed"
    # a group formed before the stop still fills
    last = await store.join("demo", "demo.p1", "bo", oid("p1", "bo"), now_ms=NOW, hold_ms=HOLD)
    assert last.filled


async def test_the_last_slot_raced_by_500_goes_to_one(backends: Backends) -> None:
    store = backends.groups
    await store.start(deal(size=3, stock=100))
    await store.open("demo", "d1", "demo.p1", "ana", oid("p1", "ana"), NOW)
    await store.join("demo", "demo.p1", "bo", oid("p1", "bo"), now_ms=NOW, hold_ms=HOLD)
    racers = [f"r{i}" for i in range(500)]
    got = await asyncio.gather(
        *(store.join("demo", "demo.p1", u, oid("p1", u), now_ms=NOW, hold_ms=HOLD) for u in racers)
    )
    won = [u for u, j in zip(racers, got, strict=True) if j.refused is None]
    assert len(won) == 1 and sum(j.filled for j in got) == 1
    assert {j.refused for j in got if j.refused} == {"group_closed"}
    g = await store.group("demo", "demo.p1")
    assert g is not None and g.members == ["ana", "bo", won[0]]
    d = await store.deal("demo", "d1")
    assert d is not None and d.remaining == 97
    assert len(await backends.inventory.outbox("demo")) == 3
