"""Standard Webhooks (https://www.standardwebhooks.com): signing and verifying. Pure.

A message is signed over ``"{webhook-id}.{webhook-timestamp}.{body}"`` with HMAC-SHA256
and the shared secret; ``webhook-signature`` carries ``v1,<base64 signature>`` (several,
space-separated, while a secret is being rotated). Secrets are written ``whsec_<base64>``.
Payloads are ``{"type", "timestamp", "data"}`` in both directions.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from livecommerce.errors import ConfigError, Error
from livecommerce.protocol import dumps

TOLERANCE_S = 5 * 60
"""A message whose timestamp is further than this from now is refused (replays)."""
_PREFIX = "whsec_"


def parse_secret(text: str) -> bytes:
    """The key of a ``whsec_...`` secret.

    Raises:
        ConfigError: not a ``whsec_`` secret of base64, or a key under 24 bytes.
    """
    if not text.startswith(_PREFIX):
        raise ConfigError("a webhook secret starts with whsec_ (Standard Webhooks)")
    try:
        key = base64.b64decode(text[len(_PREFIX) :], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ConfigError("the webhook secret after whsec_ must be base64") from exc
    if len(key) < 24:
        raise ConfigError("the webhook secret must hold at least 24 bytes")
    return key


def derive_secret(seed: str, purpose: str) -> str:
    """A ``whsec_`` secret derived from another secret (the sandbox's, when none is
    configured: every process of one deployment derives the same one)."""
    key = hmac.new(seed.encode(), purpose.encode(), hashlib.sha256).digest()
    return _PREFIX + base64.b64encode(key).decode()


def webhook_key(secret: str | None, token_secret: str) -> bytes:
    """The key of the configured ``whsec_`` secret, or of one derived from the token
    secret (the sandbox's: every process of a deployment derives the same)."""
    return parse_secret(secret or derive_secret(token_secret, "livecommerce sandbox webhooks"))


def signature(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``v1,`` signature of one message."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def sign(key: bytes, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three headers of a signed message."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(key, msg_id, timestamp, body),
    }


def verify(
    key: bytes,
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: float,
    tolerance_s: int = TOLERANCE_S,
) -> str:
    """Check a message's signature and age; return its ``webhook-id``.

    Raises:
        Error: ``unauthorized`` for a missing header, a bad signature, or a timestamp
            more than ``tolerance_s`` away from ``now``.
    """
    msg_id = headers.get("webhook-id", "")
    stamp = headers.get("webhook-timestamp", "")
    given = headers.get("webhook-signature", "")
    if not (msg_id and stamp and given) or len(msg_id) > 256:
        raise Error("unauthorized", "webhook-id, webhook-timestamp and webhook-signature needed")
    if not stamp.isascii() or not stamp.isdigit() or len(stamp) > 12:
        raise Error("unauthorized", "webhook-timestamp must be unix seconds")
    if abs(now - int(stamp)) > tolerance_s:
        raise Error("unauthorized", "webhook-timestamp too old or in the future")
    expected = signature(key, msg_id, int(stamp), body)
    if not any(hmac.compare_digest(expected, s) for s in given.split(" ") if s):
        raise Error("unauthorized", "bad webhook signature")
    return msg_id


def envelope(kind: str, data: Mapping[str, Any], now: float) -> bytes:
    """A Standard Webhooks payload: ``{"type", "timestamp" (RFC 3339), "data"}``."""
    stamp = datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds")
    return dumps({"type": kind, "timestamp": stamp.replace("+00:00", "Z"), "data": data})
