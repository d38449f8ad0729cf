"""The pure flash-sale rules (``livecommerce.inventory.rules.Ledger``) against a model.

A Hypothesis state machine drives one room's :class:`Ledger` with random sequences of
sale starts, order attempts, payments, cancellations, expiry sweeps, stops and end-time
sweeps, with a clock that only moves forward. A deliberately simple model predicts every
answer: it keeps only each order's status and each sale's stock, limit, end time and end
reason, and *derives* every count (remaining, held, sold, a user's units) from its orders,
so it shares no bookkeeping with the ledger's incremental counters. After every step the
ledger must agree with the model and satisfy the protocol's invariants on its own.

Besides fully random attempts, some rules aim at the paths that matter most: bursts of
attempts that take a sale's whole stock, retries of used keys, payments of holds (also
after the sale ended), and sweeps exactly at a hold's expiry or a sale's end time.

A few example tests below pin down edge cases the machine reaches only rarely.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, Phase, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from livecommerce.errors import Error
from livecommerce.inventory.rules import (
    Attempt,
    EndReason,
    Ledger,
    OrderStatus,
    Outcome,
    Sale,
    order_id,
)
from tests.conftest import ID_KEY

ROOM = "r1"
T0 = 1_800_000_000_000
HOLD = 300_000
USERS = ("u0", "u1", "u2", "u3")
KEYS = ("k0", "k1", "k2", "k3")
SALE_IDS = ("s0", "s1", "s2")
UNKNOWN_SALE = "nope"
MAX_SALES = len(SALE_IDS)
ANY_ORDER_IDS = [order_id(ROOM, user, key, ID_KEY) for user in USERS for key in KEYS]

stocks = st.one_of(st.integers(1, 4), st.integers(1, 20))
limits = st.integers(1, 5)
durations = st.one_of(
    st.sampled_from((10 * HOLD, 3 * HOLD, HOLD + 1, HOLD, HOLD // 2, 1_000)),
    st.integers(1, 10 * HOLD),
)
steps = st.one_of(
    st.integers(0, 2_000),
    st.sampled_from((HOLD - 1, HOLD, HOLD + 1)),
    st.integers(0, 2 * HOLD),
)


def make_sale(
    sid: str, *, stock: int, limit: int, now: int = T0, duration: int = 10 * HOLD
) -> Sale:
    return Sale(
        id=sid,
        room=ROOM,
        sku=f"sku-{sid}",
        title=f"Item {sid}",
        price=1299,
        stock=stock,
        limit_per_user=limit,
        starts_at=now,
        ends_at=now + duration,
    )


def attempt(user: str, key: str, qty: int = 1) -> Attempt:
    return Attempt(order_id(ROOM, user, key, ID_KEY), user, key, qty)


# --------------------------------------------------------------------------- the model


@dataclass
class ModelSale:
    stock: int
    limit: int
    ends_at: int
    ended: EndReason | None = None


@dataclass
class ModelOrder:
    sale: str
    user: str
    key: str
    qty: int
    expires_at: int
    status: OrderStatus = "held"
    returned: int = 0
    """How many times this order's units went back to ``remaining``."""


Counts = tuple[int, int, int, str, EndReason | None]
"""A sale's remaining, held, sold, status and reason."""


class LedgerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.ledger = Ledger(ROOM)
        self.now = T0
        self.sales: dict[str, ModelSale] = {}
        self.orders: dict[str, ModelOrder] = {}
        # what the ledger showed at the previous check, to check transitions on it alone
        self.seen_status: dict[str, OrderStatus] = {}
        self.seen_end: dict[str, EndReason | None] = {}

    # ---------------------------------------------------------------- model queries

    def committed(self, sid: str, *statuses: OrderStatus) -> int:
        return sum(o.qty for o in self.orders.values() if o.sale == sid and o.status in statuses)

    def m_remaining(self, sid: str) -> int:
        return self.sales[sid].stock - self.committed(sid, "held", "paid")

    def m_units(self, sid: str, user: str) -> int:
        return sum(
            o.qty
            for o in self.orders.values()
            if o.sale == sid and o.user == user and o.status in ("held", "paid")
        )

    def counts(self) -> dict[str, Counts]:
        return {
            sid: (s.remaining, s.held, s.sold, s.status, s.reason)
            for sid, s in self.ledger.sales.items()
        }

    def m_release(self, oid: str, status: OrderStatus) -> None:
        order = self.orders[oid]
        assert order.status == "held"
        order.status = status
        order.returned += 1

    # ---------------------------------------------------------------- time

    @rule(dt=steps)
    def tick(self, dt: int) -> None:
        self.now += dt

    def deadlines(self) -> list[int]:
        holds = [o.expires_at for o in self.orders.values() if o.status == "held"]
        ends = [s.ends_at for s in self.sales.values() if s.ended is None]
        return sorted({d for d in holds + ends if d + 1 >= self.now})

    @precondition(lambda self: bool(self.deadlines()))
    @rule(data=st.data(), offset=st.sampled_from((0, -1, 1)))
    def jump_to_deadline(self, data: st.DataObject, offset: int) -> None:
        """Move the clock right next to a hold's expiry or a sale's end time."""
        deadline = data.draw(st.sampled_from(self.deadlines()), label="deadline")
        self.now = max(self.now, deadline + offset)

    def to_next(self, deadlines: list[int]) -> None:
        """Move the clock to exactly the next of ``deadlines`` not yet passed, if any."""
        ahead = [d for d in deadlines if d >= self.now]
        if ahead:
            self.now = min(ahead)

    # ---------------------------------------------------------------- sales

    def _start(self, stock: int, limit: int, duration: int) -> None:
        sid = SALE_IDS[len(self.sales)]
        before = self.counts()
        sale = make_sale(sid, stock=stock, limit=limit, now=self.now, duration=duration)
        self.ledger.start(sale)
        self.sales[sid] = ModelSale(stock, limit, self.now + duration)
        assert self.counts() == {**before, sid: (stock, 0, 0, "active", None)}
        assert self.ledger.sales[sid] == sale

    @initialize(stock=stocks, limit=limits, duration=durations)
    def first_sale(self, stock: int, limit: int, duration: int) -> None:
        self._start(stock, limit, duration)

    @precondition(lambda self: len(self.sales) < MAX_SALES)
    @rule(stock=stocks, limit=limits, duration=durations)
    def start_sale(self, stock: int, limit: int, duration: int) -> None:
        self._start(stock, limit, duration)

    def any_sale(self, data: st.DataObject, weight: int) -> str:
        """A started sale (``weight`` times likelier), or one the ledger does not know."""
        unknown = [UNKNOWN_SALE, *SALE_IDS[len(self.sales) :]]
        choices = [*self.sales] * weight + unknown
        sid: str = data.draw(st.sampled_from(choices), label="sale")
        return sid

    def any_order(self, data: st.DataObject) -> str:
        """Mostly a known order (in any status), sometimes any user's key."""
        known = sorted(self.orders)
        oid: str = data.draw(st.sampled_from(known * 4 + ANY_ORDER_IDS), label="order")
        return oid

    @rule(data=st.data())
    def stop(self, data: st.DataObject) -> None:
        sid = self.any_sale(data, 2)
        before = self.counts()
        got = self.ledger.end(sid, "stopped")
        model = self.sales.get(sid)
        if model is None or model.ended is not None:
            assert got is None
            assert self.counts() == before
            return
        model.ended = "stopped"
        assert got == self.ledger.sales[sid]
        assert (got.status, got.reason) == ("ended", "stopped")
        r, h, s, _, _ = before[sid]
        assert self.counts() == {**before, sid: (r, h, s, "ended", "stopped")}

    @rule(at_deadline=st.sampled_from((False, False, True)))
    def end_due(self, at_deadline: bool) -> None:
        """Sweep for sales past their end time, now or exactly at the next end time."""
        if at_deadline:
            self.to_next([s.ends_at for s in self.sales.values() if s.ended is None])
        due = {sid for sid, s in self.sales.items() if s.ended is None and s.ends_at <= self.now}
        got = self.ledger.end_due(self.now)
        event(f"end_due: {min(len(due), 2)}")
        assert len(got) == len(due)
        assert {s.id for s in got} == due
        for sid in due:
            self.sales[sid].ended = "expired"
        for sale in got:
            assert sale == self.ledger.sales[sale.id]
            assert (sale.status, sale.reason) == ("ended", "expired")
        # a second sweep at the same moment ends nothing
        assert self.ledger.end_due(self.now) == []

    # ---------------------------------------------------------------- orders

    @rule(
        data=st.data(),
        user=st.sampled_from(USERS),
        key=st.sampled_from(KEYS),
        qty=st.integers(1, 3),
        hold=st.sampled_from((HOLD, HOLD, 1_000)),
    )
    def reserve(self, data: st.DataObject, user: str, key: str, qty: int, hold: int) -> None:
        self.check_reserve(self.any_sale(data, 4), user, key, qty, hold)

    def open_sales(self) -> list[str]:
        """The sales not ended yet (some may be past their end time, not swept yet)."""
        return [sid for sid, s in self.sales.items() if s.ended is None]

    def fresh_keys(self) -> list[tuple[str, str]]:
        return [
            (u, k) for u in USERS for k in KEYS if order_id(ROOM, u, k, ID_KEY) not in self.orders
        ]

    @precondition(lambda self: bool(self.open_sales() and self.fresh_keys()))
    @rule(
        data=st.data(),
        qty=st.integers(1, 3),
        rest=st.booleans(),
        at_end=st.sampled_from((False, False, False, True)),
        hold=st.sampled_from((HOLD, 1_000)),
    )
    def reserve_fresh(
        self, data: st.DataObject, qty: int, rest: bool, at_end: bool, hold: int
    ) -> None:
        """An attempt with an unused key in a sale not ended yet (a hold, or out of
        limit or stock); with ``rest``, for exactly what is left (when that is 1 to 3
        units); with ``at_end``, exactly at the sale's end time."""
        sid = data.draw(st.sampled_from(self.open_sales()), label="sale")
        user, key = data.draw(st.sampled_from(self.fresh_keys()), label="user, key")
        if rest and 1 <= self.m_remaining(sid) <= 3:
            qty = self.m_remaining(sid)
        if at_end:
            self.to_next([self.sales[sid].ends_at])
        self.check_reserve(sid, user, key, qty, hold)

    @precondition(lambda self: bool(self.open_sales() and self.fresh_keys()))
    @rule(data=st.data(), hold=st.sampled_from((HOLD, 1_000)))
    def rush(self, data: st.DataObject, hold: int) -> None:
        """A burst of attempts with unused keys on one sale, until nothing is left."""
        sid = data.draw(st.sampled_from(self.open_sales()), label="sale")
        for _ in range(len(USERS) * len(KEYS)):
            if self.m_remaining(sid) == 0 or not self.fresh_keys():
                break
            user, key = data.draw(st.sampled_from(self.fresh_keys()), label="user, key")
            self.check_reserve(sid, user, key, data.draw(st.integers(1, 3), label="qty"), hold)

    @precondition(lambda self: bool(self.orders))
    @rule(data=st.data(), change=st.sampled_from(("nothing", "sale", "qty")))
    def reserve_again(self, data: st.DataObject, change: str) -> None:
        """A used key again: the same attempt (its order again, whatever became of it),
        or with another sale or quantity (refused)."""
        oid = data.draw(st.sampled_from(sorted(self.orders)), label="order")
        order = self.orders[oid]
        sid, qty = order.sale, order.qty
        if change == "sale":
            others = [s for s in (*SALE_IDS, UNKNOWN_SALE) if s != sid]
            sid = data.draw(st.sampled_from(others), label="other sale")
        elif change == "qty":
            qty = data.draw(st.sampled_from([q for q in (1, 2, 3) if q != qty]), label="qty")
        self.check_reserve(sid, order.user, order.key, qty, HOLD)

    def check_reserve(self, sid: str, user: str, key: str, qty: int, hold: int) -> None:
        oid = order_id(ROOM, user, key, ID_KEY)
        sale = self.sales.get(sid)
        existing = self.orders.get(oid)
        expected: str  # an error code, "new" (a hold) or "same" (the key's order again)
        if sale is None:
            # the ledger looks the sale up before the key, so an unknown sale is
            # not_found even with a used key (the Redis engine's script says key_reused)
            expected = "not_found"
        elif existing is not None:
            same = existing.sale == sid and existing.qty == qty
            expected = "same" if same else "key_reused"
        elif sale.ended is not None or self.now >= sale.ends_at:
            expected = "sale_not_active"
        elif self.m_units(sid, user) + qty > sale.limit:
            expected = "limit_exceeded"
        elif self.m_remaining(sid) < qty:
            expected = "sold_out"
        else:
            expected = "new"

        before = self.counts()
        n_orders = len(self.ledger.orders)
        out = self.ledger.reserve(sid, Attempt(oid, user, key, qty), now=self.now, hold_ms=hold)
        event(f"reserve: {expected}")
        assert isinstance(out, Outcome)

        if expected == "new":
            assert out.error is None and out.created
            order = out.order
            assert order is not None and order == self.ledger.orders.get(oid)
            ledger_sale = self.ledger.sales[sid]
            assert (order.id, order.room, order.sale, order.user, order.key) == (
                oid,
                ROOM,
                sid,
                user,
                key,
            )
            assert (order.qty, order.status) == (qty, "held")
            assert (order.sku, order.title, order.price) == (
                ledger_sale.sku,
                ledger_sale.title,
                ledger_sale.price,
            )
            assert (order.created_at, order.expires_at) == (self.now, self.now + hold)
            assert len(self.ledger.orders) == n_orders + 1
            r, h, s, st_, why = before[sid]
            assert self.counts() == {**before, sid: (r - qty, h + qty, s, st_, why)}
            self.orders[oid] = ModelOrder(sid, user, key, qty, self.now + hold)
            return

        # every other outcome changes nothing at all
        assert not out.created
        assert self.counts() == before
        assert len(self.ledger.orders) == n_orders
        if expected == "same":
            assert out.error is None
            assert out.order is not None and out.order == self.ledger.orders[oid]
            assert out.result() == out.order
        else:
            assert out.order is None
            assert out.error == expected
            with pytest.raises(Error):
                out.result()

    def held_orders(self) -> list[str]:
        return sorted(oid for oid, o in self.orders.items() if o.status == "held")

    @precondition(lambda self: bool(self.held_orders()))
    @rule(data=st.data(), n=st.sampled_from((1, 2, 3, len(ANY_ORDER_IDS))))
    def pay_held(self, data: st.DataObject, n: int) -> None:
        """The order system confirms up to ``n`` holds (the last choice: all of them)."""
        for oid in data.draw(st.permutations(self.held_orders()), label="orders")[:n]:
            self.check_pay(oid)

    @rule(data=st.data())
    def pay(self, data: st.DataObject) -> None:
        self.check_pay(self.any_order(data))

    def check_pay(self, oid: str) -> None:
        before = self.counts()
        got, sold_out = self.ledger.pay(oid)
        model = self.orders.get(oid)
        if model is None:
            assert (got, sold_out) == (None, None)
            assert self.counts() == before
            return
        assert got == self.ledger.orders[oid]
        event(f"pay: {model.status}")
        if model.status != "held":  # paid again, or expired / cancelled: nothing changes
            assert sold_out is None
            assert got.status == model.status
            assert self.counts() == before
            return
        sale = self.sales[model.sale]
        if sale.ended is not None:
            event("pay: a hold of an ended sale")
        elif self.m_remaining(model.sale) == 0 and self.committed(model.sale, "held") > model.qty:
            event("pay: a hold, not the last, of a sale with nothing left")
        model.status = "paid"
        assert got.status == "paid"
        r, h, s, st_, why = before[model.sale]
        if sale.ended is None and self.committed(model.sale, "paid") == sale.stock:
            sale.ended = "sold_out"
            event("pay: sold out")
            assert sold_out == self.ledger.sales[model.sale]
            st_, why = "ended", "sold_out"
        else:
            assert sold_out is None
        assert self.counts() == {**before, model.sale: (r, h - got.qty, s + got.qty, st_, why)}

    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        oid = self.any_order(data)
        before = self.counts()
        got = self.ledger.release(oid, "cancelled")
        model = self.orders.get(oid)
        if model is None or model.status != "held":
            assert got is None
            assert self.counts() == before
            return
        self.m_release(oid, "cancelled")
        assert got == self.ledger.orders[oid]
        assert got.status == "cancelled"
        r, h, s, st_, why = before[model.sale]
        assert self.counts() == {**before, model.sale: (r + model.qty, h - model.qty, s, st_, why)}
        # releasing again gives nothing back
        assert self.ledger.release(oid, "cancelled") is None
        assert self.ledger.release(oid, "expired") is None

    @rule(at_deadline=st.booleans())
    def expire_due(self, at_deadline: bool) -> None:
        """Sweep for holds past their window, now or exactly at the next expiry."""
        if at_deadline:
            self.to_next([o.expires_at for o in self.orders.values() if o.status == "held"])
        due = {
            oid for oid, o in self.orders.items() if o.status == "held" and o.expires_at <= self.now
        }
        before = self.counts()
        got = self.ledger.expire_due(self.now)
        event(f"expire_due: {min(len(due), 2)}")
        assert len(got) == len(due)
        assert {o.id for o in got} == due
        back: dict[str, int] = {}
        for order in got:
            assert order == self.ledger.orders[order.id]
            assert order.status == "expired"
            self.m_release(order.id, "expired")
            back[order.sale] = back.get(order.sale, 0) + order.qty
        after = self.counts()
        for sid, (r, h, s, st_, why) in before.items():
            n = back.get(sid, 0)
            assert after[sid] == (r + n, h - n, s, st_, why)
        # a second sweep at the same moment releases nothing
        assert self.ledger.expire_due(self.now) == []
        assert self.counts() == after

    # ---------------------------------------------------------------- invariants

    @invariant()
    def ledger_agrees_with_the_model(self) -> None:
        ledger = self.ledger
        assert set(ledger.orders) == set(self.orders)
        assert set(ledger.sales) == set(self.sales)
        for oid, order in ledger.orders.items():
            m = self.orders[oid]
            assert (order.sale, order.user, order.key, order.qty) == (
                m.sale,
                m.user,
                m.key,
                m.qty,
            )
            assert (order.status, order.expires_at) == (m.status, m.expires_at)
            assert m.returned == (1 if m.status in ("expired", "cancelled") else 0)
        for sid, sale in ledger.sales.items():
            m_sale = self.sales[sid]
            assert (sale.stock, sale.limit_per_user, sale.ends_at) == (
                m_sale.stock,
                m_sale.limit,
                m_sale.ends_at,
            )
            assert sale.remaining == self.m_remaining(sid)
            assert sale.held == self.committed(sid, "held")
            assert sale.sold == self.committed(sid, "paid")
            if m_sale.ended is None:
                assert (sale.status, sale.reason) == ("active", None)
            else:
                assert (sale.status, sale.reason) == ("ended", m_sale.ended)
            for user in USERS:
                assert ledger.units.get((sid, user), 0) == self.m_units(sid, user)

    @invariant()
    def ledger_invariants(self) -> None:
        """The protocol's invariants, from the ledger's own state alone."""
        ledger = self.ledger
        pairs: set[tuple[str, str]] = set()
        for oid, order in ledger.orders.items():
            # one order per (user, key), named by the key
            assert order.id == oid == order_id(ROOM, order.user, order.key, ID_KEY)
            assert (order.user, order.key) not in pairs
            pairs.add((order.user, order.key))
            assert order.sale in ledger.sales
            # held -> paid | expired | cancelled, and those are final
            prev = self.seen_status.get(oid)
            if prev is not None and prev != "held":
                assert order.status == prev, f"{oid}: {prev} became {order.status}"
            self.seen_status[oid] = order.status
        for sid, sale in ledger.sales.items():
            orders = [o for o in ledger.orders.values() if o.sale == sid]
            held = sum(o.qty for o in orders if o.status == "held")
            sold = sum(o.qty for o in orders if o.status == "paid")
            assert sale.remaining + sale.held + sale.sold == sale.stock
            assert sale.remaining >= 0
            assert sale.held == held
            assert sale.sold == sold
            for user in {o.user for o in orders}:
                units = sum(
                    o.qty for o in orders if o.user == user and o.status in ("held", "paid")
                )
                assert ledger.units.get((sid, user), 0) == units
                assert units <= sale.limit_per_user
            # a sale ends once; sold out means every unit paid
            if sid in self.seen_end:
                assert (sale.status, sale.reason) == ("ended", self.seen_end[sid])
            if sale.status == "ended":
                assert sale.reason in ("sold_out", "stopped", "expired")
                self.seen_end[sid] = sale.reason
            else:
                assert sale.status == "active" and sale.reason is None
                assert sale.sold < sale.stock
            if sale.reason == "sold_out":
                assert sale.sold == sale.stock
        for (unit_sid, _), n in ledger.units.items():
            assert unit_sid in ledger.sales and n >= 0
        assert [s.id for s in ledger.active()] == [
            s for s, v in ledger.sales.items() if v.status == "active"
        ]


LedgerMachine.TestCase.settings = settings(
    max_examples=300,
    stateful_step_count=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    # no Phase.explain: tracing every line makes a failure take minutes to report
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
)
TestLedgerMachine = LedgerMachine.TestCase


# --------------------------------------------------------------------------- examples


def counts(ledger: Ledger, sid: str = "s1") -> tuple[int, int, int]:
    sale = ledger.sales[sid]
    return sale.remaining, sale.held, sale.sold


def ending(ledger: Ledger, sid: str = "s1") -> tuple[str, EndReason | None]:
    sale = ledger.sales[sid]
    return sale.status, sale.reason


def status(ledger: Ledger, oid: str) -> OrderStatus:
    return ledger.orders[oid].status


def place(ledger: Ledger, user: str, key: str, qty: int, *, sid: str = "s1", now: int = T0) -> str:
    """Place a hold that must succeed; its order id."""
    out = ledger.reserve(sid, attempt(user, key, qty), now=now, hold_ms=HOLD)
    assert out.created and out.order is not None, out
    return out.order.id


def error(ledger: Ledger, user: str, key: str, qty: int, *, sid: str = "s1", now: int = T0) -> str:
    """The refusal of an attempt that must be refused, having changed nothing."""
    orders = {oid: o.status for oid, o in ledger.orders.items()}
    before = {s: counts(ledger, s) for s in ledger.sales}
    out = ledger.reserve(sid, attempt(user, key, qty), now=now, hold_ms=HOLD)
    assert out.order is None and not out.created and out.error is not None, out
    assert {oid: o.status for oid, o in ledger.orders.items()} == orders
    assert {s: counts(ledger, s) for s in ledger.sales} == before
    return out.error


def test_reserve_exactly_the_remaining_stock() -> None:
    ledger = Ledger(ROOM)
    ledger.start(make_sale("s1", stock=5, limit=5))
    first = place(ledger, "u1", "k", 2)
    place(ledger, "u2", "k", 3)
    assert counts(ledger) == (0, 5, 0)
    # not one more unit; but holds alone do not sell the sale out
    assert error(ledger, "u3", "k", 1) == "sold_out"
    assert ending(ledger) == ("active", None)
    # two units come back: three are refused, exactly two are not
    assert ledger.release(first, "cancelled") is not None
    assert counts(ledger) == (2, 3, 0)
    assert error(ledger, "u3", "k2", 3) == "sold_out"
    place(ledger, "u3", "k3", 2)
    assert counts(ledger) == (0, 5, 0)
    assert ending(ledger) == ("active", None)


def test_paying_the_last_held_unit_sells_out_and_later_sweeps_change_nothing() -> None:
    ledger = Ledger(ROOM)
    ledger.start(make_sale("s1", stock=3, limit=3))
    first = place(ledger, "u1", "a", 2)
    last = place(ledger, "u2", "b", 1, now=T0 + 10)
    paid, sold_out = ledger.pay(first)
    assert paid is not None and paid.status == "paid" and sold_out is None
    assert ending(ledger) == ("active", None)
    paid, sold_out = ledger.pay(last)
    assert paid is not None and paid.status == "paid"
    assert sold_out is not None and sold_out.id == "s1"
    assert ending(ledger) == ("ended", "sold_out")
    assert counts(ledger) == (0, 0, 3)
    # both payment windows pass: paid orders never expire, nothing comes back
    assert ledger.expire_due(T0 + 10 + HOLD) == []
    assert (status(ledger, first), status(ledger, last)) == ("paid", "paid")
    assert counts(ledger) == (0, 0, 3)
    # paying again, cancelling, stopping and the end time change nothing either
    paid, sold_out = ledger.pay(last)
    assert paid is not None and paid.status == "paid" and sold_out is None
    assert ledger.release(first, "cancelled") is None
    assert ledger.release(last, "expired") is None
    assert ledger.end("s1", "stopped") is None
    assert ledger.end_due(T0 + 100 * HOLD) == []
    assert ending(ledger) == ("ended", "sold_out")
    assert counts(ledger) == (0, 0, 3)
    assert ledger.units == {("s1", "u1"): 2, ("s1", "u2"): 1}


def test_units_of_an_expired_hold_come_back_once_and_sell_again() -> None:
    ledger = Ledger(ROOM)
    ledger.start(make_sale("s1", stock=2, limit=2))
    oid = place(ledger, "u1", "a", 2)
    assert ledger.expire_due(T0 + HOLD - 1) == []
    assert [o.id for o in ledger.expire_due(T0 + HOLD)] == [oid]
    assert ledger.expire_due(T0 + HOLD) == []
    assert ledger.release(oid, "cancelled") is None
    assert counts(ledger) == (2, 0, 0)
    assert ledger.units[("s1", "u1")] == 0
    # the expired hold cannot be paid, and its key still names it (no new hold)
    paid, sold_out = ledger.pay(oid)
    assert paid is not None and paid.status == "expired" and sold_out is None
    assert status(ledger, oid) == "expired" and counts(ledger) == (2, 0, 0)
    again = ledger.reserve("s1", attempt("u1", "a", 2), now=T0 + HOLD + 1, hold_ms=HOLD)
    assert again.order is not None and again.order.id == oid and not again.created
    assert again.order.status == "expired" and counts(ledger) == (2, 0, 0)
    # the same buyer may buy those units again with a new key, up to the limit
    new = place(ledger, "u1", "b", 2, now=T0 + HOLD + 1)
    paid, sold_out = ledger.pay(new)
    assert paid is not None and sold_out is not None and sold_out.id == "s1"
    assert counts(ledger) == (0, 0, 2) and ending(ledger) == ("ended", "sold_out")


def test_the_key_is_checked_before_the_sale_and_the_limit() -> None:
    ledger = Ledger(ROOM)
    ledger.start(make_sale("s1", stock=10, limit=2, duration=1_000))
    ledger.start(make_sale("s2", stock=10, limit=2))
    first = place(ledger, "u1", "k", 2)
    # the user is at the limit, the sale over: the same key still names the same order
    late = T0 + 5_000
    again = ledger.reserve("s1", attempt("u1", "k", 2), now=late, hold_ms=HOLD)
    assert again.order is not None and again.order.id == first and not again.created
    # the same key for another sale or quantity is refused, and places nothing
    assert error(ledger, "u1", "k", 2, sid="s2", now=late) == "key_reused"
    assert error(ledger, "u1", "k", 1, now=late) == "key_reused"
    assert error(ledger, "u1", "k", 2, sid="nope", now=late) == "not_found"
    assert list(ledger.orders) == [first] and counts(ledger, "s2") == (10, 0, 0)
    with pytest.raises(Error) as err:
        ledger.reserve("s2", attempt("u1", "k", 2), now=late, hold_ms=HOLD).result()
    assert err.value.code == "bad_request"
    # a new key: the sale's state is checked before the limit, the limit before stock
    assert error(ledger, "u1", "k2", 1, now=late) == "sale_not_active"
    assert error(ledger, "u1", "k3", 1, now=T0 + 999) == "limit_exceeded"
    place(ledger, "u2", "k", 2, sid="s2")
    place(ledger, "u3", "k", 2, sid="s2")
    place(ledger, "u4", "k", 2, sid="s2")
    place(ledger, "u5", "k", 2, sid="s2")
    assert counts(ledger, "s2") == (2, 8, 0)
    assert error(ledger, "u1", "k4", 3, sid="s2") == "limit_exceeded"
    assert error(ledger, "u6", "k", 3, sid="s2") == "limit_exceeded"
    place(ledger, "u6", "k", 2, sid="s2")
    assert error(ledger, "u7", "k", 1, sid="s2") == "sold_out"


def test_the_end_time_is_exclusive_for_orders_and_inclusive_for_the_sweep() -> None:
    ledger = Ledger(ROOM)
    ledger.start(make_sale("s1", stock=5, limit=5, duration=1_000))
    place(ledger, "u1", "a", 1, now=T0 + 999)
    assert error(ledger, "u1", "b", 1, now=T0 + 1_000) == "sale_not_active"
    assert ledger.end_due(T0 + 999) == []
    assert ending(ledger) == ("active", None)
    assert [s.id for s in ledger.end_due(T0 + 1_000)] == ["s1"]
    assert ledger.end_due(T0 + 1_000) == []
    assert ledger.end("s1", "stopped") is None
    assert ending(ledger) == ("ended", "expired")
    assert ledger.active() == []


def test_paying_a_hold_of_an_ended_sale_does_not_end_it_again() -> None:
    ledger = Ledger(ROOM)
    ledger.start(make_sale("s1", stock=2, limit=2))
    oid = place(ledger, "u1", "a", 2)
    stopped = ledger.end("s1", "stopped")
    assert stopped is not None and stopped.id == "s1"
    # the hold was placed while the sale was open: it may still be paid, and every
    # unit is now paid, but the sale ended once, stopped
    paid, sold_out = ledger.pay(oid)
    assert paid is not None and paid.status == "paid" and sold_out is None
    assert counts(ledger) == (0, 0, 2)
    assert ending(ledger) == ("ended", "stopped")


def test_paid_units_count_against_the_limit_and_released_ones_do_not() -> None:
    ledger = Ledger(ROOM)
    ledger.start(make_sale("s1", stock=20, limit=3))
    ledger.pay(place(ledger, "u1", "a", 2))
    cancelled = place(ledger, "u1", "b", 1)
    assert error(ledger, "u1", "c", 1) == "limit_exceeded"
    released = ledger.release(cancelled, "cancelled")
    assert released is not None and released.status == "cancelled"
    assert ledger.release(cancelled, "cancelled") is None
    assert ledger.units[("s1", "u1")] == 2
    assert error(ledger, "u1", "c", 2) == "limit_exceeded"
    place(ledger, "u1", "d", 1)
    paid, _ = ledger.pay(cancelled)
    assert paid is not None and status(ledger, cancelled) == "cancelled"
    # another user's units are their own
    place(ledger, "u2", "a", 3)
    assert counts(ledger) == (14, 4, 2)


def test_unknown_orders_and_sales() -> None:
    ledger = Ledger(ROOM)
    assert ledger.pay(order_id(ROOM, "u1", "k", ID_KEY)) == (None, None)
    assert ledger.release(order_id(ROOM, "u1", "k", ID_KEY), "cancelled") is None
    assert ledger.end("nope", "stopped") is None
    assert ledger.expire_due(T0) == [] and ledger.end_due(T0) == []
    assert error(ledger, "u1", "k", 1, sid="nope") == "not_found"
    assert ledger.orders == {} and ledger.units == {}


def test_orders_of_one_user_are_listed_by_creation() -> None:
    ledger = Ledger(ROOM)
    ledger.start(make_sale("s1", stock=9, limit=9))
    ids = [place(ledger, "u1", key, 1, now=T0 + i) for i, key in enumerate(("c", "a", "b"))]
    place(ledger, "u2", "a", 1)
    assert [o.id for o in ledger.user_orders("u1")] == ids
    assert [o.user for o in ledger.user_orders("u2")] == ["u2"]
