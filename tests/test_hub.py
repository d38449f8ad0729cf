"""The hub on its own, with the memory stores and a recording subscriber."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import pytest

from livecommerce.backends import Backends
from livecommerce.backends.memory import memory_backends
from livecommerce.config import Settings
from livecommerce.errors import ConfigError
from livecommerce.protocol import encode_event, split_frame, text_frame
from livecommerce.rooms import hub as hub_module
from livecommerce.rooms.hub import Hub, adapt_tick


class Recorder:
    def __init__(self, user: str) -> None:
        self.user_id = user
        self.frames: list[bytes] = []
        self.removed_with: list[int] = []

    def write(self, frame: bytes) -> None:
        self.frames.append(frame)

    def removed(self, room: str, code: int) -> None:
        self.removed_with.append(code)

    def seqs(self) -> list[int]:
        return [s for f in self.frames for s in self.seqs_of(f)]

    def likes(self) -> list[int]:
        return [e["total"] for f in self.frames for e in events(f) if e["type"] == "likes"]

    @staticmethod
    def seqs_of(frame: bytes) -> list[int]:
        return [e["seq"] for e in events(frame) if "seq" in e]


def events(frame: bytes) -> list[dict[str, Any]]:
    return split_frame(frame[2:] if frame[1] < 126 else frame[4:])


@pytest.fixture
def stores() -> Backends:
    return memory_backends(Settings(secret="s" * 32))


async def publish(stores: Backends, n: int) -> list[int]:
    return [
        await stores.log.publish("r", encode_event("chat", "r", 1, {"text": str(i)}))
        for i in range(n)
    ]


async def test_a_channel_closing_while_a_member_joins_does_not_lose_the_room(
    stores: Backends, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub = Hub(stores, node="n", tick_s=0.005, presence_s=1)
    unsubscribe = stores.log.unsubscribe

    async def slow_unsubscribe(room: str) -> None:
        await asyncio.sleep(0.05)  # as over a network
        await unsubscribe(room)

    monkeypatch.setattr(stores.log, "unsubscribe", slow_unsubscribe)
    first = Recorder("a")
    (await hub.attach("r", first)).go_live(0)
    hub.detach("r", first)
    for _ in range(100):
        ch = hub.channel("r")
        if ch is not None and ch.closing:
            break
        await asyncio.sleep(0.002)
    second = Recorder("b")
    (await hub.attach("r", second)).go_live(0)
    sent = await publish(stores, 3)
    for _ in range(100):
        if second.seqs() == sent:
            break
        await asyncio.sleep(0.005)
    assert second.seqs() == sent
    await hub.close()


async def test_a_buffering_member_gets_only_what_its_snapshot_lacks(stores: Backends) -> None:
    hub = Hub(stores, node="n", tick_s=0.005, presence_s=1)
    await publish(stores, 2)
    member = Recorder("a")
    membership = await hub.attach("r", member)
    await publish(stores, 3)  # seqs 3..5 arrive while the member is buffering
    await asyncio.sleep(0.03)
    assert member.frames == []
    membership.go_live(4)  # its snapshot (or replay) already covered up to 4
    await publish(stores, 1)
    await asyncio.sleep(0.03)
    assert member.seqs() == [5, 6]
    await hub.close()


async def test_a_gap_in_what_arrives_is_filled_from_history(stores: Backends) -> None:
    hub = Hub(stores, node="n", tick_s=0.005, presence_s=1)
    member = Recorder("a")
    (await hub.attach("r", member)).go_live(0)
    ch = hub.channel("r")
    assert ch is not None
    sink = ch.sink
    dropped: list[bytes] = []
    ch.sink = lambda line, user: None  # type: ignore[method-assign]
    stores.log._sinks["r"] = lambda line, user: dropped.append(line)  # type: ignore[attr-defined]
    await publish(stores, 3)  # lost on the way
    stores.log._sinks["r"] = sink  # type: ignore[attr-defined]
    await publish(stores, 2)
    await asyncio.sleep(0.05)
    assert len(dropped) == 3
    assert member.seqs() == [1, 2, 3, 4, 5]
    await hub.close()


def test_the_tick_grows_with_the_pass_within_its_bounds() -> None:
    assert adapt_tick(0.05, 0.25, 0.001, 0.35) == 0.05  # a small room: the base tick
    assert adapt_tick(0.05, 0.25, 0.035, 0.35) == pytest.approx(0.1)  # 35 ms pass: 100 ms
    assert adapt_tick(0.05, 0.25, 0.5, 0.35) == 0.25  # past the bound latency wins
    assert adapt_tick(0.5, 0.25, 0.0, 0.35) == 0.5  # a configured tick above the bound


class Slow(Recorder):
    """A member whose write costs 2 ms, as 200 sockets' writes would."""

    def write(self, frame: bytes) -> None:
        deadline = time.perf_counter() + 0.002
        while time.perf_counter() < deadline:
            pass
        super().write(frame)


async def test_a_room_whose_passes_are_costly_ticks_less_often(stores: Backends) -> None:
    hub = Hub(stores, node="n", tick_s=0.005, presence_s=1, fanout_share=0.5, max_tick_s=1)
    members = [Slow(f"u{i}") for i in range(5)]  # a pass: about 10 ms
    for m in members:
        (await hub.attach("r", m)).go_live(0)
    ch = hub.channel("r")
    assert ch is not None and ch.tick_s == 0.005
    for _ in range(20):
        await publish(stores, 1)
        await asyncio.sleep(0.01)
    # pass / share: about 20 ms (more if the machine is busy), never the base tick
    assert ch.tick_s > 0.012
    assert hub.ticks() == {"r": ch.tick_s}
    for _ in range(200):
        if all(len(m.seqs()) == 20 for m in members):
            break
        await asyncio.sleep(0.01)
    assert all(m.seqs() == list(range(1, 21)) for m in members)  # nothing lost to the longer tick
    await hub.close()


@pytest.mark.parametrize(
    "fields",
    [{"tick_max_ms": 0}, {"tick_max_ms": 6000}, {"fanout_share": 0}, {"fanout_share": 1.5}],
)
def test_tick_settings_out_of_range_are_refused(fields: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        Settings(secret="s" * 32, sandbox_shop=True, **fields).check()  # type: ignore[arg-type]


async def six_in_three_slices(
    stores: Backends, monkeypatch: pytest.MonkeyPatch, *, tick_s: float
) -> tuple[Hub, list[Recorder]]:
    """A hub whose room has six live members, written two at a time: three slices a
    third of ``tick_s`` apart (once a tick was cut with all six)."""
    monkeypatch.setattr(hub_module, "PASS_SLICE", 2)
    hub = Hub(stores, node="n", tick_s=tick_s, max_tick_s=tick_s, presence_s=60)
    members = [Recorder(f"u{i}") for i in range(6)]
    for m in members:
        (await hub.attach("r", m)).go_live(0)
    await asyncio.sleep(2 * tick_s + 0.03)
    return hub, members


async def test_a_member_that_leaves_before_its_slices_turn_gets_nothing_more(
    stores: Backends, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub, members = await six_in_three_slices(stores, monkeypatch, tick_s=0.06)
    left: list[Recorder] = []

    def hooked(i: int, m: Recorder) -> None:
        plain_write = m.write

        def write(frame: bytes) -> None:
            plain_write(frame)
            if not left and Recorder.seqs_of(frame):  # the first to get the line: the
                gone = members[(i - 2) % 6]  # slice before its own comes last
                left.append(gone)
                hub.detach("r", gone)

        m.write = write  # type: ignore[method-assign]

    for i, m in enumerate(members):
        hooked(i, m)
    before = [len(m.frames) for m in members]
    await publish(stores, 1)
    for _ in range(100):
        if sum(m.seqs() == [1] for m in members) == 5:
            break
        await asyncio.sleep(0.005)
    await asyncio.sleep(0.1)  # a whole tick more: nothing for the one that left
    assert left and left[0].frames[before[members.index(left[0])] :] == []
    assert [m.seqs() for m in members if m is not left[0]] == [[1]] * 5
    await hub.close()


async def test_a_large_room_is_written_in_slices_each_with_what_came_until_its_turn(
    stores: Backends, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub, members = await six_in_three_slices(stores, monkeypatch, tick_s=0.09)
    later: list[asyncio.Task[list[int]]] = []

    def hooked(m: Recorder) -> None:
        plain_write = m.write

        def write(frame: bytes) -> None:  # a line comes right after the first slice's turn
            plain_write(frame)
            if not later and 1 in m.seqs():
                later.append(asyncio.create_task(publish(stores, 1)))

        m.write = write  # type: ignore[method-assign]

    for m in members:
        hooked(m)
    await publish(stores, 1)
    for _ in range(200):
        if all(m.seqs() == [1, 2] for m in members):
            break
        await asyncio.sleep(0.005)
    assert all(m.seqs() == [1, 2] for m in members)
    got = [[s for f in m.frames if (s := Recorder.seqs_of(f))] for m in members]
    # the first slice to have line 1 had line 2 a tick later; the other two slices'
    # turns came after line 2 arrived: both in one frame, not one a tick late
    first = got.index([[1], [2]]) // 2
    for k, frames in enumerate(got):
        assert frames == ([[1], [2]] if k // 2 == first else [[1, 2]]), got
    await hub.close()


async def test_members_coming_and_going_mid_tick_get_every_line_once_in_order(
    stores: Backends, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hub_module, "PASS_SLICE", 3)
    hub = Hub(stores, node="n", tick_s=0.02, presence_s=60)
    stayers = [Recorder(f"s{i}") for i in range(7)]
    for m in stayers:
        (await hub.attach("r", m)).go_live(0)
    sent: list[int] = []
    joined: list[tuple[Recorder, int]] = []
    for round_ in range(30):
        sent += await publish(stores, 2)
        if round_ % 5 == 2:  # a newcomer whose snapshot covers what was sent so far
            newcomer = Recorder(f"n{round_}")
            membership = await hub.attach("r", newcomer)
            await asyncio.sleep(0.003)
            floor = sent[-1]
            membership.go_live(floor)
            joined.append((newcomer, floor))
        if round_ % 7 == 3:
            hub.detach("r", stayers.pop())
        await asyncio.sleep(0.007)
    everyone = stayers + [m for m, _ in joined]
    for _ in range(200):
        if all(m.seqs()[-1:] == sent[-1:] for m in everyone):
            break
        await asyncio.sleep(0.005)
    for m in stayers:
        assert m.seqs() == sent
    for newcomer, floor in joined:
        assert newcomer.seqs() == [s for s in sent if s > floor]
    ch = hub.channel("r")
    assert ch is not None and len(ch.lines) <= 4  # what every member had is forgotten
    await hub.close()


async def test_members_resuming_with_a_replay_mid_tick_get_every_line_once_in_order(
    stores: Backends, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As the service resumes a member: attach, read the snapshot and the history
    after ``since`` (each a while later), write the replay, go live above it."""
    monkeypatch.setattr(hub_module, "PASS_SLICE", 3)
    hub = Hub(stores, node="n", tick_s=0.03, max_tick_s=0.03, presence_s=60)
    for i in range(10):
        (await hub.attach("r", Recorder(f"s{i}"))).go_live(0)
    rng = random.Random(7)
    chatting = True

    async def chat() -> None:
        while chatting:
            await publish(stores, 1)
            await asyncio.sleep(rng.random() * 0.004)

    async def resume(i: int) -> tuple[Recorder, int]:
        await asyncio.sleep(rng.random() * 0.3)
        since = max(0, (await stores.log.snapshot("r")).seq - rng.randint(0, 20))
        member = Recorder(f"v{i}")
        membership = await hub.attach("r", member)
        await asyncio.sleep(rng.random() * 0.05)
        snap = await stores.log.snapshot("r")
        await asyncio.sleep(rng.random() * 0.02)
        replay = await stores.log.history("r", since, snap.epoch)
        assert replay is not None
        if replay:
            member.write(text_frame(b"\n".join(replay)))
        membership.go_live(max(snap.seq, since + len(replay)))
        return member, since

    chatter = asyncio.create_task(chat())
    resumed = await asyncio.gather(*(resume(i) for i in range(40)))
    await asyncio.sleep(0.1)
    chatting = False
    await chatter
    await asyncio.sleep(0.1)  # a few ticks: everything delivered
    last = (await stores.log.snapshot("r")).seq
    for member, since in resumed:
        assert member.seqs() == list(range(since + 1, last + 1)), member.user_id
    await hub.close()


async def test_quiet_ticks_look_up_likes_once_a_presence_interval(
    stores: Backends, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub = Hub(stores, node="n", tick_s=0.005, presence_s=0.2)
    asked: list[int] = []
    add_likes = stores.counters.add_likes

    async def counting(room: str, n: int) -> int:
        asked.append(n)
        return await add_likes(room, n)

    monkeypatch.setattr(stores.counters, "add_likes", counting)
    member = Recorder("a")
    (await hub.attach("r", member)).go_live(0)
    await asyncio.sleep(0.3)  # ~60 quiet ticks
    assert 1 <= len(asked) <= 3 and set(asked) == {0}
    await add_likes("r", 5)  # tapped on another process
    hub.add_likes("r", 2)  # and here: the next tick counts them and sees the total
    await asyncio.sleep(0.05)
    assert 2 in asked
    assert member.likes()[-1] == 7
    await add_likes("r", 3)  # another process's only: seen at the next look
    await asyncio.sleep(0.25)
    assert member.likes()[-1] == 10
    await hub.close()
