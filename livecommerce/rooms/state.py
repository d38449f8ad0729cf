"""A room's durable description and the rules on it. Pure."""

from __future__ import annotations

import unicodedata
from dataclasses import asdict, dataclass, replace
from typing import Any, Final, Literal

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


BIDI_CONTROLS: Final = dict.fromkeys(
    [*range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x200E, 0x200F, 0x061C]
)
"""Bidirectional formatting characters (embeddings, overrides, isolates, marks): a
message could reverse what follows it on screen (a price, a link, the next line)."""
_SEEN: Final = frozenset("LNPS")
"""Categories of characters that show: letters, numbers, punctuation, symbols."""
_BLANK: Final = frozenset("\u115f\u1160\u3164\uffa0\u2800\u180e")
"""Letters and symbols that show nothing (Hangul fillers, the blank Braille pattern)."""


def clean_text(text: str, max_chars: int) -> str:
    """``text`` without bidirectional controls and trimmed; it must be 1 to
    ``max_chars`` characters and show something (not only spaces, invisible format
    characters, marks or blank fillers).

    Raises:
        Error: ``bad_request`` when nothing would show, or too long.
    """
    text = text.translate(BIDI_CONTROLS).strip()
    if not any(c not in _BLANK and unicodedata.category(c)[0] in _SEEN for c in text):
        raise Error("bad_request", "text is empty (nothing in it shows)")
    if len(text) > max_chars:
        raise Error("bad_request", f"text is longer than {max_chars} characters")
    return text
