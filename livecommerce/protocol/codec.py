"""Commands from JSON bytes, events and replies to JSON bytes.

Contract of :func:`decode`: for any input it either returns a :class:`Command` whose
arguments all have the declared types, or raises :class:`~livecommerce.errors.Error`
with code ``bad_request``. Nothing else escapes. The command's ``id`` is kept on the
error (``Error.data["id"]``) whenever it could be read, so the reply can carry it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, TypeGuard

import orjson

from livecommerce.errors import Error

MAX_ID: Final = 2**53
MAX_PRICE: Final = 10_000_000_000
"""Prices are integers in the smallest currency unit."""
MAX_STOCK: Final = 1_000_000
MAX_QTY: Final = 100
ROOM_ID = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
"""Room ids: lowercase, digits, ``_`` and ``-``; never ``{`` or ``}`` (Redis hash tags)."""

MAX_USER_ID: Final = 128


def is_user_id(v: Any) -> TypeGuard[str]:
    """The one rule for a user id, wherever one comes from (a token's ``sub``, a
    command's ``user``): 1 to 128 printable characters, so no control character, line
    or paragraph separator or invisible format character (a newline once let a
    moderator's ``user`` put its own line in front of a private event)."""
    return type(v) is str and 0 < len(v) <= MAX_USER_ID and v.isprintable()


_Check = Callable[[Any], bool]

REPORT_REASONS: Final = frozenset(
    {"spam", "fraud", "harassment", "false_claims", "prohibited_item", "other"}
)
"""Why a viewer reports a message or the show (``report``'s ``reason``)."""


def _is_int(lo: int, hi: int) -> _Check:
    return lambda v: type(v) is int and lo <= v <= hi


def _is_str(max_len: int) -> _Check:
    return lambda v: type(v) is str and len(v) <= max_len


def _is_id(v: Any) -> bool:
    return type(v) is str and 0 < len(v) <= 64


def _is_ref(v: Any) -> bool:
    """An id that may carry its room (``<room>.<id>``: giveaways, groups, auctions)."""
    return type(v) is str and 0 < len(v) <= 80


def _is_text(most: int) -> Callable[[Any], bool]:
    return lambda v: type(v) is str and 0 < len(v) <= most


def _is_terms(v: Any) -> bool:
    return type(v) is list and len(v) <= 100 and all(type(t) is str and 0 < len(t) <= 64 for t in v)


FILTER_ACTIONS: Final = ("block", "mask", "flag")


def _is_room(v: Any) -> bool:
    return type(v) is str and ROOM_ID.fullmatch(v) is not None


_ROOM: Final = ("room", _is_room, True)
_USER: Final = ("user", is_user_id, True)

# op -> ((field, check, required), ...). The shape only: rights, limits and content are
# checked later, by the service, in the order PROTOCOL.md gives.
OPS: Final[dict[str, tuple[tuple[str, _Check, bool], ...]]] = {
    "connect": (("token", _is_str(4096), False),),
    "refresh": (("token", _is_str(4096), True),),
    "join": (_ROOM, ("since", _is_int(0, MAX_ID), False), ("epoch", _is_str(64), False)),
    "leave": (_ROOM,),
    "chat": (_ROOM, ("text", _is_str(4096), True)),
    "like": (_ROOM, ("count", _is_int(1, 50), True)),
    "ping": (),
    "announce": (_ROOM, ("text", _is_str(4096), True)),
    "room.start": (_ROOM,),
    "room.end": (_ROOM,),
    "mod.delete": (_ROOM, ("msg_id", _is_str(64), True)),
    "mod.mute": (_ROOM, _USER, ("seconds", _is_int(1, 30 * 86400), True)),
    "mod.ban": (_ROOM, _USER),
    "mod.unban": (_ROOM, _USER),
    "mod.slow": (_ROOM, ("seconds", _is_int(0, 3600), True)),
    "mod.filter": (
        _ROOM,
        ("add", _is_terms, False),
        ("remove", _is_terms, False),
        ("action", lambda v: v in FILTER_ACTIONS, False),
        ("leet", lambda v: type(v) is bool, False),
    ),
    "mod.approve": (_ROOM, ("msg_id", _is_str(64), True)),
    "pin": (_ROOM, ("sku", _is_id, True)),
    "unpin": (_ROOM, ("sku", _is_id, True)),
    "sale.start": (
        _ROOM,
        ("sku", _is_id, True),
        ("price", _is_int(0, MAX_PRICE), True),
        ("stock", _is_int(1, MAX_STOCK), True),
        ("limit_per_user", _is_int(1, MAX_QTY), True),
        ("duration_s", _is_int(1, 86400), True),
        ("price_b", _is_int(0, MAX_PRICE), False),
    ),
    "sale.stop": (_ROOM, ("sale", _is_id, True)),
    # the coupon's rules (kinds, bounds, the window) are checked by promotions.coupons
    "coupon.drop": (
        _ROOM,
        ("kind", lambda v: v in ("amount", "percent"), True),
        ("value", _is_int(1, MAX_PRICE), True),
        ("min_total", _is_int(0, MAX_PRICE), False),
        ("skus", lambda v: type(v) is list and len(v) <= 100 and all(map(_is_id, v)), False),
        ("quantity", _is_int(1, MAX_STOCK), True),
        ("per_user", _is_int(1, MAX_QTY), False),
        ("minutes", _is_int(1, 1440), False),
        ("until", _is_int(0, MAX_ID), False),
        ("watch_minutes", _is_int(0, 600), False),
    ),
    "coupon.stop": (_ROOM, ("coupon", _is_id, True)),
    "coupon.claim": (_ROOM, ("coupon", _is_id, True)),
    # the giveaway's rules (bounds, the keyword, the watch time) are in promotions.giveaways
    "giveaway.start": (
        _ROOM,
        ("prize", _is_text(80), False),
        ("sku", _is_id, False),
        ("winners", _is_int(1, 100), False),
        ("duration_s", _is_int(30, 900), True),
        ("entry", lambda v: v in ("button", "keyword"), True),
        ("keyword", _is_text(32), False),
        ("verified_only", lambda v: type(v) is bool, False),
        ("watch_minutes", _is_int(0, 14), False),
    ),
    "giveaway.enter": (_ROOM, ("giveaway", _is_ref, True)),
    "giveaway.draw": (_ROOM, ("giveaway", _is_ref, True)),
    "giveaway.cancel": (_ROOM, ("giveaway", _is_ref, True)),
    # the deal's rules (bounds; price at most the list price) are in promotions.groups
    "deal.start": (
        _ROOM,
        ("sku", _is_id, True),
        ("price", _is_int(0, MAX_PRICE), True),
        ("size", _is_int(2, 50), True),
        ("window_minutes", _is_int(1, 1440), True),
        ("stock", _is_int(2, MAX_STOCK), True),
    ),
    "deal.stop": (_ROOM, ("deal", _is_id, True)),
    "group.open": (_ROOM, ("deal", _is_id, True)),
    "group.join": (_ROOM, ("group", _is_ref, True)),
    # the lot's rules (bounds, the increments' bands) are in promotions.auctions
    "auction.start": (
        _ROOM,
        ("sku", _is_id, True),
        ("start_bid", _is_int(1, MAX_PRICE), True),
        ("duration_s", _is_int(10, 300), True),
        ("extend_s", _is_int(0, 60), False),
        ("max_extensions", _is_int(0, 100), False),
        ("increments", lambda v: type(v) is list and len(v) <= 20, False),
    ),
    "bid": (
        _ROOM,
        ("auction", _is_ref, True),
        ("amount", _is_int(1, MAX_PRICE), True),
        ("max", _is_int(1, MAX_PRICE), False),
    ),
    "product.open": (_ROOM, ("sku", _is_id, True)),
    "report": (
        _ROOM,
        ("reason", lambda v: type(v) is str and v in REPORT_REASONS, True),
        ("msg_id", _is_id, False),
        ("note", _is_text(200), False),
    ),
    "order": (
        _ROOM,
        ("sale", _is_id, True),
        ("qty", _is_int(1, MAX_QTY), True),
        ("key", _is_id, True),
        ("coupon", _is_id, False),
    ),
}


@dataclass(frozen=True, slots=True)
class Command:
    """One decoded client command. ``args`` holds only declared, type-checked fields."""

    op: str
    id: int | None
    args: Mapping[str, Any]

    @property
    def room(self) -> str:
        """The ``room`` argument (every op that has one requires it)."""
        room: str = self.args["room"]
        return room


def _bad(message: str, cid: int | None) -> Error:
    return Error("bad_request", message, data=None if cid is None else {"id": cid})


def decode(data: bytes | str) -> Command:
    """Decode one client frame into a command.

    Raises:
        Error: ``bad_request`` for invalid JSON, a non-object, an unknown op, or a missing
            or mistyped field. Unknown extra fields are ignored (forward compatibility).
    """
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise _bad("frame is not valid JSON", None) from None
    if type(obj) is not dict:
        raise _bad("a command is a JSON object", None)
    cid = obj.get("id")
    if cid is not None and not (type(cid) is int and 0 <= cid <= MAX_ID):
        raise _bad("id must be a non-negative integer", None)
    op = obj.get("op")
    if type(op) is not str:
        raise _bad("op must be a string", cid)
    spec = OPS.get(op)
    if spec is None:
        raise _bad(f"unknown op {op[:40]!r}", cid)
    args: dict[str, Any] = {}
    for name, check, required in spec:
        value = obj.get(name)
        if value is None:
            if required:
                raise _bad(f"{op}: {name} is required", cid)
            continue
        if not check(value):
            raise _bad(f"{op}: {name} is invalid", cid)
        args[name] = value
    return Command(op, cid, args)


def loads(data: bytes | str) -> Any:
    """Parse JSON (for clients, tests and the rare server path that reads an event)."""
    return orjson.loads(data)


def dumps(obj: Any) -> bytes:
    """Serialise to compact JSON bytes."""
    return orjson.dumps(obj)


def encode_reply(cid: int, data: Mapping[str, Any]) -> bytes:
    """A success reply to the command with id ``cid``."""
    return orjson.dumps({"id": cid, "ok": True, "data": data})


def encode_error(cid: int, err: Error) -> bytes:
    """A failure reply to the command with id ``cid``."""
    body: dict[str, Any] = {"code": err.code, "message": err.message}
    if err.data:
        body.update((k, v) for k, v in err.data.items() if k != "id")
    return orjson.dumps({"id": cid, "ok": False, "error": body})


def encode_event(type_: str, room: str, ts: int, fields: Mapping[str, Any]) -> bytes:
    """Encode one event line (without ``seq``; see :func:`sequence`)."""
    return orjson.dumps({"type": type_, "room": room, "ts": ts, **fields})


_SEQ_PREFIX: Final = b'{"seq":'


def sequence(seq: int, body: bytes) -> bytes:
    """Put ``seq`` first into an encoded event object.

    The Redis publish script does the same in Lua (``'{"seq":' .. seq .. ',' ..
    body:sub(2)``), so a line's seq can be read back without parsing the JSON.
    """
    return b'{"seq":%d,%s' % (seq, body[1:])


def line_seq(line: bytes) -> int | None:
    """The ``seq`` of a line made by :func:`sequence`, or None for an unsequenced one."""
    if not line.startswith(_SEQ_PREFIX):
        return None
    end = line.index(b",", 7)
    return int(line[7:end])


def fragment(line: bytes) -> Any:
    """Embed an already encoded JSON value in a structure to encode, without re-parsing."""
    return orjson.Fragment(line)


def split_frame(frame: bytes | str) -> list[Any]:
    """Parse a server frame: newline-delimited JSON objects."""
    raw = frame.encode() if isinstance(frame, str) else frame
    return [orjson.loads(line) for line in raw.split(b"\n") if line]
