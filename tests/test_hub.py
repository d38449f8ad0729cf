"""The hub on its own, with the memory stores and a recording subscriber."""

from __future__ import annotations

import asyncio
import time

import pytest

from livecommerce.backends import Backends
from livecommerce.backends.memory import memory_backends
from livecommerce.config import Settings
from livecommerce.errors import ConfigError
from livecommerce.protocol import encode_event, split_frame
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
        return [
            e["seq"]
            for f in self.frames
            for e in split_frame(f[2:] if f[1] < 126 else f[4:])
            if "seq" in e
        ]


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
        Settings(secret="s" * 32, **fields).check()  # type: ignore[arg-type]


async def test_a_pass_lets_the_loop_run_between_slices_and_skips_who_left(
    stores: Backends, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hub_module, "PASS_SLICE", 2)
    hub = Hub(stores, node="n", tick_s=0.005, presence_s=60)
    members = [Recorder(f"u{i}") for i in range(6)]
    for m in members:
        (await hub.attach("r", m)).go_live(0)
    await asyncio.sleep(0.05)  # the first tick's presence and likes lines
    ran_between: list[int] = []
    first = members[0]
    plain_write = first.write

    def write_then_leave(frame: bytes) -> None:  # the last member leaves mid-pass
        plain_write(frame)
        asyncio.get_running_loop().call_soon(hub.detach, "r", members[5])
        asyncio.get_running_loop().call_soon(lambda: ran_between.append(len(members[2].frames)))

    first.write = write_then_leave  # type: ignore[method-assign]
    before = [len(m.frames) for m in members]
    await publish(stores, 1)
    for _ in range(100):
        if len(members[4].frames) > before[4]:
            break
        await asyncio.sleep(0.005)
    got = [len(m.frames) - b for m, b in zip(members, before, strict=True)]
    assert got == [1, 1, 1, 1, 1, 0]
    assert ran_between and ran_between[0] == before[2]  # ran before the pass reached u2
    await hub.close()
