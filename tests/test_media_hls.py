"""HLS end to end: an aiortc studio publishes over WHIP to an in-process server; the
server's packager writes fragmented-MP4 HLS that PyAV decodes, served over HTTP with
the right types, caching and CORS; the playlist ends when the publisher leaves or the
room ends.
"""

from __future__ import annotations

import asyncio
import fractions
import io
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import av
import pytest
from aiortc.rtp import RtpPacket
from av.codec.context import CodecContext
from av.video.codeccontext import VideoCodecContext
from av.video.frame import PictureType, VideoFrame
from multidict import CIMultiDict

from livecommerce.cli import _parser, settings_from
from livecommerce.config import Settings
from livecommerce.errors import ConfigError
from livecommerce.http.media import MEDIA, RECORDER
from livecommerce.media import h264
from livecommerce.media.hls import Packager
from livecommerce.media.stream import Stream
from tests.conftest import HOST, LiveServer, ServerFactory, until
from tests.test_media_fmp4 import fu_a, stap_a
from tests.test_media_http import (
    Peer,
    loopback_ice,  # noqa: F401 (an autouse fixture)
    peers,  # noqa: F401 (a fixture)
    publisher,
)

HLS_TIMEOUT_S = 30.0
PLAYLIST = "application/vnd.apple.mpegurl"


@pytest.fixture
def engine() -> str:
    return "memory"


@dataclass
class Got:
    status: int
    headers: CIMultiDict[str]
    body: bytes


async def get(
    server: LiveServer, path: str, method: str = "GET", headers: dict[str, str] | None = None
) -> Got:
    url = f"http://127.0.0.1:{server.port}{path}"
    async with aiohttp.ClientSession() as s, s.request(method, url, headers=headers) as resp:
        return Got(resp.status, CIMultiDict(resp.headers), await resp.read())


@dataclass
class Playlist:
    text: str

    @property
    def tags(self) -> list[str]:
        return [line for line in self.text.splitlines() if line.startswith("#")]

    def tag(self, name: str) -> str | None:
        return next((t.split(":", 1)[1] for t in self.tags if t.startswith(f"#{name}:")), None)

    @property
    def uris(self) -> list[str]:
        return [line for line in self.text.splitlines() if line and not line.startswith("#")]

    @property
    def durations(self) -> list[float]:
        return [float(t.split(":")[1].rstrip(",")) for t in self.tags if t.startswith("#EXTINF:")]

    @property
    def maps(self) -> list[str]:
        return re.findall(r'#EXT-X-MAP:URI="([^"]+)"', self.text)

    @property
    def ended(self) -> bool:
        return "#EXT-X-ENDLIST" in self.tags


async def playlist(server: LiveServer, room: str = "demo") -> Playlist | None:
    got = await get(server, f"/hls/{room}/live.m3u8")
    return Playlist(got.body.decode()) if got.status == 200 else None


async def wait_for_segments(server: LiveServer, n: int, room: str = "demo") -> Playlist:
    deadline = time.monotonic() + HLS_TIMEOUT_S
    while True:
        p = await playlist(server, room)
        if p is not None and int(p.tag("EXT-X-MEDIA-SEQUENCE") or 0) + len(p.uris) >= n:
            return p
        assert time.monotonic() < deadline, f"{n} segments not within {HLS_TIMEOUT_S} s"
        await asyncio.sleep(0.1)


def decode(init: bytes, segment: bytes) -> tuple[list[VideoFrame], int, list[int]]:
    """The video frames, the audio frame count and the video keyframe flags."""
    with av.open(io.BytesIO(init + segment), mode="r") as container:
        pictures = list(container.decode(video=0))
    audio = 0
    with av.open(io.BytesIO(init + segment), mode="r") as container:
        if container.streams.audio:
            audio = sum(1 for _ in container.decode(audio=0))
    return pictures, audio, [int(p.key_frame) for p in pictures]


def trun_samples(segment: bytes) -> dict[int, int]:
    """Sample count of each track's run in a media segment (``moof/traf/trun``)."""
    counts: dict[int, int] = {}

    def walk(data: bytes, track: int | None = None) -> None:
        pos = 0
        while pos + 8 <= len(data):
            size = int.from_bytes(data[pos : pos + 4], "big")
            kind = data[pos + 4 : pos + 8]
            body = data[pos + 8 : pos + size]
            if kind in (b"moof", b"traf"):
                walk(body, track)
            elif kind == b"tfhd":
                track = int.from_bytes(body[4:8], "big")
            elif kind == b"trun":
                assert track is not None
                counts[track] = int.from_bytes(body[4:8], "big")
            pos += size

    walk(segment)
    return counts


@pytest.fixture
async def hls_server(start_server: ServerFactory, tmp_path: Path) -> AsyncIterator[LiveServer]:
    yield await start_server(media_dir=str(tmp_path / "media"))


async def check_segments(server: LiveServer, p: Playlist, width: int, height: int) -> None:
    """Every segment listed: served with its headers, decodable with its init,
    starting with a keyframe, its frames all there."""
    assert p.maps, p.text
    init_got = await get(server, f"/hls/demo/{p.maps[-1]}")
    assert init_got.status == 200
    assert init_got.headers["Content-Type"] == "video/mp4"
    assert init_got.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    assert init_got.headers["Access-Control-Allow-Origin"] == "*"
    for uri, duration in zip(p.uris, p.durations, strict=True):
        got = await get(server, f"/hls/demo/{uri}")
        assert got.status == 200, uri
        assert got.headers["Content-Type"] == "video/iso.segment"
        assert got.headers["Cache-Control"] == "public, max-age=31536000, immutable"
        assert got.headers["Access-Control-Allow-Origin"] == "*"
        pictures, audio, keys = decode(init_got.body, got.body)
        runs = trun_samples(got.body)
        assert len(pictures) == runs[1] > 0, (uri, len(pictures), runs)
        assert {(f.width, f.height) for f in pictures} == {(width, height)}
        assert keys[0] == 1, f"{uri} does not start with a keyframe"
        assert 0 < duration <= 2.0
        assert audio == runs.get(2, 0) > 0, (uri, audio, runs)


async def test_an_h264_publisher_gives_growing_decodable_hls_without_an_encode(
    hls_server: LiveServer,
    peers: list[Peer],  # noqa: F811
) -> None:
    server = hls_server
    assert (await get(server, "/hls/demo/live.m3u8")).status == 404  # nobody published yet
    studio, _ = publisher(server, "H264")
    peers.append(studio)
    status, _answer = await studio.post("/api/rooms/demo/whip", HOST)
    assert status == 201
    first = await wait_for_segments(server, 3)
    later = await wait_for_segments(server, 6)
    assert int(later.tag("EXT-X-MEDIA-SEQUENCE") or 0) + len(later.uris) > int(
        first.tag("EXT-X-MEDIA-SEQUENCE") or 0
    ) + len(first.uris), "the live playlist did not grow"
    got = await get(server, "/hls/demo/live.m3u8")
    assert got.headers["Content-Type"] == PLAYLIST
    assert got.headers["Cache-Control"] == "no-cache"
    assert got.headers["Access-Control-Allow-Origin"] == "*"
    assert later.tag("EXT-X-VERSION") == "7"
    assert later.tag("EXT-X-TARGETDURATION") == "2"
    assert later.tag("EXT-X-PROGRAM-DATE-TIME") is not None
    assert len(later.uris) <= 6 and not later.ended
    await check_segments(server, later, 320, 240)

    [recording] = server.app[RECORDER].recordings.values()
    packager: Packager = recording.packager
    assert packager._transcoder is None, "an H.264 publisher must be remuxed, not encoded"
    assert packager.segmenter.forced == 0
    stream = server.app[MEDIA].publisher("demo").stream  # type: ignore[union-attr]
    assert stream is not None and stream.keyframe_requests >= 1

    assert await studio.delete(HOST) == 200
    await until(lambda: packager.ended, "the packager ended", HLS_TIMEOUT_S)
    final = await playlist(server)
    assert final is not None and final.ended
    assert all(0 < d <= 2.0 for d in final.durations)


async def test_a_vp8_publisher_gives_decodable_hls_with_one_encode(
    hls_server: LiveServer,
    peers: list[Peer],  # noqa: F811
) -> None:
    server = hls_server
    studio, _ = publisher(server, "VP8")
    peers.append(studio)
    assert (await studio.post("/api/rooms/demo/whip", HOST))[0] == 201
    p = await wait_for_segments(server, 4)
    [recording] = server.app[RECORDER].recordings.values()
    assert recording.packager._transcoder is not None
    await check_segments(server, p, 320, 240)
    # our own encoder makes the keyframes: every cut lands near the target
    assert all(0.9 <= d <= 1.2 for d in p.durations[:-1]), p.durations


async def test_the_room_ending_stops_the_stream_and_ends_the_playlist(
    hls_server: LiveServer,
    peers: list[Peer],  # noqa: F811
    connect: Any,
) -> None:
    server = hls_server
    studio, _ = publisher(server, "H264")
    peers.append(studio)
    assert (await studio.post("/api/rooms/demo/whip", HOST))[0] == 201
    await wait_for_segments(server, 2)
    host = await connect(server, token=HOST)
    await host.join("demo")
    await host.request("room.end", room="demo")
    relay = server.app[MEDIA]
    await until(lambda: relay.publisher("demo") is None, "the publisher stopped", HLS_TIMEOUT_S)
    await until(lambda: not server.app[RECORDER].recordings, "the recording ended")
    p = await playlist(server)
    assert p is not None and p.ended
    await until(lambda: studio.pc.connectionState == "closed", "the studio's connection closed")


async def test_hls_answers_are_cacheable_cors_and_confined(hls_server: LiveServer) -> None:
    server = hls_server
    media = Path(server.app[RECORDER].media_dir)
    (media / "demo" / "abc123").mkdir(parents=True)
    (media / "demo" / "abc123" / "0.m4s").write_bytes(b"segment")
    (media / "demo" / "abc123" / "clip-x1.m3u8").write_text("#EXTM3U\n")
    (media / "secret.txt").write_text("not for you")

    got = await get(server, "/hls/demo/abc123/0.m4s")
    assert (got.status, got.body) == (200, b"segment")
    assert got.headers["Content-Type"] == "video/iso.segment"
    got = await get(server, "/hls/demo/abc123/clip-x1.m3u8")
    assert got.status == 200 and got.headers["Content-Type"] == PLAYLIST
    assert got.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    got = await get(server, "/hls/demo/abc123/0.m4s", "HEAD")
    assert got.status == 200 and got.headers["Access-Control-Allow-Origin"] == "*"
    got = await get(server, "/hls/demo/abc123/0.m4s", headers={"Range": "bytes=2-4"})
    assert (got.status, got.body) == (206, b"gme")

    # the live playlist revalidates by its content
    (media / "shop").mkdir()
    (media / "shop" / "live.m3u8").write_text("#EXTM3U\n#EXT-X-VERSION:7\n")
    got = await get(server, "/hls/shop/live.m3u8")
    assert got.status == 200 and got.body.startswith(b"#EXTM3U")
    assert "Last-Modified" not in got.headers
    etag = got.headers["ETag"]
    again = await get(server, "/hls/shop/live.m3u8", headers={"If-None-Match": etag})
    assert again.status == 304 and again.headers["Cache-Control"] == "no-cache"
    (media / "shop" / "live.m3u8").write_text("#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-ENDLIST\n")
    changed = await get(server, "/hls/shop/live.m3u8", headers={"If-None-Match": etag})
    assert changed.status == 200 and changed.headers["ETag"] != etag

    for path in (
        "/hls/nowhere/live.m3u8",  # no stream
        "/hls/demo/live.m3u8",
        "/hls/demo/abc123/1.m4s",  # no such segment
        "/hls/demo/abc123/secret.txt",
        "/hls/demo/%2e%2e/secret.txt",
        "/hls/demo/abc123/..%2f..%2fsecret.txt",
        "/hls/..%2f/abc123/0.m4s",
        "/hls/Demo/abc123/0.m4s",
    ):
        got = await get(server, path)
        assert got.status == 404, path
        assert got.headers["Content-Type"].startswith("application/json"), path
        assert got.headers["Access-Control-Allow-Origin"] == "*", path
        assert got.headers["Cache-Control"] == "no-cache", path
        assert b'"code":"not_found"' in got.body and b"not for you" not in got.body

    got = await get(server, "/hls/demo/live.m3u8", "OPTIONS")
    assert got.status == 204
    assert got.headers["Access-Control-Allow-Origin"] == "*"
    assert "GET" in got.headers["Access-Control-Allow-Methods"]


# -- the packager without a network: RTP packets straight into a Stream -----------------


class FakeStudio:
    """Makes a publisher's RTP packets: libx264 pictures packetized per RFC 6184 (STAP-A
    for the small units, FU-A for the big), 30 fps, and Opus-sized audio packets; it
    answers a keyframe request with a keyframe at its next picture, if it listens."""

    def __init__(
        self,
        *,
        listens: bool = True,
        ts0: int = 0,
        size: tuple[int, int] = (160, 96),
        key_at: tuple[int, ...] = (0,),
    ) -> None:
        self.listens = listens
        self.key_at = key_at
        self.keyframe_asked = False
        self.requests = 0
        self.clock = [1_800_000_000.0]
        self.stream = Stream(
            "demo",
            {"video": "H264", "audio": "opus"},
            send_keyframe_request=self._pli,
            keyframe_interval_s=0,
        )
        self._encoder = self._x264(*size)
        self._seqs: dict[int, int] = {}
        self._audio_ts = 7 << 20
        self._ts0 = ts0
        self.frames = 0

    @staticmethod
    def _x264(width: int, height: int) -> VideoCodecContext:
        enc = CodecContext.create("libx264", "w")
        assert isinstance(enc, VideoCodecContext)
        enc.width, enc.height, enc.pix_fmt = width, height, "yuv420p"
        enc.time_base = fractions.Fraction(1, 90_000)
        enc.options = {"preset": "ultrafast", "tune": "zerolatency"}
        enc.gop_size = 100_000
        return enc

    def _pli(self, ssrc: int) -> None:
        self.requests += 1
        if self.listens:
            self.keyframe_asked = True

    def resize(self, width: int, height: int) -> None:
        self._encoder = self._x264(width, height)

    def _packet(self, payload: bytes, ts: int, marker: bool, ssrc: int, pt: int) -> RtpPacket:
        seq = self._seqs[ssrc] = (self._seqs.get(ssrc, 0) + 1) & 0xFFFF
        return RtpPacket(
            payload_type=pt,
            marker=int(marker),
            sequence_number=seq,
            timestamp=ts & 0xFFFFFFFF,
            ssrc=ssrc,
            payload=payload,
        )

    def picture(self) -> None:
        """One video frame, and the audio of its 33 ms, to the stream."""
        i = self.frames
        self.frames += 1
        self.clock[0] += 1 / 30
        frame = VideoFrame(width=self._encoder.width, height=self._encoder.height)
        for n, plane in enumerate(frame.planes):
            plane.update(bytes([(i * 7 + n * 50) % 256]) * plane.buffer_size)
        frame.pts = i * 3000
        key = self.keyframe_asked or i in self.key_at
        frame.pict_type = PictureType.I if key else PictureType.NONE
        self.keyframe_asked = False
        ts = self._ts0 + i * 3000
        for packet in self._encoder.encode(frame):
            units = h264.split_annexb(bytes(packet))
            small = [u for u in units if len(u) < 200]
            big = [u for u in units if len(u) >= 200]
            payloads = [stap_a(small)] if len(small) > 1 else small
            for u in big:
                payloads += fu_a(u, 500)
            for n, p in enumerate(payloads):
                self.stream.on_packet("video", self._packet(p, ts, n == len(payloads) - 1, 1, 96))
        for _ in range(2 if i % 3 else 1):  # 50 packets a second, 20 ms each
            self._audio_ts += 960
            opus = bytes([0xFC]) + bytes(20)
            self.stream.on_packet("audio", self._packet(opus, self._audio_ts, True, 2, 111))


def packager_of(studio: FakeStudio, tmp_path: Path) -> Packager:
    return Packager(studio.stream, tmp_path / "demo", "s1", clock=lambda: studio.clock[0])


def decoded_frames(folder: Path, p: Playlist) -> int:
    """Frames decoded from every segment of the playlist, each with its init."""
    total = 0
    init_of = {}
    current = None
    for line in p.text.splitlines():
        if line.startswith("#EXT-X-MAP:"):
            current = line.split('"')[1].split("/")[-1]
        elif line and not line.startswith("#"):
            init_of[line.split("/")[-1]] = current
    for name, init in init_of.items():
        assert init is not None
        pictures, _audio, keys = decode((folder / init).read_bytes(), (folder / name).read_bytes())
        assert keys[0] == 1, name
        total += len(pictures)
    return total


async def test_the_packager_asks_for_a_keyframe_at_each_segment_boundary(tmp_path: Path) -> None:
    studio = FakeStudio()
    packager = packager_of(studio, tmp_path)
    for _ in range(30 * 6):
        studio.picture()
    durations = [round(e.duration, 3) for e in packager.entries]
    assert len(durations) >= 5 and all(0.9 <= d <= 1.1 for d in durations), durations
    # one request to start, about one per segment after (the keyframe comes at once)
    assert len(durations) <= studio.requests <= len(durations) + 2
    studio.stream.end()
    await packager.done
    text = (tmp_path / "demo" / "live.m3u8").read_text()
    p = Playlist(text)
    assert p.ended and len(p.uris) == 6 and p.maps == ["s1/init.mp4"]
    assert decoded_frames(tmp_path / "demo" / "s1", Playlist(text)) >= 30 * 5
    assert "#EXT-X-INDEPENDENT-SEGMENTS" in p.tags


async def test_a_publisher_deaf_to_keyframe_requests_still_gets_short_segments(
    tmp_path: Path,
) -> None:
    # The stream starts at the second keyframe (the first packets come before a frame's
    # end); no keyframe after it. RTP timestamps wrap at frame 100.
    studio = FakeStudio(listens=False, ts0=0xFFFFFFFF - 100 * 3000, key_at=(0, 1))
    packager = packager_of(studio, tmp_path)
    for _ in range(30 * 8):
        studio.picture()
    studio.stream.end()
    await packager.done
    durations = [e.duration for e in packager.entries]
    assert all(0 < d <= 2.0 for d in durations) and sum(durations) == pytest.approx(8 - 1 / 30)
    assert packager.segmenter.forced == len(durations) - 1
    assert studio.requests >= 4  # it kept asking
    p = Playlist((tmp_path / "demo" / "live.m3u8").read_text())
    assert "#EXT-X-INDEPENDENT-SEGMENTS" not in p.tags
    # decoded as a whole, the stream has every frame (across the timestamp wrap)
    folder = tmp_path / "demo" / "s1"
    data = (folder / "init.mp4").read_bytes() + b"".join(
        (folder / f"{e.seq}.m4s").read_bytes() for e in packager.entries
    )
    with av.open(io.BytesIO(data), mode="r") as container:
        pts = [-1 if f.pts is None else f.pts for f in container.decode(video=0)]
    assert len(pts) == 30 * 8 - 1 and pts[0] == 0 and pts == sorted(pts)
    assert pts[-1] == (30 * 8 - 2) * 3000


async def test_a_new_picture_size_gets_a_new_init_and_a_discontinuity(tmp_path: Path) -> None:
    studio = FakeStudio()
    packager = packager_of(studio, tmp_path)
    boundaries: list[tuple[int, float]] = []
    packager.request_cut(lambda seq, t: boundaries.append((seq, t)))  # before the start
    for _ in range(45):
        studio.picture()
    studio.resize(192, 108)
    studio.keyframe_asked = True
    for _ in range(45):
        studio.picture()
    packager.request_cut(lambda seq, t: boundaries.append((seq, t)))
    studio.stream.end()
    await packager.done
    p = Playlist((tmp_path / "demo" / "live.m3u8").read_text())
    assert p.maps == ["s1/init.mp4", "s1/init-1.mp4"] and "#EXT-X-DISCONTINUITY" in p.tags
    folder = tmp_path / "demo" / "s1"
    with av.open(io.BytesIO((folder / "init-1.mp4").read_bytes()), mode="r") as container:
        assert (container.streams.video[0].width, container.streams.video[0].height) == (192, 108)
    assert decoded_frames(folder, p) == 89  # all but the first (before a frame's end)
    # the first boundary is the stream's start; one asked for at the end is the end
    assert boundaries[0] == (0, packager.t0)
    assert boundaries[1][0] == len(packager.entries)
    last = packager.entries[-1]
    assert boundaries[1][1] == pytest.approx(last.program_time + last.duration)


async def test_an_audio_only_stream_gets_audio_segments(tmp_path: Path) -> None:
    stream = Stream("demo", {"audio": "opus"}, send_keyframe_request=lambda ssrc: None)
    clock = [1_800_000_000.0]
    packager = Packager(stream, tmp_path / "demo", "s1", clock=lambda: clock[0])
    for n in range(250):  # 5 s of 20 ms packets
        clock[0] += 0.02
        packet = RtpPacket(
            payload_type=111,
            marker=1,
            sequence_number=n,
            timestamp=(n * 960) & 0xFFFFFFFF,
            ssrc=9,
            payload=bytes([0xFC]) + bytes(20),
        )
        stream.on_packet("audio", packet)
    stream.end()
    await packager.done
    assert [round(e.duration, 2) for e in packager.entries] == [1.0] * 5
    folder = tmp_path / "demo" / "s1"
    data = (folder / "init.mp4").read_bytes() + (folder / "2.m4s").read_bytes()
    with av.open(io.BytesIO(data), mode="r") as container:
        assert not container.streams.video
        assert sum(f.samples for f in container.decode(audio=0)) == 50 * 960


def test_media_settings_come_from_flags_and_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def settings(*argv: str) -> Settings:
        args = ["serve", "--secret", "s" * 32, "--sandbox-shop", *argv]
        return settings_from(_parser().parse_args(args))

    default = settings()
    assert (default.media_dir, default.media_retention_s, default.media_max_viewers) == (
        "media",
        7 * 86400,
        200,
    )
    assert settings("--demo").media_dir is None  # a temporary directory
    given = settings(
        "--media-dir", "/srv/hls", "--media-retention-h", "1.5", "--media-max-viewers", "7"
    )
    assert (given.media_dir, given.media_retention_s, given.media_max_viewers) == (
        "/srv/hls",
        5400,
        7,
    )
    monkeypatch.setenv("LIVECOMMERCE_MEDIA_DIR", "/var/media")
    monkeypatch.setenv("LIVECOMMERCE_MEDIA_RETENTION_H", "24")
    monkeypatch.setenv("LIVECOMMERCE_MEDIA_MAX_VIEWERS", "0")
    env = settings()
    assert (env.media_dir, env.media_retention_s, env.media_max_viewers) == ("/var/media", 86400, 0)
    with pytest.raises(ConfigError):
        settings("--media-retention-h", "0.001")


async def test_the_viewer_cap_setting_reaches_the_relay(start_server: ServerFactory) -> None:
    server = await start_server(media_max_viewers=3)
    assert server.app[MEDIA].max_viewers == 3
