"""Hypothesis on every command's fields, over a real connection (issue 16).

Every op of the protocol, with each field any JSON value (strings with every control
character, invisible and bidi characters, numbers at and past their bounds, wrong
types, extra fields), sent by the room's host (who may do everything, so the checks go
past the rights) to a server on both engines. Each command with an id is answered once,
with data or a documented error code, never ``internal``; the connection serves a
``ping`` after each batch; the server logs no exception.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from typing import Any, get_args

import pytest
import redis
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from websockets.sync.client import connect

from livecommerce.auth import issue_token
from livecommerce.config import Limits, Settings
from livecommerce.errors import ErrorCode
from livecommerce.protocol import OPS
from tests.test_openapi import LiveServer

SECRET = "fuzz-secret-0123456789abcdef-0123456789"
CODES = set(get_args(ErrorCode)) - {"internal"}
FUZZED_OPS = sorted(set(OPS) - {"connect", "room.end"})  # room.end would end the fuzzing
"""``room.end`` closes the show for every later example; its own tests cover it."""

NASTY = st.sampled_from(
    [
        "",
        " ",
        "\x00",
        "a\nb",
        "\r\n{}",
        "\u202e\u2066",
        "\u200b",
        "\ufeff",
        "\u3164",
        "\ud7ff",
        "𝟘",
        "²",
        "demo",
        "mug-01",
        "x" * 5000,
    ]
)
TEXT = st.one_of(st.text(), NASTY, st.text(alphabet=st.characters(codec="utf-8"), max_size=70))
NUMBER = st.one_of(
    st.integers(-(2**63), 2**63),
    st.sampled_from([0, 1, -1, 50, 51, 100, 101, 3600, 86400, 2**53, 2**53 + 1]),
    st.floats(allow_nan=False, allow_infinity=False),
)
VALUE = st.one_of(
    TEXT,
    NUMBER,
    st.booleans(),
    st.none(),
    st.lists(TEXT, max_size=5),
    st.dictionaries(TEXT, TEXT, max_size=2),
)


SKUS = st.sampled_from(["mug-01", "tee-02", "lamp-03", "nope"])
PLAUSIBLE: dict[str, st.SearchStrategy[Any]] = {
    "room": st.just("demo"),
    "since": st.integers(-1, 200),
    "count": st.integers(-1, 51),
    "seconds": st.integers(-1, 30 * 86400 + 1),
    "add": st.lists(TEXT, max_size=5),
    "remove": st.lists(TEXT, max_size=3),
    "action": st.sampled_from(["block", "mask", "flag", "ban"]),
    "leet": st.booleans(),
    "sku": st.one_of(SKUS, TEXT),
    "price": st.integers(-1, 10**10 + 1),
    "stock": st.integers(-1, 10**6 + 1),
    "limit_per_user": st.integers(-1, 101),
    "duration_s": st.integers(-1, 86401),
    "qty": st.integers(-1, 101),
    "kind": st.sampled_from(["amount", "percent", "gift"]),
    "value": st.integers(-1, 101),
    "quantity": st.integers(-1, 5),
    "per_user": st.integers(0, 3),
    "minutes": st.integers(0, 1441),
    "skus": st.lists(SKUS, max_size=3),
}
"""Values near each field's domain (its bounds, the demo's skus), so that most commands
pass the shape check and reach the rights, limits and content checks."""


@st.composite
def command(draw: st.DrawFn, cid: int) -> dict[str, Any]:
    op = draw(st.sampled_from(FUZZED_OPS))
    fields: dict[str, Any] = {"op": op, "id": cid}
    for name, _check, _required in OPS[op]:
        choice = draw(st.integers(0, 9))
        if choice == 0:
            continue  # missing
        fields[name] = draw(PLAUSIBLE.get(name, TEXT) if choice < 8 else VALUE)
    if draw(st.integers(0, 9)) == 0:
        fields[draw(TEXT)] = draw(VALUE)  # an unknown field
    return fields


@pytest.fixture(scope="module", params=["memory", "redis"])
def server(request: pytest.FixtureRequest) -> Iterator[LiveServer]:
    redis_url = None
    if request.param == "redis":
        redis_url = request.getfixturevalue("redis_server")
        with redis.Redis.from_url(redis_url) as r:
            r.flushall()  # the session's own Redis
    # refusals are what is fuzzed: no 4008 for sustained abuse, no command rate limits
    limits = Limits(
        abuse_burst=10_000,
        chat_burst=10_000,
        like_burst=10_000,
        order_burst=10_000,
        commerce_burst=10_000,
        staff_burst=10_000,
        join_burst=10_000,
    )
    settings_ = Settings(secret=SECRET, demo=True, tick_ms=10, redis_url=redis_url, limits=limits)
    with LiveServer(settings_) as live:
        yield live


@settings(
    max_examples=120,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    batch=st.lists(st.integers(1, 10**6), min_size=1, max_size=8).flatmap(
        lambda ids: st.tuples(*(command(i) for i in dict.fromkeys(ids)))
    )
)
def test_any_command_gets_one_documented_answer(
    server: LiveServer, batch: tuple[dict[str, Any], ...], caplog: pytest.LogCaptureFixture
) -> None:
    host = issue_token(
        SECRET,
        sub="demo-host",
        name="Host",
        role="host",
        rooms=["demo"],
        now=time.time(),
        ttl_s=600,
    )
    url = f"ws://127.0.0.1:{server.port}/ws"
    with caplog.at_level(logging.ERROR), connect(url, open_timeout=10) as ws:
        ws.send(json.dumps({"op": "connect", "id": 0, "token": host}))
        replies: dict[int, Any] = {}
        for cmd in batch:
            ws.send(json.dumps(cmd, ensure_ascii=False, allow_nan=False))
        ws.send(json.dumps({"op": "ping", "id": 9_999_999}))
        deadline = time.monotonic() + 20
        want = {0, 9_999_999} | {c["id"] for c in batch}
        while not want <= replies.keys():
            assert time.monotonic() < deadline, (batch, replies)
            frame = ws.recv(timeout=20)
            for line in str(frame).split("\n"):
                obj = json.loads(line)
                if "id" not in obj or "type" in obj:
                    continue  # an event
                assert obj["id"] not in replies, ("answered twice", obj)
                replies[obj["id"]] = obj
                if not obj["ok"]:
                    assert obj["error"]["code"] in CODES, (obj, batch)
                event("ok" if obj["ok"] else obj["error"]["code"])
        assert replies[9_999_999]["ok"]  # the connection still serves
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]
