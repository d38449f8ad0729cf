"""A publisher's live stream: its frames, fanned out to sinks, and keyframe requests.

The stream is the packet tap everything hangs off: the publisher's receivers feed it
RTP packets (:meth:`Stream.on_packet`), it assembles them into encoded frames and hands
each frame to every subscribed :class:`FrameSink` (a WebRTC viewer's track today; an HLS
packager or a clip recorder can subscribe the same way). A video sink starts at a
keyframe; whoever needs one (a new sink, a viewer's PLI, a loss, a future segment
boundary) calls :meth:`Stream.request_keyframe`, and the requests reach the publisher
at most once per ``keyframe_interval_s``.

Nothing here is aiortc-specific beyond the packet type; sending the PLI is a callback.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Protocol

from aiortc.rtp import RtpPacket

from livecommerce.media.packets import EncodedFrame, FrameAssembler, Kind

log = logging.getLogger(__name__)

KEYFRAME_INTERVAL_S = 0.5
"""The least time between two keyframe requests sent to a publisher."""


class FrameSink(Protocol):
    """Where a stream's frames of one kind go."""

    @property
    def closed(self) -> bool:
        """True when the sink wants no more frames (it is then dropped)."""
        ...

    def push(self, frame: EncodedFrame) -> bool:
        """Take a frame; False when the sink dropped its backlog and needs a keyframe."""
        ...

    def end(self) -> None:
        """The stream ended: no frame will follow."""
        ...


class KeyframeLimiter:
    """Sends keyframe requests at most once per ``interval_s``.

    A request within the interval is not lost: one request goes out at the interval's
    end, however many came in meanwhile (so a viewer joining just after another still
    gets its keyframe promptly).
    """

    def __init__(
        self,
        send: Callable[[], None],
        interval_s: float,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._send = send
        self._interval_s = interval_s
        self._clock = clock
        self._last: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.requested = 0
        self.sent = 0

    def request(self) -> None:
        self.requested += 1
        if self._timer is not None:
            return
        wait = 0.0 if self._last is None else self._last + self._interval_s - self._clock()
        if wait <= 0:
            self._fire()
        else:
            self._timer = asyncio.get_running_loop().call_later(wait, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._last = self._clock()
        self.sent += 1
        try:
            self._send()
        except Exception:
            log.exception("sending a keyframe request failed")

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class Subscription:
    """One sink's place on a stream (:meth:`Stream.unsubscribe` takes it off)."""

    __slots__ = ("kind", "sink", "waiting")

    def __init__(self, kind: Kind, sink: FrameSink) -> None:
        self.kind: Kind = kind
        self.sink = sink
        self.waiting = kind == "video"
        """A video sink waits for a keyframe before it gets frames."""


class Stream:
    """One publisher's stream in one room.

    Args:
        room: the room's id.
        codecs: the codec name of each kind published (``{"video": "H264", "audio":
            "opus"}``).
        send_keyframe_request: sends a PLI to the publisher for the given video SSRC.
        keyframe_interval_s: see :class:`KeyframeLimiter`.
    """

    def __init__(
        self,
        room: str,
        codecs: Mapping[Kind, str],
        *,
        send_keyframe_request: Callable[[int], None],
        keyframe_interval_s: float = KEYFRAME_INTERVAL_S,
    ) -> None:
        self.room = room
        self.codecs: dict[Kind, str] = dict(codecs)
        self._assemblers = {kind: FrameAssembler(kind, name) for kind, name in codecs.items()}
        self._subs: dict[Kind, list[Subscription]] = {kind: [] for kind in codecs}
        self._send_keyframe_request = send_keyframe_request
        self._video_ssrc: int | None = None
        self._pli_owed = False
        """A keyframe was asked for before the first video packet named the SSRC."""
        self._limiter = KeyframeLimiter(self._send_pli, keyframe_interval_s)
        self._on_end: list[Callable[[], None]] = []
        self.ended = False
        self.keyframes = 0
        """Video keyframes received from the publisher."""
        self.plis_sent = 0
        """Keyframe requests (PLI) sent to the publisher, after rate limiting."""

    @property
    def keyframe_requests(self) -> int:
        """Keyframe requests asked of this stream (by sinks, viewers and losses)."""
        return self._limiter.requested

    def frames(self, kind: Kind) -> int:
        """Frames of ``kind`` assembled so far."""
        asm = self._assemblers.get(kind)
        return 0 if asm is None else asm.frames

    def sinks(self, kind: Kind) -> int:
        """Sinks of ``kind`` subscribed now."""
        return sum(not s.sink.closed for s in self._subs.get(kind, ()))

    def on_packet(self, kind: Kind, packet: RtpPacket) -> None:
        """One RTP packet from the publisher's receiver of ``kind``."""
        if self.ended:
            return
        asm = self._assemblers.get(kind)
        if asm is None:
            return
        if kind == "video":
            first = self._video_ssrc is None
            self._video_ssrc = packet.ssrc
            if first and self._pli_owed:
                self._pli_owed = False
                self._limiter.request()
        frames, lost = asm.add(packet)
        if lost:
            for sub in self._subs[kind]:
                sub.waiting = kind == "video"
            self.request_keyframe()
        for frame in frames:
            self._fan_out(frame)

    def _fan_out(self, frame: EncodedFrame) -> None:
        if frame.keyframe and frame.kind == "video":
            self.keyframes += 1
        subs = self._subs[frame.kind]
        closed = False
        for sub in subs:
            if sub.sink.closed:
                closed = True
                continue
            if sub.waiting:
                if not frame.keyframe:
                    continue
                sub.waiting = False
            if not sub.sink.push(frame) and frame.kind == "video":
                sub.waiting = True
                self.request_keyframe()
        if closed:
            self._subs[frame.kind] = [s for s in subs if not s.sink.closed]

    def subscribe(self, kind: Kind, sink: FrameSink) -> Subscription:
        """Send ``sink`` the frames of ``kind`` from now on (video from the next
        keyframe, which is asked for). On an ended stream the sink is ended at once."""
        sub = Subscription(kind, sink)
        if self.ended or kind not in self._subs:
            sink.end()
            return sub
        self._subs[kind].append(sub)
        if sub.waiting:
            self.request_keyframe()
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        subs = self._subs.get(sub.kind)
        if subs is not None and sub in subs:
            subs.remove(sub)

    def request_keyframe(self) -> None:
        """Ask the publisher for a keyframe (rate-limited; no-op without video)."""
        if not self.ended and "video" in self._assemblers:
            self._limiter.request()

    def _send_pli(self) -> None:
        if self._video_ssrc is None:
            self._pli_owed = True  # sent with the first packet (a sink subscribed early)
        elif not self.ended:
            self.plis_sent += 1
            self._send_keyframe_request(self._video_ssrc)

    def on_end(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` when the stream ends (at once if it has)."""
        if self.ended:
            listener()
        else:
            self._on_end.append(listener)

    def end(self) -> None:
        """The publisher is gone: end every sink, then tell the listeners. Idempotent."""
        if self.ended:
            return
        self.ended = True
        self._limiter.close()
        for subs in self._subs.values():
            for sub in subs:
                sub.sink.end()
            subs.clear()
        listeners, self._on_end = self._on_end, []
        for listener in listeners:
            try:
                listener()
            except Exception:
                log.exception("a stream-end listener failed")
