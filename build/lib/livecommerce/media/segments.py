"""Cutting a stream into HLS segments, and the playlists that list them. Pure.

The :class:`Segmenter` takes the samples of a stream's tracks on one timeline (each in
its track's ticks, 0 at the stream's start) and decides where segments end: at a video
keyframe once the segment is :data:`MIN_SEGMENT_S` long, at the first keyframe after a
cut was asked for (a product pinned or unpinned), and, if no keyframe comes in time,
before the segment would pass :data:`MAX_SEGMENT_S` (that segment then starts with a
frame that needs the one before: it is marked not independent). It tells the caller
when a keyframe is due (:meth:`Segmenter.keyframe_due`) so the publisher can be asked
for one (or our own encoder made to give one) and segments come out near
:data:`TARGET_SEGMENT_S`.

:func:`media_playlist` writes an RFC 8216 media playlist (version 7: fragmented MP4
with ``EXT-X-MAP``), live (a sliding window) or VOD.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass, field

from livecommerce.media.fmp4 import Fragment, Sample, media_segment

TARGET_SEGMENT_S = 1.0
MIN_SEGMENT_S = 0.5
"""A keyframe that comes earlier than this into a segment (a viewer asked for one)
does not cut it, unless a cut was asked for."""
MAX_SEGMENT_S = 2.0
TARGET_DURATION = 2
"""``EXT-X-TARGETDURATION``: no segment is longer than :data:`MAX_SEGMENT_S`."""
LIVE_WINDOW = 6
"""Segments a live playlist lists."""


class Unwrapper:
    """Extends 32-bit RTP timestamps to a monotonic 64-bit count (wrap-around handled:
    a step of less than half the range, forwards or backwards, is taken as such)."""

    def __init__(self) -> None:
        self._last: int | None = None
        self._value = 0

    def __call__(self, ts: int) -> int:
        if self._last is None:
            self._value = ts
        else:
            step = ((ts - self._last + 0x80000000) & 0xFFFFFFFF) - 0x80000000
            self._value += step
        self._last = ts
        return self._value


@dataclass(frozen=True, slots=True)
class TimedSample:
    """A sample on the stream's timeline.

    Attributes:
        time: decode time in the track's ticks (0 = the stream's start).
        data: the sample as it goes in ``mdat``.
        sync: it decodes on its own (a video keyframe; every audio sample).
        duration: how long it lasts, if known from the sample itself (Opus's TOC);
            otherwise the next sample's time tells.
    """

    time: int
    data: bytes
    sync: bool = True
    duration: int | None = None


@dataclass(frozen=True, slots=True)
class Segment:
    """A finished segment.

    Attributes:
        seq: its sequence number (0, 1, ...): the file is ``{seq}.m4s``.
        start: its start on the stream's timeline, in seconds.
        duration: seconds (``EXTINF``).
        independent: it starts with a keyframe.
        init: the initialization segment it needs (its version, 0 first).
        tracks: the ids of the tracks it has samples of.
        data: the ``moof`` + ``mdat`` bytes.
    """

    seq: int
    start: float
    duration: float
    independent: bool
    init: int
    tracks: frozenset[int]
    data: bytes = field(repr=False)


@dataclass(slots=True)
class _Track:
    id: int
    timescale: int
    samples: list[TimedSample] = field(default_factory=list)
    last_duration: int = 0
    on: bool = True


class Segmenter:
    """Cuts the samples of a stream into segments.

    Args:
        tracks: ``(track id, timescale)`` of each track; the first is the main track
            (video if there is video), whose samples decide the cuts.
        target_s, min_s, max_s: see the module's constants.
    """

    def __init__(
        self,
        tracks: Sequence[tuple[int, int]],
        *,
        target_s: float = TARGET_SEGMENT_S,
        min_s: float = MIN_SEGMENT_S,
        max_s: float = MAX_SEGMENT_S,
    ) -> None:
        if not tracks:
            raise ValueError("a segmenter needs a track")
        self._tracks = [_Track(tid, scale) for tid, scale in tracks]
        self._main = self._tracks[0]
        self.target_s = target_s
        self.min_s = min_s
        self.max_s = max_s
        self._start: int | None = None
        """The current segment's start, in main-track ticks (None before any sample)."""
        self._origin: int | None = None
        """The first segment's start, in main-track ticks."""
        self._independent = True
        self._init = 0
        self._next_init = 0
        self.cut_pending = False
        """A cut was asked for: the next keyframe ends the segment, however short."""
        self.seq = 0
        """The sequence number of the segment being filled."""
        self.forced = 0
        """Segments cut without a keyframe (the publisher did not send one in time)."""

    @property
    def started(self) -> bool:
        return self._start is not None

    @property
    def start_s(self) -> float:
        """The current segment's start on the timeline, in seconds."""
        return (self._start or 0) / self._main.timescale

    def discard(self, index: int) -> None:
        """Drop the samples of non-main track ``index``, held and to come."""
        track = self._tracks[index]
        track.on = False
        track.samples.clear()

    def elapsed_s(self, time: int) -> float:
        """Seconds from the current segment's start to main-track ``time``."""
        if self._start is None:
            return 0.0
        return (time - self._start) / self._main.timescale

    def keyframe_due(self, time: int, *, lead_s: float = 0.0) -> bool:
        """Whether a keyframe at main-track ``time`` (or ``lead_s`` before the target)
        would end the segment on time: a cut is pending, or the segment is that long."""
        if self._start is None:
            return True
        return self.cut_pending or self.elapsed_s(time) >= self.target_s - lead_s

    def request_cut(self) -> None:
        """End the segment at the next keyframe (and so start one there)."""
        if self._start is not None:
            self.cut_pending = True

    def new_init(self) -> None:
        """The following samples need a new initialization segment (the picture's
        parameters changed): the next segment (which must start with the keyframe that
        carries them) uses init version + 1. Implies a cut."""
        self._next_init += 1
        self.request_cut()

    def add_main(self, sample: TimedSample) -> Segment | None:
        """Take a main-track sample; the segment it ended, if it ended one."""
        done = None
        if self._next_init != self._init and not sample.sync:
            return None  # made with parameters the next init has: wait for its keyframe
        if self._start is None:
            if not sample.sync:
                return None  # a stream starts with a keyframe
            self._origin = sample.time
            self._begin(sample.time, True)
        else:
            elapsed = self.elapsed_s(sample.time)
            step = self._main.last_duration / self._main.timescale
            if sample.sync and elapsed > 0 and (self.cut_pending or elapsed >= self.min_s):
                done = self._cut(sample.time)
                self._begin(sample.time, True)
            elif elapsed + step > self.max_s and self._main.samples:
                done = self._cut(sample.time)
                self.forced += 1
                self._begin(sample.time, False)
        self._append(self._main, sample)
        return done

    def add(self, index: int, sample: TimedSample) -> None:
        """Take a sample of the non-main track ``index`` (1, 2, ...); samples from
        before the first segment's start are dropped."""
        track = self._tracks[index]
        if self._origin is None or not track.on:
            return
        if sample.time < self._origin * track.timescale // self._main.timescale:
            return
        self._append(track, sample)

    def finish(self) -> Segment | None:
        """The stream ended: the last segment, if it has samples."""
        if self._start is None or not self._main.samples:
            return None
        last = self._main.samples[-1]
        step = self._main.last_duration or self._main.timescale // 30
        return self._cut(last.time + step)

    def _append(self, track: _Track, sample: TimedSample) -> None:
        if track.samples:
            gap = sample.time - track.samples[-1].time
            if gap > 0:
                track.last_duration = gap
        track.samples.append(sample)

    def _begin(self, time: int, independent: bool) -> None:
        self._start = time
        self._independent = independent
        self._init = self._next_init
        self.cut_pending = False

    def _cut(self, end: int) -> Segment:
        """Close the current segment at main-track time ``end`` (exclusive)."""
        assert self._start is not None
        start = self._start
        main = self._main
        end = min(end, start + int(self.max_s * main.timescale))  # a stall leaves a gap
        fragments = []
        for track in self._tracks:
            limit = end * track.timescale // main.timescale
            if track is main:
                taken, kept = track.samples, []
            else:
                taken = [s for s in track.samples if s.time < limit]
                kept = track.samples[len(taken) :]
            if not taken:
                track.samples = kept
                continue
            samples = []
            for i, s in enumerate(taken):
                after = taken[i + 1].time if i + 1 < len(taken) else None
                if after is None and kept:
                    after = kept[0].time
                if after is None:
                    after = limit if track is main else s.time + (s.duration or track.last_duration)
                # Within a run a sample's time is the sum of the durations before it:
                # a gap (DTX silence, a lost frame) lengthens the sample before it.
                samples.append(Sample(s.data, max(after - s.time, 1), s.sync))
            fragments.append(Fragment(track.id, taken[0].time, samples))
            track.samples = kept
        segment = Segment(
            seq=self.seq,
            start=start / main.timescale,
            duration=(end - start) / main.timescale,
            independent=self._independent,
            init=self._init,
            tracks=frozenset(f.track_id for f in fragments),
            data=media_segment(self.seq + 1, fragments),
        )
        self.seq += 1
        return segment


# -- playlists --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Entry:
    """A segment as a playlist lists it."""

    seq: int
    duration: float
    uri: str
    init_uri: str
    program_time: float
    """Unix time of its first frame (``EXT-X-PROGRAM-DATE-TIME``)."""
    independent: bool = True
    discontinuity: int = 0
    """Changes of initialization segment in the stream up to this segment (its
    discontinuity sequence number)."""


def _date(t: float) -> str:
    moment = datetime.datetime.fromtimestamp(t, datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def media_playlist(
    entries: Sequence[Entry],
    *,
    ended: bool,
    vod: bool = False,
    prefix: str = "",
    target_duration: int = TARGET_DURATION,
) -> str:
    """An RFC 8216 media playlist of ``entries`` (in order).

    Args:
        ended: the stream ended: ``EXT-X-ENDLIST``.
        vod: a finished playlist that never changes (``EXT-X-PLAYLIST-TYPE:VOD``,
            implies ``ended``).
        prefix: put before every URI (the stream's directory, for the room's
            playlist one level up).
    """
    first = entries[0].seq if entries else 0
    discontinuity_seq = entries[0].discontinuity if entries else 0
    longest = max((e.duration for e in entries), default=0.0)
    lines = [
        "#EXTM3U",
        "#EXT-X-VERSION:7",
        f"#EXT-X-TARGETDURATION:{max(target_duration, round(longest))}",
        f"#EXT-X-MEDIA-SEQUENCE:{first}",
    ]
    if discontinuity_seq:
        lines.append(f"#EXT-X-DISCONTINUITY-SEQUENCE:{discontinuity_seq}")
    if vod:
        lines.append("#EXT-X-PLAYLIST-TYPE:VOD")
    if entries and all(e.independent for e in entries):
        lines.append("#EXT-X-INDEPENDENT-SEGMENTS")
    init: str | None = None
    for e in entries:
        if e.init_uri != init:
            if init is not None:
                lines.append("#EXT-X-DISCONTINUITY")
            lines.append(f'#EXT-X-MAP:URI="{prefix}{e.init_uri}"')
            init = e.init_uri
        lines.append(f"#EXT-X-PROGRAM-DATE-TIME:{_date(e.program_time)}")
        lines.append(f"#EXTINF:{e.duration:.3f},")
        lines.append(prefix + e.uri)
    if ended or vod:
        lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"
