"""Group buys (pin tuan): the rules. Pure: no I/O, time (unix ms) is an argument.

The host sells a product by group: a group price, a group size (2 to 50), a window
(1 minute to 24 hours) and how many units are for groups. A viewer opens a group or
joins one (a share link carries its id); joining holds one unit at the group price.
When the last slot is taken the group **fills**: every member's hold becomes an order
(held, sent to the shop through the outbox) in that same step. When the window ends
short the group **fails**: every hold is released, its units go back. For every deal
and group, at every moment::

    remaining + units held by forming groups + units of filled groups == stock
    members <= size,   a filled group has exactly size members, each with one order

and a user is in at most one forming group of a deal (no hoarding of slots). The last
slot raced by many goes to exactly one.

:class:`GroupBook` keeps a room's deals and groups for the memory engine; the Redis
engine runs the same steps as Lua scripts (``backends/redis_promotions.py``), and one
contract suite checks that both agree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from livecommerce.errors import Error
from livecommerce.promotions import whole

DealStatus = Literal["active", "ended"]
GroupStatus = Literal["forming", "filled", "failed"]
JoinRefusal = Literal[
    "not_found", "group_closed", "group_full", "sold_out", "already_in_group", "banned"
]

MIN_SIZE, MAX_SIZE = 2, 50
MIN_WINDOW_S, MAX_WINDOW_S = 60, 24 * 3600
MAX_STOCK = 1_000_000
FORMING_SHOWN = 20
"""How many forming groups ``group.forming`` lists (those closest to filling)."""


@dataclass(slots=True)
class Deal:
    """A product sold by group, with its live count of units left for new members."""

    id: str
    room: str
    sku: str
    title: str
    price: int
    """The group price (minor units)."""
    size: int
    window_s: int
    stock: int
    remaining: int
    starts_at: int
    status: DealStatus = "active"

    def public(self) -> dict[str, Any]:
        """The protocol's ``deal`` object."""
        return {
            "id": self.id,
            "sku": self.sku,
            "title": self.title,
            "price": self.price,
            "size": self.size,
            "window_s": self.window_s,
            "stock": self.stock,
            "remaining": self.remaining,
            "status": self.status,
        }

    def to_record(self) -> dict[str, str]:
        """As flat strings (a Redis hash)."""
        return {
            "id": self.id,
            "room": self.room,
            "sku": self.sku,
            "title": self.title,
            "price": str(self.price),
            "size": str(self.size),
            "window_s": str(self.window_s),
            "stock": str(self.stock),
            "remaining": str(self.remaining),
            "starts_at": str(self.starts_at),
            "status": self.status,
        }

    @classmethod
    def from_record(cls, r: dict[str, str]) -> Deal:
        return cls(
            id=r["id"],
            room=r["room"],
            sku=r["sku"],
            title=r["title"],
            price=int(r["price"]),
            size=int(r["size"]),
            window_s=int(r["window_s"]),
            stock=int(r["stock"]),
            remaining=int(r["remaining"]),
            starts_at=int(r["starts_at"]),
            status="ended" if r["status"] == "ended" else "active",
        )


@dataclass(slots=True)
class Group:
    """One group of a deal: its members in the order they joined."""

    id: str
    room: str
    deal: str
    size: int
    opened_at: int
    ends_at: int
    members: list[str] = field(default_factory=list)
    status: GroupStatus = "forming"

    @property
    def needed(self) -> int:
        return self.size - len(self.members)

    def public(self) -> dict[str, Any]:
        """The protocol's ``group`` object."""
        return {
            "id": self.id,
            "deal": self.deal,
            "size": self.size,
            "members": list(self.members),
            "needed": self.needed,
            "opened_at": self.opened_at,
            "ends_at": self.ends_at,
            "status": self.status,
        }


def new_deal(
    *,
    deal_id: str,
    room: str,
    product: tuple[str, str, int],
    price: Any,
    size: Any,
    window_minutes: Any,
    stock: Any,
    now: int,
) -> Deal:
    """A deal of ``product`` (sku, title, list price) started at ``now``.

    Raises:
        Error: ``bad_request``, naming the field and its rule.
    """

    sku, title, list_price = product
    price = whole("price", price, 0, max(list_price, 0))
    size = whole("size", size, MIN_SIZE, MAX_SIZE)
    minutes = whole("window_minutes", window_minutes, MIN_WINDOW_S // 60, MAX_WINDOW_S // 60)
    stock = whole("stock", stock, size, MAX_STOCK)
    return Deal(
        id=deal_id,
        room=room,
        sku=sku,
        title=title,
        price=price,
        size=size,
        window_s=minutes * 60,
        stock=stock,
        remaining=stock,
        starts_at=now,
    )


@dataclass(frozen=True, slots=True)
class Joined:
    """One open or join: the group as it now is (None if unknown), whether this call
    filled it, or why it was refused."""

    group: Group | None
    filled: bool = False
    refused: JoinRefusal | None = None

    def result(self) -> Group:
        if self.refused is None and self.group is not None:
            return self.group
        messages = {
            "not_found": "no such group in this room",
            "group_closed": "this group has closed",
            "group_full": "this group is full",
            "sold_out": "no units are left for groups",
            "already_in_group": "you are already in a group of this deal",
            "banned": "you are banned from this room",
        }
        code = self.refused or "not_found"
        if code == "already_in_group":
            raise Error("conflict", messages[code])
        raise Error(code, messages[code])


@dataclass
class GroupBook:
    """One room's deals and groups (the memory engine's store, the rules' model)."""

    deals: dict[str, Deal] = field(default_factory=dict)
    groups: dict[str, Group] = field(default_factory=dict)
    member_of: dict[tuple[str, str], str] = field(default_factory=dict)
    """(deal, user) -> the forming group the user is in."""

    def start(self, deal: Deal) -> bool:
        if deal.id in self.deals:
            return False
        self.deals[deal.id] = deal
        return True

    def stop(self, deal_id: str) -> Deal | None:
        """No new groups (forming ones go on); None if it was not active."""
        deal = self.deals.get(deal_id)
        if deal is None or deal.status != "active":
            return None
        deal.status = "ended"
        return deal

    def open(self, deal_id: str, group_id: str, user: str, now: int) -> Joined:
        """``user`` opens a group of the deal, as its first member."""
        deal = self.deals.get(deal_id)
        if deal is None:
            return Joined(None, refused="not_found")
        if deal.status != "active":
            return Joined(None, refused="group_closed")
        group = Group(group_id, deal.room, deal_id, deal.size, now, now + deal.window_s * 1000)
        refused = self._admit(deal, group, user)
        if refused is not None:
            return Joined(None, refused=refused)
        self.groups[group_id] = group
        return self._add(deal, group, user)

    def join(self, group_id: str, user: str, now: int) -> Joined:
        """``user`` takes a slot of a forming group; the last slot fills it."""
        group = self.groups.get(group_id)
        if group is None:
            return Joined(None, refused="not_found")
        if group.status != "forming" or now >= group.ends_at:
            return Joined(group, refused="group_closed")
        if user in group.members:
            return Joined(group)  # in already: the same answer again
        if group.needed <= 0:
            return Joined(group, refused="group_full")
        refused = self._admit(self.deals[group.deal], group, user)
        if refused is not None:
            return Joined(group, refused=refused)
        return self._add(self.deals[group.deal], group, user)

    def _admit(self, deal: Deal, group: Group, user: str) -> JoinRefusal | None:
        if (deal.id, user) in self.member_of:
            return "already_in_group"
        if deal.remaining < 1:
            return "sold_out"
        return None

    def _add(self, deal: Deal, group: Group, user: str) -> Joined:
        deal.remaining -= 1
        group.members.append(user)
        self.member_of[(deal.id, user)] = group.id
        if group.needed:
            return Joined(group)
        group.status = "filled"
        self._release_members(group)
        return Joined(group, filled=True)

    def _release_members(self, group: Group) -> None:
        for member in group.members:
            self.member_of.pop((group.deal, member), None)

    def expire_due(self, now: int) -> list[Group]:
        """Fail every forming group whose window ended: its units go back."""
        failed = []
        for group in self.groups.values():
            if group.status == "forming" and now >= group.ends_at:
                group.status = "failed"
                self.deals[group.deal].remaining += len(group.members)
                self._release_members(group)
                failed.append(group)
        return failed

    def forming(self) -> list[Group]:
        """The forming groups, those closest to filling first."""
        live = [g for g in self.groups.values() if g.status == "forming"]
        return sorted(live, key=lambda g: (g.needed, g.ends_at, g.id))
