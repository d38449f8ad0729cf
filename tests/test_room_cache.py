"""RoomCache and RoomViews: one read at a time per room, shared by whoever waits for it."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from livecommerce.backends import LogSnapshot
from livecommerce.backends.memory import memory_backends
from livecommerce.config import Settings
from livecommerce.rooms.service import RoomCache, RoomViews
from livecommerce.rooms.state import Room, Status


class GatedStore:
    """A room store whose reads wait until the test opens the gate."""

    def __init__(self) -> None:
        self.status: Status = "live"
        self.gate = asyncio.Event()
        self.gate.set()
        self.reads = 0

    async def get(self, room_id: str) -> Room | None:
        self.reads += 1
        status = self.status  # what the store held when the read reached it
        await self.gate.wait()
        if room_id == "missing":
            return None
        return Room(room_id, "t", "h", status, 0)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make() -> tuple[GatedStore, Clock, RoomCache]:
    store, clock = GatedStore(), Clock()
    return store, clock, RoomCache(store, fresh_s=1.0, stale_s=5.0, clock=clock)  # type: ignore[arg-type]


async def test_a_stampede_of_misses_sends_one_read() -> None:
    store, _, cache = make()
    store.gate.clear()
    waiters = [asyncio.create_task(cache.get("r")) for _ in range(1000)]
    await asyncio.sleep(0)
    store.gate.set()
    rooms = await asyncio.gather(*waiters)
    assert store.reads == 1
    assert all(r is rooms[0] and r is not None and r.id == "r" for r in rooms)


async def test_fresh_entries_are_served_without_a_read() -> None:
    store, clock, cache = make()
    await cache.get("r")
    clock.now += 0.9
    await cache.get("r")
    assert store.reads == 1


async def test_a_stale_entry_is_served_at_once_while_one_read_refreshes_it() -> None:
    store, clock, cache = make()
    await cache.get("r")
    clock.now += 2.0
    store.status = "ended"
    store.gate.clear()
    got = [await cache.get("r") for _ in range(100)]  # none of these waits
    assert {r.status for r in got if r is not None} == {"live"}
    await asyncio.sleep(0)
    assert store.reads == 2  # one refresh for the hundred
    store.gate.set()
    await asyncio.sleep(0.01)
    room = await cache.get("r")
    assert room is not None and room.status == "ended"
    assert store.reads == 2


async def test_an_entry_past_the_stale_limit_is_read_again_before_use() -> None:
    store, clock, cache = make()
    await cache.get("r")
    clock.now += 6.0
    store.status = "ended"
    room = await cache.get("r")
    assert room is not None and room.status == "ended"


async def test_forget_drops_a_read_already_under_way() -> None:
    store, _, cache = make()
    store.gate.clear()
    early = asyncio.create_task(cache.get("r"))  # reads "live"
    await asyncio.sleep(0)
    store.status = "ended"
    cache.forget("r")  # this process just ended the room
    late = asyncio.create_task(cache.get("r"))
    await asyncio.sleep(0)
    store.gate.set()
    await early
    late_room = await late
    assert late_room is not None and late_room.status == "ended"
    again = await cache.get("r")  # the early read, which predates the change, was not kept
    assert again is not None and again.status == "ended"


async def test_a_caller_that_stops_waiting_does_not_cancel_the_others_read() -> None:
    store, _, cache = make()
    store.gate.clear()
    first = asyncio.create_task(cache.get("r"))
    second = asyncio.create_task(cache.get("r"))
    await asyncio.sleep(0)
    first.cancel()
    await asyncio.sleep(0)
    store.gate.set()
    room = await second
    assert room is not None
    with pytest.raises(asyncio.CancelledError):
        await first
    assert store.reads == 1


async def test_a_missing_room_is_not_cached() -> None:
    store, _, cache = make()
    assert await cache.get("missing") is None
    assert await cache.get("missing") is None
    assert store.reads == 2


async def test_peek_serves_only_what_get_would_serve_without_waiting() -> None:
    store, clock, cache = make()
    assert cache.peek("r") is None  # unknown: the caller must wait for a read
    assert store.reads == 0
    room = await cache.get("r")
    assert cache.peek("r") is room and store.reads == 1  # fresh
    clock.now += 2
    assert cache.peek("r") is room  # stale: served, and one refresh starts
    await asyncio.sleep(0)
    assert store.reads == 2
    clock.now += 10
    assert cache.peek("r") is None  # too old to serve


# -- RoomViews: one read of a room at a time, shared by every joiner waiting for it ---


class GatedLog:
    """An event log whose snapshots wait for the test's gate and tell which read they
    were (their ``seq``)."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.reads = 0

    async def snapshot(self, room_id: str) -> LogSnapshot:
        self.reads += 1
        seq = self.reads
        await self.gate.wait()
        return LogSnapshot(seq=seq, epoch="e", recent=[], announcement=None, pinned=None)


async def test_joiners_during_a_read_share_the_next_one_and_each_gets_its_part() -> None:
    backends = memory_backends(Settings())
    log = GatedLog()
    backends = replace(backends, log=log)  # type: ignore[arg-type]
    await backends.moderation.set_banned("r", "bad", True)
    views = RoomViews(backends)
    first = [views.get("r", u) for u in ("a", "b")]
    assert first[0] is first[1]
    await asyncio.sleep(0.01)
    assert log.reads == 1  # under way: later joiners must not be served by it
    second = [views.get("r", u) for u in ("c", "bad", "d")]
    assert second[0] is second[1] is second[2] and second[0] is not first[0]
    await asyncio.sleep(0.01)
    assert log.reads == 1  # the next read waits for the running one
    log.gate.set()
    one, two = await first[0], await second[0]
    assert (one.snap.seq, two.snap.seq, log.reads) == (1, 2, 2)
    assert one.banned == set() and two.banned == {"bad"}
    assert views.get("r", "e") is not second[0]  # and then a fresh one
    assert (await views.get("r", "e")).snap.seq == 3
