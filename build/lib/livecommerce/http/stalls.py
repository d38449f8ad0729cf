"""Readers that stopped reading, seen in the kernel's TCP state before any queue grows.

A client that stops reading is invisible to a server that only watches its own
queue: the kernel buffers between them take the stream first (measured here: ~9 s of
a busy room's 30 KB/s in the client's receive buffer, then our send buffer, then
``max_lag_s``: 16 s in all). The kernel sees it at once, though. Each ACK from the
client's kernel carries its receive window, and the window's right edge (bytes
acknowledged + window) moves on only when the client's application reads. Linux's
``TCP_INFO`` gives both (``tcpi_bytes_acked``, and ``tcpi_snd_wnd`` since 6.2).

So every half ``stall_s`` each connection's (acknowledged, edge) is sampled, and a
connection that, at two samples in a row, took less than half of what it was sent
since the sample two before (about ``stall_s``) and left at least :data:`MIN_UNREAD`
more unread, or whose window stayed shut over such a span, is a stalled reader. A reader that
stopped takes nothing, or what the kernel lets the edge creep as its buffer grows,
span after span. A client may rightly leave some data unread, though: one that asks
to be woken only once a batch has come (``SO_RCVLOWAT``, as our load generator does),
and the window counts the kernel's buffers, not the bytes in them, so a batch of
small frames can shut much more of it than its size (seen: 4.7 KB of frames unread
held 42 KB of window, a reading viewer "took" 48 % of what it was sent over a span);
but its window comes back when it reads, so the next span shows it taking all. Hence
two spans, and the floor (in a quiet room, where a batch takes long to come, a rule
without it closed such readers). A reading client's edge keeps pace with what it is
sent whatever its network's speed; a slow network shows in the server's queue
instead (``max_lag_s``). One ``getsockopt`` per connection per sample: ~1.5 µs.

Where ``TCP_INFO`` lacks the fields (another OS, an older kernel) nothing is judged.
"""

from __future__ import annotations

import socket
import struct
from typing import Any, Final

MIN_UNREAD: Final = 32 * 1024
"""What a connection must have left unread over a span to be judged stalled: more than
a client that reads in batches of half a second of a busy room keeps (~20 KB)."""

_ACKED: Final = struct.Struct("=Q")
_ACKED_AT: Final = 120  # struct tcp_info: tcpi_bytes_acked (u64)
_WINDOW: Final = struct.Struct("=I")
_WINDOW_AT: Final = 228  # struct tcp_info: tcpi_snd_wnd (u32), the last field read
_INFO_LEN: Final = _WINDOW_AT + _WINDOW.size
_TCP_INFO: Final = getattr(socket, "TCP_INFO", None)


def read_progress(sock: Any) -> tuple[int, int] | None:
    """``(bytes acknowledged, right edge of the peer's window)`` of a TCP socket, or
    None where the kernel does not tell (or the socket is gone)."""
    if _TCP_INFO is None:
        return None
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, _INFO_LEN)
    except OSError:
        return None
    if len(info) < _INFO_LEN:
        return None
    acked: int = _ACKED.unpack_from(info, _ACKED_AT)[0]
    return acked, acked + _WINDOW.unpack_from(info, _WINDOW_AT)[0]


class ReadWatch:
    """The last two samples of one connection's read progress, and the verdict."""

    __slots__ = ("_behind", "_newer", "_older", "span")

    def __init__(self) -> None:
        self._older: tuple[int, int] | None = None
        self._newer: tuple[int, int] | None = None
        self._behind = False
        self.span = (0, 0)
        """``(bytes sent, bytes taken)`` over the span that made it stalled."""

    def stalled(self, acked: int, edge: int) -> bool:
        """Take a sample; True if the reader stalled.

        Stalled: over the span since the older of the last two samples and over the
        span before it, the edge moved less than half as far as what was acknowledged,
        and at least :data:`MIN_UNREAD` less; or, over the last span, nothing
        acknowledged with the window shut at both ends (its buffer full all along).
        """
        ref, self._older, self._newer = self._older, self._newer, (acked, edge)
        if ref is None:
            return False
        ref_acked, ref_edge = ref
        sent, taken = acked - ref_acked, edge - ref_edge
        if sent:
            behind = 2 * taken < sent and sent - taken >= MIN_UNREAD
            stalled, self._behind = behind and self._behind, behind
        else:
            stalled = edge == acked and ref_edge == ref_acked
        if stalled:  # kept only then: no tuple per sample
            self.span = (sent, taken)
        return stalled
