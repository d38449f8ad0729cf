"""A process's recordings: the HLS and clips of every stream published here, and the
retention of what every stream left on this host's disk.

:meth:`Recorder.record` is what the relay calls when a publisher's stream starts: a
:class:`~livecommerce.media.hls.Packager` subscribes to it, and, given a hub, a
:class:`~livecommerce.media.clips.RoomWatch` follows the room's pins (clips, with a
clip store) and its end (the publisher is stopped).

:meth:`Recorder.sweep` deletes what is older than the retention: clips that ended
before it (metadata and files), stream directories untouched since before it (a live
stream writes a segment a second, so only ended or abandoned streams qualify), and a
room's playlist left by such a stream. It is idempotent: every process on a host may
run it, and processes on other hosts sweep their own disks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import shutil
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from livecommerce.backends import Backends, Clip, ClipStore
from livecommerce.media.clips import ClipRecorder, RoomWatch, clip_playlist_name, clip_poster_name
from livecommerce.media.hls import LIVE_PLAYLIST, Packager
from livecommerce.media.stream import Stream
from livecommerce.protocol import ROOM_ID
from livecommerce.rooms.hub import Hub

log = logging.getLogger(__name__)

DEFAULT_RETENTION_S = 7 * 86400


def new_stream_id(now: float) -> str:
    """A stream's directory name: its start (ms, hex, so names sort by time) and a
    random suffix."""
    return f"{int(now * 1000):x}{secrets.token_hex(3)}"


@dataclass
class Recording:
    """One stream being recorded."""

    room: str
    packager: Packager
    clips: ClipRecorder | None
    watch: RoomWatch | None


@dataclass(frozen=True, slots=True)
class Swept:
    """What one sweep deleted."""

    clips: int
    streams: int


class Recorder:
    """The recordings of this process.

    Args:
        media_dir: where every stream's files go (``{media_dir}/{room}/{stream}/``);
            made when the first stream is.
        hub, backends: to follow each room's pins and end (without them, no clips and
            the room's end does not stop its stream).
        clips: where clips go (None: no clips).
        retention_s: what :meth:`sweep` keeps.
        on_playable: called with the room when a stream's live playlist first lists a
            segment (HLS viewers can play it).
        clock: wall time.
    """

    def __init__(
        self,
        media_dir: Path,
        *,
        hub: Hub | None = None,
        backends: Backends | None = None,
        clips: ClipStore | None = None,
        retention_s: float = DEFAULT_RETENTION_S,
        on_playable: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.media_dir = media_dir
        self._on_playable = on_playable
        self.hub = hub
        self.backends = backends
        self.clips = clips
        self.retention_s = retention_s
        self._clock = clock
        self.recordings: dict[str, Recording] = {}
        """Streams being recorded, by stream id."""
        self._tasks: set[asyncio.Future[Any]] = set()
        self.sweeps = 0
        """Sweeps done."""

    def record(self, room: str, stream: Stream, stop: Callable[[str], None]) -> Recording:
        """Record ``stream`` (the room's publisher's) from now until it ends; ``stop``
        stops the publisher (when the room ends)."""
        stream_id = new_stream_id(self._clock())
        on_playable = self._on_playable
        packager = Packager(
            stream,
            self.media_dir / room,
            stream_id,
            clock=self._clock,
            on_end=self._ended,
            on_playable=None if on_playable is None else lambda _p: on_playable(room),
        )
        clips = (
            ClipRecorder(packager, self.clips, room, spawn=self.spawn)
            if self.clips is not None
            else None
        )
        watch = None
        if self.hub is not None and self.backends is not None:
            watch = RoomWatch(
                self.hub,
                self.backends,
                room,
                on_pinned=clips.pinned if clips is not None else lambda _product: None,
                on_ended=lambda: stop("the room ended"),
                spawn=self.spawn,
            )
            self.spawn(watch.start())
        recording = self.recordings[stream_id] = Recording(room, packager, clips, watch)
        log.info("room %s: recording stream %s (%s)", room, stream_id, packager.dir)
        return recording

    def _ended(self, packager: Packager) -> None:
        recording = self.recordings.pop(packager.stream_id, None)
        if recording is None:
            return
        if recording.watch is not None:
            recording.watch.close()
        if recording.clips is not None:
            recording.clips.stream_ended()
        log.info(
            "room %s: stream %s ended after %d segments",
            recording.room,
            packager.stream_id,
            len(packager.entries),
        )

    def spawn(self, work: Awaitable[Any]) -> None:
        """Run ``work`` in the background; :meth:`close` waits for it."""
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Future[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.warning("recording task failed: %r", exc, exc_info=exc)

    async def idle(self) -> None:
        """Wait until no background work is left (clips being saved, joins)."""
        while self._tasks:
            await asyncio.wait(list(self._tasks))

    async def close(self, timeout_s: float = 10.0) -> None:
        """End every recording (their streams should have ended already) and wait for
        the clips being saved."""
        for recording in list(self.recordings.values()):
            recording.packager.close()
        pending = [r.packager.done for r in self.recordings.values()]
        if pending:
            await asyncio.wait(pending, timeout=timeout_s)
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout_s)

    async def sweep(self) -> Swept:
        """Delete what is older than the retention (see the module's docstring)."""
        cutoff = self._clock() - self.retention_s
        live = {r.packager.dir for r in self.recordings.values()}
        streams = await asyncio.to_thread(_sweep_dirs, self.media_dir, cutoff, live)
        clips = 0
        if self.clips is not None:
            while gone := await self.clips.delete_ended_before(int(cutoff * 1000)):
                clips += len(gone)
                await asyncio.to_thread(_delete_clip_files, self.media_dir, gone)
        self.sweeps += 1
        if clips or streams:
            log.info("retention: %d clips and %d streams deleted", clips, streams)
        return Swept(clips, streams)


def _delete_clip_files(media_dir: Path, clips: list[Clip]) -> None:
    """Delete the clips' playlists and posters, keeping their stream directory's time
    (what tells the sweep when the stream last changed)."""
    for c in clips:
        folder = media_dir / c.room / c.stream
        try:
            before = folder.stat()
        except OSError:
            continue  # the stream's files are gone already
        for name in (clip_playlist_name(c.id), clip_poster_name(c.id)):
            (folder / name).unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            os.utime(folder, ns=(before.st_atime_ns, before.st_mtime_ns))


def _sweep_dirs(media_dir: Path, cutoff: float, live: set[Path]) -> int:
    """Delete stream directories last changed before ``cutoff`` (unix time), then
    rooms' playlists as old, then emptied room directories. Returns the streams
    deleted."""
    deleted = 0
    try:
        rooms = [p for p in media_dir.iterdir() if p.is_dir() and ROOM_ID.fullmatch(p.name)]
    except OSError:
        return 0
    for room in rooms:
        try:
            entries = list(room.iterdir())
        except OSError:
            continue
        for stream in entries:
            if not stream.is_dir() or stream in live:
                continue
            try:
                changed = stream.stat().st_mtime  # a file added or renamed in it
            except OSError:
                continue
            if changed < cutoff:
                shutil.rmtree(stream, ignore_errors=True)
                deleted += 1
        playlist = room / LIVE_PLAYLIST
        with contextlib.suppress(OSError):
            if playlist.stat().st_mtime < cutoff:
                playlist.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            os.rmdir(room)  # only if empty
    return deleted
