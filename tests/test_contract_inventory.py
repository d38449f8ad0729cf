"""The inventory store's contract, on the memory and the Redis engine."""

from __future__ import annotations

import asyncio
from typing import Any

from livecommerce.backends import Backends
from livecommerce.inventory.rules import Attempt, Product, Sale, order_id
from livecommerce.protocol import encode_event, line_seq, loads
from tests.conftest import ID_KEY

NOW = 1_800_000_000_000
HOLD = 300_000


def a_sale(sid: str = "s1", *, stock: int = 10, limit: int = 3, ends: int = NOW + 60_000) -> Sale:
    return Sale(
        id=sid,
        room="r1",
        sku="sku1",
        title="Mug",
        price=1299,
        stock=stock,
        limit_per_user=limit,
        starts_at=NOW,
        ends_at=ends,
    )


def attempt(user: str, key: str, qty: int = 1) -> Attempt:
    return Attempt(order_id("r1", user, key, ID_KEY), user, key, qty)


async def start(b: Backends, sale: Sale) -> None:
    event = encode_event("sale.started", sale.room, NOW, {"sale": sale.public()})
    await b.inventory.start_sale(sale, event)


async def events(b: Backends) -> list[dict[str, object]]:
    head = await b.log.head("r1")
    lines = await b.log.history("r1", 0, head.epoch)
    assert lines is not None
    return [loads(ln) for ln in lines]


async def check_counts(b: Backends, sid: str = "s1") -> None:
    sale = await b.inventory.sale("r1", sid)
    assert sale is not None
    assert sale.remaining + sale.held + sale.sold == sale.stock
    assert sale.remaining >= 0


async def test_lineup(backends: Backends) -> None:
    inv = backends.inventory
    await inv.put_product("r1", Product("b", "Bowl", 500))
    await inv.put_product("r1", Product("a", "Apron", 900, "https://img/a.png"))
    await inv.put_product("r1", Product("b", "Big bowl", 700))
    assert await inv.products("r1") == [
        Product("a", "Apron", 900, "https://img/a.png"),
        Product("b", "Big bowl", 700),
    ]
    assert await inv.products("r2") == []


async def test_start_publishes_and_opens_the_sale(backends: Backends) -> None:
    await start(backends, a_sale())
    assert [e["type"] for e in await events(backends)] == ["sale.started"]
    assert [s.id for s in await backends.inventory.active_sales("r1")] == ["s1"]
    assert await backends.inventory.stock("r1") == {"s1": 10}


async def test_reserve_rules_and_idempotency(backends: Backends) -> None:
    inv = backends.inventory
    await start(backends, a_sale(stock=5, limit=3))
    out = await inv.reserve(
        "r1",
        "s1",
        [
            attempt("u1", "k1", 2),
            attempt("u1", "k1", 2),  # the same key: the same order, no second hold
            attempt("u1", "k1", 3),  # the same key, another quantity: refused
            attempt("u1", "k2", 2),  # past the limit of 3
            attempt("u2", "k1", 3),
            attempt("u3", "k1", 1),  # 0 left
        ],
        now_ms=NOW,
        hold_ms=HOLD,
    )
    assert [o.error for o in out] == [None, None, "key_reused", "limit_exceeded", None, "sold_out"]
    assert [o.created for o in out] == [True, False, False, False, True, False]
    first = out[0].order
    assert first is not None and out[1].order == first
    assert first.status == "held" and first.qty == 2 and first.price == 1299
    assert first.expires_at == NOW + HOLD and first.id == order_id("r1", "u1", "k1", ID_KEY)
    assert await inv.stock("r1") == {"s1": 0}
    await check_counts(backends)
    assert [e["id"] for e in await inv.outbox("r1")] == [
        first.id,
        order_id("r1", "u2", "k1", ID_KEY),
    ]
    again = await inv.reserve(
        "r1", "nope", [attempt("u9", "k"), attempt("u1", "k1", 2)], now_ms=NOW, hold_ms=HOLD
    )
    assert [o.error for o in again] == ["not_found", "not_found"]  # the sale comes first
    late = await inv.reserve("r1", "s1", [attempt("u9", "k")], now_ms=NOW + 60_000, hold_ms=HOLD)
    assert late[0].error == "sale_not_active"
    mine = await inv.orders_of("r1", ["u1", "u2", "u9"])
    assert {u: [o.id for o in orders] for u, orders in mine.items()} == {
        "u1": [first.id],
        "u2": [order_id("r1", "u2", "k1", ID_KEY)],
    }
    assert await inv.orders_of("r1", []) == {}
    assert await inv.orders_of("r2", ["u1"]) == {}


async def test_pay_is_idempotent_and_the_last_unit_paid_ends_the_sale_once(
    backends: Backends,
) -> None:
    inv = backends.inventory
    await start(backends, a_sale(stock=3))
    out = await inv.reserve(
        "r1", "s1", [attempt("u1", "k", 2), attempt("u2", "k", 1)], now_ms=NOW, hold_ms=HOLD
    )
    o1, o2 = (o.order for o in out)
    assert o1 is not None and o2 is not None
    paid, now_paid = await inv.pay(o1.id, NOW + 1)
    assert paid is not None and paid.status == "paid" and now_paid
    assert (await inv.pay(o1.id, NOW + 2)) == (paid, False)
    await check_counts(backends)
    results = await asyncio.gather(*(inv.pay(o2.id, NOW + 3) for _ in range(5)))
    assert all(r is not None and r.status == "paid" for r, _ in results)
    assert [changed for _, changed in results].count(True) == 1, "one call paid it"
    ended = [e for e in await events(backends) if e["type"] == "sale.ended"]
    assert ended == [
        {
            "seq": 2,
            "type": "sale.ended",
            "room": "r1",
            "ts": NOW + 3,
            "sale_id": "s1",
            "reason": "sold_out",
        }
    ]
    sale = await inv.sale("r1", "s1")
    assert sale is not None and (sale.sold, sale.status, sale.reason) == (3, "ended", "sold_out")
    assert await inv.active_sales("r1") == []
    assert await inv.pay("r1.unknown", NOW) == (None, False)
    assert await inv.pay("nowhere.0123456789abcdef0123", NOW) == (None, False)
    assert await inv.order("nowhere.0123456789abcdef0123") is None
    assert "nowhere" not in await inv.rooms_to_sweep()  # a lookup creates nothing


async def test_holds_expire_once_and_units_come_back(backends: Backends) -> None:
    inv = backends.inventory
    await start(backends, a_sale(stock=4, limit=4, ends=NOW + 10 * HOLD))
    out = await inv.reserve("r1", "s1", [attempt("u1", "k", 4)], now_ms=NOW, hold_ms=HOLD)
    assert (await inv.reserve("r1", "s1", [attempt("u2", "k", 1)], now_ms=NOW + 1, hold_ms=HOLD))[
        0
    ].error == "sold_out"
    assert await inv.sweep("r1", NOW + HOLD - 1) == []
    swept = await asyncio.gather(*(inv.sweep("r1", NOW + HOLD) for _ in range(4)))
    released = [o for batch in swept for o in batch]
    assert len(released) == 1 and released[0].status == "expired"
    assert out[0].order is not None and released[0].id == out[0].order.id
    assert await inv.stock("r1") == {"s1": 4}
    await check_counts(backends)
    # the units sell again, and the expired buyer may buy again
    again = await inv.reserve(
        "r1", "s1", [attempt("u1", "k2", 4)], now_ms=NOW + HOLD + 1, hold_ms=HOLD
    )
    assert again[0].created
    assert await inv.pay(released[0].id, NOW + HOLD + 2) == (released[0], False)  # expired


async def test_payment_and_expiry_racing_end_in_one_outcome(backends: Backends) -> None:
    inv = backends.inventory
    await start(backends, a_sale(stock=50, limit=1, ends=NOW + 10 * HOLD))
    attempts = [attempt(f"u{i}", "k") for i in range(40)]
    out = await inv.reserve("r1", "s1", attempts, now_ms=NOW, hold_ms=HOLD)
    ids = [o.order.id for o in out if o.order is not None]
    at = NOW + HOLD
    results = await asyncio.gather(
        *(inv.pay(oid, at) for oid in ids), inv.sweep("r1", at), inv.sweep("r1", at)
    )
    swept: Any = results[-2:]
    expired = {o.id for batch in swept for o in batch}
    finals = [await inv.order(oid) for oid in ids]
    for order in finals:
        assert order is not None
        assert order.status == ("expired" if order.id in expired else "paid")
    sale = await inv.sale("r1", "s1")
    assert sale is not None
    assert sale.sold == 40 - len(expired) and sale.held == 0
    await check_counts(backends)


async def test_stop_and_end_time_end_the_sale_once(backends: Backends) -> None:
    inv = backends.inventory
    await start(backends, a_sale("s1"))
    await start(backends, a_sale("s2", ends=NOW + 1000))
    stops = await asyncio.gather(*(inv.stop_sale("r1", "s1", NOW + 5) for _ in range(3)))
    assert sorted(stops) == [False, False, True]
    await asyncio.gather(*(inv.sweep("r1", NOW + 1000) for _ in range(3)))
    ended = [
        (e["sale_id"], e["reason"]) for e in await events(backends) if e["type"] == "sale.ended"
    ]
    assert ended == [("s1", "stopped"), ("s2", "expired")]
    assert await inv.active_sales("r1") == []
    assert "r1" in await inv.rooms_to_sweep()


async def test_cancel_releases_a_hold_once(backends: Backends) -> None:
    inv = backends.inventory
    await start(backends, a_sale(stock=2))
    out = await inv.reserve("r1", "s1", [attempt("u1", "k", 2)], now_ms=NOW, hold_ms=HOLD)
    oid = out[0].order.id if out[0].order else ""
    results = await asyncio.gather(inv.cancel(oid), inv.cancel(oid))
    assert [r.status if r else None for r in results].count("cancelled") == 1
    assert await inv.stock("r1") == {"s1": 2}
    await check_counts(backends)


async def test_every_hold_has_one_outbox_entry(backends: Backends) -> None:
    inv = backends.inventory
    await start(backends, a_sale(stock=30, limit=2))
    attempts = [attempt(f"u{i % 20}", f"k{i % 25}", 1 + i % 2) for i in range(60)]
    out = await inv.reserve("r1", "s1", attempts, now_ms=NOW, hold_ms=HOLD)
    created = [o.order.id for o in out if o.created and o.order]
    entries = await inv.outbox("r1")
    assert [e["id"] for e in entries] == created
    assert all(e["sale"] == "s1" and e["room"] == "r1" and e["sku"] == "sku1" for e in entries)
    held = sum(o.order.qty for o in out if o.created and o.order)
    sale = await inv.sale("r1", "s1")
    assert sale is not None and sale.held == held
    assert [line_seq(b'{"seq":1,"x":1}')] == [1]


async def place(b: Backends, user: str, key: str, qty: int = 1, sid: str = "s1") -> str:
    [out] = await b.inventory.reserve(
        "r1", sid, [attempt(user, key, qty)], now_ms=NOW, hold_ms=HOLD
    )
    assert out.order is not None, out.error
    return out.order.id


async def test_settle_follows_the_state_table(backends: Backends) -> None:
    inv = backends.inventory
    await start(backends, a_sale(stock=10))
    held_paid = await place(backends, "u1", "a", 2)
    held_cancel = await place(backends, "u2", "b", 3)
    held_refund = await place(backends, "u3", "c", 1)

    done = await inv.settle(held_paid, "paid", event_id="e1", now_ms=NOW)
    assert done.applied and done.order is not None and done.order.status == "paid"
    done = await inv.settle(held_cancel, "cancelled", event_id="e2", now_ms=NOW)
    assert done.applied and done.order is not None and done.order.status == "cancelled"
    # a refund of a payment never confirmed here voids the hold
    done = await inv.settle(held_refund, "refunded", event_id="e3", now_ms=NOW)
    assert done.applied and done.order is not None and done.order.status == "cancelled"
    sale = await inv.sale("r1", "s1")
    assert sale is not None and (sale.remaining, sale.held, sale.sold) == (8, 0, 2)

    # terminal states absorb everything, out-of-order events included
    for oid, kind in [(held_cancel, "paid"), (held_refund, "paid"), (held_paid, "paid")]:
        done = await inv.settle(oid, kind, event_id=f"late-{oid}-{kind}", now_ms=NOW)  # type: ignore[arg-type]
        assert not done.applied and not done.late
    # paid, then refunded while the sale is open: the units go back on sale
    done = await inv.settle(held_paid, "refunded", event_id="e4", now_ms=NOW)
    assert done.applied and done.order is not None and done.order.status == "refunded"
    sale = await inv.sale("r1", "s1")
    assert sale is not None and (sale.remaining, sale.held, sale.sold) == (10, 0, 0)
    again = await place(backends, "u1", "a2", 3)  # the refunded units left u1's count
    assert again
    await check_counts(backends)


async def test_a_repeated_event_id_changes_nothing(backends: Backends) -> None:
    inv = backends.inventory
    await start(backends, a_sale())
    oid = await place(backends, "u1", "a")
    other = await place(backends, "u2", "b")
    assert (await inv.settle(oid, "paid", event_id="evt-1", now_ms=NOW)).applied
    dup = await inv.settle(other, "cancelled", event_id="evt-1", now_ms=NOW)  # same id
    assert dup.duplicate and not dup.applied
    assert dup.order is not None and dup.order.status == "held"
    unknown = await inv.settle("r1.00000000000000000000", "paid", event_id="evt-2", now_ms=NOW)
    assert unknown.order is None and not unknown.applied
    # an unknown order does not use up the event id
    assert (await inv.settle(other, "paid", event_id="evt-2", now_ms=NOW)).applied


async def test_refund_after_the_sale_ended_keeps_the_units_out(backends: Backends) -> None:
    inv = backends.inventory
    await start(backends, a_sale(stock=2, limit=2))
    oid = await place(backends, "u1", "a", 2)
    await inv.settle(oid, "paid", event_id=None, now_ms=NOW)  # sells it out
    sale = await inv.sale("r1", "s1")
    assert sale is not None and sale.status == "ended" and sale.reason == "sold_out"
    done = await inv.settle(oid, "refunded", event_id=None, now_ms=NOW)
    assert done.applied and done.order is not None and done.order.status == "refunded"
    sale = await inv.sale("r1", "s1")
    assert sale is not None and (sale.remaining, sale.held, sale.sold) == (0, 0, 2)


async def test_a_payment_after_expiry_is_recorded_as_late(backends: Backends) -> None:
    inv = backends.inventory
    await start(backends, a_sale())
    oid = await place(backends, "u1", "a")
    assert [o.id for o in await inv.sweep("r1", NOW + HOLD)] == [oid]
    done = await inv.settle(oid, "paid", event_id="p1", now_ms=NOW + HOLD + 5)
    assert done.late and not done.applied
    assert done.order is not None and done.order.status == "expired"
    assert await inv.late_payments("r1") == {oid: NOW + HOLD + 5}
    assert [o.id for o in await inv.orders("r1")] == [oid]


async def test_payment_url_is_kept_with_the_order(backends: Backends) -> None:
    inv = backends.inventory
    await start(backends, a_sale())
    oid = await place(backends, "u1", "a")
    order = await inv.set_payment_url(oid, "https://shop.example/pay/1")
    assert order is not None and order.public()["payment_url"] == "https://shop.example/pay/1"
    assert await inv.set_payment_url("r1.00000000000000000000", "https://x") is None
    await inv.settle(oid, "paid", event_id=None, now_ms=NOW)
    paid = await inv.order(oid)
    assert paid is not None and "payment_url" not in paid.public()  # only while held
