"""HLS of a publisher's stream: fragmented MP4 segments and a live playlist on disk.

A :class:`Packager` subscribes to a :class:`~livecommerce.media.stream.Stream` as two
frame sinks (video, audio). H.264 is a remux: the RTP payloads become access units
(:func:`~livecommerce.media.h264.nal_units`), their parameter sets the ``avcC``, the
rest one MP4 sample each, with no codec at all. VP8 costs one decode and one encode per
frame (:class:`~livecommerce.media.transcode.Vp8ToH264`, in a worker thread). Opus
packets are samples as they are. Times come from the RTP timestamps (unwrapped), the
tracks lined up by the wall-clock arrival of their first frame.

The :class:`~livecommerce.media.segments.Segmenter` cuts at keyframes; when a segment
nears :data:`~livecommerce.media.segments.TARGET_SEGMENT_S` the packager asks the
publisher for a keyframe (``stream.request_keyframe()``; our own encoder for VP8), so
cuts come on time. :meth:`Packager.request_cut` cuts at the next keyframe (a product
pinned or unpinned: its clip's boundaries).

Files, under ``{media_dir}/{room}/``::

    live.m3u8                the room's live playlist (its current or last stream)
    {stream}/init.mp4        initialization segment (init-1.mp4, ... if the picture's
                             parameters change: a discontinuity)
    {stream}/{seq}.m4s       media segments, 0, 1, ...

Every file is written to a temporary name and renamed, so a reader (any server process
on the host) sees the old file or the new one, never half of one. Segments and inits
never change once written; the playlist is rewritten at every segment and gets
``EXT-X-ENDLIST`` when the stream ends. Writes are small (a segment a second) and done
on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from livecommerce.media import h264
from livecommerce.media.fmp4 import (
    OPUS_TIMESCALE,
    VIDEO_TIMESCALE,
    Track,
    init_segment,
    opus_packet_samples,
)
from livecommerce.media.packets import EncodedFrame
from livecommerce.media.segments import (
    LIVE_WINDOW,
    MIN_SEGMENT_S,
    TARGET_SEGMENT_S,
    Entry,
    Segment,
    Segmenter,
    TimedSample,
    Unwrapper,
    media_playlist,
)
from livecommerce.media.stream import Stream
from livecommerce.media.transcode import Vp8ToH264

log = logging.getLogger(__name__)

LIVE_PLAYLIST = "live.m3u8"
KEYFRAME_LEAD_S = 0.1
"""A keyframe is asked of the publisher this long before the segment's target length
(the PLI's round trip and the encoder's next frame)."""
KEYFRAME_RETRY_S = 0.5
"""A keyframe asked for and not come is asked for again after this long."""
TRANSCODE_QUEUE = 45
"""VP8 frames waiting for the encoder (1.5 s) past which the backlog is dropped."""
_DROP = frozenset({h264.NAL_SPS, h264.NAL_PPS, h264.NAL_AUD, h264.NAL_FILLER})
"""NAL units kept out of samples: parameter sets live in the ``avcC``."""


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def init_name(version: int) -> str:
    return "init.mp4" if version == 0 else f"init-{version}.mp4"


Boundary = Callable[[int, float], None]
"""Told ``(seq, unix time)`` of the segment that starts at a cut."""


class _Sink:
    """One kind of the stream, into the packager."""

    def __init__(self, push: Callable[[EncodedFrame], bool], end: Callable[[], None]) -> None:
        self._push = push
        self._end = end
        self.ended = False

    @property
    def closed(self) -> bool:
        return self.ended

    def push(self, frame: EncodedFrame) -> bool:
        return self._push(frame)

    def end(self) -> None:
        if not self.ended:
            self.ended = True
            self._end()


class Packager:
    """The HLS of one stream (see the module's docstring).

    Args:
        stream: the publisher's stream; subscribed to at once.
        room_dir: ``{media_dir}/{room}``.
        stream_id: the stream's directory name (unique in the room).
        clock: wall time (``EXT-X-PROGRAM-DATE-TIME``, clip times).
        on_end: called once, after the last segment and the final playlist are written.
        on_playable: called once, when the live playlist first lists a segment.
        window: segments the live playlist lists.
    """

    def __init__(
        self,
        stream: Stream,
        room_dir: Path,
        stream_id: str,
        *,
        clock: Callable[[], float] = time.time,
        on_end: Callable[[Packager], None] | None = None,
        on_playable: Callable[[Packager], None] | None = None,
        window: int = LIVE_WINDOW,
    ) -> None:
        self.stream = stream
        self.room_dir = room_dir
        self.stream_id = stream_id
        self.dir = room_dir / stream_id
        self.dir.mkdir(parents=True, exist_ok=True)
        self._clock = clock
        self._on_end = on_end
        self._on_playable = on_playable
        self._window = window
        self.video_codec = stream.codecs.get("video")
        self.has_audio = "audio" in stream.codecs
        main_scale = VIDEO_TIMESCALE if self.video_codec else OPUS_TIMESCALE
        tracks = [(1, main_scale)]
        if self.video_codec and self.has_audio:
            tracks.append((2, OPUS_TIMESCALE))
        # audio alone has a "keyframe" every packet: cut at the target, not before
        self.segmenter = Segmenter(
            tracks, min_s=TARGET_SEGMENT_S if self.video_codec is None else MIN_SEGMENT_S
        )
        self.entries: list[Entry] = []
        """Every segment written, in order."""
        self.t0: float | None = None
        """Unix time of the stream's timeline origin (its first keyframe's arrival)."""
        self.ended = False
        self.audio_on: bool | None = None if self.video_codec and self.has_audio else False
        """Whether the video's HLS carries audio too: decided by the first segment (did
        audio arrive during it?), for the whole stream."""
        self._configs: dict[int, tuple[bytes, bytes]] = {}
        self._config_version = -1
        self._inits_written: set[int] = set()
        self._video_ts = Unwrapper()
        self._video_origin: int | None = None
        self._audio_ts = Unwrapper()
        self._audio_origin: int | None = None
        self._audio_offset = 0
        self._asked_at: float | None = None
        self._boundaries: list[Boundary] = []
        self._sinks: list[_Sink] = []
        self._transcoder: Vp8ToH264 | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._queue: asyncio.Queue[tuple[EncodedFrame, float] | None] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._vp8_waiting = False
        self.done = asyncio.get_running_loop().create_future()
        """Resolved once the stream ended and every file is written."""
        self.frames = 0
        self.dropped = 0
        if self.video_codec is not None:
            if self.video_codec.upper() == "VP8":
                self._transcoder = Vp8ToH264()
                self._executor = ThreadPoolExecutor(1, thread_name_prefix="hls-vp8")
                self._queue = asyncio.Queue()
                self._worker = asyncio.create_task(self._transcode_loop(), name="hls-vp8")
            elif self.video_codec.upper() != "H264":
                raise ValueError(f"no HLS for {self.video_codec}")
            sink = _Sink(self._push_video, self._ended)
            self._sinks.append(sink)
            stream.subscribe("video", sink)
        if self.has_audio:
            sink = _Sink(self._push_audio, self._ended)
            self._sinks.append(sink)
            stream.subscribe("audio", sink)

    # -- cuts ---------------------------------------------------------------------------

    def request_cut(self, then: Boundary | None = None) -> None:
        """Cut a segment at the next keyframe (asked for now); ``then`` is told the
        segment that starts there (before the first segment: the first one). After the
        stream's end, ``then`` is told at once, with the end."""
        if self.ended:
            if then is not None:
                then(self.segmenter.seq, self._end_time())
            return
        if then is not None:
            self._boundaries.append(then)
        if self.segmenter.started:
            self.segmenter.request_cut()
            self._ask_keyframe(self._clock(), force=True)

    def _ask_keyframe(self, now: float, *, force: bool = False) -> None:
        """Ask the publisher for a keyframe, once per :data:`KEYFRAME_RETRY_S` unless
        ``force`` (not for VP8: our own encoder makes them)."""
        if self._transcoder is not None:
            return
        if not force and self._asked_at is not None and now - self._asked_at < KEYFRAME_RETRY_S:
            return
        self._asked_at = now
        self.stream.request_keyframe()

    # -- video --------------------------------------------------------------------------

    def _push_video(self, frame: EncodedFrame) -> bool:
        if self.ended:
            return True
        arrival = self._clock()
        self.frames += 1
        if self._queue is not None:  # VP8: to the encoder's thread
            if self._queue.qsize() >= TRANSCODE_QUEUE:
                self.dropped += self._queue.qsize() + 1
                while not self._queue.empty():
                    self._queue.get_nowait()
                self._vp8_waiting = True
                return False  # the stream asks for a keyframe and resumes at it
            self._queue.put_nowait((frame, arrival))
            return True
        units = h264.nal_units(frame.payloads)
        self._access_unit(units, self._video_ts(frame.timestamp), arrival)
        return True

    async def _transcode_loop(self) -> None:
        assert self._queue is not None and self._transcoder is not None
        loop = asyncio.get_running_loop()
        transcoder = self._transcoder
        while (item := await self._queue.get()) is not None:
            frame, arrival = item
            if self._vp8_waiting:
                if not frame.keyframe:
                    continue
                self._vp8_waiting = False
            ts = self._video_ts(frame.timestamp)
            time_ = 0 if self._video_origin is None else ts - self._video_origin
            key = self.segmenter.keyframe_due(time_)
            work = functools.partial(transcoder.transcode, frame.payloads, ts, keyframe=key)
            try:
                pictures = await loop.run_in_executor(self._executor, work)
            except Exception as exc:
                log.info("stream %s: a VP8 frame did not decode (%r)", self.stream_id, exc)
                self._vp8_waiting = True
                self.stream.request_keyframe()
                continue
            for picture in pictures:
                self._access_unit(picture.units, picture.timestamp, arrival)
        self._finish()

    def _access_unit(self, units: list[bytes], ts: int, arrival: float) -> None:
        """One access unit (NAL units) at unwrapped 90 kHz timestamp ``ts``."""
        sps = [u for u in units if h264.nal_type(u) == h264.NAL_SPS]
        pps = [u for u in units if h264.nal_type(u) == h264.NAL_PPS]
        keyframe = any(h264.nal_type(u) == h264.NAL_IDR for u in units)
        if keyframe and sps and pps:
            config = (sps[-1], pps[-1])
            current = self._configs.get(self._config_version)
            if config != current:
                try:
                    h264.parse_sps(config[0])
                except ValueError as exc:
                    log.warning("stream %s: unreadable SPS (%s)", self.stream_id, exc)
                    return
                self._config_version += 1
                self._configs[self._config_version] = config
                if current is not None:
                    self.segmenter.new_init()
        if self._config_version < 0:
            self._ask_keyframe(arrival)
            return  # nothing decodes before the first parameter sets
        data = h264.avcc_sample(u for u in units if h264.nal_type(u) not in _DROP)
        if not data:
            return
        if self._video_origin is None:
            if not keyframe:
                return
            self._video_origin = ts
            self.t0 = arrival
        sample = TimedSample(ts - self._video_origin, data, keyframe)
        self._main(sample)
        if self.segmenter.keyframe_due(sample.time, lead_s=KEYFRAME_LEAD_S):
            self._ask_keyframe(arrival)

    def _main(self, sample: TimedSample) -> None:
        first = not self.segmenter.started
        segment = self.segmenter.add_main(sample)
        if segment is not None:
            self._asked_at = None
            self._write(segment)
        if (first and self.segmenter.started) or segment is not None:
            self._boundary()

    # -- audio --------------------------------------------------------------------------

    def _push_audio(self, frame: EncodedFrame) -> bool:
        if self.ended or not frame.payloads:
            return True
        packet = frame.payloads[0]
        ts = self._audio_ts(frame.timestamp)
        if self.video_codec is None:  # audio only: audio is the main track
            if self._video_origin is None:
                self._video_origin = ts
                self.t0 = self._clock()
            self._main(TimedSample(ts - self._video_origin, packet, True))
            return True
        if self.t0 is None or self.audio_on is False:
            return True  # before the video's first keyframe (nothing to line up with)
        if self._audio_origin is None:
            self._audio_origin = ts
            self._audio_offset = round((self._clock() - self.t0) * OPUS_TIMESCALE)
        time_ = ts - self._audio_origin + self._audio_offset
        self.segmenter.add(1, TimedSample(time_, packet, True, opus_packet_samples(packet)))
        return True

    # -- files --------------------------------------------------------------------------

    def _tracks(self, version: int) -> list[Track]:
        if self.video_codec is None:
            return [Track(1, "audio", OPUS_TIMESCALE, channels=2)]
        sps, pps = self._configs[version]
        info = h264.parse_sps(sps)
        tracks = [
            Track(
                1,
                "video",
                VIDEO_TIMESCALE,
                h264.avc_config(sps, [pps]),
                width=info.width,
                height=info.height,
            )
        ]
        if self.audio_on:
            tracks.append(Track(2, "audio", OPUS_TIMESCALE, channels=2))
        return tracks

    def _write(self, segment: Segment) -> None:
        assert self.t0 is not None
        if self.audio_on is None:  # the first segment: audio came with it, or never will
            self.audio_on = 2 in segment.tracks
            if not self.audio_on:
                self.segmenter.discard(1)
        try:
            if segment.init not in self._inits_written:
                write_atomic(self.dir / init_name(segment.init), self.init_bytes(segment.init))
                self._inits_written.add(segment.init)
            write_atomic(self.dir / f"{segment.seq}.m4s", segment.data)
        except OSError:
            log.exception("stream %s: writing segment %d failed", self.stream_id, segment.seq)
            return
        previous = self.entries[-1] if self.entries else None
        init = init_name(segment.init)
        changes = 0 if previous is None else previous.discontinuity
        if previous is not None and previous.init_uri != init:
            changes += 1
        self.entries.append(
            Entry(
                segment.seq,
                segment.duration,
                f"{segment.seq}.m4s",
                init,
                self.t0 + segment.start,
                segment.independent,
                changes,
            )
        )
        self._write_playlist()

    def init_bytes(self, version: int) -> bytes:
        """The initialization segment of parameter-set version ``version``."""
        return init_segment(self._tracks(version))

    def _write_playlist(self) -> None:
        window = self.entries[-self._window :]
        text = media_playlist(window, ended=self.ended, prefix=f"{self.stream_id}/")
        try:
            write_atomic(self.room_dir / LIVE_PLAYLIST, text.encode())
        except OSError:
            log.exception("stream %s: writing the playlist failed", self.stream_id)
            return
        if self._on_playable is not None and not self.ended:
            on_playable, self._on_playable = self._on_playable, None
            on_playable(self)

    def _boundary(self) -> None:
        """A segment started: tell those waiting for a cut."""
        waiting, self._boundaries = self._boundaries, []
        assert self.t0 is not None
        moment = self.t0 + self.segmenter.start_s
        for then in waiting:
            try:
                then(self.segmenter.seq, moment)
            except Exception:
                log.exception("a segment boundary listener failed")

    # -- the end ------------------------------------------------------------------------

    def _ended(self) -> None:
        """A sink's stream ended (the publisher left): finish once every sink has."""
        if not all(s.ended for s in self._sinks) or self.ended:
            return
        if self._queue is not None:
            self._queue.put_nowait(None)  # the worker finishes after the frames queued
        else:
            self._finish()

    def _finish(self) -> None:
        if self.ended:
            return
        self.ended = True
        segment = self.segmenter.finish()
        if segment is not None:
            self._write(segment)
        elif self.entries:
            self._write_playlist()
        else:  # nothing came (the publisher never connected): leave nothing behind
            with contextlib.suppress(OSError):
                self.dir.rmdir()
        if self._executor is not None:
            self._executor.shutdown(wait=False)
        for then in self._boundaries:  # cuts that will never come
            with contextlib.suppress(Exception):
                then(self.segmenter.seq, self._end_time())
        self._boundaries.clear()
        if not self.done.done():
            self.done.set_result(None)
        if self._on_end is not None:
            try:
                self._on_end(self)
            except Exception:
                log.exception("a stream-end listener failed")

    def _end_time(self) -> float:
        if self.entries:
            last = self.entries[-1]
            return last.program_time + last.duration
        return self._clock()

    def close(self) -> None:
        """Stop at once (shutdown): end the sinks as the stream would."""
        for sink in self._sinks:
            sink.end()
        if not self._sinks:
            self._finish()
