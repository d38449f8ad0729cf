"""The aiortc adapter: relay a publisher's encoded RTP payloads to viewers, with no
encoder and no decoder in the server.

aiortc (1.16) has no public API for packet forwarding: a receiver always decodes and a
sender always encodes (or packs a PyAV packet with an encoder object). This module is
the one place in the project that reaches into aiortc's internals to do without both;
everything else in :mod:`livecommerce.media` uses its public API or this module. It is
pinned to aiortc 1.16 (``aiortc>=1.16,<1.17`` in pyproject.toml).

The internals it relies on (each checked by :func:`check_aiortc` at start-up, or when
it is used on an object, and by ``tests/test_media_adapter.py``):

Receiving (the publisher's side):

- ``RTCRtpReceiver.__jitter_buffer`` (name-mangled ``_RTCRtpReceiver__jitter_buffer``,
  an instance attribute holding an ``aiortc.jitterbuffer.JitterBuffer``). We replace it
  with a :class:`ReceiverTap`. ``RTCRtpReceiver._handle_rtp_packet`` calls
  ``self.__jitter_buffer.add(packet)`` with each RTP packet, already unwrapped from RTX
  and checked by the depayloader, and expects ``(pli_flag, frame_or_None)``; it queues a
  frame to its decoder thread only when one is returned. The tap returns
  ``(False, None)``: the packet goes to the relay, and the decoder thread (started by
  ``receive``) idles with no decoder created (``decoder_worker`` creates one with
  ``get_decoder`` only for its first frame).
- ``RTCRtpReceiver._send_rtcp_pli(media_ssrc)`` (coroutine): sends a Picture Loss
  Indication to the publisher; used for keyframe requests.

Sending (each viewer's side):

- ``RTCRtpSender._next_encoded_frame(codec)`` (coroutine): called by
  ``RTCRtpSender._run_rtp`` for each frame to send; returns an
  ``aiortc.rtcrtpsender.RTCEncodedFrame(payloads, timestamp, audio_level)`` whose
  payloads ``_run_rtp`` puts into RTP packets (its own sequence numbers, SSRC, payload
  type, marker on the last payload, timestamp plus its random origin), keeps for NACK
  retransmission and sends; a ``MediaStreamError`` ends the loop. :func:`attach_sender`
  replaces it on the sender instance with one that returns the publisher's payloads,
  so ``get_encoder`` is never called.
- ``RTCRtpSender._send_keyframe()``: what ``RTCRtpSender._handle_rtcp_packet`` calls on
  a viewer's PLI or FIR. Replaced on the instance to forward the request upstream.
- ``aiortc.rtcrtpsender.RTCEncodedFrame``: the type ``_run_rtp`` expects.

Negotiating (module-level helpers, not underscored but not exported by ``aiortc``):

- ``aiortc.sdp.SessionDescription.parse``: reads an offer before it is applied, to
  choose the codec and the transceivers.
- ``aiortc.rtcpeerconnection.find_common_codecs(local, remote)`` with
  ``aiortc.codecs.CODECS``: exactly the codec matching ``setRemoteDescription`` applies,
  so the codec chosen here is one aiortc accepts.
- ``aiortc.rtp.RtpPacket``: the packet's public attributes (``sequence_number``,
  ``timestamp``, ``marker``, ``ssrc``, ``payload``, ``extensions.audio_level``).
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, cast

import aiortc
from aiortc import (
    RTCRtpCodecCapability,
    RTCRtpCodecParameters,
    RTCRtpReceiver,
    RTCRtpSender,
    rtcpeerconnection,
    sdp,
)
from aiortc import codecs as aiortc_codecs
from aiortc.jitterbuffer import JitterBuffer
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtcrtpsender import RTCEncodedFrame
from aiortc.rtp import RtpPacket
from av.frame import Frame

from livecommerce.media.packets import EncodedFrame, Kind

log = logging.getLogger(__name__)

PINNED_SERIES = "1.16"
"""The aiortc release series this adapter was written against."""
_JITTER_BUFFER = "_RTCRtpReceiver__jitter_buffer"

QUEUE_FRAMES: dict[Kind, int] = {"video": 90, "audio": 150}
"""Frames a viewer's track holds (about 3 s) before it drops its backlog."""


class AdapterError(RuntimeError):
    """The installed aiortc lacks an internal this adapter relies on."""


def _need(ok: bool, internal: str, what: str) -> None:
    if not ok:
        raise AdapterError(
            f"aiortc {aiortc.__version__}: {internal} {what}. livecommerce/media/forwarding.py "
            f"relies on it and is pinned to aiortc {PINNED_SERIES}: update the adapter (and "
            "its pin in pyproject.toml) for this aiortc, or install aiortc "
            f">={PINNED_SERIES},<1.17."
        )


def _params(fn: object) -> list[str]:
    try:
        return list(inspect.signature(cast(Callable[..., object], fn)).parameters)
    except (TypeError, ValueError):
        return []


def _check_method(
    cls: type, name: str, params: list[str], *, coroutine: bool, where: str | None = None
) -> None:
    internal = f"{where or cls.__module__ + '.' + cls.__qualname__}.{name}"
    fn = getattr(cls, name, None)
    _need(callable(fn), internal, "is missing")
    _need(
        inspect.iscoroutinefunction(fn) == coroutine,
        internal,
        "is no longer a coroutine function" if coroutine else "became a coroutine function",
    )
    _need(_params(fn) == params, internal, f"no longer takes ({', '.join(params)})")


def check_aiortc() -> None:
    """Check that the installed aiortc has every internal listed in this module's
    docstring, with the shape relied on.

    Raises:
        AdapterError: naming the first internal missing or changed.
    """
    version = aiortc.__version__
    _need(
        version.split(".")[:2] == PINNED_SERIES.split("."),
        "the version",
        f"is not {PINNED_SERIES}.x",
    )
    _check_method(RTCRtpSender, "_next_encoded_frame", ["self", "codec"], coroutine=True)
    _check_method(RTCRtpSender, "_send_keyframe", ["self"], coroutine=False)
    _check_method(RTCRtpSender, "_run_rtp", ["self", "codec"], coroutine=True)
    _check_method(RTCRtpSender, "_handle_rtcp_packet", ["self", "packet"], coroutine=True)
    _need(
        _params(RTCEncodedFrame) == ["payloads", "timestamp", "audio_level"],
        "aiortc.rtcrtpsender.RTCEncodedFrame",
        "no longer takes (payloads, timestamp, audio_level)",
    )
    _check_method(RTCRtpReceiver, "_send_rtcp_pli", ["self", "media_ssrc"], coroutine=True)
    _check_method(
        RTCRtpReceiver,
        "_handle_rtp_packet",
        ["self", "packet", "arrival_time_ms"],
        coroutine=True,
    )
    _check_method(JitterBuffer, "add", ["self", "packet"], coroutine=False)
    _need(
        callable(getattr(rtcpeerconnection, "find_common_codecs", None)),
        "aiortc.rtcpeerconnection.find_common_codecs",
        "is missing",
    )
    codecs = getattr(aiortc_codecs, "CODECS", None)
    _need(
        isinstance(codecs, dict) and {"audio", "video"} <= codecs.keys(),
        "aiortc.codecs.CODECS",
        "is missing or no longer maps 'audio' and 'video' to codecs",
    )
    _need(
        callable(getattr(sdp.SessionDescription, "parse", None)),
        "aiortc.sdp.SessionDescription.parse",
        "is missing",
    )


# -- negotiating -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OfferSection:
    """One media section of an SDP offer.

    Attributes:
        kind: ``"audio"``, ``"video"`` or ``"application"`` (data channels).
        direction: as the offerer sees it (``"sendonly"``: it sends to us).
        codecs: the offered codecs aiortc can handle, as aiortc's own codec parameters
            (with the offer's payload types), in the offer's order, RTX included.
    """

    kind: str
    direction: str
    codecs: tuple[RTCRtpCodecParameters, ...]


def parse_offer(text: str) -> list[OfferSection]:
    """The media sections of an SDP offer, in order.

    Raises:
        ValueError: the text is not SDP aiortc can read.
    """
    try:
        description = sdp.SessionDescription.parse(text)
    except Exception as exc:  # aiortc's parser raises whatever it trips on
        raise ValueError(f"unreadable SDP ({type(exc).__name__}: {exc})") from None
    sections = []
    for media in description.media:
        common: list[RTCRtpCodecParameters] = []
        if media.kind in aiortc_codecs.CODECS:
            common = rtcpeerconnection.find_common_codecs(
                aiortc_codecs.CODECS[media.kind], media.rtp.codecs
            )
        sections.append(OfferSection(media.kind, media.direction or "sendrecv", tuple(common)))
    return sections


def is_rtx(codec: RTCRtpCodecParameters | RTCRtpCodecCapability) -> bool:
    """Whether ``codec`` is RTX (retransmission), not a media codec."""
    return codec.mimeType.lower().endswith("/rtx")


def capability(codec: RTCRtpCodecParameters) -> RTCRtpCodecCapability:
    """The entry of ``RTCRtpSender.getCapabilities`` that ``codec`` is (what
    ``RTCRtpTransceiver.setCodecPreferences`` takes).

    Raises:
        ValueError: aiortc does not list it.
    """
    kind = codec.mimeType.split("/")[0].lower()
    for cap in RTCRtpSender.getCapabilities(kind).codecs:
        if (
            cap.mimeType.lower() == codec.mimeType.lower()
            and cap.clockRate == codec.clockRate
            and (
                is_rtx(cap) or (cap.channels, cap.parameters) == (codec.channels, codec.parameters)
            )
        ):
            return cap
    raise ValueError(f"aiortc has no capability for {codec.mimeType}")


def rtx_capability(kind: str) -> RTCRtpCodecCapability | None:
    """aiortc's RTX capability for ``kind`` (video), if it has one."""
    return next((c for c in RTCRtpSender.getCapabilities(kind).codecs if is_rtx(c)), None)


# -- receiving -------------------------------------------------------------------


class ReceiverTap:
    """Stands in for an ``RTCRtpReceiver``'s jitter buffer: every RTP packet goes to
    ``on_packet``, no frame ever goes to the receiver's decoder.

    The receiver still does the rest of its work: RTX unwrapping, NACKs for missing
    packets, receiver reports and bandwidth estimates (REMB) to the publisher.
    """

    def __init__(self, receiver: RTCRtpReceiver, on_packet: Callable[[RtpPacket], None]) -> None:
        self._receiver = receiver
        self._on_packet = on_packet
        self.packets = 0

    def add(self, packet: RtpPacket) -> tuple[bool, None]:
        """The jitter buffer's contract: ``(send a PLI now, frame to decode)``."""
        self.packets += 1
        try:
            self._on_packet(packet)
        except Exception:  # never break aiortc's receive loop
            log.exception("forwarding an RTP packet failed")
        return False, None

    def request_keyframe(self, media_ssrc: int) -> Awaitable[None]:
        """Send the publisher a Picture Loss Indication for ``media_ssrc``."""
        send = cast(Callable[[int], Awaitable[None]], self._receiver._send_rtcp_pli)
        return send(media_ssrc)


def tap_receiver(receiver: RTCRtpReceiver, on_packet: Callable[[RtpPacket], None]) -> ReceiverTap:
    """Make ``receiver`` hand its RTP packets to ``on_packet`` instead of decoding.

    Call it before the remote description is applied (before any packet arrives).

    Raises:
        AdapterError: the receiver has no jitter buffer where 1.16 keeps it.
    """
    _need(
        isinstance(getattr(receiver, _JITTER_BUFFER, None), JitterBuffer),
        "aiortc.RTCRtpReceiver.__jitter_buffer (_RTCRtpReceiver__jitter_buffer)",
        "is not a JitterBuffer on a new receiver",
    )
    tap = ReceiverTap(receiver, on_packet)
    setattr(receiver, _JITTER_BUFFER, tap)
    return tap


# -- sending ---------------------------------------------------------------------


class ForwardedTrack(MediaStreamTrack):
    """A track of already-encoded frames, for a sender set up by :func:`attach_sender`.

    The relay :meth:`push` es frames in; the sender's loop takes them with
    :meth:`next_frame`. It is a frame sink of :class:`~livecommerce.media.stream.Stream`.

    Args:
        kind: ``"audio"`` or ``"video"``.
        on_start: called once, when the sender asks for its first frame (the viewer's
            connection is up): the moment to subscribe to the stream.
        on_keyframe_request: called for each PLI or FIR from the viewer.
        max_queue: frames held before the backlog is dropped.
    """

    def __init__(
        self,
        kind: Kind,
        *,
        on_start: Callable[[ForwardedTrack], None] | None = None,
        on_keyframe_request: Callable[[], None] | None = None,
        max_queue: int | None = None,
    ) -> None:
        super().__init__()
        self.kind = kind
        self._on_start = on_start
        self._on_keyframe_request = on_keyframe_request
        self._max_queue = max_queue or QUEUE_FRAMES[kind]
        self._queue: collections.deque[EncodedFrame] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None
        self._ended = False
        self.started = False
        self.sent = 0
        self.dropped = 0
        self.keyframe_requests = 0

    @property
    def closed(self) -> bool:
        """True once ended: pushes are ignored and the sender's loop stops."""
        return self._ended

    def push(self, frame: EncodedFrame) -> bool:
        """Queue a frame for the viewer.

        Returns:
            False if the queue was full: its backlog was dropped (with this frame), so
            the viewer needs a keyframe to go on.
        """
        if self._ended:
            return True
        if len(self._queue) >= self._max_queue:
            self.dropped += len(self._queue) + 1
            self._queue.clear()
            return False
        self._queue.append(frame)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
        return True

    def end(self) -> None:
        """No more frames: the sender's loop stops once it asks for the next one."""
        self._ended = True
        self._queue.clear()
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def stop(self) -> None:
        self.end()
        super().stop()

    async def next_frame(self) -> EncodedFrame:
        """The next frame to send.

        Raises:
            MediaStreamError: the track has ended.
        """
        if not self.started:
            self.started = True
            if self._on_start is not None:
                self._on_start(self)
        while not self._queue:
            if self._ended:
                raise MediaStreamError
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
            self._waiter = None
        self.sent += 1
        return self._queue.popleft()

    def request_keyframe(self) -> None:
        """The viewer lost its picture (PLI) or asked for a full one (FIR)."""
        self.keyframe_requests += 1
        if self._on_keyframe_request is not None:
            self._on_keyframe_request()

    async def recv(self) -> Frame:
        """Not for this track: it holds encoded frames, which only a sender set up by
        :func:`attach_sender` reads (with :meth:`next_frame`)."""
        raise MediaStreamError("a forwarded track has no decoded frames")


def attach_sender(sender: RTCRtpSender, track: ForwardedTrack) -> None:
    """Make ``sender`` send ``track``'s encoded frames as they are, with no encoder,
    and pass the viewer's keyframe requests (PLI, FIR) to ``track``.

    Call it before the connection is up (before the sender's loop starts).

    Raises:
        AdapterError: the sender lacks the 1.16 hooks, or does not hold ``track``.
    """
    for name in ("_next_encoded_frame", "_send_keyframe"):
        _need(
            callable(getattr(sender, name, None)),
            f"aiortc.RTCRtpSender.{name}",
            "is missing on the sender",
        )
    _need(sender.track is track, "aiortc.RTCRtpSender.track", "is not the forwarded track")

    async def next_encoded_frame(codec: RTCRtpCodecParameters) -> RTCEncodedFrame:
        frame = await track.next_frame()
        level: Any = None if frame.audio_level is None else -frame.audio_level
        return RTCEncodedFrame(list(frame.payloads), frame.timestamp, level)

    # Instance attributes shadow the methods that _run_rtp and _handle_rtcp_packet call.
    sender._next_encoded_frame = next_encoded_frame  # type: ignore[method-assign]
    sender._send_keyframe = track.request_keyframe  # type: ignore[method-assign]
