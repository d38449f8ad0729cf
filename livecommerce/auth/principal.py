"""Who is speaking, and their role in a given room."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final, Literal

Role = Literal["guest", "viewer", "moderator", "host", "admin"]
GUEST_ROLE: Final = "guest"
TOKEN_ROLES: Final = frozenset({"viewer", "moderator", "host", "admin"})


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated user (or a guest).

    Attributes:
        id: the user id (token ``sub``); guests get ``guest:<random>``.
        name: display name.
        role: the role claimed by the token.
        rooms: rooms the role applies to; None means every room (admin) or no
            restriction needed (viewer).
        exp: when the token expires (unix seconds), None for a guest.
    """

    id: str
    name: str
    role: Role
    rooms: frozenset[str] | None = None
    exp: float | None = field(default=None, compare=False)
    """When the token expires (unix seconds); None for a guest."""
    verified: bool = field(default=False, compare=False)
    """The token's ``verified`` claim: what the shop vouches for (a follower, a verified
    buyer); giveaways may be for verified viewers only."""

    def role_in(self, room: str, room_host: str | None) -> Role:
        """The effective role in ``room``, whose owner is ``room_host``.

        Hosts and moderators hold their role only in the rooms their token lists; a host
        also holds it in rooms they created. Elsewhere they are plain viewers.
        """
        role = self.role
        if role in ("guest", "viewer", "admin"):
            return role
        if role == "host" and room_host == self.id:
            return "host"
        if self.rooms is not None and room in self.rooms:
            return role
        return "viewer"

    def as_user(self) -> dict[str, str]:
        """The public ``user`` object of the protocol."""
        return {"id": self.id, "name": self.name, "role": self.role}


def guest(suffix: str) -> Principal:
    """A guest principal: may watch, nothing else."""
    return Principal(id=f"guest:{suffix}", name="Guest", role="guest")
