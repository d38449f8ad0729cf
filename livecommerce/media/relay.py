"""The WebRTC sessions of one process: a WHIP publisher per room, WHEP viewers up to a
cap, and the relay between them.

A publisher's session answers its SDP offer with one codec per kind (video: H.264 if
offered, else VP8; audio: Opus), taps its receivers (no decoder) and feeds a
:class:`~livecommerce.media.stream.Stream`. A viewer's session answers with the
publisher's codecs (the offer must accept them) and gets one
:class:`~livecommerce.media.forwarding.ForwardedTrack` per kind, whose sender sends the
publisher's payloads as they are (no encoder). When the publisher goes (DELETE, ICE or
DTLS failure, closed connection), its stream ends, every viewer's track ends and every
viewer's connection is closed.

No trickle ICE: every candidate is in the answer (aiortc gathers before answering), and
no STUN or TURN server is used (the server must be reachable on its own addresses).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import secrets
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal, Protocol

from aiortc import (
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpCodecCapability,
    RTCRtpCodecParameters,
    RTCSessionDescription,
)

from livecommerce.errors import Error
from livecommerce.media.forwarding import (
    ForwardedTrack,
    OfferSection,
    ReceiverTap,
    attach_sender,
    capability,
    is_rtx,
    parse_offer,
    rtx_capability,
    tap_receiver,
)
from livecommerce.media.ice import vet_offer
from livecommerce.media.packets import KINDS, Kind
from livecommerce.media.stream import KEYFRAME_INTERVAL_S, Stream, Subscription

log = logging.getLogger(__name__)

DEFAULT_MAX_VIEWERS = 200
"""WebRTC viewers one process serves at most (past them, viewers are sent to HLS)."""
CONNECT_TIMEOUT_S = 30.0
"""A publisher whose connection is not up this long after its answer is closed."""
VIEWER_CONNECT_TIMEOUT_S = 10.0
"""A viewer whose connection is not up this long after its answer is closed: until it
connects, a viewer holds a slot it may never use."""
MAX_PENDING = 32
"""Viewers not connected yet, at most, in one process (each holds a slot of
``max_viewers`` until it connects or its deadline passes)."""
MAX_PER_OWNER = 3
"""WebRTC sessions one user (or, for guests, one address) holds at most."""
CLOSE_TIMEOUT_S = 5.0
PREFERRED: dict[Kind, tuple[str, ...]] = {
    "video": ("video/H264", "video/VP8"),
    "audio": ("audio/opus",),
}
"""The codecs a publisher may send, best first."""

SessionKind = Literal["whip", "whep"]


class OverCapacity(Exception):
    """This process serves as many WebRTC viewers as it may."""


class StreamRecorder(Protocol):
    """What records a publisher's stream (HLS, clips): :class:`~livecommerce.media.
    recorder.Recorder`."""

    def record(self, room: str, stream: Stream, stop: Callable[[str], None]) -> object:
        """Start recording ``stream`` (it subscribes as a frame sink and stops at its
        end); ``stop(reason)`` stops the publisher."""


def _bad(message: str) -> Error:
    return Error("bad_request", message)


def _names(codecs: dict[Kind, RTCRtpCodecParameters]) -> str:
    return ", ".join(f"{kind} {codec.name}" for kind, codec in sorted(codecs.items()))


def _sections(offer: str) -> list[OfferSection]:
    try:
        sections = parse_offer(offer)
    except ValueError as exc:
        raise _bad(f"the offer is not valid SDP: {exc}") from None
    if not sections:
        raise _bad("the offer has no media section")
    for s in sections:
        if s.kind not in KINDS:
            raise _bad(f"only audio and video are supported, not {s.kind!r} sections")
    return sections


def _preferences(
    codec: RTCRtpCodecParameters, section: OfferSection
) -> list[RTCRtpCodecCapability]:
    """``codec`` alone, with its RTX if the offer has RTX for it."""
    prefs = [capability(codec)]
    rtx = rtx_capability(codec.mimeType.split("/")[0])
    if rtx is not None and any(
        is_rtx(c) and c.parameters.get("apt") == codec.payloadType for c in section.codecs
    ):
        prefs.append(rtx)
    return prefs


class Session:
    """One peer connection of the relay (WHIP or WHEP), identified by ``id``."""

    kind: SessionKind

    def __init__(self, relay: MediaRelay, room: str, owner: str = "") -> None:
        self.relay = relay
        self.room = room
        self.owner = owner
        """Who opened it: a user id, or ``ip:<address>`` for a guest."""
        self.id = secrets.token_urlsafe(16)
        self.tag = self.id[:6]
        """What the logs name it by: the whole id is the right to end the session."""
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.answer = ""
        self.closed = False
        self.reason: str | None = None
        self._done = asyncio.Event()
        self._watchdog: asyncio.TimerHandle | None = None
        self._gathering: asyncio.Task[None] | None = None
        """Our answer being made (ICE gathering): :meth:`close` lets it finish."""
        self.pc.on("connectionstatechange", self._on_state)

    @property
    def state(self) -> str:
        """The peer connection's state (``new``, ``connecting``, ``connected``,
        ``failed``, ``closed``)."""
        return str(self.pc.connectionState)

    async def _answer(self, offer: str) -> None:
        vetted = vet_offer(offer, allow_private=self.relay.allow_private)
        if vetted.dropped:
            log.debug(
                "%s session %s: %d remote candidates dropped", self.kind, self.tag, vetted.dropped
            )
        try:
            await self.pc.setRemoteDescription(RTCSessionDescription(vetted.sdp, "offer"))
        except Exception as exc:
            log.info("%s offer refused in room %s: %r", self.kind, self.room, exc)
            raise _bad(f"the offer was refused: {exc or type(exc).__name__}") from None
        # its own task, shielded: a request given up must not stop the gathering halfway
        gathering = self._gathering = asyncio.ensure_future(self._describe())
        gathering.add_done_callback(lambda t: t.cancelled() or t.exception())
        await asyncio.shield(gathering)
        self.answer = self.pc.localDescription.sdp
        self._watchdog = asyncio.get_running_loop().call_later(
            self._connect_timeout_s(), self._check_connected
        )

    def _connect_timeout_s(self) -> float:
        return self.relay.connect_timeout_s

    async def _describe(self) -> None:
        await self.pc.setLocalDescription(await self.pc.createAnswer())

    def _answered_codecs(self) -> dict[int, str]:
        """The first codec of each section of our answer, by section index."""
        return {
            i: s.codecs[0].mimeType.lower()
            for i, s in enumerate(parse_offer(self.answer))
            if s.codecs and s.direction != "inactive"
        }

    def _on_state(self) -> None:
        if self.pc.connectionState in ("failed", "closed"):
            self.close_soon(f"connection {self.pc.connectionState}")
        elif self.pc.connectionState == "connected" and not self.closed:
            self.relay._connected(self)

    def _check_connected(self) -> None:
        self._watchdog = None
        if self.state != "connected":
            self.close_soon(f"no connection within {self._connect_timeout_s():g} s")

    def close_soon(self, reason: str) -> None:
        """Close in the background (from callbacks that cannot wait)."""
        if not self.closed:
            self.relay.spawn(self.close(reason))

    async def close(self, reason: str) -> None:
        """Close the connection and leave the relay. Idempotent; a second caller waits
        for the first to finish."""
        if self.closed:
            await self._done.wait()
            return
        self.closed = True
        self.reason = reason
        log.info("%s session %s of room %s closes: %s", self.kind, self.tag, self.room, reason)
        if self._watchdog is not None:
            self._watchdog.cancel()
        try:
            self.relay._forget(self)
            self._teardown()
            gathering = self._gathering
            if gathering is not None and not gathering.done():
                # aioice leaves open the UDP sockets it opens after its connection was
                # closed: a close in the middle of gathering leaked them
                await asyncio.wait([gathering], timeout=CLOSE_TIMEOUT_S)
            await asyncio.wait_for(self.pc.close(), CLOSE_TIMEOUT_S)
        except Exception:
            log.exception("closing %s session %s failed", self.kind, self.tag)
        finally:
            self._done.set()

    def _teardown(self) -> None:
        """What goes before the connection closes."""


class Publisher(Session):
    """The WHIP session of a room's publisher and its :attr:`stream`."""

    kind: SessionKind = "whip"

    def __init__(self, relay: MediaRelay, room: str) -> None:
        super().__init__(relay, room)
        self.stream: Stream | None = None
        self.codecs: dict[Kind, RTCRtpCodecParameters] = {}
        self.taps: dict[Kind, ReceiverTap] = {}

    async def start(self, offer: str) -> None:
        """Answer the publisher's offer (:attr:`answer`).

        Raises:
            Error: ``bad_request`` when the offer sends nothing usable.
        """
        sections = _sections(offer)
        plan: dict[int, Kind] = {}
        for i, s in enumerate(sections):
            kind: Kind = "video" if s.kind == "video" else "audio"
            if kind in self.codecs or s.direction not in ("sendonly", "sendrecv"):
                continue
            codec = next(
                (
                    c
                    for mime in PREFERRED[kind]
                    for c in s.codecs
                    if c.mimeType.lower() == mime.lower()
                ),
                None,
            )
            if codec is None:
                wanted = " or ".join(m.split("/")[1] for m in PREFERRED[kind])
                raise _bad(f"the offer's {kind} has no codec this server relays ({wanted})")
            self.codecs[kind] = codec
            plan[i] = kind
        if not plan:
            raise _bad("the offer sends no audio or video (a WHIP offer's sections are sendonly)")
        stream = self.stream = Stream(
            self.room,
            {k: c.name for k, c in self.codecs.items()},
            send_keyframe_request=self._send_pli,
            keyframe_interval_s=self.relay.keyframe_interval_s,
        )
        for i, s in enumerate(sections):
            if i not in plan:  # one section per kind: the others get nothing
                self.pc.addTransceiver(s.kind, direction="inactive")
                continue
            kind = plan[i]
            transceiver = self.pc.addTransceiver(kind, direction="recvonly")
            transceiver.setCodecPreferences(_preferences(self.codecs[kind], s))
            self.taps[kind] = tap_receiver(
                transceiver.receiver, functools.partial(stream.on_packet, kind)
            )
        await self._answer(offer)
        answered = self._answered_codecs()
        for i, kind in plan.items():
            if answered.get(i) != self.codecs[kind].mimeType.lower():
                raise Error("internal", f"the {kind} answer lost its codec ({answered.get(i)})")
        log.info("room %s: publisher %s sends %s", self.room, self.tag, _names(self.codecs))
        if self.relay.recorder is not None:
            try:
                self.relay.recorder.record(self.room, stream, self.close_soon)
            except Exception:  # the WebRTC stream goes on without HLS
                log.exception("room %s: recording the stream failed to start", self.room)

    def _send_pli(self, ssrc: int) -> None:
        tap = self.taps.get("video")
        if tap is not None and not self.closed:
            self.relay.spawn(tap.request_keyframe(ssrc))

    def _teardown(self) -> None:
        if self.stream is not None:
            self.stream.end()


class Viewer(Session):
    """A WHEP viewer's session: the publisher's frames, forwarded."""

    kind: SessionKind = "whep"

    def __init__(self, relay: MediaRelay, room: str, stream: Stream, owner: str = "") -> None:
        super().__init__(relay, room, owner)
        self.stream = stream
        self.tracks: dict[Kind, ForwardedTrack] = {}
        self.codecs: dict[Kind, RTCRtpCodecParameters] = {}
        self._subs: list[Subscription] = []

    async def start(self, offer: str, published: dict[Kind, RTCRtpCodecParameters]) -> None:
        """Answer the viewer's offer with the publisher's codecs (:attr:`answer`).

        Raises:
            Error: ``bad_request`` when the offer receives none of the stream's media or
                cannot receive its codec.
        """
        sections = _sections(offer)
        plan: dict[int, Kind] = {}
        for i, s in enumerate(sections):
            kind: Kind = "video" if s.kind == "video" else "audio"
            if kind not in published or kind in self.codecs:
                continue
            if s.direction not in ("recvonly", "sendrecv"):
                continue
            source = published[kind]
            same = [c for c in s.codecs if c.mimeType.lower() == source.mimeType.lower()]
            # the publisher's own parameters first (H.264: the same profile)
            same.sort(key=lambda c: c.parameters != source.parameters)
            if not same:
                raise _bad(
                    f"the offer's {kind} cannot receive {source.name}, the codec the "
                    f"publisher sends"
                )
            self.codecs[kind] = same[0]
            plan[i] = kind
        if not plan:
            raise _bad(
                "the offer receives none of the stream's media "
                f"({_names(published)}; a WHEP offer's sections are recvonly)"
            )
        for i, s in enumerate(sections):
            if i not in plan:
                self.pc.addTransceiver(s.kind, direction="inactive")
                continue
            kind = plan[i]
            track = ForwardedTrack(
                kind, on_start=self._on_start, on_keyframe_request=self.stream.request_keyframe
            )
            transceiver = self.pc.addTransceiver(track, direction="sendonly")
            transceiver.setCodecPreferences(_preferences(self.codecs[kind], s))
            attach_sender(transceiver.sender, track)
            self.tracks[kind] = track
        await self._answer(offer)
        answered = self._answered_codecs()
        for i, kind in plan.items():
            if answered.get(i) != self.codecs[kind].mimeType.lower():
                raise Error("internal", f"the {kind} answer lost its codec ({answered.get(i)})")
        self.stream.on_end(lambda: self.close_soon("the publisher left"))

    def _connect_timeout_s(self) -> float:
        return self.relay.viewer_connect_timeout_s

    def _on_start(self, track: ForwardedTrack) -> None:
        """The sender wants its first frame: the viewer is connected."""
        kind: Kind = "video" if track.kind == "video" else "audio"
        self._subs.append(self.stream.subscribe(kind, track))

    def _teardown(self) -> None:
        for sub in self._subs:
            self.stream.unsubscribe(sub)
        self._subs.clear()
        for track in self.tracks.values():
            track.end()


class MediaRelay:
    """Every WebRTC session of this process.

    Args:
        max_viewers: WebRTC viewers served at most (:class:`OverCapacity` past it);
            may be changed at any time.
        recorder: records every publisher's stream (HLS and clips), if given.
        connect_timeout_s: see :data:`CONNECT_TIMEOUT_S` (publishers).
        keyframe_interval_s: least time between keyframe requests to a publisher.
        on_live: called with ``(room, True)`` once a room's publisher is connected, and
            ``(room, False)`` when that publisher is gone.
        viewer_connect_timeout_s, max_pending, max_per_owner: see
            :data:`VIEWER_CONNECT_TIMEOUT_S`, :data:`MAX_PENDING`, :data:`MAX_PER_OWNER`.
        allow_private: check remote candidates on loopback, private and link-local
            addresses too (:mod:`~livecommerce.media.ice`).
    """

    def __init__(
        self,
        *,
        max_viewers: int = DEFAULT_MAX_VIEWERS,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
        keyframe_interval_s: float = KEYFRAME_INTERVAL_S,
        recorder: StreamRecorder | None = None,
        on_live: Callable[[str, bool], None] | None = None,
        viewer_connect_timeout_s: float = VIEWER_CONNECT_TIMEOUT_S,
        max_pending: int = MAX_PENDING,
        max_per_owner: int = MAX_PER_OWNER,
        allow_private: bool = False,
    ) -> None:
        self.max_viewers = max_viewers
        self.viewer_connect_timeout_s = viewer_connect_timeout_s
        self.max_pending = max_pending
        self.max_per_owner = max_per_owner
        self.allow_private = allow_private
        self._pending: set[Session] = set()
        """Viewers not connected yet."""
        self._owned: Counter[str] = Counter()
        self._on_live = on_live
        self._live: set[Session] = set()
        """Publishers announced live (connected), until they are forgotten."""
        self.recorder = recorder
        self.connect_timeout_s = connect_timeout_s
        self.keyframe_interval_s = keyframe_interval_s
        self._publishers: dict[str, Publisher] = {}
        self._sessions: dict[str, Session] = {}
        self._viewers = 0
        self._tasks: set[asyncio.Future[Any]] = set()
        self._closing = False

    @property
    def viewers(self) -> int:
        """WebRTC viewer sessions open (or being set up) in this process."""
        return self._viewers

    def publisher(self, room: str) -> Publisher | None:
        """The room's publisher, if it has one."""
        return self._publishers.get(room)

    def session(self, kind: SessionKind, room: str, session_id: str) -> Session | None:
        """The open session ``session_id`` of ``kind`` in ``room``, if there is one."""
        session = self._sessions.get(session_id)
        if session is None or session.kind != kind or session.room != room:
            return None
        return session

    def sessions(self) -> list[Session]:
        return list(self._sessions.values())

    async def publish(self, room: str, offer: str) -> Publisher:
        """Start the room's stream from a WHIP offer.

        Raises:
            Error: ``conflict`` if the room has a publisher; ``bad_request`` for an
                offer that cannot be served.
        """
        self._open()
        current = self._publishers.get(room)
        if current is not None:
            raise Error(
                "conflict",
                f"room {room!r} already has a live publisher; stop it (DELETE its session "
                "URL) or wait for it to drop before publishing again",
            )
        session = Publisher(self, room)
        self._publishers[room] = session  # reserved before the first await
        self._sessions[session.id] = session
        try:
            await session.start(offer)
        except BaseException:
            await session.close("refused")
            raise
        return session

    async def watch(self, room: str, offer: str, *, owner: str = "") -> Viewer:
        """Start a viewer of the room's stream from a WHEP offer, for ``owner``.

        Raises:
            Error: ``not_found`` if nobody publishes in the room; ``bad_request`` for an
                offer that cannot receive the stream; ``rate_limited`` if ``owner``
                holds :attr:`max_per_owner` sessions already.
            OverCapacity: this process has :attr:`max_viewers` viewers, or
                :attr:`max_pending` of them not connected yet.
        """
        self._open()
        publisher = self._publishers.get(room)
        if publisher is None or publisher.stream is None or not publisher.answer:
            raise Error("not_found", f"room {room!r} is not streaming: nobody publishes")
        if owner and self._owned[owner] >= self.max_per_owner:
            raise Error(
                "rate_limited",
                f"at most {self.max_per_owner} video sessions at once: close one first",
            )
        if self._viewers >= self.max_viewers:
            raise OverCapacity(f"{self._viewers} WebRTC viewers already")
        if len(self._pending) >= self.max_pending:
            raise OverCapacity(f"{len(self._pending)} WebRTC viewers still connecting")
        session = Viewer(self, room, publisher.stream, owner)
        self._sessions[session.id] = session
        self._pending.add(session)
        if owner:
            self._owned[owner] += 1
        self._viewers += 1
        try:
            await session.start(offer, publisher.codecs)
        except BaseException:
            await session.close("refused")
            raise
        return session

    def _open(self) -> None:
        if self._closing:
            raise Error("conflict", "the server is shutting down")

    def _forget(self, session: Session) -> None:
        if self._sessions.pop(session.id, None) is None:
            return
        if isinstance(session, Viewer):
            self._viewers -= 1
            self._pending.discard(session)
            if session.owner:
                self._owned[session.owner] -= 1
                if not self._owned[session.owner]:
                    del self._owned[session.owner]
        elif self._publishers.get(session.room) is session:
            del self._publishers[session.room]
        if session in self._live:
            self._live.discard(session)
            if self._on_live is not None:
                self._on_live(session.room, False)

    def _connected(self, session: Session) -> None:
        """A session's ICE and DTLS are up: a viewer holds its slot from now on, a
        publisher's room is live."""
        self._pending.discard(session)
        if isinstance(session, Publisher) and session not in self._live:
            self._live.add(session)
            if self._on_live is not None:
                self._on_live(session.room, True)

    def spawn(self, work: Awaitable[Any]) -> None:
        """Run ``work`` in the background, kept until it is done (errors logged)."""
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Future[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.warning("media task failed: %r", exc)

    async def close(self) -> None:
        """Close every session (publishers first, so viewers see the stream end)."""
        self._closing = True
        order: Sequence[Session] = sorted(self._sessions.values(), key=lambda s: s.kind != "whip")
        await asyncio.gather(*(s.close("server shutting down") for s in order))
        while self._tasks:
            await asyncio.wait(list(self._tasks), timeout=CLOSE_TIMEOUT_S)
            if any(not t.done() for t in self._tasks):
                break
