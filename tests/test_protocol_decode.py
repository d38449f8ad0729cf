"""``livecommerce.protocol.decode`` under arbitrary input, and the codec's framing helpers.

The decoder's contract (``protocol/codec.py``): for any input it either returns a
``Command`` whose arguments all have the declared types, or raises ``Error`` with code
``bad_request``; nothing else ever escapes. The field table below restates the declared
shapes independently of the code, so a drift between the two fails here.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from livecommerce.errors import Error
from livecommerce.protocol import (
    OPS,
    ROOM_ID,
    Command,
    decode,
    encode_event,
    line_seq,
    loads,
    sequence,
    split_frame,
    text_frame,
)

MAX_ID = 2**53

# -- the declared shapes, restated -------------------------------------------------------


@dataclass(frozen=True)
class Field:
    """One command field: its kind (``int``, ``str``, ``id``, ``user``, ``bool``,
    ``room``, ``terms`` or ``action``) and its bounds.

    For ``int`` the bounds are the inclusive value range; for ``str`` ``hi`` is the
    maximum length; ``room`` must match ``ROOM_ID`` in full.
    """

    kind: str
    required: bool
    lo: int = 0
    hi: int = 0
    options: tuple[str, ...] = ()
    """``choice``: the values accepted."""

    def accepts(self, value: Any) -> bool:
        if self.kind == "int":
            return type(value) is int and self.lo <= value <= self.hi
        if self.kind == "str":
            return type(value) is str and len(value) <= self.hi
        if self.kind == "id":
            return type(value) is str and 0 < len(value) <= self.hi
        if self.kind == "user":  # an id, of printable characters only
            return type(value) is str and 0 < len(value) <= self.hi and value.isprintable()
        if self.kind == "bool":
            return type(value) is bool
        if self.kind == "terms":  # a list of at most lo terms, each 1 to hi characters
            return (
                type(value) is list
                and len(value) <= self.lo
                and all(type(t) is str and 0 < len(t) <= self.hi for t in value)
            )
        if self.kind == "choice":
            return value in self.options
        if self.kind == "list":  # any list of at most hi items (the rules check each)
            return type(value) is list and len(value) <= self.hi
        return type(value) is str and ROOM_ID.fullmatch(value) is not None


ROOM = Field("room", True)
USER = Field("user", True, hi=128)
ID = Field("id", True, hi=64)
REF = Field("id", True, hi=80)
"""An id that carries its room (giveaways, groups)."""

SPEC: dict[str, dict[str, Field]] = {
    "connect": {"token": Field("str", False, hi=4096)},
    "refresh": {"token": Field("str", True, hi=4096)},
    "join": {
        "room": ROOM,
        "since": Field("int", False, 0, MAX_ID),
        "epoch": Field("str", False, hi=64),
    },
    "leave": {"room": ROOM},
    "chat": {"room": ROOM, "text": Field("str", True, hi=4096)},
    "like": {"room": ROOM, "count": Field("int", True, 1, 50)},
    "ping": {},
    "announce": {"room": ROOM, "text": Field("str", True, hi=4096)},
    "room.start": {"room": ROOM},
    "room.end": {"room": ROOM},
    "mod.delete": {"room": ROOM, "msg_id": Field("str", True, hi=64)},
    "mod.mute": {"room": ROOM, "user": USER, "seconds": Field("int", True, 1, 30 * 86400)},
    "mod.ban": {"room": ROOM, "user": USER},
    "mod.unban": {"room": ROOM, "user": USER},
    "mod.slow": {"room": ROOM, "seconds": Field("int", True, 0, 3600)},
    "mod.filter": {
        "room": ROOM,
        "add": Field("terms", False, 100, 64),
        "remove": Field("terms", False, 100, 64),
        "action": Field("choice", False, options=("block", "mask", "flag")),
        "leet": Field("bool", False),
    },
    "mod.approve": {"room": ROOM, "msg_id": Field("str", True, hi=64)},
    "pin": {"room": ROOM, "sku": ID},
    "unpin": {"room": ROOM, "sku": ID},
    "sale.start": {
        "room": ROOM,
        "sku": ID,
        "price": Field("int", True, 0, 10_000_000_000),
        "stock": Field("int", True, 1, 1_000_000),
        "limit_per_user": Field("int", True, 1, 100),
        "duration_s": Field("int", True, 1, 86400),
        "price_b": Field("int", False, 0, 10_000_000_000),
    },
    "sale.stop": {"room": ROOM, "sale": ID},
    "order": {
        "room": ROOM,
        "sale": ID,
        "qty": Field("int", True, 1, 100),
        "key": ID,
        "coupon": Field("id", False, hi=64),
    },
    "coupon.drop": {
        "room": ROOM,
        "kind": Field("choice", True, options=("amount", "percent")),
        "value": Field("int", True, 1, 10_000_000_000),
        "min_total": Field("int", False, 0, 10_000_000_000),
        "skus": Field("terms", False, 100, 64),
        "quantity": Field("int", True, 1, 1_000_000),
        "per_user": Field("int", False, 1, 100),
        "minutes": Field("int", False, 1, 1440),
        "until": Field("int", False, 0, MAX_ID),
        "watch_minutes": Field("int", False, 0, 600),
    },
    "coupon.stop": {"room": ROOM, "coupon": ID},
    "coupon.claim": {"room": ROOM, "coupon": ID},
    "giveaway.start": {
        "room": ROOM,
        "prize": Field("id", False, hi=80),
        "sku": Field("id", False, hi=64),
        "winners": Field("int", False, 1, 100),
        "duration_s": Field("int", True, 30, 900),
        "entry": Field("choice", True, options=("button", "keyword")),
        "keyword": Field("id", False, hi=32),
        "verified_only": Field("bool", False),
        "watch_minutes": Field("int", False, 0, 14),
    },
    "giveaway.enter": {"room": ROOM, "giveaway": REF},
    "giveaway.draw": {"room": ROOM, "giveaway": REF},
    "giveaway.cancel": {"room": ROOM, "giveaway": REF},
    "deal.start": {
        "room": ROOM,
        "sku": ID,
        "price": Field("int", True, 0, 10_000_000_000),
        "size": Field("int", True, 2, 50),
        "window_minutes": Field("int", True, 1, 1440),
        "stock": Field("int", True, 2, 1_000_000),
    },
    "deal.stop": {"room": ROOM, "deal": ID},
    "group.open": {"room": ROOM, "deal": ID},
    "group.join": {"room": ROOM, "group": REF},
    "product.open": {"room": ROOM, "sku": ID},
    "report": {
        "room": ROOM,
        "reason": Field(
            "choice",
            True,
            options=("spam", "fraud", "harassment", "false_claims", "prohibited_item", "other"),
        ),
        "msg_id": Field("id", False, hi=64),
        "note": Field("id", False, hi=200),
    },
    "auction.start": {
        "room": ROOM,
        "sku": ID,
        "start_bid": Field("int", True, 1, 10_000_000_000),
        "duration_s": Field("int", True, 10, 300),
        "extend_s": Field("int", False, 0, 60),
        "max_extensions": Field("int", False, 0, 100),
        "increments": Field("list", False, hi=20),
    },
    "bid": {
        "room": ROOM,
        "auction": REF,
        "amount": Field("int", True, 1, 10_000_000_000),
        "max": Field("int", False, 1, 10_000_000_000),
    },
}

ROOM_FIRST = "abcdefghijklmnopqrstuvwxyz0123456789"
ROOM_REST = ROOM_FIRST + "_-"


def check_contract(data: bytes | str) -> Command | Error:
    """Decode ``data`` and assert the contract; return what came out."""
    try:
        cmd = decode(data)
    except Error as err:
        assert err.code == "bad_request", err
        if err.data is not None:
            assert set(err.data) == {"id"}
            cid = err.data["id"]
            assert type(cid) is int and 0 <= cid <= MAX_ID
        return err
    assert isinstance(cmd, Command)
    assert cmd.op in SPEC
    assert cmd.id is None or (type(cmd.id) is int and 0 <= cmd.id <= MAX_ID)
    fields = SPEC[cmd.op]
    assert set(cmd.args) <= set(fields), f"undeclared args in {cmd.args!r}"
    for name, field in fields.items():
        if field.required:
            assert name in cmd.args, f"{cmd.op}: required {name} missing from {cmd.args!r}"
        if name in cmd.args:
            assert field.accepts(cmd.args[name]), f"{cmd.op}.{name} = {cmd.args[name]!r}"
    return cmd


# -- strategies ------------------------------------------------------------------------

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.integers(),  # beyond 64 bits too
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(st.text(max_size=10), children, max_size=5),
    ),
    max_leaves=25,
)

field_names = sorted({name for fields in SPEC.values() for name in fields} | {"id", "op"})


@st.composite
def command_like(draw: st.DrawFn) -> dict[str, Any]:
    """An object with a real (or near-real) op and arbitrary values under real names."""
    obj: dict[str, Any] = draw(st.dictionaries(st.text(max_size=8), json_values, max_size=3))
    obj["op"] = draw(st.one_of(st.sampled_from(sorted(OPS)), json_values))
    for name in draw(st.lists(st.sampled_from(field_names), max_size=5, unique=True)):
        obj[name] = draw(json_values)
    return obj


def room_ids() -> st.SearchStrategy[str]:
    return st.builds(
        lambda first, rest: first + rest,
        st.sampled_from(ROOM_FIRST),
        st.text(alphabet=ROOM_REST, max_size=63),
    )


def valid_value(field: Field) -> st.SearchStrategy[Any]:
    if field.kind == "room":
        return room_ids()
    if field.kind == "int":
        return st.one_of(st.integers(field.lo, field.hi), st.sampled_from([field.lo, field.hi]))
    if field.kind == "id":
        return st.one_of(st.text(min_size=1, max_size=30), st.just("é" * field.hi))
    if field.kind == "user":
        printable = st.characters(exclude_categories=["Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"])
        return st.one_of(
            st.text(printable, min_size=1, max_size=30).filter(str.isprintable),
            st.just("é" * field.hi),
        )
    if field.kind == "bool":
        return st.booleans()
    if field.kind == "terms":
        return st.lists(st.text(min_size=1, max_size=field.hi), max_size=field.lo)
    if field.kind == "list":
        return st.lists(st.lists(st.integers(0, 10**6), min_size=2, max_size=2), max_size=field.hi)
    if field.kind == "choice":
        return st.sampled_from(field.options)
    return st.one_of(st.text(max_size=30), st.just("é" * field.hi))


def invalid_values(field: Field) -> st.SearchStrategy[Any]:
    """Values of a wrong type or out of range for ``field`` (never None: that is 'missing')."""
    not_none = json_values.filter(lambda v: v is not None)
    wanted = {"int": int, "terms": list, "list": list, "bool": bool}.get(field.kind, str)
    wrong_type = not_none.filter(lambda v: type(v) is not wanted)
    bad: st.SearchStrategy[Any]
    if field.kind == "list":
        bad = st.just([[0, 1]] * (field.hi + 1))
    elif field.kind == "terms":
        bad = st.one_of(
            st.just([""]),
            st.just(["x" * (field.hi + 1)]),
            st.just(["x"] * (field.lo + 1)),
            st.lists(st.integers(), min_size=1, max_size=3),
        )
    elif field.kind == "choice":
        bad = st.text(max_size=10).filter(lambda v: v not in field.options)
    elif field.kind == "int":
        bad = st.one_of(
            st.sampled_from([True, False, field.lo - 1, field.hi + 1, float(field.lo)]),
            st.integers(max_value=field.lo - 1),
            st.integers(min_value=field.hi + 1, max_value=2**64 - 1),
            st.builds(str, st.integers(field.lo, field.hi)),
        )
    elif field.kind == "bool":
        bad = st.sampled_from([0, 1, "true", None]).filter(lambda v: v is not None)
    elif field.kind == "user":
        bad = st.one_of(
            st.sampled_from(["", "x" * (field.hi + 1), "a\nb", "\x00", "\u202e", "\u2028"]),
            st.text(min_size=1, max_size=10).filter(lambda v: not v.isprintable()),
        )
    elif field.kind in ("str", "id"):
        bad = st.one_of(
            st.just("" if field.kind == "id" else "x" * (field.hi + 1)),
            st.just("x" * (field.hi + 1)),
            st.integers(min_value=1, max_value=100).map(lambda n: "y" * (field.hi + n)),
        )
    else:
        bad = st.one_of(
            st.sampled_from(
                ["", "A", "Demo", "-a", "_a", "a" * 65, "a{b}", "{a}", "a b", "a\n", "é", "a/b"]
            ),
            st.text(max_size=70).filter(lambda s: ROOM_ID.fullmatch(s) is None),
        )
    return st.one_of(wrong_type, bad)


@st.composite
def valid_command(draw: st.DrawFn, op: str | None = None) -> dict[str, Any]:
    if op is None:
        op = draw(st.sampled_from(sorted(SPEC)))
    obj: dict[str, Any] = {"op": op}
    if draw(st.booleans()):
        obj["id"] = draw(st.integers(0, MAX_ID))
    for name, field in SPEC[op].items():
        if field.required or draw(st.booleans()):
            obj[name] = draw(valid_value(field))
    return obj


def to_wire(obj: Any, as_text: bool) -> bytes | str:
    text = json.dumps(obj, ensure_ascii=as_text)
    return text if as_text else text.encode()


# -- properties ------------------------------------------------------------------------


def test_spec_covers_every_op() -> None:
    """Every op the decoder knows is restated here, with the same field names."""
    assert set(SPEC) == set(OPS)
    for op, spec in OPS.items():
        declared = {name: required for name, _check, required in spec}
        assert declared == {name: f.required for name, f in SPEC[op].items()}, op


@given(st.binary(max_size=300))
@example(b"")
@example(b"\xff\xfe")
@example(b"[" * 2000 + b"]" * 2000)
@example(b'{"op": "ping", "id": 1e400}')
@example(b'{"op": "ping"}\x00')
@example(b'{"op": "ping", "op": 5}')
def test_arbitrary_bytes(data: bytes) -> None:
    check_contract(data)


@given(json_values, st.booleans())
def test_arbitrary_json(value: Any, as_text: bool) -> None:
    result = check_contract(to_wire(value, as_text))
    if not isinstance(value, dict):
        assert isinstance(result, Error)


@given(command_like(), st.booleans())
@settings(suppress_health_check=[HealthCheck.too_slow])
def test_arbitrary_values_under_real_field_names(obj: dict[str, Any], as_text: bool) -> None:
    check_contract(to_wire(obj, as_text))


@given(st.text(max_size=40))
@example('{"op":"ping","x":"\ud800"}')
def test_arbitrary_text(data: str) -> None:
    """``decode`` takes ``str`` too, lone surrogates included."""
    check_contract(data)


@given(valid_command(), st.booleans())
def test_valid_commands_decode_exactly(obj: dict[str, Any], as_text: bool) -> None:
    result = check_contract(to_wire(obj, as_text))
    assert isinstance(result, Command), result
    assert result.op == obj["op"]
    assert result.id == obj.get("id")
    assert dict(result.args) == {k: v for k, v in obj.items() if k not in ("op", "id")}


OP_FIELDS = [(op, name) for op, fields in sorted(SPEC.items()) for name in sorted(fields)]


def expect_refused(obj: dict[str, Any], as_text: bool = False) -> None:
    result = check_contract(to_wire(obj, as_text))
    assert isinstance(result, Error), f"accepted: {obj!r}"
    assert result.data == (None if "id" not in obj else {"id": obj["id"]})


@pytest.mark.parametrize(("op", "name"), OP_FIELDS)
@given(data=st.data(), as_text=st.booleans())
@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
def test_each_field_wrong_missing_or_out_of_range(
    op: str, name: str, data: st.DataObject, as_text: bool
) -> None:
    field = SPEC[op][name]
    obj = data.draw(valid_command(op), label="valid command")
    how = data.draw(st.sampled_from(["missing", "null", "invalid"]), label="how")
    if how == "missing":
        obj.pop(name, None)
    elif how == "null":
        obj[name] = None
    else:
        obj[name] = data.draw(invalid_values(field), label="value")
    if how != "invalid" and not field.required:
        result = check_contract(to_wire(obj, as_text))
        assert isinstance(result, Command), result
        assert name not in result.args
    else:
        expect_refused(obj, as_text)


def boundary_values(field: Field) -> tuple[list[Any], list[Any]]:
    """(accepted, refused) values at the edges of ``field``."""
    good: list[Any]
    bad: list[Any]
    if field.kind == "int":
        good = [field.lo, field.hi]
        bad = [True, False, field.lo - 1, field.hi + 1, float(field.lo), str(field.lo), [field.lo]]
    elif field.kind == "str":
        good = ["", "é" * field.hi]
        bad = ["x" * (field.hi + 1), 1, True, ["x"], {"x": "y"}]
    elif field.kind == "id":
        good = ["x", "é" * field.hi]
        bad = ["", "x" * (field.hi + 1), 1, True, ["x"], {"x": "y"}]
    elif field.kind == "list":
        good = [[], [[0, 100]], [[0, 1]] * field.hi]
        bad = [[[0, 1]] * (field.hi + 1), "x", {"x": "y"}, 1]
    elif field.kind == "terms":
        good = [[], ["x"], ["é" * field.hi] * field.lo]
        bad = [[""], ["x" * (field.hi + 1)], ["x"] * (field.lo + 1), "x", [1], {"x": "y"}]
    elif field.kind == "choice":
        good = list(field.options)
        bad = ["", field.options[0].title(), "none-of-these", 1, [field.options[0]]]
    elif field.kind == "user":
        good = ["x", "é" * field.hi, "Ünï çødé 用户 🙂"]
        bad = ["", "x" * (field.hi + 1), "a\nb", "\x00", "a\u200bb", "\u202e", 1, ["x"]]
    elif field.kind == "bool":
        good = [True, False]
        bad = [0, 1, "true", [True]]
    else:
        good = ["a", "0", "a" * 64, "a-_9", "0-"]
        bad = ["", "A", "Demo", "-a", "_a", "a" * 65, "a{b}", "{a}", "a b", "a\n", "é", 1, True]
    return good, bad


@pytest.mark.parametrize(("op", "name"), OP_FIELDS)
def test_each_field_at_its_boundaries(op: str, name: str) -> None:
    field = SPEC[op][name]
    base = {"op": op, "id": 11, **{k: v for k, v in VALID[op].items() if k != name}}
    good, bad = boundary_values(field)
    for value in good:
        cmd = decode(json.dumps({**base, name: value}).encode())
        assert cmd.args[name] == value
    for value in bad:
        expect_refused({**base, name: value})
    if field.required:
        expect_refused(base)
        expect_refused({**base, name: None})
    else:
        assert name not in decode(json.dumps(base)).args


# -- examples --------------------------------------------------------------------------

VALID: dict[str, dict[str, Any]] = {
    "connect": {"token": "abc.def.ghi"},
    "join": {"room": "demo", "since": 12, "epoch": "e1"},
    "leave": {"room": "demo"},
    "chat": {"room": "demo", "text": "hello"},
    "like": {"room": "demo", "count": 3},
    "ping": {},
    "announce": {"room": "demo", "text": "50% off now"},
    "room.start": {"room": "demo"},
    "room.end": {"room": "demo"},
    "mod.delete": {"room": "demo", "msg_id": "a1b2"},
    "mod.mute": {"room": "demo", "user": "u1", "seconds": 60},
    "mod.ban": {"room": "demo", "user": "u1"},
    "mod.unban": {"room": "demo", "user": "u1"},
    "mod.slow": {"room": "demo", "seconds": 0},
    "mod.filter": {"room": "demo", "add": ["spam"], "remove": [], "action": "mask", "leet": True},
    "mod.approve": {"room": "demo", "msg_id": "m1"},
    "pin": {"room": "demo", "sku": "mug-01"},
    "unpin": {"room": "demo", "sku": "mug-01"},
    "sale.start": {
        "room": "demo",
        "sku": "mug-01",
        "price": 1299,
        "stock": 500,
        "limit_per_user": 2,
        "duration_s": 300,
    },
    "sale.stop": {"room": "demo", "sale": "s-1"},
    "order": {"room": "demo", "sale": "s-1", "qty": 1, "key": "k-1"},
    "refresh": {"token": "eyJ.x.y"},
    "coupon.drop": {
        "room": "demo",
        "kind": "percent",
        "value": 15,
        "min_total": 2000,
        "skus": ["mug-01"],
        "quantity": 100,
        "per_user": 2,
        "minutes": 10,
        "until": 1795392600000,
        "watch_minutes": 1,
    },
    "coupon.stop": {"room": "demo", "coupon": "c-1"},
    "coupon.claim": {"room": "demo", "coupon": "c-1"},
    "giveaway.start": {
        "room": "demo",
        "prize": "A signed mug",
        "sku": "mug-01",
        "winners": 2,
        "duration_s": 120,
        "entry": "keyword",
        "keyword": "luckymug",
        "verified_only": True,
        "watch_minutes": 1,
    },
    "giveaway.enter": {"room": "demo", "giveaway": "demo.g5ee3276e43"},
    "giveaway.draw": {"room": "demo", "giveaway": "demo.g5ee3276e43"},
    "giveaway.cancel": {"room": "demo", "giveaway": "demo.g5ee3276e43"},
    "deal.start": {
        "room": "demo",
        "sku": "mug-01",
        "price": 1200,
        "size": 3,
        "window_minutes": 15,
        "stock": 30,
    },
    "deal.stop": {"room": "demo", "deal": "d-1"},
    "group.open": {"room": "demo", "deal": "d-1"},
    "group.join": {"room": "demo", "group": "demo.p3a2b1c0d9e"},
    "auction.start": {
        "room": "demo",
        "sku": "mug-01",
        "start_bid": 1000,
        "duration_s": 60,
        "extend_s": 10,
        "max_extensions": 3,
        "increments": [[0, 100], [3000, 200]],
    },
    "bid": {"room": "demo", "auction": "demo.a1c9e03b7f2", "amount": 1100, "max": 5000},
    "report": {"room": "demo", "reason": "spam", "msg_id": "a2ea9c7", "note": "a scam link"},
    "product.open": {"room": "demo", "sku": "mug-01"},
}


@pytest.mark.parametrize("op", sorted(VALID))
def test_valid_command_of_each_op(op: str) -> None:
    cmd = decode(json.dumps({"op": op, "id": 7, **VALID[op]}).encode())
    assert cmd == Command(op, 7, VALID[op])


def test_every_op_has_an_example() -> None:
    assert set(VALID) == set(OPS)


def test_connect_without_token_is_a_guest_connect() -> None:
    assert decode(b'{"op":"connect"}') == Command("connect", None, {})


def test_room_property() -> None:
    assert decode(b'{"op":"leave","room":"r-1"}').room == "r-1"


def test_unknown_extra_fields_are_ignored() -> None:
    cmd = decode(
        b'{"op":"chat","id":3,"room":"demo","text":"hi","future":{"x":[1,2]},"v":2,"count":5}'
    )
    assert cmd == Command("chat", 3, {"room": "demo", "text": "hi"})


@pytest.mark.parametrize(
    ("frame", "cid"),
    [
        (b'{"op":"chat","id":9,"room":"demo"}', 9),
        (b'{"op":"chat","id":9,"room":"Demo","text":"x"}', 9),
        (b'{"op":"like","id":0,"room":"demo","count":true}', 0),
        (b'{"op":"like","id":4,"room":"demo","count":0}', 4),
        (b'{"op":"nope","id":5}', 5),
        (b'{"op":5,"id":6}', 6),
        (b'{"id":8}', 8),
        (b'{"op":"ping","id":9007199254740993}', None),
        (b'{"op":"chat","id":-1}', None),
        (b'{"op":"chat","id":true}', None),
        (b'{"op":"chat","id":"7"}', None),
        (b'{"op":"chat","id":7.0}', None),
        (b"[1]", None),
        (b"not json", None),
    ],
)
def test_id_is_carried_on_the_error_when_readable(frame: bytes, cid: int | None) -> None:
    with pytest.raises(Error) as info:
        decode(frame)
    assert info.value.code == "bad_request"
    assert info.value.data == (None if cid is None else {"id": cid})


def test_id_bounds() -> None:
    assert decode(b'{"op":"ping","id":9007199254740992}').id == 2**53
    assert decode(b'{"op":"ping","id":0}').id == 0
    assert decode(b'{"op":"ping","id":null}').id is None


# -- seq lines -------------------------------------------------------------------------

event_fields = st.dictionaries(
    st.text(max_size=8).filter(lambda k: k not in ("seq", "type", "room", "ts")),
    st.recursive(
        st.one_of(
            st.none(),
            st.booleans(),
            st.integers(-(2**63), 2**63 - 1),
            st.floats(allow_nan=False, allow_infinity=False),
            st.text(max_size=20),
        ),
        lambda c: st.one_of(st.lists(c, max_size=3), st.dictionaries(st.text(max_size=5), c)),
        max_leaves=10,
    ),
    max_size=4,
)


@given(
    seq=st.integers(0, 2**63 - 1),
    type_=st.text(min_size=1, max_size=20),
    room=room_ids(),
    ts=st.integers(0, 2**50),
    fields=event_fields,
)
def test_sequence_and_line_seq_round_trip(
    seq: int, type_: str, room: str, ts: int, fields: dict[str, Any]
) -> None:
    body = encode_event(type_, room, ts, fields)
    assert line_seq(body) is None
    line = sequence(seq, body)
    assert line_seq(line) == seq
    parsed = loads(line)
    assert next(iter(parsed)) == "seq"
    assert parsed == {"seq": seq, "type": type_, "room": room, "ts": ts, **fields}
    assert split_frame(b"\n".join([line, body]) + b"\n") == [parsed, loads(body)]


def test_split_frame_accepts_text_and_skips_empty_lines() -> None:
    assert split_frame('{"a":1}\n\n{"b":[2]}\n') == [{"a": 1}, {"b": [2]}]
    assert split_frame(b"") == []


# -- RFC 6455 framing ------------------------------------------------------------------


def parse_frame(frame: bytes) -> tuple[int, int, bool, bytes, int]:
    """Parse one server frame: (fin, opcode, masked, payload, header length)."""
    b0, b1 = frame[0], frame[1]
    fin, rsv, opcode = b0 >> 7, (b0 >> 4) & 0x7, b0 & 0x0F
    assert rsv == 0, "no extension is negotiated: RSV bits must be 0"
    masked = bool(b1 & 0x80)
    length = b1 & 0x7F
    offset = 2
    if length == 126:
        (length,) = struct.unpack("!H", frame[2:4])
        offset = 4
        assert length >= 126, "a 16-bit length must not encode what fits in 7 bits"
    elif length == 127:
        (length,) = struct.unpack("!Q", frame[2:10])
        offset = 10
        assert length >> 63 == 0, "the most significant bit of a 64-bit length is 0"
        assert length >= 1 << 16, "a 64-bit length must not encode what fits in 16 bits"
    payload = frame[offset:]
    assert len(payload) == length
    return fin, opcode, masked, payload, offset


@pytest.mark.parametrize(
    ("size", "header"), [(0, 2), (1, 2), (125, 2), (126, 4), (65535, 4), (65536, 10)]
)
def test_text_frame_headers(size: int, header: int) -> None:
    payload = bytes(ord("a") + i % 26 for i in range(size))
    frame = text_frame(payload)
    fin, opcode, masked, body, offset = parse_frame(frame)
    assert (fin, opcode, masked) == (1, 0x1, False)
    assert offset == header
    assert body == payload
    assert len(frame) == header + size
