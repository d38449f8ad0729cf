"""One contract per store interface, run against the memory and the Redis engine."""

from __future__ import annotations

import asyncio

import pytest

from livecommerce.backends import Backends
from livecommerce.config import Settings
from livecommerce.protocol import encode_event, line_seq, loads, sequence
from livecommerce.rooms.state import Room


def body(text: str, **extra: object) -> bytes:
    return encode_event("chat", "r1", 1, {"text": text, **extra})


async def test_room_store_create_get_list(backends: Backends) -> None:
    rooms = backends.rooms
    a = Room("a", "First", "h1", "scheduled", 1)
    b = Room("b", "Second", "h2", "scheduled", 2)
    assert await rooms.create(a)
    assert await rooms.create(b)
    assert not await rooms.create(Room("a", "Other", "h9", "live", 3))
    assert await rooms.get("a") == a
    assert await rooms.get("missing") is None
    assert [r.id for r in await rooms.list()] == ["b", "a"]


async def test_room_status_is_compare_and_set(backends: Backends) -> None:
    rooms = backends.rooms
    await rooms.create(Room("a", "T", "h", "scheduled", 1))
    results = await asyncio.gather(*(rooms.set_status("a", "scheduled", "live") for _ in range(5)))
    assert sorted(results) == [False] * 4 + [True]
    assert not await rooms.set_status("a", "scheduled", "ended")
    assert [r.id for r in await rooms.list("live")] == ["a"]
    assert await rooms.list("ended") == []


async def test_publish_assigns_contiguous_seqs_and_keeps_bounded_history(
    backends: Backends, settings: Settings
) -> None:
    log = backends.log
    seqs = await asyncio.gather(*(log.publish("r1", body(str(i))) for i in range(30)))
    assert sorted(seqs) == list(range(1, 31))
    head = await log.head("r1")
    assert head.seq == 30
    lines = await log.history("r1", 25, head.epoch)
    assert lines is not None
    assert [line_seq(ln) for ln in lines] == [26, 27, 28, 29, 30]
    assert await log.history("r1", 30, head.epoch) == []
    assert await log.history("r1", 31, head.epoch) is None
    assert await log.history("r1", 25, "not-the-epoch") is None
    n = settings.history_size
    for i in range(n):
        await log.publish("r1", body(f"more {i}"))
    assert await log.history("r1", 29, head.epoch) is None  # fell out of the history
    kept = await log.history("r1", 30, head.epoch)
    assert kept is not None and len(kept) == n


async def test_lines_are_the_body_with_seq_first(backends: Backends) -> None:
    b = body("hi")
    seq = await backends.log.publish("r1", b)
    head = await backends.log.head("r1")
    lines = await backends.log.history("r1", 0, head.epoch)
    assert lines == [sequence(seq, b)]
    assert loads(lines[0]) == {"seq": 1, **loads(b)}


async def test_snapshot_keeps_recent_chats_deletions_and_announcement(backends: Backends) -> None:
    log = backends.log
    for i in range(60):
        await log.publish("r1", body(str(i), msg_id=f"m{i}"), kind="chat", ref=f"m{i}")
    assert (
        await log.publish(
            "r1",
            encode_event("chat.deleted", "r1", 1, {"msg_id": "m59"}),
            kind="chat.deleted",
            ref="m59",
        )
        == 61
    )
    assert await log.publish("r1", b'{"type":"chat.deleted"}', kind="chat.deleted", ref="m59") == 0
    assert await log.publish("r1", b'{"type":"chat.deleted"}', kind="chat.deleted", ref="nope") == 0
    await log.publish(
        "r1", encode_event("announcement", "r1", 1, {"text": "A"}), kind="announcement"
    )
    snap = await log.snapshot("r1")
    assert snap.seq == 62
    texts = [loads(ln)["text"] for ln in snap.recent]
    assert texts == [str(i) for i in range(10, 59)]  # the last 50, less the deleted one
    assert snap.announcement is not None and loads(snap.announcement)["text"] == "A"


async def test_subscribers_get_lines_in_order_and_private_lines(backends: Backends) -> None:
    log = backends.log
    got: list[tuple[bytes, str | None]] = []
    head = await log.subscribe("r1", lambda line, user: got.append((line, user)))
    assert head.seq == 0 and head.epoch
    for i in range(20):
        await log.publish("r1", body(str(i)))
    await log.send_private("r1", "u1", b'{"type":"moderation"}')
    await log.publish("r2", body("other room"))
    for _ in range(100):
        if len(got) == 21:
            break
        await asyncio.sleep(0.01)
    assert [line_seq(ln) for ln, _ in got[:20]] == list(range(1, 21))
    assert got[20] == (b'{"type":"moderation"}', "u1")
    await log.unsubscribe("r1")
    await log.publish("r1", body("after"))
    await asyncio.sleep(0.05)
    assert len(got) == 21


CONTROLS = [chr(c) for c in [*range(0x20), *range(0x7F, 0xA0)]] + ["\u2028", "\u2029"]
"""Every control character (C0, DEL, C1) and the line and paragraph separators."""


async def test_a_private_line_keeps_its_user_and_bytes_whatever_they_hold(
    backends: Backends,
) -> None:
    """Private lines went out as ``@user\\n<line>`` on Redis: a newline in the user id
    let a moderator put a line of their own (a chat "from Host") in front of the real
    one. The framing cannot be broken by content (the ids are refused earlier too)."""
    log = backends.log
    got: list[tuple[bytes, str | None]] = []
    await log.subscribe("r1", lambda line, user: got.append((line, user)))
    forged = '{"seq":99,"type":"chat","room":"r1","user":{"id":"host","name":"Host"}}'
    sent = [
        (f"x{c}{forged}{c}", b'{"type":"moderation","n":%d}' % i) for i, c in enumerate(CONTROLS)
    ]
    sent += [("u1", b'{"a":1}\n@2:u2{"b":2}'), ("@3:abc", b"{}"), ("\u00e9\u4e16", b"{}")]
    for user, line in sent:
        await log.send_private("r1", user, line)
    for _ in range(200):
        if len(got) == len(sent):
            break
        await asyncio.sleep(0.01)
    assert got == [(line, user) for user, line in sent]
    await log.unsubscribe("r1")


async def test_likes_add_up(backends: Backends) -> None:
    c = backends.counters
    assert await c.add_likes("r1", 0) == 0
    assert await c.add_likes("r1", 5) == 5
    assert await c.add_likes("r1", 7) == 12
    assert await c.add_likes("r2", 0) == 0


async def test_presence_sums_live_nodes_and_forgets_dead_ones(backends: Backends) -> None:
    c = backends.counters
    assert await c.report_presence("r1", "n1", 3, 1_000) == 3
    assert await c.report_presence("r1", "n2", 4, 1_500) == 7
    assert await c.report_presence("r1", "n1", 2, 2_000) == 6
    # n2 last reported at 1.5 s; after the TTL (5 s) it no longer counts
    assert await c.report_presence("r1", "n1", 2, 7_000) == 2


async def test_moderation_bans_mutes_and_slow_mode(backends: Backends) -> None:
    m = backends.moderation
    assert await m.admit_chat("r1", "u", 1000) is None
    assert await m.set_banned("r1", "u", True)
    assert not await m.set_banned("r1", "u", True)
    assert await m.set_banned("r1", "b", True)
    assert await m.banned("r1", ["u", "w", "b"]) == {"u", "b"}
    assert await m.banned("r2", ["u"]) == set()
    assert await m.banned("r1", []) == set()
    assert await m.admit_chat("r1", "u", 1000) == ("banned", 0)
    assert await m.set_banned("r1", "u", False)
    assert await m.banned("r1", ["u", "b"]) == {"b"}
    await m.mute("r1", "u", 5000)
    assert await m.admit_chat("r1", "u", 4000) == ("muted", 5000)
    assert await m.admit_chat("r1", "u", 5000) is None
    await m.set_slow("r1", 10)
    assert await m.admit_chat("r1", "v", 6000) is None
    assert await m.admit_chat("r1", "v", 7000) == ("slow_mode", 16000)
    assert await m.admit_chat("r1", "w", 7000) is None  # per user
    assert await m.admit_chat("r1", "v", 7500, slow_exempt=True) is None


@pytest.mark.parametrize("engine", ["redis"])
async def test_redis_keys_of_a_room_share_one_hash_tag(backends: Backends, redis_url: str) -> None:
    import redis.asyncio as aioredis

    await backends.rooms.create(Room("r1", "T", "h", "scheduled", 1))
    await backends.log.publish("r1", body("x", msg_id="m"), kind="chat", ref="m")
    await backends.log.publish("r1", b'{"type":"announcement"}', kind="announcement")
    await backends.counters.add_likes("r1", 1)
    await backends.counters.report_presence("r1", "n", 1, 1)
    await backends.moderation.set_banned("r1", "u", True)
    await backends.moderation.mute("r1", "u", 1)
    await backends.moderation.set_slow("r1", 5)
    await backends.moderation.admit_chat("r1", "v", 1)
    r = aioredis.Redis.from_url(redis_url)
    keys = sorted(k.decode() if isinstance(k, bytes) else k for k in await r.keys("*"))
    await r.aclose()
    assert "lc:rooms" in keys
    room_keys = [k for k in keys if k != "lc:rooms"]
    assert len(room_keys) >= 10
    assert all(k.startswith("lc:{r1}:") for k in room_keys), room_keys
