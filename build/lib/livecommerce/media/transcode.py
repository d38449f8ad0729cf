"""The only codecs the server runs, with PyAV: a VP8 publisher's video made H.264 for
HLS (one decode and one encode per frame, whatever the number of viewers), and a
clip's poster (one decode of one frame, one JPEG encode).

An H.264 publisher costs neither: its HLS is a remux (:mod:`livecommerce.media.hls`).
Everything here is blocking; the packager runs it in a worker thread.
"""

from __future__ import annotations

import fractions
import io
from collections.abc import Sequence
from dataclasses import dataclass

import av
from av.codec.context import CodecContext
from av.video.codeccontext import VideoCodecContext
from av.video.frame import PictureType, VideoFrame

from livecommerce.media.h264 import split_annexb

X264_OPTIONS = {"preset": "ultrafast", "tune": "zerolatency"}
"""libx264 at its cheapest: no lookahead, no B-frames, one frame in, one frame out."""
X264_KEYINT = 600
"""Keyframes come when a segment boundary asks for one; this is only a backstop."""
VIDEO_TIME_BASE = fractions.Fraction(1, 90_000)
POSTER_QUALITY = 4
"""The poster's coarsest quantizer scale (MJPEG: 2 best, 31 worst)."""


def vp8_depayload(payload: bytes) -> bytes:
    """The VP8 data of one RTP payload: its payload descriptor (RFC 7741, 4.2) taken
    off. An empty or truncated descriptor gives ``b""``."""
    if not payload:
        return b""
    pos = 1
    if payload[0] & 0x80:  # X
        if len(payload) < 2:
            return b""
        ext = payload[1]
        pos = 2
        if ext & 0x80:  # I: picture id, 7 or 15 bits
            if len(payload) <= pos:
                return b""
            pos += 2 if payload[pos] & 0x80 else 1
        if ext & 0x40:  # L
            pos += 1
        if ext & 0x30:  # T or K
            pos += 1
    return payload[pos:]


@dataclass(frozen=True, slots=True)
class EncodedPicture:
    """One H.264 access unit from our encoder."""

    units: list[bytes]
    timestamp: int
    """The source frame's timestamp (90 kHz), carried through."""
    keyframe: bool


class Vp8ToH264:
    """Decodes a VP8 stream frame by frame and encodes it as H.264 (libx264,
    :data:`X264_OPTIONS`, one thread). A new picture size starts a new encoder (its
    first picture is a keyframe with new parameter sets)."""

    def __init__(self, *, threads: int = 1) -> None:
        self._decoder = CodecContext.create("vp8", "r")
        self._encoder: VideoCodecContext | None = None
        self._threads = threads
        self.frames_in = 0
        self.frames_out = 0

    def transcode(
        self, payloads: Sequence[bytes], timestamp: int, *, keyframe: bool
    ) -> list[EncodedPicture]:
        """One VP8 frame (its RTP payloads) in, the H.264 pictures it gave out
        (zero or one). ``keyframe`` makes the picture an IDR.

        Raises:
            av.error.FFmpegError: the frame does not decode (the caller should wait for
                the next VP8 keyframe).
        """
        data = b"".join(vp8_depayload(p) for p in payloads)
        packet = av.Packet(data)
        packet.pts = timestamp
        packet.time_base = VIDEO_TIME_BASE
        self.frames_in += 1
        out: list[EncodedPicture] = []
        for frame in self._decoder.decode(packet):
            assert isinstance(frame, VideoFrame)
            out += self._encode(frame, timestamp, keyframe)
        return out

    def _encode(self, frame: VideoFrame, timestamp: int, keyframe: bool) -> list[EncodedPicture]:
        enc = self._encoder
        if enc is None or (enc.width, enc.height) != (frame.width, frame.height):
            enc = self._encoder = _x264(frame.width, frame.height, self._threads)
            keyframe = True
        if frame.format.name != "yuv420p":
            frame = frame.reformat(format="yuv420p")
        frame.pts = timestamp
        frame.time_base = VIDEO_TIME_BASE
        frame.pict_type = PictureType.I if keyframe else PictureType.NONE
        pictures = []
        for packet in enc.encode(frame):
            pts = packet.pts if packet.pts is not None else timestamp
            pictures.append(EncodedPicture(split_annexb(bytes(packet)), pts, packet.is_keyframe))
        self.frames_out += len(pictures)
        return pictures


def _x264(width: int, height: int, threads: int) -> VideoCodecContext:
    enc = CodecContext.create("libx264", "w")
    assert isinstance(enc, VideoCodecContext)
    enc.width = width - width % 2
    enc.height = height - height % 2
    enc.pix_fmt = "yuv420p"
    enc.time_base = VIDEO_TIME_BASE
    enc.framerate = fractions.Fraction(30, 1)
    enc.gop_size = X264_KEYINT
    enc.thread_count = threads
    enc.options = dict(X264_OPTIONS)
    return enc


def poster_jpeg(init: bytes, segment: bytes) -> bytes | None:
    """A JPEG of the first picture that decodes in ``segment`` (with its
    initialization segment ``init``): one H.264 decode, one MJPEG encode. None if no
    picture decodes."""
    try:
        with av.open(io.BytesIO(init + segment), mode="r") as container:
            if not container.streams.video:
                return None
            for picture in container.decode(video=0):
                return _jpeg(picture)
    except av.error.FFmpegError:
        return None
    return None


def _jpeg(picture: VideoFrame) -> bytes:
    enc = CodecContext.create("mjpeg", "w")
    assert isinstance(enc, VideoCodecContext)
    enc.width = picture.width
    enc.height = picture.height
    enc.pix_fmt = "yuvj420p"
    enc.time_base = fractions.Fraction(1, 25)
    enc.options = {"qmin": "2", "qmax": str(POSTER_QUALITY)}
    frame = picture.reformat(format="yuvj420p")
    frame.pts = 0
    return b"".join(bytes(p) for p in [*enc.encode(frame), *enc.encode(None)])
