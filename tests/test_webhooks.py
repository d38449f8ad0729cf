"""Standard Webhooks signing, pure (the reference package checks it in the fault tests)."""

from __future__ import annotations

import base64

import pytest

from livecommerce.errors import ConfigError, Error
from livecommerce.orders.webhooks import (
    derive_secret,
    envelope,
    parse_secret,
    sign,
    signature,
    verify,
)
from livecommerce.protocol import loads

KEY = parse_secret("whsec_" + base64.b64encode(b"k" * 32).decode())
NOW = 1_800_000_000


def test_a_signed_message_verifies_and_names_its_id() -> None:
    body = envelope("order.held", {"id": "r.1"}, NOW)
    headers = sign(KEY, "r.1", NOW, body)
    assert verify(KEY, headers, body, now=NOW + 299) == "r.1"
    doc = loads(body)
    assert doc["type"] == "order.held" and doc["data"] == {"id": "r.1"}
    assert doc["timestamp"] == "2027-01-15T08:00:00.000Z"


@pytest.mark.parametrize(
    "change",
    [
        {"webhook-id": "r.2"},
        {"webhook-timestamp": str(NOW + 1)},
        {"webhook-signature": "v1,AAAA"},
        {"webhook-signature": ""},
        {"webhook-timestamp": "1e9"},
        {"webhook-timestamp": "１２３"},
    ],
)
def test_any_change_breaks_the_signature(change: dict[str, str]) -> None:
    body = b'{"type":"order.paid"}'
    headers = {**sign(KEY, "r.1", NOW, body), **change}
    with pytest.raises(Error) as err:
        verify(KEY, headers, body, now=NOW)
    assert err.value.code == "unauthorized"


def test_old_and_future_timestamps_are_refused() -> None:
    body = b"{}"
    for when in (NOW - 301, NOW + 301):
        with pytest.raises(Error):
            verify(KEY, sign(KEY, "x", when, body), body, now=NOW)
    with pytest.raises(Error):
        verify(KEY, sign(KEY, "x", NOW, body), body + b" ", now=NOW)


def test_any_of_several_signatures_may_match_while_a_secret_rotates() -> None:
    old = parse_secret(derive_secret("old-seed-0123456789abcdef0123456789", "p"))
    body = b"{}"
    both = f"{signature(old, 'x', NOW, body)} {signature(KEY, 'x', NOW, body)}"
    headers = {"webhook-id": "x", "webhook-timestamp": str(NOW), "webhook-signature": both}
    assert verify(KEY, headers, body, now=NOW) == "x"


@pytest.mark.parametrize(
    "secret", ["MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_not base64!", "whsec_c2hvcnQ="]
)
def test_bad_secrets_are_refused(secret: str) -> None:
    with pytest.raises(ConfigError):
        parse_secret(secret)


def test_derived_secrets_are_stable_and_distinct() -> None:
    a = derive_secret("seed-0123456789abcdef0123456789abcd", "sandbox")
    assert a == derive_secret("seed-0123456789abcdef0123456789abcd", "sandbox")
    assert a != derive_secret("seed-0123456789abcdef0123456789abcX", "sandbox")
    assert len(parse_secret(a)) == 32
