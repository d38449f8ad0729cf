"""Product clips: while a product is pinned, the stream's segments are its clip.

The publisher's process learns pins and the room's end from the room's own events: a
:class:`RoomWatch` is a member of the room in this process's hub (as a WebSocket client
would be, but not counted as a viewer), so a pin made on any process reaches it within
a tick. A :class:`ClipRecorder` turns pins into clips: at a pin, an unpin, or a pin of
another product, it asks the packager for a cut at the next keyframe; the segments
between two cuts are the clip. A finished clip gets a VOD playlist over those segment
files (no second encode) and a poster (a JPEG of its first picture: one decode), both
next to the segments, and then its metadata goes to the :class:`ClipStore`.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from livecommerce.backends import Backends, Clip, ClipStore
from livecommerce.media.hls import Packager, write_atomic
from livecommerce.media.segments import Entry, media_playlist
from livecommerce.media.transcode import poster_jpeg
from livecommerce.protocol import loads
from livecommerce.rooms.hub import Hub

log = logging.getLogger(__name__)

_PINNED = b'"type":"product.pinned"'
_UNPINNED = b'"type":"product.unpinned"'
_ENDED = b'"type":"room.ended"'

Product = dict[str, Any]
"""A product as the room's events carry it: ``sku``, ``title``, ``price``, ``image``."""


def frame_payload(frame: bytes) -> bytes:
    """The payload of one unmasked WebSocket frame as the hub writes them
    (:func:`livecommerce.protocol.frames.text_frame`)."""
    size = frame[1] & 0x7F
    start = 2 if size < 126 else 4 if size == 126 else 10
    return frame[start:]


class RoomWatch:
    """The room's pins and end, as seen by a member of the room in the hub.

    Args:
        on_pinned: told the pinned product at start and at every change (None: none).
        on_ended: told once when the room ends (or at start, if it has).
        spawn: runs a coroutine in the background (a re-join after a resync).
    """

    user_id = "\x00media"
    """No user has this id: the room's private events never come here."""

    def __init__(
        self,
        hub: Hub,
        backends: Backends,
        room: str,
        *,
        on_pinned: Callable[[Product | None], None],
        on_ended: Callable[[], None],
        spawn: Callable[[Awaitable[Any]], None],
    ) -> None:
        self._hub = hub
        self._backends = backends
        self.room = room
        self._on_pinned = on_pinned
        self._on_ended = on_ended
        self._spawn = spawn
        self.closed = False
        self.ended = False

    async def start(self) -> None:
        """Join the room (again, after a resync) and report what is pinned now."""
        if self.closed:
            return
        membership = await self._hub.attach(self.room, self, counted=False)
        try:
            snapshot = await self._backends.log.snapshot(self.room)
            room = await self._backends.rooms.get(self.room)
        except BaseException:
            self._hub.detach(self.room, self)
            raise
        if self.closed:
            self._hub.detach(self.room, self)
            return
        pinned = loads(snapshot.pinned).get("product") if snapshot.pinned else None
        self._on_pinned(pinned if isinstance(pinned, dict) else None)
        membership.go_live(snapshot.seq)
        if room is None or room.status == "ended":
            self._ended()

    def write(self, frame: bytes) -> None:
        """A frame of the room's lines. Never raises: the hub writes the same frame to
        every member in one loop."""
        try:
            for line in frame_payload(frame).split(b"\n"):
                head = line[:64]
                if _PINNED in head:
                    product = loads(line).get("product")
                    self._on_pinned(product if isinstance(product, dict) else None)
                elif _UNPINNED in head:
                    self._on_pinned(None)
                elif _ENDED in head:
                    self._ended()
        except Exception:
            log.exception("room %s: a line for the recorder failed", self.room)

    def _ended(self) -> None:
        if not self.ended:
            self.ended = True
            self._on_ended()

    def removed(self, room: str, code: int) -> None:
        """The hub dropped us (a resync): join again."""
        if not self.closed:
            self._spawn(self.start())

    def close(self) -> None:
        self.closed = True
        self._hub.detach(self.room, self)


@dataclass
class _Open:
    """A clip being recorded: from the segment ``start`` (once the cut came)."""

    product: Product
    start: int | None = None


def clip_playlist_name(clip_id: str) -> str:
    return f"clip-{clip_id}.m3u8"


def clip_poster_name(clip_id: str) -> str:
    return f"clip-{clip_id}.jpg"


class ClipRecorder:
    """The clips of one stream (see the module's docstring).

    Args:
        packager: the stream's HLS.
        store: where finished clips go.
        spawn: runs a coroutine in the background (kept until done).
    """

    def __init__(
        self,
        packager: Packager,
        store: ClipStore,
        room: str,
        *,
        spawn: Callable[[Awaitable[Any]], None],
    ) -> None:
        self.packager = packager
        self.store = store
        self.room = room
        self._spawn = spawn
        self._current: _Open | None = None
        self.saved: list[Clip] = []

    @property
    def sku(self) -> str | None:
        """The sku being recorded."""
        return None if self._current is None else str(self._current.product.get("sku"))

    def pinned(self, product: Product | None) -> None:
        """The pinned product is now ``product`` (None: nothing pinned). A change cuts
        the stream at the next keyframe: the clip before ends there, the next starts."""
        sku = None if product is None else product.get("sku")
        if not (product is None or isinstance(sku, str)) or sku == self.sku:
            return  # pinned again: the clip goes on
        ending = self._current
        starting = self._current = None if product is None else _Open(product)

        def at_cut(seq: int, _moment: float) -> None:
            if ending is not None and ending.start is not None:
                self._finish(ending, seq)
            if starting is not None:
                starting.start = seq

        self.packager.request_cut(at_cut)

    def stream_ended(self) -> None:
        """The stream ended: the clip being recorded ends with it."""
        current, self._current = self._current, None
        if current is not None and current.start is not None:
            self._finish(current, self.packager.segmenter.seq)

    def _finish(self, clip: _Open, end: int) -> None:
        assert clip.start is not None
        entries = [e for e in self.packager.entries if clip.start <= e.seq < end]
        if not entries:
            return  # pinned and unpinned within one cut: nothing to show
        self._spawn(self._save(clip.product, entries))

    async def _save(self, product: Product, entries: list[Entry]) -> None:
        packager = self.packager
        clip_id = secrets.token_hex(6)
        playlist = media_playlist(entries, ended=True, vod=True)
        folder = packager.dir
        first = entries[0]

        def write_files() -> bool:
            write_atomic(folder / clip_playlist_name(clip_id), playlist.encode())
            jpeg = poster_jpeg(
                (folder / first.init_uri).read_bytes(), (folder / first.uri).read_bytes()
            )
            if jpeg is not None:
                write_atomic(folder / clip_poster_name(clip_id), jpeg)
            return jpeg is not None

        try:
            poster = await asyncio.to_thread(write_files)
        except OSError:
            log.exception("room %s: writing clip %s failed", self.room, clip_id)
            return
        last = entries[-1]
        image = product.get("image")
        price = product.get("price")
        clip = Clip(
            id=clip_id,
            room=self.room,
            stream=packager.stream_id,
            sku=str(product.get("sku")),
            title=str(product.get("title", "")),
            price=price if isinstance(price, int) else 0,
            image=image if isinstance(image, str) else None,
            started_at=round(first.program_time * 1000),
            ended_at=round((last.program_time + last.duration) * 1000),
            duration_s=round(sum(e.duration for e in entries), 3),
            poster=poster,
        )
        await self.store.add(clip)
        self.saved.append(clip)
        log.info(
            "room %s: clip %s of %s, %.1f s (segments %d-%d)",
            self.room,
            clip.id,
            clip.sku,
            clip.duration_s,
            first.seq,
            last.seq,
        )
