"""Remote ICE candidates: the server sends STUN only where it should (issue 16, hole 4)."""

from __future__ import annotations

import pytest

from livecommerce.media.ice import MAX_CANDIDATES, allowed, vet_offer

OFFER_HEAD = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n"


def candidate(address: str, port: int = 9, n: int = 1) -> str:
    return f"a=candidate:{n} 1 udp 2130706431 {address} {port} typ host\r\n"


@pytest.mark.parametrize(
    ("address", "public_only", "with_private"),
    [
        ("8.8.8.8", True, True),
        ("2001:4860:4860::8888", True, True),
        ("127.0.0.1", False, True),
        ("::1", False, True),
        ("10.1.2.3", False, True),
        ("172.16.0.9", False, True),
        ("192.168.1.20", False, True),
        ("169.254.169.254", False, True),  # link-local: a cloud's metadata service
        ("fd00::2", False, True),
        ("fe80::1", False, True),
        ("::ffff:127.0.0.1", False, True),
        ("100.64.0.1", False, False),  # carrier-grade NAT: neither public nor private
        ("224.0.0.251", False, False),
        ("255.255.255.255", False, False),
        ("0.0.0.0", False, False),
        ("240.0.0.1", False, False),
        ("a1b2c3d4-0000-4000-8000-000000000000.local", False, True),
        ("evil.example.com", False, False),
    ],
)
def test_which_addresses_get_stun(address: str, public_only: bool, with_private: bool) -> None:
    assert allowed(address, allow_private=False) is public_only
    assert allowed(address, allow_private=True) is with_private


def test_an_offer_keeps_only_the_candidates_to_check_and_at_most_sixteen() -> None:
    """The attack: 200 candidates in one offer, to any address and port."""
    probes = "".join(candidate(f"8.8.{i // 250}.{i % 250}", 1000 + i, i) for i in range(200))
    lan = candidate("10.0.0.5") + candidate("127.0.0.1", 6379)
    offer = OFFER_HEAD + lan + probes + "a=end-of-candidates\r\n"
    vetted = vet_offer(offer, allow_private=False)
    assert (vetted.kept, vetted.dropped) == (MAX_CANDIDATES, 202 - MAX_CANDIDATES)
    kept = [line for line in vetted.sdp.splitlines() if line.startswith("a=candidate:")]
    assert len(kept) == MAX_CANDIDATES and not any(" 127.0.0.1 " in k for k in kept)
    assert vetted.sdp.startswith(OFFER_HEAD) and vetted.sdp.endswith("a=end-of-candidates\r\n")
    on_a_lan = vet_offer(OFFER_HEAD + lan, allow_private=True)
    assert (on_a_lan.kept, on_a_lan.dropped) == (2, 0) and on_a_lan.sdp == OFFER_HEAD + lan
    assert vet_offer("a=candidate:short\r\n", allow_private=True).dropped == 1
