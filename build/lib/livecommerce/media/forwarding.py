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

Sending (each viewer's side): :class:`LeanSender` sends a viewer's frames in place of
``RTCRtpSender._run_rtp``'s per-packet loop (an ``await`` per frame and a coroutine per
packet cost 20-25 µs a packet a viewer): each frame's packets are made from a template
and SRTP-protected and handed to the UDP socket at once, in the relay's push.

- ``RTCRtpSender._next_encoded_frame(codec)`` (coroutine): ``_run_rtp`` calls it for its
  first frame once ``RTCRtpSender.send`` configured the sender. :func:`attach_sender`
  replaces it on the instance with one that runs the :class:`LeanSender` until the
  track ends, then raises ``MediaStreamError``, which ends ``_run_rtp`` cleanly (it stops
  the track and sets its exit event, so ``RTCRtpSender.stop`` works). ``get_encoder`` is
  never called. ``aiortc.rtcrtpsender.RTCEncodedFrame``: the type it would return.
- ``RTCRtpSender._send_keyframe()``: what ``RTCRtpSender._handle_rtcp_packet`` calls on
  a viewer's PLI or FIR. Replaced on the instance to forward the request upstream.
- ``RTCRtpSender._retransmit(sequence_number)`` (coroutine): what
  ``_handle_rtcp_packet`` awaits for each sequence number of a viewer's NACK. Replaced
  on the instance to answer from the lean sender's history, as aiortc's does (RTX when
  negotiated, with ``aiortc.rtp.wrap_rtx``; else the same packet again, which the tx
  SRTP policy allows: ``allow_repeat_tx``).
- Sender state set in ``RTCRtpSender.__init__`` and ``send`` (name-mangled), read once
  at the start: ``_ssrc``, ``_rtx_ssrc``, ``__mid``, ``__rtp_header_extensions_map`` (an
  ``aiortc.rtp.HeaderExtensionsMap``: the negotiated extension ids, used with
  ``RtpPacket.serialize`` to make the header template, and ``RtpPacket.parse`` for RTX),
  ``__rtx_payload_type``; ``_enabled`` read for each frame.
- Sender counts kept for each frame as ``_run_rtp`` keeps them: ``__packet_count``,
  ``__octet_count`` (payload bytes), ``__ntp_timestamp``, ``__rtp_timestamp``:
  ``_run_rtcp`` puts them in its RTCP sender reports and ``getStats`` in
  ``outbound-rtp``.
- ``RTCDtlsTransport`` (``RTCRtpSender.transport``): ``_state`` (``State.CONNECTED``),
  ``_tx_srtp`` (a ``pylibsrtp.Session``: ``protect``), and the name-mangled counts
  ``__tx_bytes``/``__tx_packets`` that ``_send_rtp`` keeps and the transport's stats
  report; ``.transport`` is the ``RTCIceTransport``, whose ``_connection`` is the aioice
  ``Connection`` it sends with (``_send = _connection.send``).
- aioice (aiortc 1.16 requires >=0.12,<1; 0.13 here): ``Connection.send`` →
  ``Connection.sendto``, which sends to ``_nominated[component]`` (a ``CandidatePair``:
  ``.protocol``, ``.remote_addr``) with ``await pair.protocol.send_data(data, addr)``;
  ``StunProtocol.send_data`` is only ``self.transport.sendto(data, addr)`` (a UDP
  transport, or aioice's ``TurnTransport``, whose ``sendto`` is synchronous too). So
  :class:`_Link` calls ``pair.protocol.transport.sendto`` itself, for component 1 (RTP
  and RTCP are muxed), and stops when there is no nominated pair (aioice clears it when
  the connection closes, consent expiry included) or the DTLS transport is not
  connected. A protocol whose ``send_data`` is not the stock one, or a transport that is
  not an ``RTCDtlsTransport``, gets the packets through ``await transport._send_rtp``
  from a task instead.

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
import secrets
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, cast

import aiortc
from aioice.ice import Connection as IceConnection
from aioice.ice import StunProtocol
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
from aiortc.rtcdtlstransport import RTCDtlsTransport
from aiortc.rtcdtlstransport import State as DtlsState
from aiortc.rtcicetransport import RTCIceTransport
from aiortc.rtcrtpsender import RTCEncodedFrame
from aiortc.rtp import HeaderExtensionsMap, RtpPacket, wrap_rtx
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


def _uses(fn: object, names: set[str], internal: str, what: str) -> None:
    """Check that ``fn``'s code still names ``names`` (attributes it reads or sets)."""
    code = getattr(fn, "__code__", None)
    _need(code is not None, internal, "is no longer plain Python code")
    missing = names - set(getattr(code, "co_names", ()))
    _need(not missing, internal, f"{what} (no longer uses {', '.join(sorted(missing))})")


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
    _check_lean_sender()
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


def _check_lean_sender() -> None:
    """The internals :class:`LeanSender` and :class:`_Link` rely on."""
    sender = "aiortc.RTCRtpSender"
    _check_method(RTCRtpSender, "_retransmit", ["self", "sequence_number"], coroutine=True)
    _uses(
        RTCRtpSender._handle_rtcp_packet,
        {"_retransmit", "_send_keyframe"},
        f"{sender}._handle_rtcp_packet",
        "no longer answers NACKs with _retransmit and PLI/FIR with _send_keyframe",
    )
    _uses(
        RTCRtpSender.__init__,
        set(_SENDER_STATE),
        f"{sender}.__init__",
        "no longer sets the state the lean sender reads and keeps",
    )
    _uses(
        RTCRtpSender.send,
        {"_RTCRtpSender__mid", "_RTCRtpSender__rtp_header_extensions_map"}
        | {"_RTCRtpSender__rtx_payload_type", "_run_rtp"},
        f"{sender}.send",
        "no longer configures the mid, the header extensions and RTX before _run_rtp",
    )
    counts = {f"_RTCRtpSender__{n}" for n in ("packet_count", "octet_count")}
    stamps = {f"_RTCRtpSender__{n}" for n in ("ntp_timestamp", "rtp_timestamp")}
    _uses(RTCRtpSender._run_rtp, counts | stamps, f"{sender}._run_rtp", "keeps other counts")
    _uses(
        RTCRtpSender._run_rtcp,
        counts | stamps,
        f"{sender}._run_rtcp",
        "no longer reports the counts the lean sender keeps",
    )
    _uses(RTCRtpSender.getStats, counts, f"{sender}.getStats", "reads other counts")
    _need(
        _params(RtpPacket.serialize) == ["self", "extensions_map"]
        and _params(RtpPacket.parse) == ["data", "extensions_map"],
        "aiortc.rtp.RtpPacket.serialize/parse",
        "no longer take an extensions map",
    )
    _need(
        _params(wrap_rtx) == ["packet", "payload_type", "sequence_number", "ssrc"],
        "aiortc.rtp.wrap_rtx",
        "no longer takes (packet, payload_type, sequence_number, ssrc)",
    )
    _need(
        _params(HeaderExtensionsMap.configure) == ["self", "parameters"],
        "aiortc.rtp.HeaderExtensionsMap",
        "changed",
    )
    dtls = "aiortc.rtcdtlstransport.RTCDtlsTransport"
    _need(hasattr(DtlsState, "CONNECTED"), "aiortc.rtcdtlstransport.State", "has no CONNECTED")
    tx = {"_RTCDtlsTransport__tx_bytes", "_RTCDtlsTransport__tx_packets"}
    _check_method(RTCDtlsTransport, "_send_rtp", ["self", "data"], coroutine=True)
    _uses(
        RTCDtlsTransport._send_rtp,
        {"_state", "CONNECTED", "_tx_srtp", "protect", "transport", "_send"} | tx,
        f"{dtls}._send_rtp",
        "no longer checks _state, SRTP-protects with _tx_srtp and hands to transport._send",
    )
    _uses(RTCDtlsTransport.__init__, tx | {"_tx_srtp", "_state"}, f"{dtls}.__init__", "changed")
    _uses(
        RTCIceTransport.__init__,
        {"_connection", "_send", "send"},
        "aiortc.rtcicetransport.RTCIceTransport.__init__",
        "no longer sends with its aioice connection's send (_connection)",
    )
    ice = "aioice.ice.Connection"
    _check_method(IceConnection, "send", ["self", "data"], coroutine=True, where=ice)
    _check_method(IceConnection, "sendto", ["self", "data", "component"], coroutine=True, where=ice)
    _uses(IceConnection.send, {"sendto"}, f"{ice}.send", "no longer calls sendto")
    _uses(
        IceConnection.sendto,
        {"_nominated", "get", "protocol", "send_data", "remote_addr"},
        f"{ice}.sendto",
        "no longer sends through the nominated pair's protocol (_nominated)",
    )
    _uses(IceConnection.__init__, {"_nominated"}, f"{ice}.__init__", "has no _nominated")
    stun = "aioice.ice.StunProtocol"
    _check_method(StunProtocol, "send_data", ["self", "data", "addr"], coroutine=True, where=stun)
    code = StunProtocol.send_data.__code__
    _need(
        set(code.co_names) == {"transport", "sendto"},
        f"{stun}.send_data",
        "does more than transport.sendto(data, addr)",
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

_RTP_FIXED = struct.Struct("!BBHLL")
"""An RTP header's fixed part: V/P/X/CC, M/PT, sequence number, timestamp, SSRC."""
_NTP_EPOCH_S = 2_208_988_800
"""Seconds from 1900 (NTP's epoch) to 1970 (Unix's)."""
HISTORY = 128
"""Packets a viewer's sender keeps for NACK retransmission (aiortc keeps as many,
``aiortc.rtp.RTP_HISTORY_SIZE``). A power of two."""
MAX_BUFFERED = 256 * 1024
"""Bytes a viewer's UDP transport may hold unsent (the socket's buffer was full) before
its next video frame is dropped (and the viewer waits for a keyframe)."""
MAX_QUEUED = 4096
"""Packets the coroutine path (:class:`_Link`) may hold before it drops its backlog."""


def _ntp_now() -> int:
    """The time as a 64-bit NTP timestamp (what ``aiortc.clock.current_ntp_time``
    returns, without its datetime arithmetic)."""
    t = time.time()
    return ((int(t) + _NTP_EPOCH_S) << 32) | int((t % 1.0) * 4_294_967_296.0)


def _span(a: bytes, b: bytes) -> tuple[int, int] | None:
    """Where ``a`` and ``b`` (of one length) differ: ``(offset, length)``, or None."""
    diff = [i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y]
    return None if not diff else (diff[0], diff[-1] + 1 - diff[0])


class _Extensions:
    """A sender's RTP header extensions, serialized once by aiortc's own code with the
    sender's negotiated ids, with where the per-frame values go.

    ``abs-send-time`` (3 bytes, video) and ``ssrc-audio-level`` (1 byte, audio) change
    with every frame; ``mid`` never does. Where each lies is found by serializing twice
    with different values and comparing: aiortc's layout is used, not assumed.
    """

    __slots__ = ("abs_at", "first_byte", "level_at", "with_level", "without_level")

    def __init__(self, ext_map: HeaderExtensionsMap, mid: str | None, audio: bool) -> None:
        def serialize(send_time: int, level: int | None) -> bytes:
            packet = RtpPacket()
            packet.extensions.mid = mid
            packet.extensions.abs_send_time = send_time
            if level is not None:
                packet.extensions.audio_level = (False, level)
            return packet.serialize(ext_map)

        base = serialize(0, None)
        self.first_byte = base[0]  # version 2, the X bit when there are extensions
        self.without_level = base[_RTP_FIXED.size :]
        self.abs_at = self._find(base, serialize(0xFFFFFF, None), 3, "abs-send-time")
        self.with_level = self.without_level
        self.level_at = -1
        if audio:
            low = serialize(0, 0)
            _need(low[0] == self.first_byte, "aiortc.rtp.RtpPacket.serialize", "changed")
            self.with_level = low[_RTP_FIXED.size :]
            self.level_at = self._find(low, serialize(0, 127), 1, "ssrc-audio-level")

    @staticmethod
    def _find(a: bytes, b: bytes, size: int, name: str) -> int:
        """Offset of the value (``size`` bytes) in the extension block; -1 when the
        extension was not negotiated."""
        _need(len(a) == len(b), "aiortc.rtp.RtpPacket.serialize", f"sizes {name} by value")
        span = _span(a, b)
        if span is None:
            return -1
        _need(
            span[1] == size and span[0] >= _RTP_FIXED.size,
            "aiortc.rtp.RtpPacket.serialize",
            f"no longer writes {name} as {size} bytes in the extension block",
        )
        return span[0] - _RTP_FIXED.size

    def block(self, ntp: int, level: int | None) -> bytes:
        """The extension block of one frame's packets."""
        if level is None:
            if self.abs_at < 0:
                return self.without_level
            out = bytearray(self.without_level)
        else:
            out = bytearray(self.with_level)
            if self.level_at >= 0:
                out[self.level_at] = level & 0x7F
        if self.abs_at >= 0:
            out[self.abs_at : self.abs_at + 3] = ((ntp >> 14) & 0xFFFFFF).to_bytes(3, "big")
        return bytes(out)


class _Link:
    """Where one viewer's RTP packets go: SRTP-protected and handed to the UDP transport
    of the viewer's nominated ICE pair, synchronously, as
    ``RTCDtlsTransport._send_rtp`` then ``aioice.Connection.sendto`` then
    ``StunProtocol.send_data`` would (each only calls the next, and the last is
    ``transport.sendto``); the DTLS transport's packet and byte counts are kept.

    When that is not possible (the transport is not aiortc's ``RTCDtlsTransport``, or
    the pair's protocol is not aioice's stock ``StunProtocol``), packets go through
    ``await transport._send_rtp(data)`` in order, from a task of the link's own.
    """

    def __init__(self, transport: Any) -> None:
        self._transport = transport
        self._dtls: Any = transport if isinstance(transport, RTCDtlsTransport) else None
        self._ice: Any = None
        if self._dtls is not None:
            self._ice = getattr(transport.transport, "_connection", None)
            _need(
                isinstance(getattr(self._ice, "_nominated", None), dict),
                "aioice.Connection._nominated (RTCIceTransport._connection)",
                "is not a dict on a connected transport",
            )
        self._pair: Any = None
        self._udp: Any = None
        self._closing: Callable[[], bool] | None = None
        self._buffered: Callable[[], int] | None = None
        self._addr: tuple[str, int] | None = None
        self._direct = False
        self._queue: collections.deque[bytes] = collections.deque()
        self._task: asyncio.Task[None] | None = None
        self.gone = False
        """The connection is closed: nothing will be sent any more."""

    def _bind(self, pair: Any) -> None:
        self._pair = pair
        protocol = pair.protocol
        stock = type(protocol).send_data is StunProtocol.send_data
        self._udp = protocol.transport if stock else None
        self._addr = pair.remote_addr
        # a UDP transport has both; aioice's TurnTransport (a relayed pair) has neither
        self._closing = getattr(self._udp, "is_closing", None)
        self._buffered = getattr(self._udp, "get_write_buffer_size", None)

    def ready(self) -> bool:
        """Whether a frame's packets may be sent now: False when the connection is gone
        (:attr:`gone`) or its buffer is full."""
        if self.gone:
            return False
        dtls = self._dtls
        if dtls is not None and not self._queue:
            if dtls._state is not DtlsState.CONNECTED:
                self.gone = True
                return False
            pair = self._ice._nominated.get(1)  # RTP and RTCP share component 1
            if pair is None:
                self.gone = True
                return False
            if pair is not self._pair:
                self._bind(pair)
            if self._udp is not None:
                if self._closing is not None and self._closing():
                    self.gone = True
                    return False
                self._direct = True
                return self._buffered is None or self._buffered() <= MAX_BUFFERED
        self._direct = False
        if len(self._queue) >= MAX_QUEUED:
            self._queue.clear()
            return False
        return True

    def send(self, packets: list[bytes]) -> None:
        """Send RTP packets (plain, as serialized); call :meth:`ready` just before."""
        if not self._direct:
            self._queue.extend(packets)
            if self._task is None:
                self._task = asyncio.get_running_loop().create_task(self._drain())
            return
        dtls = self._dtls
        protect = dtls._tx_srtp.protect
        sendto = self._udp.sendto
        addr = self._addr
        size = 0
        for data in packets:
            data = protect(data)
            sendto(data, addr)
            size += len(data)
        dtls._RTCDtlsTransport__tx_bytes += size
        dtls._RTCDtlsTransport__tx_packets += len(packets)

    async def _drain(self) -> None:
        send = cast(Callable[[bytes], Awaitable[None]], self._transport._send_rtp)
        try:
            while self._queue:
                await send(self._queue.popleft())
        except ConnectionError:
            self.gone = True
            self._queue.clear()
        except Exception:
            log.exception("sending RTP failed")
            self.gone = True
            self._queue.clear()
        finally:
            self._task = None

    def close(self) -> None:
        self.gone = True
        self._queue.clear()
        if self._task is not None:
            self._task.cancel()


class LeanSender:
    """Sends one viewer's forwarded frames in place of ``RTCRtpSender._run_rtp``: each
    frame's RTP packets are made from a template and sent at once, from the relay's
    push, with no task wake-up and no coroutine per packet.

    It does what ``_run_rtp`` does, the same way: its own random sequence number origin
    and timestamp origin, the sender's SSRC and the codec's payload type, the marker on
    a frame's last packet, the ``mid``, ``abs-send-time`` and audio-level header
    extensions as the sender negotiated them; it keeps the last :data:`HISTORY` packets
    for NACKs (retransmitted as RTX when negotiated), and keeps the sender's packet,
    octet, NTP and RTP timestamp counts that its RTCP sender reports and ``getStats``
    read. Made once the sender's loop starts (``RTCRtpSender.send`` configured it).

    Raises:
        AdapterError: the sender lacks an internal this relies on.
    """

    def __init__(self, sender: RTCRtpSender, codec: RTCRtpCodecParameters) -> None:
        for name in _SENDER_STATE:
            _need(hasattr(sender, name), f"aiortc.RTCRtpSender.{name}", "is missing on a sender")
        s: Any = sender
        self._sender = s
        self._ext_map: HeaderExtensionsMap = s._RTCRtpSender__rtp_header_extensions_map
        self._ext = _Extensions(self._ext_map, s._RTCRtpSender__mid, sender.kind == "audio")
        self._b0 = self._ext.first_byte
        _need(codec.payloadType is not None, "the sender's codec", "has no payload type")
        self._pt = cast(int, codec.payloadType) & 0x7F
        self._ssrc = sender._ssrc
        self._rtx_pt: int | None = s._RTCRtpSender__rtx_payload_type
        self._rtx_ssrc = sender._rtx_ssrc
        self._rtx_seq = secrets.randbelow(32768)
        self._seq = secrets.randbelow(32768)  # the lower half, as aiortc (SRTP rollover)
        self._origin = secrets.randbits(32)
        self._history: list[tuple[bytes, bytes, bytes] | None] = [None] * HISTORY
        self._link = _Link(sender.transport)
        self.retransmitted = 0

    @property
    def gone(self) -> bool:
        """The viewer's connection is closed: nothing will be sent any more."""
        return self._link.gone

    def send(self, frame: EncodedFrame) -> bool:
        """Send one frame's packets.

        Returns:
            False if the frame was not sent (the connection is gone, or its send buffer
            is full): the viewer needs a keyframe to go on.
        """
        s = self._sender
        if not s._enabled:  # what _next_encoded_frame does for a disabled sender
            return True
        if not frame.payloads:
            return True
        if not self._link.ready():
            return False
        ntp = _ntp_now()
        ext = self._ext.block(ntp, frame.audio_level)
        timestamp = (self._origin + frame.timestamp) & 0xFFFFFFFF
        payloads = frame.payloads
        last = len(payloads) - 1
        pack = _RTP_FIXED.pack
        history = self._history
        b0, pt, ssrc, seq = self._b0, self._pt, self._ssrc, self._seq
        packets = []
        octets = 0
        for i, payload in enumerate(payloads):
            header = pack(b0, pt | 0x80 if i == last else pt, seq, timestamp, ssrc)
            history[seq & (HISTORY - 1)] = (header, ext, payload)
            packets.append(b"".join((header, ext, payload)))
            octets += len(payload)
            seq = (seq + 1) & 0xFFFF
        self._seq = seq
        self._link.send(packets)
        # what _run_rtp keeps for the RTCP sender reports (_run_rtcp) and getStats
        s._RTCRtpSender__ntp_timestamp = ntp
        s._RTCRtpSender__rtp_timestamp = timestamp
        s._RTCRtpSender__packet_count += len(payloads)
        s._RTCRtpSender__octet_count += octets
        return True

    def retransmit(self, sequence_number: int) -> None:
        """Send again a packet the viewer reported lost (NACK), as
        ``RTCRtpSender._retransmit`` does: wrapped in RTX when negotiated."""
        kept = self._history[sequence_number & (HISTORY - 1)]
        if kept is None or int.from_bytes(kept[0][2:4], "big") != sequence_number:
            return
        data = b"".join(kept)
        if self._rtx_pt is not None:
            packet = wrap_rtx(
                RtpPacket.parse(data, self._ext_map),
                payload_type=self._rtx_pt,
                sequence_number=self._rtx_seq,
                ssrc=self._rtx_ssrc,
            )
            self._rtx_seq = (self._rtx_seq + 1) & 0xFFFF
            data = packet.serialize(self._ext_map)
        if self._link.ready():
            self._link.send([data])
            self.retransmitted += 1

    def close(self) -> None:
        self._link.close()


_SENDER_STATE = (
    "_ssrc",
    "_rtx_ssrc",
    "_enabled",
    "_RTCRtpSender__mid",
    "_RTCRtpSender__rtp_header_extensions_map",
    "_RTCRtpSender__rtx_payload_type",
    "_RTCRtpSender__ntp_timestamp",
    "_RTCRtpSender__rtp_timestamp",
    "_RTCRtpSender__packet_count",
    "_RTCRtpSender__octet_count",
)
"""The sender's attributes :class:`LeanSender` reads or keeps (mangled names)."""


class ForwardedTrack(MediaStreamTrack):
    """A track of already-encoded frames, for a sender set up by :func:`attach_sender`.

    The relay :meth:`push` es frames in; once the sender's loop has started (the
    viewer's connection is up), each is sent at once by the sender's
    :class:`LeanSender`. It is a frame sink of :class:`~livecommerce.media.stream.Stream`.

    Args:
        kind: ``"audio"`` or ``"video"``.
        on_start: called once, when the sender starts (the viewer's connection is up):
            the moment to subscribe to the stream.
        on_keyframe_request: called for each PLI or FIR from the viewer.
        max_queue: frames held before the sender starts (more are dropped).
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
        self._sender: LeanSender | None = None
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
        """Send a frame to the viewer now (hold it if the sender has not started).

        Returns:
            False if the frame was dropped (the viewer's send buffer is full, or the
            frames held before the start were too many): the viewer needs a keyframe.
        """
        if self._ended:
            return True
        sender = self._sender
        if sender is None:
            if len(self._queue) >= self._max_queue:
                self.dropped += len(self._queue) + 1
                self._queue.clear()
                return False
            self._queue.append(frame)
            return True
        try:
            ok = sender.send(frame)
        except Exception:  # one viewer's failure must not stop the stream's fan-out
            log.exception("sending a %s frame to a viewer failed", self.kind)
            self.end()
            return True
        if ok:
            self.sent += 1
        elif sender.gone:
            self.end()
            return True
        else:
            self.dropped += 1
        return ok

    def end(self) -> None:
        """No more frames: the sender's loop stops."""
        self._ended = True
        self._queue.clear()
        if self._sender is not None:
            self._sender.close()
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def stop(self) -> None:
        self.end()
        super().stop()

    async def run(self, sender: LeanSender) -> None:
        """The sender's loop: send every frame with ``sender`` until the track ends."""
        if self.started:
            raise RuntimeError("a forwarded track runs once")
        self.started = True
        if self._ended:
            return
        self._sender = sender
        try:
            held, self._queue = list(self._queue), collections.deque()
            for frame in held:
                self.push(frame)
            if self._on_start is not None:
                self._on_start(self)
            if not self._ended:
                self._waiter = asyncio.get_running_loop().create_future()
                await self._waiter
        finally:
            self.end()

    def retransmit(self, sequence_number: int) -> None:
        """The viewer reported a packet lost (NACK)."""
        if self._sender is not None and not self._ended:
            self._sender.retransmit(sequence_number)

    def request_keyframe(self) -> None:
        """The viewer lost its picture (PLI) or asked for a full one (FIR)."""
        self.keyframe_requests += 1
        if self._on_keyframe_request is not None:
            self._on_keyframe_request()

    async def recv(self) -> Frame:
        """Not for this track: it holds encoded frames, which only a sender set up by
        :func:`attach_sender` sends."""
        raise MediaStreamError("a forwarded track has no decoded frames")


def attach_sender(sender: RTCRtpSender, track: ForwardedTrack) -> None:
    """Make ``sender`` send ``track``'s encoded frames as they are, with no encoder, by
    a :class:`LeanSender`; pass the viewer's keyframe requests (PLI, FIR) to ``track``
    and answer its NACKs from the lean sender's history.

    Call it before the connection is up (before the sender's loop starts).

    Raises:
        AdapterError: the sender lacks the 1.16 hooks, or does not hold ``track``.
    """
    for name in ("_next_encoded_frame", "_send_keyframe", "_retransmit"):
        _need(
            callable(getattr(sender, name, None)),
            f"aiortc.RTCRtpSender.{name}",
            "is missing on the sender",
        )
    _need(sender.track is track, "aiortc.RTCRtpSender.track", "is not the forwarded track")

    async def next_encoded_frame(codec: RTCRtpCodecParameters) -> RTCEncodedFrame:
        # The first call (by _run_rtp, once send() configured the sender) runs the lean
        # sender until the track ends; MediaStreamError then ends _run_rtp.
        try:
            lean = LeanSender(sender, codec)
        except Exception:  # _run_rtp would only log a warning: the viewer gets nothing
            log.exception("the lean sender cannot start: the viewer gets no %s", track.kind)
            track.end()
            raise
        await track.run(lean)
        raise MediaStreamError

    async def retransmit(sequence_number: int) -> None:
        track.retransmit(sequence_number)

    # Instance attributes shadow the methods that _run_rtp and _handle_rtcp_packet call.
    sender._next_encoded_frame = next_encoded_frame  # type: ignore[method-assign]
    sender._send_keyframe = track.request_keyframe  # type: ignore[method-assign]
    sender._retransmit = retransmit  # type: ignore[method-assign]
