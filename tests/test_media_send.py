"""The lean send path of a viewer's sender (livecommerce/media/forwarding.py:
``LeanSender``), over a real aiortc connection on loopback: a server-side peer whose
senders are set up by ``attach_sender`` and a client peer whose receivers are tapped, so
the test sees every RTP packet as the client's aiortc received it (SRTP removed, RTX
unwrapped, header extensions parsed).

What aiortc's own send loop (``RTCRtpSender._run_rtp``) guarantees must still hold:
packets byte-identical to the ones it would make, the header extensions it sends, NACKs
answered (as RTX), sender reports with the right packet and octet counts, keyframe
requests passed on, and a clean end. And the packets must take the synchronous path
(SRTP protect, then the UDP transport), not a coroutine per packet.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, cast

import aioice.ice
import pytest
from aiortc import (
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpReceiver,
    RTCRtpSender,
    RTCRtpTransceiver,
)
from aiortc.rtp import RtpPacket

from livecommerce.media import forwarding
from livecommerce.media.forwarding import (
    AdapterError,
    ForwardedTrack,
    LeanSender,
    attach_sender,
    check_aiortc,
    rtx_capability,
    tap_receiver,
)
from livecommerce.media.packets import EncodedFrame, Kind
from tests.conftest import until

TIMEOUT_S = 10.0


@pytest.fixture(autouse=True)
def loopback_ice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: ["127.0.0.1"])


@dataclass
class Side:
    """One kind's sender (server) and receiver (client)."""

    track: ForwardedTrack
    sender: RTCRtpSender
    transceiver: RTCRtpTransceiver
    receiver: RTCRtpReceiver
    received: list[RtpPacket] = field(default_factory=list)
    keyframe_requests: list[int] = field(default_factory=list)

    @property
    def lean(self) -> LeanSender:
        lean = self.track._sender
        assert lean is not None, "the sender has not started"
        return lean

    def seqs(self) -> list[int]:
        return [p.sequence_number for p in self.received]


@dataclass
class Pair:
    server: RTCPeerConnection
    client: RTCPeerConnection
    sides: dict[Kind, Side]


def _prefer(transceiver: RTCRtpTransceiver, kind: Kind) -> None:
    mime = "video/VP8" if kind == "video" else "audio/opus"
    caps = [c for c in RTCRtpSender.getCapabilities(kind).codecs if c.mimeType == mime]
    rtx = rtx_capability(kind)
    transceiver.setCodecPreferences(caps + ([rtx] if rtx is not None and kind == "video" else []))


@pytest.fixture
async def pair() -> AsyncIterator[Pair]:
    client = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    server = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    received: dict[Kind, list[RtpPacket]] = {}
    receivers: dict[Kind, RTCRtpReceiver] = {}
    kinds: tuple[Kind, ...] = ("video", "audio")
    for kind in kinds:
        t = client.addTransceiver(kind, direction="recvonly")
        _prefer(t, kind)
        received[kind] = []
        tap_receiver(t.receiver, received[kind].append)
        receivers[kind] = t.receiver
    await client.setLocalDescription(await client.createOffer())
    sides: dict[Kind, Side] = {}
    started: list[Kind] = []
    for kind in kinds:
        requests: list[int] = []
        track = ForwardedTrack(
            kind,
            on_start=lambda t: started.append(cast(Kind, t.kind)),
            on_keyframe_request=functools.partial(requests.append, 1),
        )
        t = server.addTransceiver(track, direction="sendonly")
        _prefer(t, kind)
        attach_sender(t.sender, track)
        sides[kind] = Side(track, t.sender, t, receivers[kind], received[kind], requests)
    await server.setRemoteDescription(client.localDescription)
    await server.setLocalDescription(await server.createAnswer())
    await client.setRemoteDescription(server.localDescription)
    await until(lambda: sorted(started) == ["audio", "video"], "both senders started")
    try:
        yield Pair(server, client, sides)
    finally:
        await client.close()
        await server.close()


def video(ts: int, *payloads: bytes) -> EncodedFrame:
    return EncodedFrame("video", payloads, ts, False)


def audio(ts: int, payload: bytes, level: int | None) -> EncodedFrame:
    return EncodedFrame("audio", (payload,), ts, True, level)


async def test_packets_are_what_aiortc_would_send_and_take_the_direct_path(pair: Pair) -> None:
    v, a = pair.sides["video"], pair.sides["audio"]
    assert v.lean._link.ready() and v.lean._link._direct, "video does not take the direct path"
    assert a.lean._link.ready() and a.lean._link._direct, "audio does not take the direct path"
    dtls: Any = v.sender.transport
    tx_before = dtls._RTCDtlsTransport__tx_packets
    frames = [video(1000, b"\x10k1", b"k2", b"k3"), video(4000, b"d1"), video(7000, b"e1", b"e2")]
    for f in frames:
        assert v.track.push(f)
    assert a.track.push(audio(960, b"opus-1", 42))
    assert a.track.push(audio(1920, b"opus-2", None))
    await until(lambda: len(v.received) >= 6 and len(a.received) >= 2, "the packets arrive")
    sent_at = (forwarding._ntp_now() >> 14) & 0xFFFFFF

    got = v.received
    assert [p.payload for p in got] == [p for f in frames for p in f.payloads]
    assert [p.marker for p in got] == [0, 0, 1, 1, 0, 1]
    first = got[0].sequence_number
    assert v.seqs() == [(first + i) & 0xFFFF for i in range(6)]
    assert {p.ssrc for p in got} == {v.sender._ssrc}
    codec = v.transceiver._codecs[0]
    assert codec.mimeType == "video/VP8"
    assert {p.payload_type for p in got} == {codec.payloadType}
    origin = (got[0].timestamp - 1000) & 0xFFFFFFFF
    assert [p.timestamp for p in got] == [
        (origin + f.timestamp) & 0xFFFFFFFF for f in frames for _ in f.payloads
    ]
    for p in got:
        assert p.extensions.mid == v.transceiver.mid
        assert p.extensions.abs_send_time is not None
        assert abs(sent_at - p.extensions.abs_send_time) < (1 << 18)  # within a second
    assert dtls._RTCDtlsTransport__tx_packets - tx_before == 8  # 6 video + 2 audio

    assert [p.payload for p in a.received] == [b"opus-1", b"opus-2"]
    assert [p.extensions.audio_level for p in a.received] == [(False, 42), None]
    assert [p.marker for p in a.received] == [1, 1]  # as aiortc: one payload, the last
    assert [p.extensions.mid for p in a.received] == [a.transceiver.mid] * 2

    # byte for byte what aiortc's _run_rtp makes of the same packet
    ext_map = v.sender._RTCRtpSender__rtp_header_extensions_map  # type: ignore[attr-defined]
    for p in got:
        kept = v.lean._history[p.sequence_number % forwarding.HISTORY]
        assert kept is not None
        ref = RtpPacket(
            payload_type=p.payload_type,
            marker=p.marker,
            sequence_number=p.sequence_number,
            timestamp=p.timestamp,
            ssrc=p.ssrc,
            payload=p.payload,
        )
        ref.extensions.mid = v.transceiver.mid
        ref.extensions.abs_send_time = p.extensions.abs_send_time
        assert b"".join(kept) == ref.serialize(ext_map)


async def test_a_nack_is_answered_with_an_rtx_retransmission(pair: Pair) -> None:
    v = pair.sides["video"]
    assert v.lean._rtx_pt is not None, "RTX was not negotiated"
    for i in range(5):
        v.track.push(video(3000 * i, b"p%d" % i))
    await until(lambda: len(v.received) >= 5, "five packets")
    lost = v.received[2]
    await v.receiver._send_rtcp_nack(v.sender._ssrc, [lost.sequence_number, 60000])
    await until(lambda: len(v.received) >= 6, "the retransmission")
    again = v.received[5]  # the client's receiver unwrapped the RTX packet
    assert (again.sequence_number, again.payload, again.timestamp) == (
        lost.sequence_number,
        lost.payload,
        lost.timestamp,
    )
    assert again.ssrc == v.sender._ssrc
    assert v.lean.retransmitted == 1, "only the packet still in the history is sent again"


async def test_sender_reports_and_stats_count_what_was_sent(pair: Pair) -> None:
    v = pair.sides["video"]
    payloads = [bytes(100 + i) for i in range(9)]
    for i in range(3):
        v.track.push(video(3000 * i, *payloads[3 * i : 3 * i + 3]))
    await until(lambda: len(v.received) >= 9, "nine packets")
    octets = sum(len(p) for p in payloads)

    stats = [s for s in (await v.sender.getStats()).values() if s.type == "outbound-rtp"]
    assert [(s.packetsSent, s.bytesSent) for s in stats] == [(9, octets)]

    async def reported() -> list[tuple[int, int]]:
        report = await v.receiver.getStats()
        remote = [s for s in report.values() if s.type == "remote-outbound-rtp"]
        return [(s.packetsSent, s.bytesSent) for s in remote]

    deadline = time.monotonic() + TIMEOUT_S
    while not await reported() and time.monotonic() < deadline:
        await asyncio.sleep(0.1)  # aiortc sends a report every 0.5-1.5 s
    assert await reported() == [(9, octets)], "the RTCP sender report's counts"


async def test_a_viewers_pli_reaches_the_track(pair: Pair) -> None:
    v = pair.sides["video"]
    await v.receiver._send_rtcp_pli(v.sender._ssrc)
    await until(lambda: v.keyframe_requests == [1], "the keyframe request")


async def test_a_full_send_buffer_drops_the_frame(
    pair: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    v = pair.sides["video"]
    assert v.track.push(video(0, b"a"))
    link = v.lean._link
    assert link._buffered == link._udp.get_write_buffer_size  # the UDP transport's own
    monkeypatch.setattr(link, "_buffered", lambda: forwarding.MAX_BUFFERED + 1)
    assert not v.track.push(video(3000, b"b")), "a frame was sent to a full buffer"
    assert v.track.dropped == 1 and not v.track.closed
    monkeypatch.undo()
    assert v.track.push(video(6000, b"c"))
    await until(lambda: len(v.received) >= 2, "two packets")
    assert [p.payload for p in v.received] == [b"a", b"c"]
    assert v.received[1].sequence_number == (v.received[0].sequence_number + 1) & 0xFFFF, (
        "a dropped frame must not use sequence numbers (the viewer would NACK them)"
    )


async def test_ending_the_track_ends_the_senders_loop(pair: Pair) -> None:
    v = pair.sides["video"]
    v.track.end()
    await until(lambda: v.track.readyState == "ended", "_run_rtp stopped the track")
    assert v.track.push(video(0, b"late"))
    await asyncio.sleep(0.1)
    assert v.received == []


async def test_a_closed_connection_ends_the_track(pair: Pair) -> None:
    v = pair.sides["video"]
    await pair.server.close()
    assert v.track.closed
    assert v.track.push(video(0, b"late")), "an ended track takes frames and drops them"


async def test_a_closed_ice_connection_ends_the_track_at_the_next_frame(pair: Pair) -> None:
    v = pair.sides["video"]
    nominated = v.lean._link._ice._nominated
    saved = dict(nominated)
    nominated.clear()  # what aioice does when consent expires
    try:
        assert v.track.push(video(0, b"x"))
        assert v.track.closed and v.lean.gone
    finally:
        nominated.update(saved)


def test_extension_templates_follow_aiortcs_layout() -> None:
    from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters
    from aiortc.rtp import HeaderExtensionsMap

    def ext_map(*uris: str) -> HeaderExtensionsMap:
        m = HeaderExtensionsMap()
        m.configure(
            RTCRtpParameters(
                headerExtensions=[
                    RTCRtpHeaderExtensionParameters(id=i + 1, uri=u) for i, u in enumerate(uris)
                ]
            )
        )
        return m

    mid, abs_t = (
        "urn:ietf:params:rtp-hdrext:sdes:mid",
        ("http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"),
    )
    level = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"
    for uris, audio in [((mid, abs_t), False), ((mid, level), True), ((), False), ((abs_t,), True)]:
        m = ext_map(*uris)
        ext = forwarding._Extensions(m, "7", audio)
        for lvl in [None, 0, 99] if audio else [None]:
            ntp = forwarding._ntp_now()
            block = ext.block(ntp, lvl)
            ref = RtpPacket(payload_type=96, sequence_number=1, timestamp=2, ssrc=3)
            ref.extensions.mid = "7"
            ref.extensions.abs_send_time = (ntp >> 14) & 0xFFFFFF
            if lvl is not None:
                ref.extensions.audio_level = (False, lvl)
            data = ref.serialize(m)
            assert data[0] == ext.first_byte and data[12:] == block, (uris, lvl)


def test_the_lean_senders_internals_are_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    check_aiortc()
    monkeypatch.delattr(RTCRtpSender, "_retransmit")
    with pytest.raises(AdapterError, match=r"RTCRtpSender\._retransmit is missing"):
        check_aiortc()
    monkeypatch.undo()

    async def send_data(self: Any, data: bytes, addr: tuple[str, int]) -> None:
        await asyncio.sleep(0)
        self.transport.sendto(data, addr)

    monkeypatch.setattr(aioice.ice.StunProtocol, "send_data", send_data)
    with pytest.raises(AdapterError, match=r"StunProtocol\.send_data does more"):
        check_aiortc()
