"""Product clips end to end: a pin and an unpin while an aiortc studio publishes make a
clip (a VOD playlist over the stream's segments and a JPEG poster), listed per room
and in the feed with the sku's open sale; a pin made on another process (Redis) makes
one too; retention deletes old clips and segments, files and metadata together.
"""

from __future__ import annotations

import asyncio
import io
import os
import time
from pathlib import Path
from typing import Any

import av
import pytest

from livecommerce.backends import Clip
from livecommerce.http.keys import CLIPS, HUB
from livecommerce.http.media import MEDIA, RECORDER
from livecommerce.protocol import loads
from tests.conftest import HOST, ClientFactory, LiveServer, ServerFactory, until
from tests.test_media_hls import (
    HLS_TIMEOUT_S,
    PLAYLIST,
    Playlist,
    decode,
    get,
    trun_samples,
    wait_for_segments,
)
from tests.test_media_http import (
    Peer,
    loopback_ice,  # noqa: F401 (an autouse fixture)
    peers,  # noqa: F401 (a fixture)
    publisher,
)

CLIP_FIELDS = {
    "id",
    "room",
    "sku",
    "title",
    "price",
    "currency",
    "image",
    "started_at",
    "ended_at",
    "duration_s",
    "playlist",
    "poster",
    "sale",
}


@pytest.fixture
def engine() -> str:
    return "memory"


async def api(server: LiveServer, path: str) -> tuple[int, Any]:
    got = await get(server, path)
    return got.status, loads(got.body)


async def wait_for_clips(server: LiveServer, n: int, room: str = "demo") -> list[dict[str, Any]]:
    deadline = time.monotonic() + HLS_TIMEOUT_S
    while True:
        status, body = await api(server, f"/api/rooms/{room}/clips")
        assert status == 200, body
        if len(body["clips"]) >= n:
            clips: list[dict[str, Any]] = body["clips"]
            return clips
        assert time.monotonic() < deadline, f"{n} clips not within {HLS_TIMEOUT_S} s"
        await asyncio.sleep(0.1)


async def check_clip_media(server: LiveServer, clip: dict[str, Any]) -> Playlist:
    """The clip's VOD playlist and poster, served and decodable."""
    got = await get(server, clip["playlist"])
    assert got.status == 200
    assert got.headers["Content-Type"] == PLAYLIST
    assert got.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    assert got.headers["Access-Control-Allow-Origin"] == "*"
    vod = Playlist(got.body.decode())
    assert vod.tag("EXT-X-PLAYLIST-TYPE") == "VOD" and vod.ended
    assert vod.tag("EXT-X-VERSION") == "7"
    assert abs(sum(vod.durations) - clip["duration_s"]) < 0.01
    folder = clip["playlist"].rsplit("/", 1)[0]
    init = await get(server, f"{folder}/{vod.maps[0]}")
    assert init.status == 200
    for uri in vod.uris:
        segment = await get(server, f"{folder}/{uri}")
        assert segment.status == 200, uri
        pictures, _audio, keys = decode(init.body, segment.body)
        assert len(pictures) == trun_samples(segment.body)[1] > 0 and keys[0] == 1
    poster = await get(server, clip["poster"])
    assert poster.status == 200 and poster.headers["Content-Type"] == "image/jpeg"
    with av.open(io.BytesIO(poster.body), mode="r") as container:
        [picture] = list(container.decode(video=0))
    assert (picture.width, picture.height) == (320, 240)
    return vod


async def test_a_pin_and_an_unpin_make_a_clip_listed_with_its_open_sale(
    start_server: ServerFactory,
    tmp_path: Path,
    peers: list[Peer],  # noqa: F811
    connect: ClientFactory,
) -> None:
    server = await start_server(media_dir=str(tmp_path / "media"))
    studio, _ = publisher(server, "H264")
    peers.append(studio)
    assert (await studio.post("/api/rooms/demo/whip", HOST))[0] == 201
    await wait_for_segments(server, 2)
    # the recorder follows the room in the hub, but is nobody watching
    hub = server.app[HUB]
    await until(lambda: hub.channel("demo") is not None, "the recorder in the room")
    await asyncio.sleep(0.3)  # a few presence rounds (every 0.1 s here)
    assert hub.viewers("demo") == 0
    assert (await api(server, "/api/rooms/demo"))[1]["viewers"] == 0
    host = await connect(server, token=HOST)
    await host.join("demo")

    await host.request("pin", room="demo", sku="mug-01")
    pinned = await host.next_event(lambda e: e["type"] == "product.pinned")
    await wait_for_segments(server, 6)  # a few seconds of the product
    await host.request("unpin", room="demo", sku="mug-01")
    unpinned = await host.next_event(lambda e: e["type"] == "product.unpinned")
    [clip] = await wait_for_clips(server, 1)

    assert set(clip) == CLIP_FIELDS
    assert (clip["room"], clip["sku"], clip["title"], clip["price"]) == (
        "demo",
        "mug-01",
        "Stoneware mug, speckled",
        1800,
    )
    assert clip["currency"] == "USD" and clip["image"] is None and clip["sale"] is None
    assert clip["playlist"].startswith("/hls/demo/") and clip["playlist"].endswith(".m3u8")
    assert clip["poster"].endswith(".jpg")
    assert clip["ended_at"] - clip["started_at"] == pytest.approx(clip["duration_s"] * 1000, abs=2)
    vod = await check_clip_media(server, clip)
    # The clip is the time the product was pinned, within one segment.
    pinned_s = (unpinned["ts"] - pinned["ts"]) / 1000
    assert abs(clip["duration_s"] - pinned_s) <= max(vod.durations), (clip, pinned_s)
    assert abs(clip["started_at"] - pinned["ts"]) <= max(vod.durations) * 1000

    # A sale of the sku shows on its clip while it is open: the Buy button's sale.
    sale = await host.request(
        "sale.start",
        room="demo",
        sku="mug-01",
        price=1200,
        stock=10,
        limit_per_user=2,
        duration_s=60,
    )
    [with_sale] = (await api(server, "/api/rooms/demo/clips?sku=mug-01"))[1]["clips"]
    assert with_sale["sale"] == {
        "id": sale["sale"]["id"],
        "price": 1200,
        "remaining": 10,
        "ends_at": sale["sale"]["ends_at"],
    }
    assert (await api(server, "/api/rooms/demo/clips?sku=tee-02"))[1] == {"clips": []}
    status, feed = await api(server, "/api/clips")
    assert status == 200 and feed == {"clips": [with_sale], "next": None}
    await host.request("sale.stop", room="demo", sale=sale["sale"]["id"])
    [after] = (await api(server, "/api/clips?limit=1"))[1]["clips"]
    assert after["sale"] is None


async def test_a_pin_replaced_by_another_and_the_streams_end_close_clips(
    start_server: ServerFactory,
    tmp_path: Path,
    peers: list[Peer],  # noqa: F811
    connect: ClientFactory,
) -> None:
    server = await start_server(media_dir=str(tmp_path / "media"))
    host = await connect(server, token=HOST)
    await host.join("demo")
    await host.request("pin", room="demo", sku="tee-02")  # pinned before the stream
    studio, _ = publisher(server, "H264")
    peers.append(studio)
    assert (await studio.post("/api/rooms/demo/whip", HOST))[0] == 201
    await wait_for_segments(server, 3)
    await host.request("pin", room="demo", sku="tee-02")  # pinned again: the clip goes on
    await host.request("pin", room="demo", sku="lamp-03")  # replaces it
    [tee] = await wait_for_clips(server, 1)
    assert tee["sku"] == "tee-02"
    await wait_for_segments(server, 6)
    assert await studio.delete(HOST) == 200  # the stream ends while lamp-03 is pinned
    lamp, tee_again = await wait_for_clips(server, 2)
    assert (lamp["sku"], tee_again) == ("lamp-03", tee)
    assert lamp["started_at"] >= tee["ended_at"] - 1
    tee_vod, lamp_vod = await check_clip_media(server, tee), await check_clip_media(server, lamp)
    assert set(tee_vod.uris).isdisjoint(lamp_vod.uris)
    status, feed = await api(server, "/api/clips?limit=1")
    assert status == 200 and feed["clips"] == [lamp] and feed["next"] is not None
    status, feed = await api(server, f"/api/clips?limit=1&cursor={feed['next']}")
    assert feed == {"clips": [tee], "next": None}


async def test_a_pin_on_another_process_cuts_the_publishers_stream(
    start_server: ServerFactory,
    redis_url: str,
    tmp_path: Path,
    peers: list[Peer],  # noqa: F811
    connect: ClientFactory,
) -> None:
    """Two processes on one Redis and one media directory: the studio publishes to
    one, the host pins on the other, which then lists the clip and serves its files."""
    media = str(tmp_path / "media")
    publishing = await start_server(redis_url=redis_url, media_dir=media)
    other = await start_server(redis_url=redis_url, media_dir=media)
    studio, _ = publisher(publishing, "H264")
    peers.append(studio)
    assert (await studio.post("/api/rooms/demo/whip", HOST))[0] == 201
    await wait_for_segments(other, 2)  # the other process serves the live playlist too
    host = await connect(other, token=HOST)
    await host.join("demo")
    await host.request("pin", room="demo", sku="mug-01")
    await wait_for_segments(other, 5)
    await host.request("unpin", room="demo", sku="mug-01")
    [clip] = await wait_for_clips(other, 1)
    assert clip["sku"] == "mug-01"
    await check_clip_media(other, clip)
    assert other.app[MEDIA].publisher("demo") is None  # it never had the stream


async def test_retention_deletes_old_clips_and_streams_files_and_metadata(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    hour = 3600
    server = await start_server(media_dir=str(tmp_path / "media"), media_retention_s=hour)
    recorder = server.app[RECORDER]
    store = server.app[CLIPS]
    await until(lambda: recorder.sweeps >= 1, "the sweep at start-up")  # the next in 6 min
    now = time.time()
    old_time, fresh_time = now - 2 * hour, now - hour / 2

    def stream_dir(room: str, name: str, mtime: float, clips: list[str]) -> Path:
        folder = recorder.media_dir / room / name
        folder.mkdir(parents=True)
        for f in ["init.mp4", "0.m4s", *clips]:
            (folder / f).write_bytes(b"x")
        os.utime(folder, (mtime, mtime))
        return folder

    def clip(room: str, stream: str, clip_id: str, ended: float) -> Clip:
        return Clip(clip_id, room, stream, "mug", "Mug", 100, None, 0, int(ended * 1000), 1.0)

    old = stream_dir("gone", "s1", old_time, ["clip-c1.m3u8", "clip-c1.jpg"])
    (recorder.media_dir / "gone" / "live.m3u8").write_text("#EXTM3U\n")
    os.utime(recorder.media_dir / "gone" / "live.m3u8", (old_time, old_time))
    # a stream that went on after its old clip: the stream stays, the clip goes
    kept = stream_dir("kept", "s2", fresh_time, ["clip-c2.m3u8", "clip-c2.jpg", "clip-c3.m3u8"])
    await store.add(clip("gone", "s1", "c1", old_time))
    await store.add(clip("kept", "s2", "c2", old_time + 60))
    await store.add(clip("kept", "s2", "c3", fresh_time))

    swept = await recorder.sweep()
    assert (swept.clips, swept.streams) == (2, 1)
    assert not old.exists() and not (recorder.media_dir / "gone").exists()
    assert sorted(p.name for p in kept.iterdir()) == ["0.m4s", "clip-c3.m3u8", "init.mp4"]
    assert await store.get("gone", "c1") is None and await store.get("kept", "c2") is None
    assert [c.id for c in await store.room_clips("kept")] == ["c3"]
    assert await recorder.sweep() == type(swept)(0, 0)  # idempotent
