"""WHIP ingest and WHEP playback end to end, with in-process aiortc peers as the studio
and the viewers (ICE on loopback only), against an in-process server.

The test clients encode (the publisher) and decode (the viewers); the server must do
neither, which is checked by watching aiortc's codec factories and attributing every
encoder and decoder made to its owner.
"""

from __future__ import annotations

import asyncio
import fractions
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import aioice.ice
import pytest
from aiohttp.test_utils import TestServer
from aiortc import (
    AudioStreamTrack,
    MediaStreamError,
    MediaStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
    VideoStreamTrack,
    rtcrtpreceiver,
    rtcrtpsender,
)
from av import VideoFrame

from livecommerce.config import Settings
from livecommerce.http import create_app
from livecommerce.http.media import MEDIA
from livecommerce.media.relay import MediaRelay, Session
from livecommerce.protocol import loads
from tests.conftest import (
    HOST,
    ROOT,
    SECRET,
    ClientFactory,
    LiveServer,
    ServerFactory,
    free_port,
    token,
    until,
)

SDP = "application/sdp"
FRAME_TIMEOUT_S = 20.0
"""Generous: a loaded 2-core machine encodes, relays and decodes in one process."""


@pytest.fixture
def engine() -> str:
    """The media relay is per process: the memory engine is enough (no Redis)."""
    return "memory"


@pytest.fixture(autouse=True)
def loopback_ice(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every peer, server included, offers only 127.0.0.1 as its ICE candidate."""
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: ["127.0.0.1"])


class Pattern(VideoStreamTrack):
    """A small synthetic camera: 320x240 at 30 fps, every frame different."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    async def recv(self) -> VideoFrame:
        pts, time_base = await self.next_timestamp()
        frame = VideoFrame(width=320, height=240)
        self.count += 1
        for i, plane in enumerate(frame.planes):
            plane.update(bytes([(self.count * 3 + i * 50) % 256]) * plane.buffer_size)
        frame.pts = pts
        frame.time_base = fractions.Fraction(time_base.numerator, time_base.denominator)
        return frame


def codecs_of(sdp: str) -> dict[str, list[str]]:
    """The codec names of each media section of an SDP (``{"video": ["H264", "rtx"]}``)."""
    out: dict[str, list[str]] = {}
    kind = ""
    for line in sdp.splitlines():
        if line.startswith("m="):
            kind = line[2:].split()[0]
            out.setdefault(kind, [])
        elif line.startswith("a=rtpmap:"):
            out[kind].append(line.split()[1].split("/")[0])
    return out


@dataclass
class Peer:
    """An in-process WebRTC client of the server."""

    server: LiveServer
    pc: RTCPeerConnection = field(
        default_factory=lambda: RTCPeerConnection(RTCConfiguration(iceServers=[]))
    )
    tracks: dict[str, MediaStreamTrack] = field(default_factory=dict)
    location: str | None = None
    answer: str = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"

    async def offer(self) -> str:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return str(self.pc.localDescription.sdp)

    async def post(self, path: str, auth: str | None = None) -> tuple[int, Any]:
        """POST our offer; on 201 apply the answer. The status and the body."""
        status, body, headers = await post_sdp(self.server, path, await self.offer(), auth)
        if status == 201:
            assert headers["Content-Type"] == SDP
            self.location = headers["Location"]
            self.answer = body
            await self.pc.setRemoteDescription(RTCSessionDescription(body, "answer"))
        return status, body

    async def delete(self, auth: str | None = None) -> int:
        assert self.location is not None
        headers = {"Authorization": f"Bearer {auth}"} if auth else {}
        async with (
            aiohttp.ClientSession() as s,
            s.delete(self.url + self.location, headers=headers) as resp,
        ):
            return resp.status


async def post_sdp(
    server: LiveServer, path: str, sdp: str, auth: str | None = None, content_type: str = SDP
) -> tuple[int, Any, dict[str, str]]:
    headers = {"Content-Type": content_type}
    if auth:
        headers["Authorization"] = f"Bearer {auth}"
    url = f"http://127.0.0.1:{server.port}{path}"
    async with aiohttp.ClientSession() as s, s.post(url, data=sdp, headers=headers) as resp:
        raw = await resp.read()
        body = raw.decode() if resp.content_type == SDP else loads(raw)
        return resp.status, body, dict(resp.headers)


def publisher(server: LiveServer, video_codec: str | None = None) -> tuple[Peer, RTCRtpSender]:
    """A studio with a synthetic camera and a silent microphone (not yet offered)."""
    peer = Peer(server)
    video = peer.pc.addTransceiver(Pattern(), direction="sendonly")
    if video_codec is not None:
        video.setCodecPreferences(
            [
                c
                for c in RTCRtpSender.getCapabilities("video").codecs
                if c.name in (video_codec, "rtx")
            ]
        )
    peer.pc.addTransceiver(AudioStreamTrack(), direction="sendonly")
    return peer, video.sender


def viewer(server: LiveServer, video_codec: str | None = None) -> Peer:
    """A player receiving video and audio (not yet offered)."""
    peer = Peer(server)
    video = peer.pc.addTransceiver("video", direction="recvonly")
    if video_codec is not None:
        video.setCodecPreferences(
            [
                c
                for c in RTCRtpSender.getCapabilities("video").codecs
                if c.name in (video_codec, "rtx")
            ]
        )
    peer.pc.addTransceiver("audio", direction="recvonly")
    peer.pc.on("track", lambda track: peer.tracks.__setitem__(track.kind, track))
    return peer


@pytest.fixture
async def peers() -> AsyncIterator[list[Peer]]:
    """Peers to close after the test."""
    made: list[Peer] = []
    yield made
    await asyncio.gather(*(p.pc.close() for p in made))


async def frames(track: MediaStreamTrack, count: int) -> list[Any]:
    """The next ``count`` decoded frames of a received track."""
    return [await asyncio.wait_for(track.recv(), FRAME_TIMEOUT_S) for _ in range(count)]


async def ended(track: MediaStreamTrack) -> None:
    """Wait until a received track ends."""
    with pytest.raises(MediaStreamError):
        async with asyncio.timeout(FRAME_TIMEOUT_S):
            while True:
                await track.recv()


@dataclass
class CodecSpy:
    """Every encoder and decoder aiortc makes, by owner: the sender that asked for an
    encoder, the decoded-frame queue of the receiver's track for a decoder."""

    encoders: list[object] = field(default_factory=list)
    decoders: list[object] = field(default_factory=list)


@pytest.fixture
def codec_spy(monkeypatch: pytest.MonkeyPatch) -> CodecSpy:
    spy = CodecSpy()
    make_encoder = vars(rtcrtpsender)["get_encoder"]
    make_decoder = vars(rtcrtpreceiver)["get_decoder"]

    def get_encoder(codec: Any) -> Any:
        spy.encoders.append(sys._getframe(1).f_locals.get("self"))  # the RTCRtpSender
        return make_encoder(codec)

    def get_decoder(codec: Any) -> Any:
        spy.decoders.append(sys._getframe(1).f_locals.get("output_q"))  # in decoder_worker
        return make_decoder(codec)

    monkeypatch.setattr(rtcrtpsender, "get_encoder", get_encoder)
    monkeypatch.setattr(rtcrtpreceiver, "get_decoder", get_decoder)
    return spy


def server_codec_owners(relay: MediaRelay) -> list[object]:
    """The server's senders and its receivers' decoded-frame queues."""
    owners: list[object] = []
    for session in relay.sessions():
        owners += session.pc.getSenders()
        owners += [getattr(r.track, "_queue", None) for r in session.pc.getReceivers() if r.track]
    return owners


async def test_viewers_get_the_publishers_packets_with_no_codec_on_the_server(
    start_server: ServerFactory, peers: list[Peer], codec_spy: CodecSpy
) -> None:
    server = await start_server()
    relay = server.app[MEDIA]
    studio, _ = publisher(server)  # offers VP8 and H264, aiortc's default order
    peers.append(studio)
    status, answer = await studio.post("/api/rooms/demo/whip", HOST)
    assert status == 201, answer
    assert studio.location is not None and studio.location.startswith("/api/rooms/demo/whip/")
    assert codecs_of(answer) == {"video": ["H264", "rtx"], "audio": ["opus"]}  # H.264 preferred

    watchers = [viewer(server), viewer(server)]
    peers.extend(watchers)
    for w in watchers:
        status, answer = await w.post("/api/rooms/demo/whep")  # a guest
        assert status == 201, answer
        assert codecs_of(answer) == {"video": ["H264", "rtx"], "audio": ["opus"]}
    assert relay.viewers == 2
    for w in watchers:
        pictures = await frames(w.tracks["video"], 10)
        assert {(f.width, f.height) for f in pictures} == {(320, 240)}
        await frames(w.tracks["audio"], 1)
    stream = relay.publisher("demo").stream  # type: ignore[union-attr]
    assert stream is not None and stream.frames("video") >= 10
    assert stream.sinks("video") == 3  # the two viewers and the HLS packager

    server_side = server_codec_owners(relay)
    assert len(server_side) >= 6  # 2 publisher receivers' queues, 2 senders per viewer
    assert not [o for o in codec_spy.encoders if any(o is s for s in server_side)], (
        "the server made an encoder"
    )
    assert not [o for o in codec_spy.decoders if any(o is s for s in server_side)], (
        "the server made a decoder"
    )
    assert len(codec_spy.encoders) == 2  # the studio's video and audio, nobody else's
    assert len(codec_spy.decoders) >= 4  # each viewer's video and audio

    # The studio stops: every viewer's tracks end and their connections close.
    assert await studio.delete(HOST) == 200
    for w in watchers:
        await ended(w.tracks["video"])
        await ended(w.tracks["audio"])
        await until(lambda w=w: w.pc.connectionState == "closed", "the viewer's connection closed")  # type: ignore[misc]
    assert relay.publisher("demo") is None and relay.sessions() == [] and relay.viewers == 0
    assert await watchers[0].delete() == 404  # its session is gone
    assert await studio.delete(HOST) == 404


async def test_a_late_viewer_gets_a_picture_because_its_keyframe_request_reaches_the_studio(
    start_server: ServerFactory, peers: list[Peer]
) -> None:
    server = await start_server()
    relay = server.app[MEDIA]
    studio, camera = publisher(server, "VP8")  # aiortc's VP8 makes a keyframe every 100 s
    peers.append(studio)
    asked: list[float] = []
    send_keyframe = camera._send_keyframe

    def keyframe_asked() -> None:
        asked.append(time.monotonic())
        send_keyframe()

    camera._send_keyframe = keyframe_asked  # type: ignore[method-assign]
    status, answer = await studio.post("/api/rooms/demo/whip", HOST)
    assert status == 201 and codecs_of(answer)["video"] == ["VP8", "rtx"]
    publishing = relay.publisher("demo")
    assert publishing is not None and publishing.stream is not None
    stream = publishing.stream
    await until(lambda: stream.frames("video") >= 30, "a second of video at the server")

    late = viewer(server)
    peers.append(late)
    joined = time.monotonic()
    status, answer = await late.post("/api/rooms/demo/whep")
    assert status == 201 and codecs_of(answer)["video"] == ["VP8", "rtx"]
    [picture] = await frames(late.tracks["video"], 1)
    assert picture.width == 320
    assert [t for t in asked if t > joined], "the studio got no keyframe request"

    # The viewer itself asks (a PLI, as a browser does when its picture breaks).
    before = len(asked)
    receiver = next(t.receiver for t in late.pc.getTransceivers() if t.kind == "video")
    [source] = receiver.getSynchronizationSources()
    await receiver._send_rtcp_pli(source.source)
    await until(lambda: len(asked) > before, "the viewer's PLI reached the studio")
    await frames(late.tracks["video"], 5)


async def test_refusals_are_clear(start_server: ServerFactory, peers: list[Peer]) -> None:
    server = await start_server()
    relay = server.app[MEDIA]

    async def post(path: str, sdp: str, auth: str | None = None, **kw: Any) -> tuple[int, Any]:
        status, body, _ = await post_sdp(server, path, sdp, auth, **kw)
        return status, body

    def code(body: Any) -> str:
        return str(body["error"]["code"])

    watcher = viewer(server)
    studio, _ = publisher(server)
    peers += [watcher, studio]
    watch_offer, publish_offer = await watcher.offer(), await studio.offer()

    # Nobody publishes yet: a viewer gets a 404 that says so.
    status, body = await post("/api/rooms/demo/whep", watch_offer)
    assert (status, code(body)) == (404, "not_found") and "not streaming" in body["error"][
        "message"
    ]
    status, body = await post("/api/rooms/nowhere/whep", watch_offer)
    assert (status, code(body)) == (404, "not_found")

    # Publishing takes the room's host, an SDP body, and an offer that sends.
    status, body = await post("/api/rooms/demo/whip", publish_offer)
    assert (status, code(body)) == (401, "unauthorized")
    status, body = await post("/api/rooms/demo/whip", publish_offer, token("someone"))
    assert (status, code(body)) == (403, "forbidden")
    status, body = await post(
        "/api/rooms/demo/whip", publish_offer, HOST, content_type="text/plain"
    )
    assert status == 415 and "application/sdp" in body["error"]["message"]
    status, body = await post("/api/rooms/demo/whip", "v=0\r\nthis is not SDP\r\n", HOST)
    assert (status, code(body)) == (400, "bad_request")
    status, body = await post("/api/rooms/demo/whip", "", HOST)
    assert (status, code(body)) == (400, "bad_request")
    status, body = await post("/api/rooms/demo/whip", watch_offer, HOST)  # receives, sends nothing
    assert (status, code(body)) == (400, "bad_request") and "sends no" in body["error"]["message"]
    assert relay.publisher("demo") is None and relay.sessions() == []

    status, _, headers = await post_sdp(server, "/api/rooms/demo/whip", publish_offer, HOST)
    assert status == 201 and headers["Location"].startswith("/api/rooms/demo/whip/")
    second, _ = publisher(server)
    peers.append(second)
    status, body = await post("/api/rooms/demo/whip", await second.offer(), HOST)
    assert (status, code(body)) == (409, "conflict") and "already" in body["error"]["message"]

    # Viewers: bad SDP, an offer that cannot take the stream's codec, the cap.
    status, body = await post("/api/rooms/demo/whep", "garbage")
    assert (status, code(body)) == (400, "bad_request")
    vp8_only = viewer(server, "VP8")
    peers.append(vp8_only)
    status, body = await post("/api/rooms/demo/whep", await vp8_only.offer())
    assert (status, code(body)) == (400, "bad_request") and "H264" in body["error"]["message"]
    relay.max_viewers = 0
    status, body = await post("/api/rooms/demo/whep", watch_offer)
    assert status == 503 and code(body) == "over_capacity"
    assert body["error"]["fallback"] == "hls" and "HLS" in body["error"]["message"]
    assert relay.viewers == 0

    # Session URLs: no trickle ICE; unknown sessions; the host's rights to stop.
    url = f"http://127.0.0.1:{server.port}{headers['Location']}"
    async with aiohttp.ClientSession() as s:
        async with s.patch(url, data="a=candidate", headers={"Content-Type": "x"}) as resp:
            assert resp.status == 405 and resp.headers["Allow"] == "DELETE"
        async with s.delete(url) as resp:
            assert resp.status == 401
        async with s.delete(url + "x", headers={"Authorization": f"Bearer {HOST}"}) as resp:
            assert resp.status == 404
        async with s.delete(url.replace("/whip/", "/whep/")) as resp:
            assert resp.status == 404  # not a viewer's session
        async with s.delete(url, headers={"Authorization": f"Bearer {HOST}"}) as resp:
            assert resp.status == 200
    assert relay.sessions() == []


async def test_a_studio_that_drops_ends_the_stream_and_another_can_publish(
    start_server: ServerFactory, peers: list[Peer]
) -> None:
    server = await start_server()
    relay = server.app[MEDIA]
    studio, _ = publisher(server)
    watcher = viewer(server)
    peers += [studio, watcher]
    assert (await studio.post("/api/rooms/demo/whip", HOST))[0] == 201
    assert (await watcher.post("/api/rooms/demo/whep"))[0] == 201
    await frames(watcher.tracks["video"], 3)

    await studio.pc.close()  # no DELETE: the connection just goes
    await ended(watcher.tracks["video"])
    await until(lambda: watcher.pc.connectionState == "closed", "the viewer's connection closed")
    await until(lambda: relay.sessions() == [], "the sessions closed")

    again, _ = publisher(server)
    peers.append(again)
    assert (await again.post("/api/rooms/demo/whip", HOST))[0] == 201


async def test_shutdown_closes_every_peer_connection(settings: Settings, peers: list[Peer]) -> None:
    app = create_app(settings)
    server = TestServer(app, host="127.0.0.1", port=free_port())
    await server.start_server()
    assert settings.secret == SECRET and server.port is not None
    live = LiveServer(server.port, app)
    studio, _ = publisher(live)
    watcher = viewer(live)
    peers += [studio, watcher]
    assert (await studio.post("/api/rooms/demo/whip", HOST))[0] == 201
    assert (await watcher.post("/api/rooms/demo/whep"))[0] == 201
    await frames(watcher.tracks["video"], 1)
    relay = app[MEDIA]

    await server.close()
    assert relay.sessions() == []
    await ended(watcher.tracks["video"])
    await until(lambda: studio.pc.connectionState == "closed", "the studio's connection closed")


def test_closing_the_relay_while_it_gathers_leaves_no_socket_open() -> None:
    """aioice leaves open the UDP sockets it opens after its connection was closed; a
    session closed while it gathers (a request given up, the server shutting down)
    must wait for the gathering. Leaked sockets show only when the process exits."""
    out = subprocess.run(
        [sys.executable, "-X", "dev", "-m", "tests.media_close_probe"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert "closed while gathering: 3" in out.stdout, out.stdout
    assert "unclosed" not in out.stderr, out.stderr


async def test_the_room_says_when_its_video_starts_becomes_playable_and_stops(
    start_server: ServerFactory, connect: ClientFactory, peers: list[Peer]
) -> None:
    """The snapshot's ``media`` and the ``media.*`` events: a page asks for WHEP or HLS
    only while they say there is something to play."""
    server = await start_server()
    watcher = await connect(server)
    snap = await watcher.join("demo")
    assert snap["media"] == {"live": False, "whep": False, "hls": False}

    def of_type(kind: str) -> Callable[[dict[str, Any]], bool]:
        return lambda e: e.get("type") == kind

    studio, _ = publisher(server)
    peers.append(studio)
    assert (await studio.post("/api/rooms/demo/whip", HOST))[0] == 201
    started = await watcher.next_event(of_type("media.started"), timeout=FRAME_TIMEOUT_S)
    assert started["media"] == {"live": True, "whep": True, "hls": False} and "seq" in started
    updated = await watcher.next_event(of_type("media.updated"), timeout=FRAME_TIMEOUT_S)
    assert updated["media"] == {"live": True, "whep": True, "hls": True}
    assert updated["seq"] > started["seq"]
    async with aiohttp.ClientSession() as s, s.get(f"{studio.url}/hls/demo/live.m3u8") as r:
        assert r.status == 200  # playable when the event says so
    late = await connect(server)
    assert (await late.join("demo"))["media"]["hls"] is True
    async with aiohttp.ClientSession() as s, s.get(f"{studio.url}/api/rooms/demo") as r:
        assert (await r.json())["media"]["live"] is True

    assert await studio.delete(HOST) == 200
    ended_ = await watcher.next_event(of_type("media.ended"), timeout=FRAME_TIMEOUT_S)
    assert ended_["media"] == {"live": False, "whep": False, "hls": False}
    again = await connect(server)
    assert (await again.join("demo"))["media"]["live"] is False


async def test_a_publisher_that_never_connects_is_never_announced(
    start_server: ServerFactory, connect: ClientFactory, peers: list[Peer]
) -> None:
    server = await start_server()
    server.app[MEDIA].connect_timeout_s = 0.5
    watcher = await connect(server)
    await watcher.join("demo")
    studio, _ = publisher(server)
    peers.append(studio)
    offer = await studio.offer()  # posted, but our side never applies the answer
    status, _, _ = await post_sdp(server, "/api/rooms/demo/whip", offer, HOST)
    assert status == 201
    relay = server.app[MEDIA]
    await until(lambda: relay.sessions() == [], "the unconnected publisher dropped")
    late = await connect(server)
    assert (await late.join("demo"))["media"]["live"] is False
    with pytest.raises(TimeoutError):
        await watcher.next_event(lambda e: e.get("type", "").startswith("media."), timeout=0.5)


def remote_candidates(session: Session) -> list[str]:
    """The addresses the server's ICE agent of ``session`` would send STUN to."""
    transceiver = session.pc.getTransceivers()[0]
    ice = transceiver.receiver.transport.transport
    return [c.ip for c in ice.getRemoteCandidates()]


async def test_an_offer_cannot_make_the_server_probe_any_address(
    start_server: ServerFactory, peers: list[Peer]
) -> None:
    """The attack: a WHIP/WHEP offer carrying 200 ``a=candidate`` lines made the server
    send STUN to every address and port in them. A server that is no demo checks at
    most 16, and none on loopback or private ranges (``--ice-allow-private`` lifts that)."""
    server = await start_server(demo=False, sandbox_shop=True)
    studio, _ = publisher(server)
    peers.append(studio)
    offer = await studio.offer()
    probes = "".join(
        f"a=candidate:{i} 1 udp 2130706431 8.8.{i // 200}.{i % 200} {1000 + i} typ host\r\n"
        for i in range(200)
    )
    inner = "a=candidate:900 1 udp 2130706431 10.0.0.7 6379 typ host\r\n"
    forged = offer.replace(
        "a=end-of-candidates", (inner + probes).rstrip("\r\n") + "\r\na=end-of-candidates", 1
    )
    async with aiohttp.ClientSession() as s:
        made = await s.post(
            f"{studio.url}/api/rooms",
            json={"title": "Show"},
            headers={"Authorization": f"Bearer {HOST}"},
        )
        assert made.status == 201
        room = (await made.json())["id"]
    status, _, _ = await post_sdp(server, f"/api/rooms/{room}/whip", forged, HOST)
    assert status == 201
    session = server.app[MEDIA].publisher(room)
    assert session is not None
    probed = remote_candidates(session)
    assert 0 < len(probed) <= 16
    assert "10.0.0.7" not in probed and "127.0.0.1" not in probed
    assert all(ip.startswith("8.8.") for ip in probed)


async def test_one_guest_cannot_hold_the_viewer_slots(
    start_server: ServerFactory, peers: list[Peer]
) -> None:
    """The attack: one guest took all 200 WebRTC slots in 1.2 s, each held for 30 s
    without connecting. A user (a guest: an address) holds at most 3 sessions, a viewer
    not connected holds its slot only briefly, and few may be connecting at once."""
    server = await start_server()
    relay = server.app[MEDIA]
    relay.viewer_connect_timeout_s = 1.0
    studio, _ = publisher(server)
    peers.append(studio)
    assert (await studio.post("/api/rooms/demo/whip", HOST))[0] == 201
    await until(lambda: relay._live != set(), "the publisher connected")
    lurkers = [viewer(server) for _ in range(4)]
    peers.extend(lurkers)
    answers = []
    for peer in lurkers:  # offers posted, answers never applied: nothing connects
        answers.append(await post_sdp(server, "/api/rooms/demo/whep", await peer.offer()))
    assert [a[0] for a in answers[:3]] == [201, 201, 201]
    assert answers[3][0] == 429 and answers[3][1]["error"]["code"] == "rate_limited"
    assert relay.viewers == 3
    await until(lambda: relay.viewers == 0, "the unconnected viewers' slots freed", 10)

    relay.max_pending = 2  # and only so many may be connecting at once, whoever they are
    others = [viewer(server) for _ in range(3)]
    peers.extend(others)
    got = [
        await post_sdp(server, "/api/rooms/demo/whep", await p.offer(), token(f"u{i}"))
        for i, p in enumerate(others)
    ]
    assert [g[0] for g in got] == [201, 201, 503]
    assert got[2][1]["error"]["code"] == "over_capacity"
