"""The aiortc internals the forwarding adapter relies on (livecommerce/media/forwarding.py,
pinned to aiortc 1.16), checked one by one so that an aiortc upgrade that breaks one
fails here, naming it, rather than as a silent lack of video.

Three layers: the internals exist with the shape relied on (``check_aiortc``); aiortc's
(and aioice's) code still calls them the way the adapter assumes, and still does what the
lean send path does in its place (their source); and the adapter works on real aiortc
receivers and senders over a fake transport (no network): packets reach the tap and no
decoder is made, a PLI goes out, forwarded payloads go out untouched with no encoder
made, a viewer's NACK is answered, and a viewer's PLI or FIR reaches the track.
tests/test_media_send.py checks the lean send path over a real connection.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any, cast

import aioice.ice
import aiortc
import aiortc.rtcdtlstransport
import aiortc.rtcicetransport
import pytest
from aiortc import RTCRtpCodecParameters, RTCRtpReceiver, RTCRtpSender, rtcrtpreceiver, rtcrtpsender
from aiortc.rtcrtpparameters import (
    RTCRtpDecodingParameters,
    RTCRtpReceiveParameters,
    RTCRtpRtxParameters,
)
from aiortc.rtcrtpreceiver import RemoteStreamTrack
from aiortc.rtp import (
    RTCP_PSFB_FIR,
    RTCP_PSFB_PLI,
    RTCP_RTPFB_NACK,
    RtcpPacket,
    RtcpPsfbPacket,
    RtcpRtpfbPacket,
    RtpPacket,
    wrap_rtx,
)

from livecommerce.media import forwarding
from livecommerce.media.forwarding import (
    PINNED_SERIES,
    AdapterError,
    ForwardedTrack,
    attach_sender,
    check_aiortc,
    tap_receiver,
)
from livecommerce.media.packets import EncodedFrame
from tests.conftest import until

VP8_PT, RTX_PT = 97, 98
VP8 = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=VP8_PT)
RTX = RTCRtpCodecParameters(
    mimeType="video/rtx", clockRate=90000, payloadType=RTX_PT, parameters={"apt": VP8_PT}
)
PUBLISHER_SSRC, RTX_SSRC = 5555, 6666


def test_aiortc_is_the_pinned_series() -> None:
    installed = aiortc.__version__
    assert installed.split(".")[:2] == PINNED_SERIES.split("."), (
        f"aiortc {installed} is installed; livecommerce/media/forwarding.py is pinned to "
        f"{PINNED_SERIES}.x: review every internal it lists before moving the pin"
    )


def test_every_internal_is_there_with_its_shape() -> None:
    try:
        check_aiortc()
    except AdapterError as exc:  # the message names the internal
        pytest.fail(str(exc))


def test_a_missing_internal_is_named() -> None:
    saved = RTCRtpSender._send_keyframe
    try:
        del RTCRtpSender._send_keyframe
        with pytest.raises(AdapterError, match=r"RTCRtpSender\._send_keyframe is missing"):
            check_aiortc()
    finally:
        RTCRtpSender._send_keyframe = saved  # type: ignore[method-assign]


def _source(obj: Any) -> str:
    return inspect.getsource(obj)


# (internal relied on, where aiortc uses it, code that must still be there, why)
CALL_SITES: list[tuple[str, Callable[[], str], list[str], str]] = [
    (
        "RTCRtpSender._next_encoded_frame",
        lambda: _source(RTCRtpSender._run_rtp),
        [
            "self.__rtp_started.set()",
            "await self._next_encoded_frame(codec)",
            "except (asyncio.CancelledError, ConnectionError, MediaStreamError):",
            "self.__track.stop()",
            "self.__rtp_exited.set()",
        ],
        "the sender loop asks it for its first frame once send() configured the sender: "
        "attach_sender overrides it to run the lean sender until the track ends, then "
        "raise MediaStreamError, which ends the loop (and stops the track) cleanly",
    ),
    (
        "RTCRtpSender._send_keyframe",
        lambda: _source(RTCRtpSender._handle_rtcp_packet),
        ["RTCP_PSFB_FIR", "RTCP_PSFB_PLI", "self._send_keyframe()"],
        "a viewer's PLI/FIR calls it: attach_sender overrides it to forward the request",
    ),
    (
        "RTCRtpSender._retransmit",
        lambda: _source(RTCRtpSender._handle_rtcp_packet),
        ["RTCP_RTPFB_NACK", "for seq in packet.lost:", "await self._retransmit(seq)"],
        "a viewer's NACK calls it: attach_sender overrides it to answer from the lean "
        "sender's history",
    ),
    (
        "RTCRtpSender._retransmit (what the lean sender does in its place)",
        lambda: _source(RTCRtpSender._retransmit),
        [
            "self.__rtp_history.get(sequence_number % RTP_HISTORY_SIZE)",
            "if self.__rtx_payload_type is not None:",
            "packet = wrap_rtx(",
            "ssrc=self._rtx_ssrc",
        ],
        "LeanSender.retransmit answers NACKs the same way: RTX when negotiated",
    ),
    (
        "RTCRtpSender.send (mid, header extensions, RTX)",
        lambda: _source(RTCRtpSender.send),
        [
            "self.__mid = parameters.muxId",
            "self.__rtp_header_extensions_map.configure(parameters)",
            "self.__rtx_payload_type = codec.payloadType",
            "asyncio.ensure_future(self._run_rtp(parameters.codecs[0]))",
        ],
        "LeanSender reads the mid, the extension map and the RTX payload type that send() "
        "configures before it starts _run_rtp (whose first frame request starts it)",
    ),
    (
        "RTCRtpSender._run_rtp (what the lean sender does in its place)",
        lambda: _source(RTCRtpSender._run_rtp),
        [
            "sequence_number = random_sequence_number()",
            "packet.marker = (i == len(enc_frame.payloads) - 1) and 1 or 0",
            "packet.extensions.abs_send_time = (",
            "clock.current_ntp_time() >> 14",
            "packet.extensions.mid = self.__mid",
            "packet.extensions.audio_level = (False, -enc_frame.audio_level)",
            "packet.serialize(self.__rtp_header_extensions_map)",
            "self.__ntp_timestamp = clock.current_ntp_time()",
            "self.__rtp_timestamp = packet.timestamp",
            "self.__octet_count += len(payload)",
            "self.__packet_count += 1",
        ],
        "LeanSender makes the same packets (marker on a frame's last payload; mid, "
        "abs-send-time and audio-level extensions) and keeps the same counts",
    ),
    (
        "RTCRtpSender.__packet_count, __octet_count, __ntp_timestamp, __rtp_timestamp",
        lambda: _source(RTCRtpSender._run_rtcp),
        [
            "ntp_timestamp=self.__ntp_timestamp",
            "rtp_timestamp=self.__rtp_timestamp",
            "packet_count=self.__packet_count & 0xFFFFFFFF",
            "octet_count=self.__octet_count & 0xFFFFFFFF",
        ],
        "the RTCP sender reports read the counts LeanSender keeps",
    ),
    (
        "RTCDtlsTransport._send_rtp (what the lean sender's link does in its place)",
        lambda: _source(aiortc.rtcdtlstransport.RTCDtlsTransport._send_rtp),
        [
            "if self._state != State.CONNECTED:",
            "data = self._tx_srtp.protect(data)",
            "await self.transport._send(data)",
            "self.__tx_bytes += len(data)",
            "self.__tx_packets += 1",
        ],
        "_Link protects with _tx_srtp and keeps the transport's counts the same way",
    ),
    (
        "RTCDtlsTransport._setup_srtp (repeated protection)",
        lambda: _source(aiortc.rtcdtlstransport.RTCDtlsTransport._setup_srtp),
        ["tx_policy.allow_repeat_tx = True", "self._tx_srtp = Session(tx_policy)"],
        "a retransmission without RTX protects the same packet index again",
    ),
    (
        "RTCIceTransport._connection",
        lambda: _source(aiortc.rtcicetransport.RTCIceTransport.__init__),
        ["self._connection = gatherer._connection", "self._send = self._connection.send"],
        "RTCDtlsTransport sends through the aioice connection's send, which _Link skips",
    ),
    (
        "aioice.Connection._nominated",
        lambda: _source(aioice.ice.Connection.sendto),
        [
            "active_pair = self._nominated.get(component)",
            "await active_pair.protocol.send_data(data, active_pair.remote_addr)",
            'raise ConnectionError("Cannot send data, not connected")',
        ],
        "_Link sends to the nominated pair of component 1 itself, and stops when there "
        "is none (consent expired, connection closed)",
    ),
    (
        "aioice.StunProtocol.send_data",
        lambda: _source(aioice.ice.StunProtocol.send_data),
        ["self.transport.sendto(data, addr)"],
        "_Link calls the pair's transport.sendto without the coroutine around it",
    ),
    (
        "RTCRtpReceiver.__jitter_buffer",
        lambda: _source(RTCRtpReceiver.__init__),
        ["self.__jitter_buffer = JitterBuffer("],
        "tap_receiver replaces this instance attribute with the packet tap",
    ),
    (
        "RTCRtpReceiver.__jitter_buffer.add",
        lambda: _source(RTCRtpReceiver._handle_rtp_packet),
        [
            "packet = unwrap_rtx(",
            "pli_flag, encoded_frame = self.__jitter_buffer.add(packet)",
            "if encoded_frame is not None and self.__decoder_thread:",
        ],
        "every (RTX-unwrapped) packet goes through it, and only a frame it returns is "
        "decoded: the tap returns none, so nothing is decoded",
    ),
    (
        "aiortc.rtcrtpreceiver.decoder_worker",
        lambda: _source(rtcrtpreceiver.decoder_worker),
        ["task = input_q.get()", "decoder = get_decoder(codec)"],
        "the decoder thread makes a decoder only for a frame it is given",
    ),
    (
        "RTCRtpReceiver._send_rtcp_pli",
        lambda: _source(RTCRtpReceiver._send_rtcp_pli),
        ["RTCP_PSFB_PLI", "media_ssrc=media_ssrc", "await self._send_rtcp(packet)"],
        "keyframe requests to the publisher go out through it",
    ),
]


@pytest.mark.parametrize(
    ("internal", "where", "needles", "why"), CALL_SITES, ids=[c[0] for c in CALL_SITES]
)
def test_aiortc_still_calls_the_internal_as_relied_on(
    internal: str, where: Callable[[], str], needles: list[str], why: str
) -> None:
    source = where()
    for needle in needles:
        assert needle in source, (
            f"aiortc {aiortc.__version__} changed how it uses {internal} ({needle!r} is "
            f"gone). The forwarding adapter relies on it: {why}. Update "
            "livecommerce/media/forwarding.py for this aiortc."
        )
    if internal == "aiortc.rtcrtpreceiver.decoder_worker":
        assert source.index("task = input_q.get()") < source.index("get_decoder(codec)"), (
            "decoder_worker now makes its decoder before its first frame: the adapter's "
            "'no decoder on the server' no longer holds"
        )


class FakeTransport:
    """Stands in for an RTCDtlsTransport: records what is sent."""

    state = "connected"
    _stats_id = "fake"

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    async def _send_rtp(self, data: bytes) -> None:
        self.sent.append(data)

    def _register_rtp_receiver(self, receiver: object, parameters: object) -> None:
        pass

    def _unregister_rtp_receiver(self, receiver: object) -> None:
        pass

    def _get_stats(self) -> dict[str, object]:
        return {}


def vp8_packet(seq: int, ts: int, payload: bytes, *, marker: bool) -> RtpPacket:
    return RtpPacket(
        payload_type=VP8_PT,
        marker=int(marker),
        sequence_number=seq,
        timestamp=ts,
        ssrc=PUBLISHER_SSRC,
        payload=payload,
    )


async def test_the_tap_gets_every_packet_unwrapped_and_nothing_is_decoded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    decoders: list[object] = []
    monkeypatch.setattr(rtcrtpreceiver, "get_decoder", lambda codec: decoders.append(codec))
    transport = FakeTransport()
    receiver = RTCRtpReceiver("video", cast(Any, transport))
    seen: list[RtpPacket] = []
    tap = tap_receiver(receiver, seen.append)
    assert vars(receiver)["_RTCRtpReceiver__jitter_buffer"] is tap
    receiver._track = RemoteStreamTrack(kind="video")
    receiver._set_rtcp_ssrc(1234)
    await receiver.receive(
        RTCRtpReceiveParameters(
            codecs=[VP8, RTX],
            encodings=[
                RTCRtpDecodingParameters(
                    ssrc=PUBLISHER_SSRC, payloadType=VP8_PT, rtx=RTCRtpRtxParameters(ssrc=RTX_SSRC)
                )
            ],
        )
    )
    try:
        key = bytes([0x10, 0x00, 0x9D, 0x01, 0x2A])  # S=1, P=0
        delta = bytes([0x10, 0x01, 0x00])
        packets = [
            vp8_packet(10, 0, key, marker=True),
            vp8_packet(11, 3000, delta, marker=True),
            vp8_packet(12, 6000, delta, marker=True),
        ]
        for p in packets[:2]:
            await receiver._handle_rtp_packet(p, arrival_time_ms=0)
        rtx = wrap_rtx(packets[2], payload_type=RTX_PT, sequence_number=1, ssrc=RTX_SSRC)
        await receiver._handle_rtp_packet(rtx, arrival_time_ms=0)
        assert [(p.sequence_number, p.ssrc, p.payload) for p in seen] == [
            (p.sequence_number, PUBLISHER_SSRC, p.payload) for p in packets
        ], "the tap must see every packet, RTX unwrapped, payload untouched"
        await asyncio.sleep(0.05)  # the decoder thread would have had its frames by now
        assert decoders == [], "RTCRtpReceiver made a decoder despite the tap"

        await tap.request_keyframe(PUBLISHER_SSRC)
        plis = [
            p
            for data in transport.sent
            for p in RtcpPacket.parse(data)
            if isinstance(p, RtcpPsfbPacket) and p.fmt == RTCP_PSFB_PLI
        ]
        assert [(p.ssrc, p.media_ssrc) for p in plis] == [(1234, PUBLISHER_SSRC)]
    finally:
        await receiver.stop()


async def test_the_sender_sends_the_payloads_untouched_and_makes_no_encoder(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    encoders: list[object] = []
    monkeypatch.setattr(rtcrtpsender, "get_encoder", lambda codec: encoders.append(codec))
    requests: list[str] = []
    track = ForwardedTrack("video", on_keyframe_request=lambda: requests.append("k"))
    transport = FakeTransport()
    sender = RTCRtpSender(track, cast(Any, transport))
    attach_sender(sender, track)
    loop = asyncio.ensure_future(sender._run_rtp(VP8))
    try:
        track.push(EncodedFrame("video", (b"first", b"second"), 90_000, True))
        track.push(EncodedFrame("video", (b"third",), 93_000, False))
        await until(lambda: len(transport.sent) >= 3, "three RTP packets sent")
        sent = [RtpPacket.parse(data) for data in transport.sent]
        assert [p.payload for p in sent] == [b"first", b"second", b"third"]
        assert [p.marker for p in sent] == [0, 1, 1]
        assert {p.payload_type for p in sent} == {VP8_PT}
        assert {p.ssrc for p in sent} == {sender._ssrc}
        seqs = [p.sequence_number for p in sent]
        assert seqs == [seqs[0], (seqs[0] + 1) & 0xFFFF, (seqs[0] + 2) & 0xFFFF]
        assert sent[0].timestamp == sent[1].timestamp
        assert (sent[2].timestamp - sent[0].timestamp) & 0xFFFFFFFF == 3000
        assert encoders == [], "RTCRtpSender made an encoder despite attach_sender"

        await sender._handle_rtcp_packet(
            RtcpRtpfbPacket(fmt=RTCP_RTPFB_NACK, ssrc=1, media_ssrc=sender._ssrc, lost=[seqs[1]])
        )
        await until(lambda: len(transport.sent) >= 4, "the NACKed packet sent again")
        assert transport.sent[3] == transport.sent[1], "no RTX negotiated: the same packet"

        for fmt in (RTCP_PSFB_PLI, RTCP_PSFB_FIR):
            await sender._handle_rtcp_packet(
                RtcpPsfbPacket(fmt=fmt, ssrc=1, media_ssrc=sender._ssrc)
            )
        assert requests == ["k", "k"], "a viewer's PLI/FIR did not reach the track"

        track.end()
        await asyncio.wait_for(asyncio.shield(loop), 10)  # MediaStreamError ends the loop
        assert track.readyState == "ended"
    finally:
        loop.cancel()


def test_the_adapter_refuses_objects_without_the_internals() -> None:
    class Bare:
        track = None

    with pytest.raises(AdapterError, match="_RTCRtpReceiver__jitter_buffer"):
        tap_receiver(cast(Any, Bare()), lambda p: None)
    with pytest.raises(AdapterError, match="_next_encoded_frame"):
        attach_sender(cast(Any, Bare()), ForwardedTrack("audio"))
    assert forwarding.QUEUE_FRAMES["video"] > 0
