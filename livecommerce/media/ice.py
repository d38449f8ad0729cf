"""Which of a peer's ICE candidates the server may send STUN to. Pure.

An offer's ``a=candidate`` lines are addresses the server's ICE agent checks with STUN
binding requests: an offer naming any address and port made the server probe them
(200 candidates were accepted from one offer). Before an offer reaches the WebRTC
stack, :func:`vet_offer` keeps at most ``max_candidates`` of them, and only public
unicast addresses unless private ones are allowed (a LAN, a test on loopback, the demo).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

MAX_CANDIDATES = 16
"""Remote candidates kept from one offer (a browser offers a handful)."""


@dataclass(frozen=True, slots=True)
class Vetted:
    """An offer with only the candidates the server may check."""

    sdp: str
    kept: int
    dropped: int


def allowed(address: str, *, allow_private: bool) -> bool:
    """Whether the server may send STUN to ``address`` (a candidate's connection
    address): never to a multicast, unspecified or reserved address; to loopback,
    private, link-local and ``.local`` (mDNS) names only when ``allow_private``."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:  # a host name: browsers' mDNS names, resolved on the LAN
        return allow_private and address.endswith(".local") and len(address) <= 255
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_multicast or ip.is_unspecified:
        return False
    if ip.is_loopback or ip.is_link_local or (ip.is_private and not ip.is_reserved):
        return allow_private
    return ip.is_global and not ip.is_reserved


def vet_offer(sdp: str, *, allow_private: bool, max_candidates: int = MAX_CANDIDATES) -> Vetted:
    """``sdp`` without the candidates the server must not check (see :func:`allowed`),
    and without any past the first ``max_candidates`` kept."""
    out: list[str] = []
    kept = dropped = 0
    for line in sdp.splitlines(keepends=True):
        if line.startswith("a=candidate:"):
            parts = line.split()
            ok = len(parts) >= 8 and allowed(parts[4], allow_private=allow_private)
            if not ok or kept >= max_candidates:
                dropped += 1
                continue
            kept += 1
        out.append(line)
    return Vetted("".join(out), kept, dropped)
