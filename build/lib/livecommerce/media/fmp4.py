"""Fragmented MP4 (ISO/IEC 14496-12) for HLS, written by hand: the initialization
segment (``ftyp`` + ``moov``) and media segments (``moof`` + ``mdat``).

Pure: the packager gives tracks and samples, this module gives bytes. Only what HLS
players and ``ffmpeg`` need is written: one ``avc1`` video track (H.264, ``avcC``) and
one ``Opus`` audio track (``dOps``, as "Encapsulation of Opus in ISO Base Media File
Format" 4.3), every sample's duration, size and flags in its fragment's ``trun``, data
offsets relative to the ``moof`` (``default-base-is-moof``), decode times in ``tfdt``
(version 1, 64 bits). Samples have no composition offsets: WebRTC's H.264 and our own
encode have no B-frames, so decode order is presentation order.

Why by hand rather than a muxer per segment: a segment is a few dozen bytes of boxes
around samples we already hold; PyAV's mp4 muxer would need a container per segment,
would want to own timing and cutting (``hls`` muxer) and cannot take an ``avcC`` from
RTP without an encoder context. Writing boxes keeps the remux free of codecs, and every
byte is checked against PyAV's demuxer in ``tests/test_media_fmp4.py``.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

VIDEO_TIMESCALE = 90_000
"""RTP's video clock: the video track counts time in it, so RTP timestamps carry over."""
OPUS_TIMESCALE = 48_000
"""Opus always runs at 48 kHz in RTP (RFC 7587) and in MP4."""

SYNC = 0x02000000
"""Sample flags of a sample that decodes on its own (sample_depends_on = 2)."""
NON_SYNC = 0x01010000
"""Sample flags of a sample that needs others (depends_on = 1, is_non_sync_sample)."""

_MATRIX = struct.pack(">9I", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)
_LANGUAGE_UND = ((ord("u") - 0x60) << 10) | ((ord("n") - 0x60) << 5) | (ord("d") - 0x60)


def box(kind: bytes, *parts: bytes) -> bytes:
    """A box: 32-bit size, four-character type, body."""
    body = b"".join(parts)
    return struct.pack(">I4s", 8 + len(body), kind) + body


def full_box(kind: bytes, version: int, flags: int, *parts: bytes) -> bytes:
    """A full box: a box whose body starts with version (8 bits) and flags (24 bits)."""
    return box(kind, struct.pack(">I", (version << 24) | flags), *parts)


@dataclass(frozen=True, slots=True)
class Track:
    """One track of the initialization segment.

    Attributes:
        id: the track id (1, 2, ...), as the fragments name it.
        kind: ``"video"`` (``avc1``) or ``"audio"`` (``Opus``).
        timescale: ticks per second of the track's times.
        config: video: the ``avcC`` body (:func:`livecommerce.media.h264.avc_config`).
        width, height: video: the picture size.
        channels: audio: the output channel count (1 or 2).
        pre_skip: audio: Opus samples (48 kHz) to skip at the start of decoding.
    """

    id: int
    kind: Literal["video", "audio"]
    timescale: int
    config: bytes = b""
    width: int = 0
    height: int = 0
    channels: int = 2
    pre_skip: int = 0


def opus_head(channels: int, pre_skip: int = 0, input_rate: int = 48_000) -> bytes:
    """The ``dOps`` body: an Opus ID header in big-endian, channel mapping family 0."""
    return struct.pack(">BBHIhB", 0, channels, pre_skip, input_rate, 0, 0)


def _sample_entry(track: Track) -> bytes:
    if track.kind == "video":
        return box(
            b"avc1",
            bytes(6),
            struct.pack(">H", 1),  # data_reference_index
            bytes(16),  # pre_defined, reserved, pre_defined[3]
            struct.pack(">HH", track.width, track.height),
            struct.pack(">II", 0x00480000, 0x00480000),  # 72 dpi
            bytes(4),
            struct.pack(">H", 1),  # frame_count
            bytes(32),  # compressorname
            struct.pack(">Hh", 0x0018, -1),  # depth, pre_defined
            box(b"avcC", track.config),
        )
    return box(
        b"Opus",
        bytes(6),
        struct.pack(">H", 1),
        bytes(8),
        struct.pack(">HHHH", track.channels, 16, 0, 0),
        struct.pack(">I", OPUS_TIMESCALE << 16),
        box(b"dOps", opus_head(track.channels, track.pre_skip)),
    )


def _trak(track: Track) -> bytes:
    video = track.kind == "video"
    tkhd = full_box(
        b"tkhd",
        0,
        3,  # enabled, in movie
        struct.pack(">IIIII", 0, 0, track.id, 0, 0),
        bytes(8),
        struct.pack(">hhhH", 0, 0, 0 if video else 0x0100, 0),
        _MATRIX,
        struct.pack(">II", track.width << 16, track.height << 16),
    )
    mdhd = full_box(
        b"mdhd", 0, 0, struct.pack(">IIIIHH", 0, 0, track.timescale, 0, _LANGUAGE_UND, 0)
    )
    handler, name = (b"vide", b"VideoHandler") if video else (b"soun", b"SoundHandler")
    hdlr = full_box(b"hdlr", 0, 0, bytes(4), handler, bytes(12), name + b"\x00")
    media_header = full_box(b"vmhd", 0, 1, bytes(8)) if video else full_box(b"smhd", 0, 0, bytes(4))
    dinf = box(b"dinf", full_box(b"dref", 0, 0, struct.pack(">I", 1), full_box(b"url ", 0, 1)))
    stbl = box(
        b"stbl",
        full_box(b"stsd", 0, 0, struct.pack(">I", 1), _sample_entry(track)),
        full_box(b"stts", 0, 0, bytes(4)),
        full_box(b"stsc", 0, 0, bytes(4)),
        full_box(b"stsz", 0, 0, bytes(8)),
        full_box(b"stco", 0, 0, bytes(4)),
    )
    minf = box(b"minf", media_header, dinf, stbl)
    return box(b"trak", tkhd, box(b"mdia", mdhd, hdlr, minf))


def init_segment(tracks: Sequence[Track]) -> bytes:
    """The initialization segment (``EXT-X-MAP``) for ``tracks``.

    Raises:
        ValueError: no track, or a video track without ``avcC`` or size.
    """
    if not tracks:
        raise ValueError("an initialization segment needs a track")
    for t in tracks:
        if t.kind == "video" and not (t.config and t.width and t.height):
            raise ValueError("a video track needs its avcC and its size")
    ftyp = box(b"ftyp", b"iso6", struct.pack(">I", 0), b"iso6", b"cmfc", b"isom", b"mp41")
    mvhd = full_box(
        b"mvhd",
        0,
        0,
        struct.pack(">IIII", 0, 0, 1000, 0),
        struct.pack(">IH", 0x00010000, 0x0100),
        bytes(10),
        _MATRIX,
        bytes(24),
        struct.pack(">I", max(t.id for t in tracks) + 1),
    )
    mvex = box(
        b"mvex",
        *(full_box(b"trex", 0, 0, struct.pack(">IIIII", t.id, 1, 0, 0, 0)) for t in tracks),
    )
    return ftyp + box(b"moov", mvhd, *(_trak(t) for t in tracks), mvex)


@dataclass(frozen=True, slots=True)
class Sample:
    """One sample of a fragment: its bytes, its duration (track ticks) and whether it
    decodes on its own."""

    data: bytes
    duration: int
    sync: bool = True


@dataclass(slots=True)
class Fragment:
    """One track's run of samples in a media segment, from ``decode_time`` (ticks)."""

    track_id: int
    decode_time: int
    samples: list[Sample] = field(default_factory=list)

    @property
    def duration(self) -> int:
        return sum(s.duration for s in self.samples)


_TRUN_FLAGS = 0x000001 | 0x000100 | 0x000200 | 0x000400
"""data-offset, sample-duration, sample-size and sample-flags present."""


def _traf(fragment: Fragment, data_offset: int) -> bytes:
    tfhd = full_box(b"tfhd", 0, 0x020000, struct.pack(">I", fragment.track_id))
    tfdt = full_box(b"tfdt", 1, 0, struct.pack(">Q", fragment.decode_time))
    entries = b"".join(
        struct.pack(">III", s.duration, len(s.data), SYNC if s.sync else NON_SYNC)
        for s in fragment.samples
    )
    trun = full_box(
        b"trun", 0, _TRUN_FLAGS, struct.pack(">Ii", len(fragment.samples), data_offset), entries
    )
    return box(b"traf", tfhd, tfdt, trun)


def media_segment(sequence: int, fragments: Sequence[Fragment]) -> bytes:
    """One media segment: a ``moof`` (fragment number ``sequence``) with a ``traf`` per
    non-empty fragment, and the ``mdat`` of their samples, track after track.

    Raises:
        ValueError: no fragment has a sample.
    """
    runs = [f for f in fragments if f.samples]
    if not runs:
        raise ValueError("a media segment needs a sample")
    # The moof's size does not depend on the offsets' values: build it once with zero
    # offsets to learn it, then with the real ones.
    mfhd = full_box(b"mfhd", 0, 0, struct.pack(">I", sequence & 0xFFFFFFFF))
    moof_size = len(box(b"moof", mfhd, *(_traf(f, 0) for f in runs)))
    offset = moof_size + 8  # the mdat's header
    trafs = []
    for f in runs:
        trafs.append(_traf(f, offset))
        offset += sum(len(s.data) for s in f.samples)
    payload = b"".join(s.data for f in runs for s in f.samples)
    return box(b"moof", mfhd, *trafs) + box(b"mdat", payload)


def opus_packet_samples(packet: bytes) -> int:
    """The duration of an Opus packet in 48 kHz samples, from its TOC byte (RFC 6716,
    3.1); 0 for an empty or malformed packet."""
    if not packet:
        return 0
    config = packet[0] >> 3
    if config < 12:  # SILK: 10, 20, 40, 60 ms
        frame = (480, 960, 1920, 2880)[config & 3]
    elif config < 16:  # hybrid: 10, 20 ms
        frame = (480, 960)[config & 1]
    else:  # CELT: 2.5, 5, 10, 20 ms
        frame = (120, 240, 480, 960)[config & 3]
    code = packet[0] & 3
    if code == 0:
        count = 1
    elif code in (1, 2):
        count = 2
    elif len(packet) < 2:
        return 0
    else:
        count = packet[1] & 0x3F
    return frame * count
