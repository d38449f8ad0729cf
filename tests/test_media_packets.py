"""Frames from RTP packets, keyframe detection, keyframe rate limiting and the stream's
fan-out: the relay's logic without a network."""

from __future__ import annotations

import asyncio

import pytest
from aiortc.rtp import RtpPacket

from livecommerce.media.packets import (
    EncodedFrame,
    FrameAssembler,
    h264_keyframe,
    is_keyframe,
    seq_diff,
    vp8_keyframe,
)
from livecommerce.media.stream import KeyframeLimiter, Stream

VP8_KEY = bytes([0x90, 0x80, 0x80, 0x01, 0x10, 0x02, 0x00])  # X S, I, 15-bit picture id, P=0
VP8_DELTA = bytes([0x90, 0x80, 0x80, 0x02, 0x11, 0x02, 0x00])  # P=1
VP8_MORE = bytes([0x80, 0x80, 0x80, 0x02, 0xAA])  # not the start of the frame (S=0)


def rtp(
    seq: int, ts: int, payload: bytes = b"x", *, marker: bool = False, ssrc: int = 7
) -> RtpPacket:
    return RtpPacket(
        payload_type=96,
        marker=int(marker),
        sequence_number=seq & 0xFFFF,
        timestamp=ts,
        ssrc=ssrc,
        payload=payload,
    )


def frame(first_seq: int, ts: int, n: int, *, key: bool = False, ssrc: int = 7) -> list[RtpPacket]:
    """``n`` VP8 packets of one frame, the last one with the marker bit."""
    head = VP8_KEY if key else VP8_DELTA
    return [
        rtp(
            first_seq + i,
            ts,
            head if i == 0 else VP8_MORE + bytes([i]),
            marker=i == n - 1,
            ssrc=ssrc,
        )
        for i in range(n)
    ]


def feed(asm: FrameAssembler, packets: list[RtpPacket]) -> tuple[list[EncodedFrame], bool]:
    out: list[EncodedFrame] = []
    lost = False
    for p in packets:
        frames, gap = asm.add(p)
        out += frames
        lost = lost or gap
    return out, lost


def test_seq_diff_wraps() -> None:
    assert seq_diff(2, 0xFFFE) == 4
    assert seq_diff(0xFFFE, 2) == -4
    assert seq_diff(100, 100) == 0


def test_vp8_keyframes_from_the_payload_descriptor() -> None:
    assert vp8_keyframe(VP8_KEY) is True
    assert vp8_keyframe(VP8_DELTA) is False
    assert vp8_keyframe(VP8_MORE) is None  # not a frame start
    assert vp8_keyframe(bytes([0x10, 0x00])) is True  # no extension, P=0
    assert vp8_keyframe(b"") is None
    assert is_keyframe("VP8", (VP8_KEY, VP8_MORE)) and not is_keyframe("VP8", (VP8_DELTA,))


def test_h264_keyframes_single_stap_a_and_fu_a() -> None:
    idr, non_idr, sps, pps = b"\x65\x88", b"\x41\x9a", b"\x67\x42", b"\x68\xce"
    assert h264_keyframe(idr) and not h264_keyframe(non_idr)
    stap = bytes([0x78])
    for nal in (sps, pps, idr):
        stap += len(nal).to_bytes(2, "big") + nal
    assert h264_keyframe(stap)
    assert not h264_keyframe(bytes([0x78]) + len(sps).to_bytes(2, "big") + sps)
    fu_start, fu_middle = bytes([0x7C, 0x85, 1, 2]), bytes([0x7C, 0x05, 3])
    assert h264_keyframe(fu_start) and not h264_keyframe(fu_middle)
    assert not h264_keyframe(bytes([0x7C, 0x81, 1]))  # FU-A of a non-IDR slice
    assert is_keyframe("H264", (fu_middle, stap)) and is_keyframe("opus", (b"\x00",))


def test_video_frames_are_whole_in_order_and_start_at_a_boundary() -> None:
    asm = FrameAssembler("video", "VP8")
    tail = rtp(99, 0, VP8_MORE, marker=True)  # the end of a frame we joined in the middle of
    p1 = frame(100, 3000, 3, key=True)
    p2 = frame(103, 6000, 2)
    out, lost = feed(asm, [rtp(98, 0, VP8_MORE), tail, p1[1], p1[0], p2[0], p1[2], p2[1]])
    assert not lost
    assert [(f.timestamp, f.keyframe, len(f.payloads)) for f in out] == [
        (3000, True, 3),
        (6000, False, 2),
    ]
    assert out[0].payloads == tuple(p.payload for p in p1)  # untouched, in sequence order
    assert feed(asm, [p1[1]]) == ([], False)  # a late repeat is dropped


def test_a_frame_without_its_marker_ends_where_the_next_starts() -> None:
    asm = FrameAssembler("video", "VP8")
    first = frame(0, 0, 1)
    no_marker = [rtp(1, 90, VP8_KEY), rtp(2, 90, VP8_MORE)]
    out, _ = feed(asm, [*first, *no_marker, *frame(3, 180, 1)])
    assert [f.timestamp for f in out] == [90, 180]


def test_padding_packets_are_not_forwarded() -> None:
    asm = FrameAssembler("video", "VP8")
    out, _ = feed(asm, [*frame(0, 0, 1), rtp(1, 0, b""), *frame(2, 90, 2), rtp(4, 90, b"")])
    out += feed(asm, frame(5, 180, 1))[0]
    assert [(f.timestamp, len(f.payloads)) for f in out] == [(90, 2), (180, 1)]


def test_sequence_numbers_wrap() -> None:
    asm = FrameAssembler("video", "VP8")
    out, _ = feed(asm, [*frame(0xFFFC, 0, 1), *frame(0xFFFD, 90, 4, key=True), *frame(1, 180, 1)])
    assert [f.timestamp for f in out] == [90, 180]


def test_a_lost_packet_is_waited_for_then_given_up_at_the_next_frame_start() -> None:
    asm = FrameAssembler("video", "VP8", max_pending=8)
    feed(asm, frame(0, 0, 1))
    broken = frame(1, 90, 3)
    del broken[1]  # never comes back
    out, lost = feed(asm, [*broken, *frame(4, 180, 2), *frame(6, 270, 2)])
    assert out == [] and not lost  # waiting for the retransmission
    out, lost = feed(asm, frame(8, 360, 2))
    assert lost  # given up: frames 180.. follow, and the stream is broken until a keyframe
    assert [f.timestamp for f in out] == [180, 270, 360]
    assert asm.gaps == 1


def test_a_retransmitted_packet_completes_its_frame() -> None:
    asm = FrameAssembler("video", "VP8")
    feed(asm, frame(0, 0, 1))
    packets = frame(1, 90, 3)
    out, _ = feed(asm, [packets[0], packets[2], *frame(4, 180, 1)])
    assert out == []
    out, _ = feed(asm, [packets[1]])  # the RTX copy, unwrapped by aiortc
    assert [f.timestamp for f in out] == [90, 180]


def test_audio_packets_are_frames_with_their_level() -> None:
    asm = FrameAssembler("audio", "opus")
    p = rtp(10, 960, b"opus")
    p.extensions.audio_level = (True, 30)
    out, _ = feed(asm, [p, rtp(9, 0), rtp(11, 1920)])  # 9 came late: dropped
    assert [(f.timestamp, f.audio_level, f.keyframe) for f in out] == [
        (960, 30, True),
        (1920, None, True),
    ]


async def test_keyframe_requests_are_rate_limited_but_never_lost() -> None:
    sent: list[float] = []
    now = [100.0]
    limiter = KeyframeLimiter(lambda: sent.append(now[0]), 0.05, clock=lambda: now[0])
    limiter.request()
    limiter.request()
    limiter.request()
    assert len(sent) == 1  # the first at once, the others coalesced into one
    now[0] += 0.05
    await asyncio.sleep(0.2)
    assert len(sent) == 2 and limiter.requested == 3
    limiter.close()


class Sink:
    def __init__(self, room: int = 100) -> None:
        self.frames: list[EncodedFrame] = []
        self.ended = False
        self.room = room

    @property
    def closed(self) -> bool:
        return self.ended

    def push(self, frame: EncodedFrame) -> bool:
        if len(self.frames) >= self.room:
            self.frames.clear()
            return False
        self.frames.append(frame)
        return True

    def end(self) -> None:
        self.ended = True


async def test_stream_starts_video_sinks_at_a_keyframe_and_asks_for_one() -> None:
    plis: list[int] = []
    stream = Stream("r", {"video": "VP8", "audio": "opus"}, send_keyframe_request=plis.append)
    packets = frame(0, 0, 1) + frame(1, 90, 1)
    for p in packets:
        stream.on_packet("video", p)
    video, audio = Sink(), Sink()
    stream.subscribe("video", video)
    stream.subscribe("audio", audio)
    assert stream.keyframe_requests == 1 and plis == [7]  # the publisher's SSRC
    for p in frame(2, 180, 1) + frame(3, 270, 2, key=True) + frame(5, 360, 1):
        stream.on_packet("video", p)
    stream.on_packet("audio", rtp(1, 960, b"a"))
    assert [f.timestamp for f in video.frames] == [270, 360]  # not the delta frame at 180
    assert [f.timestamp for f in audio.frames] == [960]
    stream.end()
    assert video.ended and audio.ended and stream.sinks("video") == 0


async def test_an_overflowing_sink_waits_for_the_next_keyframe() -> None:
    stream = Stream("r", {"video": "VP8"}, send_keyframe_request=lambda ssrc: None)
    stream.on_packet("video", frame(0, 0, 1)[0])
    sink = Sink(room=2)
    stream.subscribe("video", sink)
    ts = 90
    seq = 1
    for key in (True, False, False, False, True):
        for p in frame(seq, ts, 1, key=key):
            stream.on_packet("video", p)
        seq += 1
        ts += 90
    # two frames fit, the third overflowed (the backlog went), the fourth waited
    assert [f.keyframe for f in sink.frames] == [True]
    assert stream.keyframe_requests == 2


async def test_a_sink_subscribing_to_an_ended_stream_ends_at_once() -> None:
    ends: list[bool] = []
    stream = Stream("r", {"video": "H264"}, send_keyframe_request=lambda ssrc: None)
    stream.on_end(lambda: ends.append(True))
    stream.end()
    stream.end()
    sink = Sink()
    stream.subscribe("video", sink)
    assert sink.ended and ends == [True]
    stream.on_end(lambda: ends.append(True))
    assert ends == [True, True]


@pytest.mark.parametrize("kind", ["audio", "video"])
def test_an_ssrc_change_restarts_the_assembler(kind: str) -> None:
    asm = FrameAssembler("video" if kind == "video" else "audio", "VP8")
    feed(asm, frame(0, 0, 1))
    _, lost = asm.add(rtp(500, 0, VP8_KEY, marker=True, ssrc=8))
    assert lost
