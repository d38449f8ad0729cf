"""H.264 without a codec: RTP depacketizing (RFC 6184), the sequence parameter set's
picture size, and the ``avcC`` configuration record of ISO/IEC 14496-15.

Pure: bytes in, bytes out. The HLS packager turns a publisher's RTP payloads into
access units with :func:`nal_units`, keeps the parameter sets (SPS, PPS) for the
``avc1`` sample entry (:func:`avc_config`) and writes each access unit as a sample of
length-prefixed NAL units (:func:`avcc_sample`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

NAL_SLICE = 1
NAL_IDR = 5
NAL_SEI = 6
NAL_SPS = 7
NAL_PPS = 8
NAL_AUD = 9
NAL_FILLER = 12
STAP_A = 24
FU_A = 28

_HIGH_PROFILES = frozenset({100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135})
"""Profiles whose SPS carries chroma format, bit depths and scaling matrices."""
_AVCC_EXT_PROFILES = frozenset({100, 110, 122, 144})
"""Profiles whose ``avcC`` carries chroma format and bit depths (14496-15, 5.3.3.1.2)."""


def nal_type(nal: bytes) -> int:
    """The NAL unit type (the low 5 bits of its first byte; 0 for an empty unit)."""
    return nal[0] & 0x1F if nal else 0


def nal_units(payloads: Iterable[bytes]) -> list[bytes]:
    """The NAL units carried by the RTP payloads of one access unit (RFC 6184,
    packetization modes 0 and 1: single NAL unit packets, STAP-A and FU-A).

    Malformed parts are dropped, never raised: an STAP-A whose sizes overrun it keeps
    the units before the bad size; an FU-A unit missing its start (or its end, at the
    end of the payloads) is dropped whole. Interleaved-mode packets (STAP-B, MTAP,
    FU-B) and reserved types carry nothing here.
    """
    units: list[bytes] = []
    fragment: bytearray | None = None
    for payload in payloads:
        if not payload:
            continue
        kind = payload[0] & 0x1F
        if kind == FU_A:
            if len(payload) < 3:
                fragment = None
                continue
            header = payload[1]
            if header & 0x80:  # S: the first fragment carries the unit's header
                fragment = bytearray([(payload[0] & 0xE0) | (header & 0x1F)])
            if fragment is None:
                continue  # the start was lost: nothing to add to
            fragment += payload[2:]
            if header & 0x40:  # E
                units.append(bytes(fragment))
                fragment = None
            continue
        fragment = None
        if 1 <= kind <= 23:
            units.append(payload)
        elif kind == STAP_A:
            pos = 1
            while pos + 2 <= len(payload):
                size = int.from_bytes(payload[pos : pos + 2], "big")
                pos += 2
                if size == 0 or pos + size > len(payload):
                    break
                units.append(payload[pos : pos + size])
                pos += size
    return units


def split_annexb(stream: bytes) -> list[bytes]:
    """The NAL units of an Annex B byte stream (start codes ``00 00 01`` or
    ``00 00 00 01``), as an encoder writes them."""
    units: list[bytes] = []
    starts: list[int] = []
    i = stream.find(b"\x00\x00\x01")
    while i >= 0:
        starts.append(i + 3)
        i = stream.find(b"\x00\x00\x01", i + 3)
    for n, start in enumerate(starts):
        end = starts[n + 1] - 3 if n + 1 < len(starts) else len(stream)
        unit = stream[start:end]
        if n + 1 < len(starts):
            unit = unit.rstrip(b"\x00")  # a 4-byte start code's zero, trailing zeros
        if unit:
            units.append(unit)
    return units


def annexb(units: Iterable[bytes]) -> bytes:
    """NAL units as an Annex B byte stream (4-byte start codes)."""
    return b"".join(b"\x00\x00\x00\x01" + u for u in units)


def avcc_sample(units: Iterable[bytes]) -> bytes:
    """NAL units as one MP4 sample: each prefixed with its length in 4 bytes."""
    return b"".join(len(u).to_bytes(4, "big") + u for u in units)


def unescape(nal: bytes) -> bytes:
    """The unit's RBSP: emulation-prevention bytes (``00 00 03``) taken out."""
    if b"\x00\x00\x03" not in nal:
        return nal
    out = bytearray()
    zeros = 0
    for b in nal:
        if zeros >= 2 and b == 3:
            zeros = 0
            continue
        out.append(b)
        zeros = zeros + 1 if b == 0 else 0
    return bytes(out)


class _Bits:
    """An MSB-first bit reader with Exp-Golomb codes (H.264, 9.1)."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def u(self, n: int) -> int:
        value = 0
        for _ in range(n):
            byte = self._pos >> 3
            if byte >= len(self._data):
                raise ValueError("the parameter set ends early")
            value = (value << 1) | ((self._data[byte] >> (7 - (self._pos & 7))) & 1)
            self._pos += 1
        return value

    def ue(self) -> int:
        zeros = 0
        while self.u(1) == 0:
            zeros += 1
            if zeros > 31:
                raise ValueError("an Exp-Golomb code is too long")
        return (1 << zeros) - 1 + self.u(zeros)

    def se(self) -> int:
        k = self.ue()
        return (k + 1) // 2 if k & 1 else -(k // 2)


@dataclass(frozen=True, slots=True)
class SpsInfo:
    """What the MP4 sample entry needs from a sequence parameter set."""

    profile_idc: int
    constraints: int
    level_idc: int
    width: int
    height: int
    chroma_format_idc: int = 1
    bit_depth_luma: int = 8
    bit_depth_chroma: int = 8

    @property
    def codec(self) -> str:
        """The RFC 6381 codec string (``avc1.42e01f``)."""
        return f"avc1.{self.profile_idc:02x}{self.constraints:02x}{self.level_idc:02x}"


def parse_sps(nal: bytes) -> SpsInfo:
    """Read a sequence parameter set NAL unit (with its header byte).

    Raises:
        ValueError: not an SPS, or one that ends early.
    """
    if nal_type(nal) != NAL_SPS or len(nal) < 4:
        raise ValueError("not a sequence parameter set")
    r = _Bits(unescape(nal[1:]))
    profile, constraints, level = r.u(8), r.u(8), r.u(8)
    r.ue()  # seq_parameter_set_id
    chroma, depth_luma, depth_chroma, separate_planes = 1, 8, 8, False
    if profile in _HIGH_PROFILES:
        chroma = r.ue()
        if chroma == 3:
            separate_planes = bool(r.u(1))
        depth_luma = r.ue() + 8
        depth_chroma = r.ue() + 8
        r.u(1)  # qpprime_y_zero_transform_bypass_flag
        if r.u(1):  # seq_scaling_matrix_present_flag
            for i in range(8 if chroma != 3 else 12):
                if r.u(1):
                    last, next_ = 8, 8
                    for _ in range(16 if i < 6 else 64):
                        if next_:
                            next_ = (last + r.se() + 256) % 256
                        last = next_ or last
    r.ue()  # log2_max_frame_num_minus4
    poc_type = r.ue()
    if poc_type == 0:
        r.ue()  # log2_max_pic_order_cnt_lsb_minus4
    elif poc_type == 1:
        r.u(1)
        r.se()
        r.se()
        for _ in range(r.ue()):
            r.se()
    r.ue()  # max_num_ref_frames
    r.u(1)  # gaps_in_frame_num_value_allowed_flag
    width_mbs = r.ue() + 1
    height_units = r.ue() + 1
    frame_mbs_only = r.u(1)
    if not frame_mbs_only:
        r.u(1)  # mb_adaptive_frame_field_flag
    r.u(1)  # direct_8x8_inference_flag
    crop = (r.ue(), r.ue(), r.ue(), r.ue()) if r.u(1) else (0, 0, 0, 0)
    array_type = 0 if separate_planes else chroma
    sub_w, sub_h = {1: (2, 2), 2: (2, 1), 3: (1, 1)}.get(array_type, (1, 1))
    unit_x = 1 if array_type == 0 else sub_w
    unit_y = (1 if array_type == 0 else sub_h) * (2 - frame_mbs_only)
    width = width_mbs * 16 - (crop[0] + crop[1]) * unit_x
    height = (2 - frame_mbs_only) * height_units * 16 - (crop[2] + crop[3]) * unit_y
    if width <= 0 or height <= 0:
        raise ValueError("the parameter set crops the picture away")
    return SpsInfo(profile, constraints, level, width, height, chroma, depth_luma, depth_chroma)


def avc_config(sps: bytes, pps: Sequence[bytes]) -> bytes:
    """The ``AVCDecoderConfigurationRecord`` (the body of an ``avcC`` box) for one SPS
    and its picture parameter sets, with 4-byte NAL unit lengths.

    Raises:
        ValueError: the SPS cannot be read.
    """
    info = parse_sps(sps)
    out = bytearray([1, info.profile_idc, info.constraints, info.level_idc, 0xFC | 3, 0xE0 | 1])
    out += len(sps).to_bytes(2, "big") + sps
    out.append(len(pps))
    for p in pps:
        out += len(p).to_bytes(2, "big") + p
    if info.profile_idc in _AVCC_EXT_PROFILES:
        out += bytes(
            [
                0xFC | info.chroma_format_idc,
                0xF8 | (info.bit_depth_luma - 8),
                0xF8 | (info.bit_depth_chroma - 8),
                0,  # numOfSequenceParameterSetExt
            ]
        )
    return bytes(out)
