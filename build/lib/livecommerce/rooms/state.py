"""A room's durable description and the rules on it. Pure."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

from livecommerce.errors import Error

Status = Literal["scheduled", "live", "ended"]
STATUSES: tuple[Status, ...] = ("scheduled", "live", "ended")


@dataclass(frozen=True, slots=True)
class Room:
    """A show. ``status`` goes scheduled -> live -> ended and never back."""

    id: str
    title: str
    host: str
    status: Status = "scheduled"
    created_at: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def started(self) -> Room:
        """The room gone live.

        Raises:
            Error: ``conflict`` when it is already live or has ended.
        """
        if self.status != "scheduled":
            raise Error("conflict", f"room is {self.status}, not scheduled")
        return replace(self, status="live")

    def ended(self) -> Room:
        """The room ended (from scheduled or live).

        Raises:
            Error: ``conflict`` when it has already ended.
        """
        if self.status == "ended":
            raise Error("conflict", "room has already ended")
        return replace(self, status="ended")

    def require_live(self) -> None:
        """Raises ``room_not_live`` unless the room is live."""
        if self.status != "live":
            raise Error("room_not_live", f"room is {self.status}")


def clean_text(text: str, max_chars: int) -> str:
    """Trim ``text`` and check it is 1 to ``max_chars`` characters.

    Raises:
        Error: ``bad_request`` when empty after trimming or too long.
    """
    text = text.strip()
    if not text:
        raise Error("bad_request", "text is empty")
    if len(text) > max_chars:
        raise Error("bad_request", f"text is longer than {max_chars} characters")
    return text
