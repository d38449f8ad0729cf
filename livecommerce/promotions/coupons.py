"""Live coupons: the rules. Pure: no I/O, time (unix ms) is an argument.

A host drops a coupon into a live room: an amount or a percentage off, a minimum
order total, the products it applies to (none listed: all of the show's), how many
there are, how many one viewer may claim, a claim window and an optional gate (watched
at least so long in this show). Viewers claim it while it lasts. For every coupon, at
every moment::

    0 <= claimed <= quantity      and      a user's claims <= per_user

:class:`CouponBook` keeps a room's coupons and claims for the memory engine; the Redis
engine runs the same claim in one Lua script (``backends/redis_promotions.py``), and
one contract suite checks that both agree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from livecommerce.errors import Error
from livecommerce.promotions import whole

CouponKind = Literal["amount", "percent"]
CouponRule = Literal["unclaimed", "sku", "min_total"]
"""Why a coupon does not apply to an order: not claimed (or already spent) by the
buyer, not for the product, or the order under its minimum."""
CouponStatus = Literal["active", "ended"]
CouponEnd = Literal["stopped", "expired", "claimed"]
"""Why a coupon ended: the host stopped it, its window closed, or every one was claimed."""

MAX_AMOUNT = 10_000_000_000
MAX_QUANTITY = 1_000_000
MAX_PER_USER = 100
MAX_WINDOW_MS = 24 * 3600 * 1000
MAX_WATCH_S = 600 * 60
MAX_SKUS = 100


@dataclass(slots=True)
class Coupon:
    """A coupon dropped in a room, with its live count of claims."""

    id: str
    room: str
    kind: CouponKind
    value: int
    """``amount``: minor units off the order; ``percent``: 5 to 90."""
    min_total: int
    """The least order total (price x quantity, minor units) it applies to."""
    skus: tuple[str, ...]
    """The products it applies to; empty: every product of the show."""
    quantity: int
    per_user: int
    watch_s: int
    """The gate: a viewer must have watched the show this long (0: no gate)."""
    starts_at: int
    ends_at: int
    """When claiming ends (unix ms); 0: until the host stops it."""
    status: CouponStatus = "active"
    reason: CouponEnd | None = None
    claimed: int = 0

    @property
    def remaining(self) -> int:
        return self.quantity - self.claimed

    def public(self) -> dict[str, Any]:
        """The protocol's ``coupon`` object."""
        return {
            "id": self.id,
            "kind": self.kind,
            "value": self.value,
            "min_total": self.min_total,
            "skus": list(self.skus),
            "quantity": self.quantity,
            "per_user": self.per_user,
            "watch_s": self.watch_s,
            "starts_at": self.starts_at,
            "ends_at": self.ends_at,
            "remaining": self.remaining,
        }

    def to_record(self) -> dict[str, str]:
        """The coupon as flat strings (a Redis hash)."""
        return {
            "id": self.id,
            "room": self.room,
            "kind": self.kind,
            "value": str(self.value),
            "min_total": str(self.min_total),
            "skus": "\n".join(self.skus),
            "quantity": str(self.quantity),
            "per_user": str(self.per_user),
            "watch_s": str(self.watch_s),
            "starts_at": str(self.starts_at),
            "ends_at": str(self.ends_at),
            "status": self.status,
            "reason": self.reason or "",
            "claimed": str(self.claimed),
        }

    @classmethod
    def from_record(cls, r: dict[str, str]) -> Coupon:
        return cls(
            id=r["id"],
            room=r["room"],
            kind="percent" if r["kind"] == "percent" else "amount",
            value=int(r["value"]),
            min_total=int(r["min_total"]),
            skus=tuple(s for s in r["skus"].split("\n") if s),
            quantity=int(r["quantity"]),
            per_user=int(r["per_user"]),
            watch_s=int(r["watch_s"]),
            starts_at=int(r["starts_at"]),
            ends_at=int(r["ends_at"]),
            status="ended" if r["status"] == "ended" else "active",
            reason=r["reason"] or None,  # type: ignore[arg-type]
            claimed=int(r["claimed"]),
        )

    def open_at(self, now: int) -> bool:
        """Whether it can be claimed at ``now`` (active, inside its window)."""
        return self.status == "active" and (self.ends_at == 0 or now < self.ends_at)

    def missed_rule(self, *, sku: str, total: int) -> CouponRule | None:
        """The rule an order of ``sku`` worth ``total`` misses (None: it applies)."""
        if self.skus and sku not in self.skus:
            return "sku"
        if total < self.min_total:
            return "min_total"
        return None

    def discount(self, *, sku: str, total: int) -> int:
        """What it takes off an order of ``sku`` worth ``total`` (minor units): the
        amount, or the percentage rounded down, never more than the total.

        Raises:
            Error: ``coupon_not_applicable``, saying which rule the order misses.
        """
        rule = self.missed_rule(sku=sku, total=total)
        if rule is not None:
            raise not_applicable(rule, self)
        off = self.value if self.kind == "amount" else total * self.value // 100
        return min(off, total)


def not_applicable(rule: str, coupon: Coupon | None = None) -> Error:
    """The ``coupon_not_applicable`` refusal, saying which rule the order missed."""
    messages = {
        "unclaimed": "claim this coupon first (each claim pays for one order)",
        "sku": "this coupon is for "
        + (", ".join(coupon.skus) if coupon is not None else "other products"),
        "min_total": (
            f"this coupon needs an order of at least {coupon.min_total}"
            if coupon is not None
            else "the order is under this coupon's minimum total"
        ),
    }
    return Error(
        "coupon_not_applicable", messages.get(rule, "this coupon does not apply"),
        data={"rule": rule},
    )  # fmt: skip


def new_coupon(
    *,
    coupon_id: str,
    room: str,
    kind: Any,
    value: Any,
    min_total: Any,
    skus: Any,
    quantity: Any,
    per_user: Any,
    minutes: Any,
    until: Any,
    watch_minutes: Any,
    now: int,
) -> Coupon:
    """A coupon dropped at ``now``; the window is ``minutes`` after the drop, or until
    ``until`` (unix ms), or, with neither, until the host stops it.

    Raises:
        Error: ``bad_request``, naming the field and its rule.
    """

    if kind not in ("amount", "percent"):
        raise Error("bad_request", "kind must be amount or percent")
    if kind == "percent":
        value = whole("value", value, 5, 90)
    else:
        value = whole("value", value, 1, MAX_AMOUNT)
    min_total = whole("min_total", 0 if min_total is None else min_total, 0, MAX_AMOUNT)
    if skus is None:
        skus = []
    if type(skus) is not list or len(skus) > MAX_SKUS:
        raise Error("bad_request", f"skus must be a list of at most {MAX_SKUS} skus")
    if not all(type(s) is str and 0 < len(s) <= 64 for s in skus):
        raise Error("bad_request", "skus: each 1 to 64 characters")
    quantity = whole("quantity", quantity, 1, MAX_QUANTITY)
    per_user = whole("per_user", 1 if per_user is None else per_user, 1, MAX_PER_USER)
    if minutes is not None and until is not None:
        raise Error("bad_request", "give minutes or until, not both")
    ends_at = 0
    if minutes is not None:
        ends_at = now + whole("minutes", minutes, 1, MAX_WINDOW_MS // 60_000) * 60_000
    elif until is not None:
        ends_at = whole("until", until, now + 60_000, now + MAX_WINDOW_MS)
    watch_s = 60 * whole(
        "watch_minutes", 0 if watch_minutes is None else watch_minutes, 0, MAX_WATCH_S // 60
    )
    return Coupon(
        id=coupon_id,
        room=room,
        kind=kind,
        value=value,
        min_total=min_total,
        skus=tuple(dict.fromkeys(skus)),
        quantity=quantity,
        per_user=per_user,
        watch_s=watch_s,
        starts_at=now,
        ends_at=ends_at,
    )


ClaimRefusal = Literal[
    "not_found", "banned", "not_eligible", "coupon_ended", "limit_exceeded", "sold_out"
]
ClaimRequest = tuple[str, float]
"""One claim to serve: the user, and the seconds they have watched the show."""


@dataclass(frozen=True, slots=True)
class Claimed:
    """The outcome of one claim: the coupon as it now is (None if unknown), and the
    user's claims of it after the claim, or why it was refused."""

    coupon: Coupon | None
    mine: int
    refused: ClaimRefusal | None = None

    def result(self) -> Coupon:
        """The coupon, or the refusal raised as the protocol's error."""
        if self.refused is None and self.coupon is not None:
            return self.coupon
        code = self.refused or "not_found"
        if code == "not_eligible" and self.coupon is not None:
            minutes = -(-self.coupon.watch_s // 60)
            raise Error(
                "not_eligible",
                f"only viewers who watched {minutes} minute{'s' if minutes > 1 else ''} of the "
                "show may claim it",
                data={"watch_s": self.coupon.watch_s},
            )
        messages = {
            "not_found": "no such coupon in this room",
            "banned": "you are banned from this room",
            "coupon_ended": "this coupon can no longer be claimed",
            "limit_exceeded": "you have claimed as many of this coupon as one viewer may",
            "sold_out": "every one of this coupon is claimed",
        }
        raise Error(code, messages[code])


@dataclass
class CouponBook:
    """One room's coupons and claims (the memory engine's store, the rules' model)."""

    coupons: dict[str, Coupon] = field(default_factory=dict)
    claims: dict[tuple[str, str], int] = field(default_factory=dict)
    spent: dict[tuple[str, str], int] = field(default_factory=dict)
    """(coupon, user) -> claims spent on orders still held or paid."""
    claimed_by: dict[str, list[str]] = field(default_factory=dict)
    """user -> the coupons they claimed (where an order's "best" coupon is looked for)."""

    def spendable(self, coupon_id: str, user: str) -> int:
        """The user's claims of the coupon not spent on an order."""
        key = (coupon_id, user)
        return self.claims.get(key, 0) - self.spent.get(key, 0)

    def spend(self, coupon_id: str, user: str, n: int) -> None:
        """Mark ``n`` of the user's claims spent (negative: given back)."""
        key = (coupon_id, user)
        self.spent[key] = self.spent.get(key, 0) + n

    def drop(self, coupon: Coupon) -> bool:
        """Add ``coupon``; False (and nothing changes) if its id is taken."""
        if coupon.id in self.coupons:
            return False
        self.coupons[coupon.id] = coupon
        return True

    def claim(self, coupon_id: str, user: str, now: int, watched_s: float = 0) -> Claimed:
        """One claim of ``user``, who has watched the show ``watched_s`` seconds: never
        more claims than the quantity, never more than ``per_user`` for one user, none
        before the watch-time gate."""
        coupon = self.coupons.get(coupon_id)
        if coupon is None:
            return Claimed(None, 0, "not_found")
        mine = self.claims.get((coupon_id, user), 0)
        if watched_s < coupon.watch_s:
            return Claimed(coupon, mine, "not_eligible")
        if not coupon.open_at(now):
            return Claimed(coupon, mine, "coupon_ended")
        if mine >= coupon.per_user:
            return Claimed(coupon, mine, "limit_exceeded")
        if coupon.claimed >= coupon.quantity:
            return Claimed(coupon, mine, "sold_out")
        coupon.claimed += 1
        self.claims[(coupon_id, user)] = mine + 1
        if not mine:
            self.claimed_by.setdefault(user, []).append(coupon_id)
        return Claimed(coupon, mine + 1)

    def end(self, coupon_id: str, reason: CouponEnd) -> Coupon | None:
        """End an active coupon; the coupon if this call ended it, else None."""
        coupon = self.coupons.get(coupon_id)
        if coupon is None or coupon.status != "active":
            return None
        coupon.status, coupon.reason = "ended", reason
        return coupon

    def due(self, now: int) -> list[str]:
        """Active coupons whose window has closed, or that are all claimed."""
        return [
            c.id
            for c in self.coupons.values()
            if c.status == "active" and ((c.ends_at and now >= c.ends_at) or not c.remaining)
        ]
