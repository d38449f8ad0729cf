"""RTP packets of one publisher's stream, grouped into frames of untouched payloads.

Nothing here decodes: a frame is the list of the publisher's RTP payloads that share one
timestamp, in sequence order, as they arrived (after aiortc took away the RTX wrapping).
Forwarding these payloads to a viewer repacks them into the viewer's own RTP packets
(sequence numbers, SSRC, timestamp origin and payload type of the viewer's session) and
nothing else. Keyframes are recognised from the payload headers alone (RFC 7741 for VP8,
RFC 6184 for H.264), so a viewer can start on one and the server knows when to ask the
publisher for one.

This module does not touch aiortc's internals: it reads the public attributes of
:class:`aiortc.rtp.RtpPacket` only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from aiortc.rtp import RtpPacket

Kind = Literal["audio", "video"]
KINDS: tuple[Kind, ...] = ("audio", "video")

MAX_PENDING = 512
"""Packets a video assembler waits through for a missing one (the publisher's
retransmission) before it gives the frame up. A 1080p keyframe is about 120 packets."""


@dataclass(frozen=True, slots=True)
class EncodedFrame:
    """One frame of the publisher's stream, still encoded.

    Attributes:
        kind: ``"audio"`` or ``"video"``.
        payloads: the publisher's RTP payloads of this frame, in sequence order.
        timestamp: the publisher's RTP timestamp (its clock rate, its origin).
        keyframe: a video frame that decodes on its own (always True for audio).
        audio_level: the RFC 6464 level of an audio frame (0 loudest, 127 silence),
            or None when the publisher did not send it.
    """

    kind: Kind
    payloads: tuple[bytes, ...]
    timestamp: int
    keyframe: bool
    audio_level: int | None = None


def seq_diff(a: int, b: int) -> int:
    """``a - b`` for 16-bit RTP sequence numbers, as a signed distance (-32768..32767)."""
    return ((a - b + 0x8000) & 0xFFFF) - 0x8000


def vp8_keyframe(payload: bytes) -> bool | None:
    """Whether a VP8 RTP payload starts a keyframe (RFC 7741).

    Returns:
        True or False for the packet that starts a frame (S=1, partition 0), None for
        any other packet or one too short to tell.
    """
    if not payload:
        return None
    first = payload[0]
    pos = 1
    if first & 0x80:  # X: extended control bits follow
        if len(payload) < 2:
            return None
        ext = payload[1]
        pos = 2
        if ext & 0x80:  # I: picture id, 7 or 15 bits
            if len(payload) <= pos:
                return None
            pos += 2 if payload[pos] & 0x80 else 1
        if ext & 0x40:  # L: TL0PICIDX
            pos += 1
        if ext & 0x30:  # T or K: TID/Y/KEYIDX
            pos += 1
    if not first & 0x10 or first & 0x0F or len(payload) <= pos:
        return None
    return payload[pos] & 0x01 == 0  # the frame tag's P bit: 0 is a keyframe


_H264_IDR = 5
_H264_STAP_A = 24
_H264_FU_A = 28


def h264_keyframe(payload: bytes) -> bool:
    """Whether an H.264 RTP payload carries (the start of) an IDR picture (RFC 6184):
    a single IDR NAL unit, an STAP-A holding one, or the first FU-A fragment of one."""
    if not payload:
        return False
    nal = payload[0] & 0x1F
    if nal == _H264_STAP_A:
        pos = 1
        while pos + 2 < len(payload):
            size = int.from_bytes(payload[pos : pos + 2], "big")
            if payload[pos + 2] & 0x1F == _H264_IDR:
                return True
            pos += 2 + size
        return False
    if nal == _H264_FU_A:
        return len(payload) > 1 and bool(payload[1] & 0x80) and payload[1] & 0x1F == _H264_IDR
    return nal == _H264_IDR


def is_keyframe(codec: str, payloads: tuple[bytes, ...]) -> bool:
    """Whether the frame made of ``payloads`` is a keyframe for ``codec`` (``"VP8"``,
    ``"H264"``; any other codec, audio included, has only keyframes)."""
    name = codec.upper()
    if name == "VP8":
        return bool(payloads) and vp8_keyframe(payloads[0]) is True
    if name == "H264":
        return any(h264_keyframe(p) for p in payloads)
    return True


class FrameAssembler:
    """Groups the RTP packets of one stream into :class:`EncodedFrame` s.

    Audio packets are frames of their own, passed on as they come (late and repeated
    ones are dropped). Video packets are put back in order and passed on a whole frame
    at a time: from the packet after the previous frame's end to the packet with the
    marker bit (or the last one before a timestamp change). A missing packet is waited
    for while the publisher retransmits it; past ``max_pending`` packets the frame is
    given up, the next frame start found, and :meth:`add` reports the loss so that
    viewers wait for a keyframe and one is asked for.

    The assembler starts at a frame boundary: packets before the first marker bit are
    dropped (the first frame a viewer gets is a keyframe anyway).
    """

    def __init__(self, kind: Kind, codec: str, *, max_pending: int = MAX_PENDING) -> None:
        self.kind: Kind = kind
        self.codec = codec
        self._max_pending = max_pending
        self._pending: dict[int, RtpPacket] = {}
        self._next: int | None = None
        """Sequence number of the next frame's first packet; None before a boundary."""
        self._ssrc: int | None = None
        self.frames = 0
        self.gaps = 0
        """Frames given up for missing packets (and SSRC changes)."""

    def add(self, packet: RtpPacket) -> tuple[list[EncodedFrame], bool]:
        """Take one packet.

        Returns:
            The frames it completed, oldest first, and whether frames were lost (the
            stream is broken until the next keyframe).
        """
        lost = False
        if packet.ssrc != self._ssrc:
            lost = self._ssrc is not None
            self.gaps += lost
            self._ssrc = packet.ssrc
            self._pending.clear()
            self._next = None
        if self.kind == "audio":
            return self._audio(packet), lost
        seq = packet.sequence_number
        if self._next is None:
            if packet.marker:  # a frame ends here, so the next packet starts one
                self._next = (seq + 1) & 0xFFFF
            return [], lost
        ahead = seq_diff(seq, self._next)
        if ahead < 0:
            return [], lost  # late or repeated: its frame went out already (or was lost)
        self._pending[seq] = packet
        frames = self._drain()
        if ahead >= self._max_pending:
            self._skip()
            self.gaps += 1
            lost = True
            frames += self._drain()
        return frames, lost

    def _audio(self, packet: RtpPacket) -> list[EncodedFrame]:
        seq = packet.sequence_number
        if self._next is not None and seq_diff(seq, self._next) < 0:
            return []
        self._next = (seq + 1) & 0xFFFF
        if not packet.payload:
            return []
        level = packet.extensions.audio_level
        self.frames += 1
        return [
            EncodedFrame(
                "audio",
                (packet.payload,),
                packet.timestamp,
                True,
                level[1] if isinstance(level, tuple) else None,
            )
        ]

    def _drain(self) -> list[EncodedFrame]:
        frames: list[EncodedFrame] = []
        while self._next is not None and (first := self._pending.get(self._next)) is not None:
            packets = [first]
            seq = self._next
            while not packets[-1].marker:
                after = self._pending.get((seq + 1) & 0xFFFF)
                if after is None:
                    return frames  # incomplete: wait for the rest
                if after.timestamp != first.timestamp:
                    break  # the next frame started: this one is whole (marker lost)
                packets.append(after)
                seq = (seq + 1) & 0xFFFF
            for p in packets:
                del self._pending[p.sequence_number]
            self._next = (seq + 1) & 0xFFFF
            payloads = tuple(p.payload for p in packets if p.payload)
            if not payloads:
                continue  # padding only (bandwidth probes): nothing to forward
            self.frames += 1
            frames.append(
                EncodedFrame("video", payloads, first.timestamp, is_keyframe(self.codec, payloads))
            )
        return frames

    def _skip(self) -> None:
        """Give up the frame being waited for: go on at the first frame start held
        (a packet whose predecessor ended a frame), or at the next frame boundary."""
        assert self._next is not None
        base = self._next
        order = sorted(self._pending, key=lambda s: seq_diff(s, base))
        start: int | None = None
        for seq in order:
            before = self._pending.get((seq - 1) & 0xFFFF)
            if before is not None and (
                before.marker or before.timestamp != self._pending[seq].timestamp
            ):
                start = seq
                break
        if start is None:
            self._pending.clear()
            self._next = None
            return
        for seq in order:
            if seq == start:
                break
            del self._pending[seq]
        self._next = start
