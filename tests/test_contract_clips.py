"""The clip store's contract, run against the memory and the Redis engine."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from livecommerce.backends import CLIP_CURSOR, Clip, ClipStore, open_clip_store
from livecommerce.config import Settings


@pytest.fixture
async def store(settings: Settings) -> AsyncIterator[ClipStore]:
    async with open_clip_store(settings) as s:
        yield s


def clip(n: int, room: str = "r1", sku: str = "mug", **kw: object) -> Clip:
    fields: dict[str, object] = {
        "id": f"c{n:04d}",
        "room": room,
        "stream": "s1",
        "sku": sku,
        "title": f"Product {sku}",
        "price": 1800,
        "image": None,
        "started_at": 1_700_000_000_000 + n * 1000,
        "ended_at": 1_700_000_000_000 + n * 1000 + 500,
        "duration_s": 0.5,
        **kw,
    }
    return Clip(**fields)  # type: ignore[arg-type]


async def test_add_get_and_a_rooms_clips_newest_first(store: ClipStore) -> None:
    a, b = clip(1, image="https://img/1.jpg"), clip(2, sku="tee")
    other = clip(3, room="r2")
    for c in (b, other, a):
        await store.add(c)
    assert await store.get("r1", a.id) == a
    assert await store.get("r2", a.id) is None
    assert await store.get("r1", "nope") is None
    assert await store.room_clips("r1") == [b, a]
    assert await store.room_clips("r1", sku="mug") == [a]
    assert await store.room_clips("r1", sku="lamp") == []
    assert await store.room_clips("empty") == []


async def test_adding_a_clip_again_replaces_it(store: ClipStore) -> None:
    first = clip(1)
    await store.add(first)
    later = clip(1, ended_at=first.ended_at + 60_000, duration_s=60.5, poster=False)
    await store.add(later)
    assert await store.room_clips("r1") == [later]
    assert await store.get("r1", first.id) == later
    assert (await store.feed(10)) == ([later], None)


async def test_the_feed_pages_newest_first_across_rooms(store: ClipStore) -> None:
    made = [clip(n, room=f"r{n % 3}") for n in range(25)]
    same_time = [clip(100 + n, room=f"q{n}", ended_at=1_800_000_000_000) for n in range(3)]
    await asyncio.gather(*(store.add(c) for c in made + same_time))
    expected = sorted(made + same_time, key=lambda c: c.order_key, reverse=True)
    seen: list[Clip] = []
    cursor: str | None = None
    pages = 0
    while True:
        page, cursor = await store.feed(10, cursor)
        pages += 1
        seen += page
        if cursor is None:
            break
        assert CLIP_CURSOR.fullmatch(cursor), cursor
    assert seen == expected and pages == 3
    assert [c.id for c in seen[:3]] == ["c0102", "c0101", "c0100"]  # one ms, several rooms
    # a page that ends exactly at the last clip says there is no more
    page, after = await store.feed(28)
    assert len(page) == 28 and after is None
    assert await store.feed(5, expected[-1].order_key) == ([], None)


async def test_old_clips_are_deleted_once_and_returned(store: ClipStore) -> None:
    clips = [clip(n, room=f"r{n % 2}") for n in range(10)]
    for c in clips:
        await store.add(c)
    cutoff = clips[6].ended_at  # clips 0..5 ended before it
    gone = await asyncio.gather(*(store.delete_ended_before(cutoff) for _ in range(3)))
    deleted = {c.id for batch in gone for c in batch}
    assert deleted == {c.id for c in clips[:6]}
    assert await store.delete_ended_before(cutoff) == []
    kept = clips[6:]
    assert await store.room_clips("r0") == [c for c in reversed(kept) if c.room == "r0"]
    assert (await store.feed(20))[0] == list(reversed(kept))
    assert await store.get("r0", clips[0].id) is None
    # a limit bounds one call
    assert len(await store.delete_ended_before(10**13 - 1, limit=2)) == 2
    assert len((await store.feed(20))[0]) == 2


def test_a_clip_names_its_files() -> None:
    c = clip(7, room="demo", stream="18c9abc")
    assert c.playlist == "/hls/demo/18c9abc/clip-c0007.m3u8"
    assert c.poster_path == "/hls/demo/18c9abc/clip-c0007.jpg"
    assert clip(7, poster=False).poster_path is None
    assert Clip.from_record(c.to_record()) == c
