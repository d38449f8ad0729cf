"""WebSocket framing for server-to-client frames (RFC 6455, section 5.2).

The hub encodes a room's tick once and writes the very same bytes to every member's
socket, so it needs whole frames rather than a per-connection writer. Server frames are
never masked and never compressed (PROTOCOL.md: no compression by default).
"""

from __future__ import annotations

import struct

_TEXT = 0x81  # FIN + opcode 1
_CLOSE = 0x88  # FIN + opcode 8


def _header(first: int, length: int) -> bytes:
    if length < 126:
        return bytes((first, length))
    if length < 1 << 16:
        return struct.pack("!BBH", first, 126, length)
    return struct.pack("!BBQ", first, 127, length)


def text_frame(payload: bytes) -> bytes:
    """Return one complete, final, unmasked text frame carrying ``payload`` (UTF-8)."""
    return _header(_TEXT, len(payload)) + payload


def close_frame(code: int, reason: str = "") -> bytes:
    """Return a close frame with ``code`` and a reason of at most 123 bytes."""
    body = struct.pack("!H", code) + reason.encode()[:123]
    return _header(_CLOSE, len(body)) + body
