"""The outbox store's contract (the order bridge's consumer group), on both engines."""

from __future__ import annotations

import asyncio

from livecommerce.backends import Backends, OutboxEntry
from livecommerce.inventory.rules import Attempt, Sale, order_id
from livecommerce.protocol import encode_event
from tests.conftest import ID_KEY

NOW = 1_800_000_000_000


async def orders(b: Backends, n: int, room: str = "r1") -> list[str]:
    sale = Sale("s1", room, "sku", "Mug", 100, 1000, 1000, NOW, NOW + 60_000)
    if not await b.inventory.sale(room, "s1"):
        await b.inventory.start_sale(sale, encode_event("sale.started", room, NOW, {}))
    users = [f"u{i}" for i in range(n)]
    attempts = [Attempt(order_id(room, u, "k", ID_KEY), u, "k", 1) for u in users]
    outs = await b.inventory.reserve(room, "s1", attempts, now_ms=NOW, hold_ms=60_000)
    return [o.order.id for o in outs if o.order is not None]


def ids(entries: list[OutboxEntry]) -> list[str]:
    return [e.fields["id"] for e in entries]


async def test_each_new_entry_goes_to_one_consumer_in_order(backends: Backends) -> None:
    box = backends.outbox
    placed = await orders(backends, 5)
    assert await box.rooms() == ["r1"]
    first = await box.read("w1", 3, block_ms=0)
    second = await box.read("w2", 10, block_ms=0)
    assert ids(first) + ids(second) == placed
    assert await box.read("w1", 10, block_ms=0) == []
    e = first[0]
    assert e.room == "r1" and e.failures == 0
    assert {"id", "room", "sale", "sku", "title", "qty", "price", "user"} <= set(e.fields)
    assert e.fields["qty"] == "1" and e.fields["price"] == "100"
    assert await box.backlog() == 5


async def test_ack_ends_an_entry_and_failures_are_counted(backends: Backends) -> None:
    box = backends.outbox
    await orders(backends, 2)
    a, b = await box.read("w1", 2, block_ms=0)
    await box.ack([a])
    assert await box.failed(b) == 1
    assert await box.failed(b) == 2
    assert await box.backlog() == 1
    [again] = await box.reclaim("w2", min_idle_ms=0, count=10)
    assert again.id == b.id and again.failures == 2


async def test_a_dead_workers_entries_are_taken_over_once_idle(backends: Backends) -> None:
    box = backends.outbox
    await orders(backends, 3)
    taken = await box.read("dead", 3, block_ms=0)
    assert await box.reclaim("w2", min_idle_ms=60_000, count=10) == []  # not idle yet
    await asyncio.sleep(0.05)
    await box.touch("dead", taken[:1])  # still alive for this one
    got = await box.reclaim("w2", min_idle_ms=40, count=10)
    assert sorted(ids(got)) == sorted(ids(taken[1:]))


async def test_buried_entries_are_listed_and_can_be_redriven(backends: Backends) -> None:
    box = backends.outbox
    placed = await orders(backends, 2)
    a, b = await box.read("w1", 2, block_ms=0)
    await box.failed(a)
    await box.bury(a, "HTTP 400", NOW)
    await box.bury(a, "again", NOW)  # once only
    [dead] = await box.dead_letters()
    assert dead.fields["id"] == placed[0] and dead.reason == "HTTP 400"
    assert dead.failures == 1 and dead.at_ms == NOW and dead.room == "r1"
    assert await box.backlog() == 1
    assert not await box.redrive("r1/0-1") and not await box.redrive("nonsense")
    assert await box.redrive(dead.id)
    assert await box.dead_letters() == []
    [back] = await box.read("w1", 10, block_ms=0)
    assert back.fields == a.fields and back.failures == 0 and back.id != a.id
    assert not await box.redrive(dead.id)
    await box.ack([b])
    await box.ack([back])
    assert await box.backlog() == 0


async def test_read_waits_for_a_new_entry(backends: Backends) -> None:
    box = backends.outbox
    await orders(backends, 1)
    await box.ack(await box.read("w1", 1, block_ms=0))
    waiting = asyncio.create_task(box.read("w1", 5, block_ms=3000))
    await asyncio.sleep(0.1)
    assert not waiting.done()
    sale_user = Attempt(order_id("r1", "late", "k", ID_KEY), "late", "k", 1)
    await backends.inventory.reserve("r1", "s1", [sale_user], now_ms=NOW, hold_ms=60_000)
    got = await asyncio.wait_for(waiting, 3)
    assert ids(got) == [sale_user.order_id]


async def test_rooms_are_read_together(backends: Backends) -> None:
    box = backends.outbox
    a = await orders(backends, 2, "r1")
    b = await orders(backends, 2, "r2")
    got = await box.read("w1", 10, block_ms=0)
    assert sorted(ids(got)) == sorted(a + b)
    assert await box.rooms() == ["r1", "r2"]


async def test_delivered_and_buried_entries_leave_the_outbox(backends: Backends) -> None:
    box = backends.outbox
    placed = await orders(backends, 3)
    assert [e["id"] for e in await backends.inventory.outbox("r1")] == placed
    a, b, c = await box.read("w1", 3, block_ms=0)
    await box.ack([a])
    await box.bury(b, "rejected", NOW)
    assert [e["id"] for e in await backends.inventory.outbox("r1")] == [placed[2]]
    assert [d.fields["id"] for d in await box.dead_letters()] == [placed[1]]
    await box.ack([a, c])  # again for a: nothing changes
    assert await backends.inventory.outbox("r1") == []
    assert await box.backlog() == 0
    assert await box.reclaim("w2", min_idle_ms=0, count=10) == []
    # a new entry after the group's last read one was deleted: still counted, read
    await backends.inventory.reserve(
        "r1",
        "s1",
        [Attempt(order_id("r1", "u9", "k", ID_KEY), "u9", "k", 1)],
        now_ms=NOW,
        hold_ms=1000,
    )
    assert await box.backlog() == 1
    assert [e.fields["user"] for e in await box.read("w1", 10, block_ms=0)] == ["u9"]
