"""Flash-sale rules. Pure: no I/O, time (unix ms) is an argument.

One :class:`Ledger` holds a room's sales and orders. The memory store is a ledger per
room; the Redis store runs the same rules in Lua (``backends/redis_inventory.py``), and
one contract suite checks that both agree. For every sale, at every moment::

    remaining + held + sold == stock      and      remaining >= 0

and a user's held and paid units in a sale never exceed ``limit_per_user``.

A sale ends once: stopped by the host, at its end time, or sold out, which means every
unit *paid*: while units are only held, the sale stays open (``remaining`` may be 0 for a
while) so that units coming back from expired holds sell again.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from livecommerce.errors import Error
from livecommerce.promotions.coupons import Coupon, not_applicable

SaleStatus = Literal["active", "ended"]
EndReason = Literal["sold_out", "stopped", "expired"]
OrderStatus = Literal["held", "paid", "expired", "cancelled", "refunded"]
OrderSource = Literal["sale", "giveaway", "group", "auction"]
"""What made an order: a flash sale, or a promotion that granted it (a giveaway's
prize, a group that filled, an auction's win). A granted order's ``sale`` is the
promotion's id; it holds no sale's units."""
SettleKind = Literal["paid", "cancelled", "refunded"]
"""What the order system reports about an order (its signed callbacks)."""
SETTLE_KINDS: tuple[SettleKind, ...] = ("paid", "cancelled", "refunded")


@dataclass(frozen=True, slots=True)
class Product:
    """A product of a room's lineup. ``price`` in the smallest currency unit."""

    sku: str
    title: str
    price: int
    image: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class Sale:
    """A flash sale of one product, with its live counts."""

    id: str
    room: str
    sku: str
    title: str
    price: int
    stock: int
    limit_per_user: int
    starts_at: int
    ends_at: int
    status: SaleStatus = "active"
    reason: EndReason | None = None
    remaining: int = -1
    held: int = 0
    sold: int = 0
    price_b: int | None = None
    """An A/B test of the price: the buyers of arm ``b`` (:func:`arm`) pay this."""

    def __post_init__(self) -> None:
        if self.remaining < 0:
            self.remaining = self.stock

    def public(self) -> dict[str, Any]:
        """The protocol's ``sale`` object, with ``remaining`` (and ``price_b`` in an A/B
        test of the price)."""
        out = {
            "id": self.id,
            "sku": self.sku,
            "title": self.title,
            "price": self.price,
            "stock": self.stock,
            "limit_per_user": self.limit_per_user,
            "starts_at": self.starts_at,
            "ends_at": self.ends_at,
            "remaining": self.remaining,
        }
        if self.price_b is not None:
            out["price_b"] = self.price_b
        return out

    def price_for(self, user: str) -> int:
        """What ``user`` pays: the price of their arm."""
        return (
            self.price_b if self.price_b is not None and arm(self.id, user) == "b" else self.price
        )


def arm(sale_id: str, user: str) -> Literal["a", "b"]:
    """A user's arm in a sale's A/B test, stable and even: ``b`` when the first hex
    digit of ``SHA-1("<sale id>:<user id>")`` is odd (Redis's Lua computes the same
    with ``redis.sha1hex``; a page with WebCrypto can too)."""
    digest = hashlib.sha1(f"{sale_id}:{user}".encode()).hexdigest()
    return "b" if int(digest[0], 16) % 2 else "a"


@dataclass(slots=True)
class Order:
    """A hold on units of a sale, and what became of it."""

    id: str
    room: str
    sale: str
    sku: str
    title: str
    user: str
    qty: int
    price: int
    key: str
    status: OrderStatus
    created_at: int
    expires_at: int
    payment_url: str | None = None
    """Where the buyer pays, once the order system gave one (or the sandbox's page)."""
    coupon: str | None = None
    """The coupon spent on it (given back if the hold expires or is cancelled)."""
    discount: int = 0
    """What the coupon took off the order's total (minor units)."""
    source: OrderSource = "sale"

    def public(self) -> dict[str, Any]:
        """The protocol's ``order`` object (``payment_url`` while held, once known)."""
        out: dict[str, Any] = {
            "id": self.id,
            "sale": self.sale,
            "sku": self.sku,
            "qty": self.qty,
            "price": self.price,
            "status": self.status,
            "expires_at": self.expires_at,
        }
        if self.payment_url and self.status == "held":
            out["payment_url"] = self.payment_url
        if self.coupon:
            out["coupon"] = self.coupon
            out["discount"] = self.discount
        if self.source != "sale":  # no sale the client knows: the title comes along
            out["source"] = self.source
            out["title"] = self.title
        return out

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Settled:
    """What a callback did: the order as it now is (None if unknown), whether it
    changed it, the sale it sold out if any, and ``late`` for a payment of an expired
    hold."""

    order: Order | None
    applied: bool
    sold_out: Sale | None = None
    late: bool = False
    duplicate: bool = False
    """The event id was seen before: nothing was done (stores set this)."""


def order_id(room: str, user: str, key: str, id_key: bytes) -> str:
    """The order id of ``user``'s idempotency ``key`` in ``room``: the same key always
    names the same order, on every process, across retries. Keyed with ``id_key`` (a
    secret of the servers, :func:`order_id_key`): user ids are public and idempotency
    keys often guessable, so an unkeyed hash would let anyone name another's order."""
    digest = hmac.digest(id_key, f"{room}\0{user}\0{key}".encode(), "sha256").hex()[:20]
    return f"{room}.{digest}"


def order_id_key(secret: str) -> bytes:
    """The key of :func:`order_id`, derived from the servers' token secret."""
    return hmac.digest(secret.encode(), b"livecommerce order ids", "sha256")


def room_of_order(oid: str) -> str:
    """The room of an order id (room ids never contain a dot)."""
    return oid.partition(".")[0]


BEST = "best"
"""An order's ``coupon`` that asks the server for the buyer's claimed coupon that takes
the most off (none, and the full price, when none applies)."""


@dataclass(frozen=True, slots=True)
class Attempt:
    """One ``order`` command waiting to be served."""

    order_id: str
    user: str
    key: str
    qty: int
    coupon: str | None = None
    """A coupon of the buyer's to spend on the order (``order``'s ``coupon``)."""


@dataclass(frozen=True, slots=True)
class Grant:
    """A held order a promotion gives a user (no sale's units: ``src`` is the
    promotion's id), at ``price`` (0 for a prize)."""

    order_id: str
    user: str
    key: str
    src: str
    source: OrderSource
    sku: str
    title: str
    price: int
    qty: int = 1

    def held(self, room: str, *, now: int, hold_ms: int) -> Order:
        """The held order this grant makes at ``now``."""
        return Order(
            id=self.order_id,
            room=room,
            sale=self.src,
            sku=self.sku,
            title=self.title,
            user=self.user,
            qty=self.qty,
            price=self.price,
            key=self.key,
            status="held",
            created_at=now,
            expires_at=now + hold_ms,
            source=self.source,
        )


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one attempt got: an order (new, or the one its key already named) or an
    error code."""

    order: Order | None = None
    created: bool = False
    error: str | None = None

    def result(self) -> Order:
        """The order, or raise the refusal as an :class:`Error`."""
        if self.order is not None:
            return self.order
        raise refusal(self.error or "internal")


_MESSAGES = {
    "sale_not_active": "this sale is not open",
    "sold_out": "sold out",
    "limit_exceeded": "that would take you past the limit per person",
    "key_reused": "this key was used for a different order",
    "not_found": "no such sale",
}


def refusal(code: str) -> Error:
    """The protocol error for a refused attempt (``key_reused`` is a ``bad_request``;
    ``coupon_not_applicable:<rule>`` says which rule the order missed)."""
    if code.startswith("coupon_not_applicable:"):
        return not_applicable(code.partition(":")[2])
    message = _MESSAGES.get(code, code)
    if code == "key_reused":
        return Error("bad_request", message)
    return Error(code, message)  # type: ignore[arg-type]


@dataclass
class Ledger:
    """A room's sales and orders, and every transition on them."""

    room: str
    sales: dict[str, Sale] = field(default_factory=dict)
    orders: dict[str, Order] = field(default_factory=dict)
    units: dict[tuple[str, str], int] = field(default_factory=dict)
    """(sale, user) -> held + paid units."""

    def start(self, sale: Sale) -> None:
        self.sales[sale.id] = sale

    def active(self) -> list[Sale]:
        return [s for s in self.sales.values() if s.status == "active"]

    def reserve(
        self,
        sale_id: str,
        a: Attempt,
        *,
        now: int,
        hold_ms: int,
        coupon: Coupon | None = None,
        spendable: int = 0,
    ) -> Outcome:
        """Serve one attempt: the idempotency key first, then the sale's state, the
        user's limit and the stock, then the coupon it spends (``coupon``, of which the
        buyer has ``spendable`` claims unspent): one claim is spent with the hold, its
        discount on the order. The caller spends the claim when the order is created."""
        sale = self.sales.get(sale_id)
        if sale is None:
            return Outcome(error="not_found")
        existing = self.orders.get(a.order_id)
        if existing is not None:
            if existing.sale != sale_id or existing.qty != a.qty:
                return Outcome(error="key_reused")
            return Outcome(order=existing)
        if sale.status != "active" or now >= sale.ends_at:
            return Outcome(error="sale_not_active")
        units = self.units.get((sale_id, a.user), 0)
        if units + a.qty > sale.limit_per_user:
            return Outcome(error="limit_exceeded")
        if sale.remaining < a.qty:
            return Outcome(error="sold_out")
        discount, price = 0, sale.price_for(a.user)
        if a.coupon is not None:
            if coupon is None or spendable < 1:
                return Outcome(error="coupon_not_applicable:unclaimed")
            total = price * a.qty
            rule = coupon.missed_rule(sku=sale.sku, total=total)
            if rule is not None:
                return Outcome(error=f"coupon_not_applicable:{rule}")
            discount = coupon.discount(sku=sale.sku, total=total)
        sale.remaining -= a.qty
        sale.held += a.qty
        self.units[(sale_id, a.user)] = units + a.qty
        order = Order(
            id=a.order_id,
            room=self.room,
            sale=sale_id,
            sku=sale.sku,
            title=sale.title,
            user=a.user,
            qty=a.qty,
            price=price,
            key=a.key,
            status="held",
            created_at=now,
            expires_at=now + hold_ms,
            coupon=a.coupon,
            discount=discount,
        )
        self.orders[order.id] = order
        return Outcome(order=order, created=True)

    def grant(self, g: Grant, *, now: int, hold_ms: int) -> Order | None:
        """Hold an order a promotion gives; None (nothing changes) if its id exists."""
        if g.order_id in self.orders:
            return None
        order = self.orders[g.order_id] = g.held(self.room, now=now, hold_ms=hold_ms)
        return order

    def pay(self, oid: str) -> tuple[Order | None, Sale | None]:
        """Confirm payment of a hold. Paying a paid order changes nothing.

        Returns:
            The order (None if unknown) and the sale if this payment sold it out.
        """
        order = self.orders.get(oid)
        if order is None or order.status != "held":
            return order, None
        order.status = "paid"
        sale = self.sales.get(order.sale)
        if sale is None:  # granted by a promotion: no sale's units
            return order, None
        sale.held -= order.qty
        sale.sold += order.qty
        if sale.sold == sale.stock and sale.status == "active":
            sale.status, sale.reason = "ended", "sold_out"
            return order, sale
        return order, None

    def release(self, oid: str, status: OrderStatus) -> Order | None:
        """End a hold as ``expired`` or ``cancelled``: its units go back, once.

        Returns:
            The order if this call released it; None if it was not held.
        """
        order = self.orders.get(oid)
        if order is None or order.status != "held":
            return None
        order.status = status
        sale = self.sales.get(order.sale)
        if sale is None:
            return order
        sale.held -= order.qty
        sale.remaining += order.qty
        self.units[(order.sale, order.user)] -= order.qty
        return order

    def settle(self, oid: str, kind: SettleKind) -> Settled:
        """Apply what the order system reports, by the table of ``docs/orders.md``:

        - ``held``: ``paid`` pays it; ``cancelled`` or ``refunded`` (a refund of a
          payment never confirmed here) end it as ``cancelled``, its units back on sale.
        - ``paid``: ``cancelled`` or ``refunded`` make it ``refunded``; the units go back
          on sale only while the sale is open (after it ended they stay counted as
          sold: they are the shop's to restock, not this sale's).
        - ``expired``, ``cancelled``, ``refunded`` absorb every event (a payment for an
          expired hold is reported as ``late``: the shop must refund it).

        So every event is idempotent, and events arriving out of order end in a final
        state rather than flip-flopping. Raises nothing; an unknown order gives None.
        """
        order = self.orders.get(oid)
        if order is None:
            return Settled(None, applied=False)
        if order.status == "held":
            if kind == "paid":
                _, sold_out = self.pay(oid)
                return Settled(order, applied=True, sold_out=sold_out)
            self.release(oid, "cancelled")
            return Settled(order, applied=True)
        if order.status == "paid" and kind != "paid":
            sale = self.sales.get(order.sale)
            order.status = "refunded"
            if sale is not None and sale.status == "active":
                sale.sold -= order.qty
                sale.remaining += order.qty
                self.units[(order.sale, order.user)] -= order.qty
            return Settled(order, applied=True)
        return Settled(order, applied=False, late=kind == "paid" and order.status == "expired")

    def expire_due(self, now: int) -> list[Order]:
        """Release every hold whose payment window has passed."""
        due = [o.id for o in self.orders.values() if o.status == "held" and o.expires_at <= now]
        return [o for oid in due if (o := self.release(oid, "expired")) is not None]

    def end(self, sale_id: str, reason: EndReason) -> Sale | None:
        """End an active sale; None if it was not active (so it ends exactly once)."""
        sale = self.sales.get(sale_id)
        if sale is None or sale.status != "active":
            return None
        sale.status, sale.reason = "ended", reason
        return sale

    def end_due(self, now: int) -> list[Sale]:
        """End every active sale whose end time has come."""
        due = [s.id for s in self.active() if s.ends_at <= now]
        return [s for sid in due if (s := self.end(sid, "expired")) is not None]

    def user_orders(self, user: str) -> list[Order]:
        return sorted(
            (o for o in self.orders.values() if o.user == user), key=lambda o: o.created_at
        )
