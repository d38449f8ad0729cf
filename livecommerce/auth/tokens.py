"""HS256 JWTs. Time is an argument, so expiry is checked here.

Tokens are issued with PyJWT and verified here, with the standard library: a server
checks one on every connect (thousands a second when a crowd arrives), and PyJWT's
general decoder cost 21 µs a token even with each secret's key vetted once (53 µs
without), where an HS256 check is a split, three base64 decodes, one HMAC and a
constant-time compare: 8.5 µs a verification here, claims included. Only
``alg: HS256`` is accepted, with no ``crit`` header (RFC 7515 4.1.11: extensions we do
not know must be refused); the tests check that what PyJWT refuses is refused here too.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import math
from typing import Any, TypeGuard, cast

import jwt

from livecommerce.auth.principal import TOKEN_ROLES, Principal, Role
from livecommerce.errors import Error
from livecommerce.protocol import is_user_id, loads


def _b64url(part: str) -> bytes:
    """Decode one base64url segment of a JWT, in its one canonical form (RFC 7515: no
    padding): the decoder would skip characters outside the alphabet and ignore the
    spare bits of the last one, so a token with extra characters in its signature
    verified as well; it is refused now."""
    decoded = base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    if base64.urlsafe_b64encode(decoded).rstrip(b"=") != part.encode():
        raise ValueError("not canonical base64url")
    return decoded


def _hs256_payload(token: str, keys: tuple[bytes, ...]) -> bytes:
    """The payload of an HS256 JWS in compact form signed with one of ``keys``.

    Raises:
        Error: ``unauthorized`` if it is not one, or the signature does not match.
    """
    parts = token.split(".")
    if len(parts) != 3:
        raise Error("unauthorized", "invalid token: not a JWT")
    header_b64, payload_b64, signature_b64 = parts
    try:
        header = loads(_b64url(header_b64))
        signature = _b64url(signature_b64)
        payload = _b64url(payload_b64)
    except (ValueError, binascii.Error):  # orjson's JSONDecodeError is a ValueError
        raise Error("unauthorized", "invalid token: not a JWT") from None
    if not isinstance(header, dict) or header.get("alg") != "HS256":
        raise Error("unauthorized", "invalid token: the algorithm must be HS256")
    if "crit" in header:
        raise Error("unauthorized", "invalid token: unsupported critical header")
    signed = token[: len(header_b64) + 1 + len(payload_b64)].encode()
    for key in keys:
        if hmac.compare_digest(hmac.digest(key, signed, "sha256"), signature):
            return payload
    raise Error("unauthorized", "invalid token: signature verification failed")


DEMO_CLAIM = "demo"
"""A claim of every token the demo sign-in issues; a server without ``--demo`` refuses
any token that has it."""


def demo_secret(secret: str) -> str:
    """The demo sign-in's signing secret, derived from the configured ``secret``: a
    server run with ``--demo`` and a production secret must not mint tokens that the
    production servers accept (they sign nothing with it, and refuse the demo claim)."""
    return "demo-" + hmac.digest(secret.encode(), b"livecommerce demo sign-in", "sha256").hex()


def issue_token(
    secret: str,
    *,
    sub: str,
    name: str,
    role: Role,
    now: float,
    ttl_s: int,
    rooms: list[str] | None = None,
    extra: dict[str, Any] | None = None,
) -> str:
    """Sign a token with the claims of PROTOCOL.md (used by the demo sign-in and tests);
    ``extra`` claims are added (``aud``, ``iss``, the demo claim)."""
    claims: dict[str, Any] = {"sub": sub, "name": name, "role": role, "exp": int(now) + ttl_s}
    if rooms is not None:
        claims["rooms"] = rooms
    if extra:
        claims.update(extra)
    return jwt.encode(claims, secret, algorithm="HS256")


_NUMBER = (int, float)  # a tuple: ``int | float`` would be built on every call


def _is_time(value: object) -> TypeGuard[int | float]:
    return isinstance(value, _NUMBER) and not isinstance(value, bool) and math.isfinite(value)


def verify_token(
    token: str,
    secret: str,
    *,
    now: float,
    demo: str | None = None,
    audience: str | None = None,
    issuer: str | None = None,
) -> Principal:
    """Return the principal of a valid token.

    Only HS256 is accepted (so ``alg: none`` and key-confusion tricks fail), each
    segment in canonical base64url.

    Args:
        secret: the platform's secret.
        demo: a demo server's own secret (:func:`demo_secret`), whose tokens are
            accepted too; None (a production server): a token with the demo claim is
            refused, whoever signed it.
        audience, issuer: when given, the token's ``aud`` must name ``audience`` (a
            string, or a list that holds it) and its ``iss`` must be ``issuer``.

    Raises:
        Error: ``unauthorized`` for a bad signature, wrong algorithm, malformed or missing
            claims, an unknown role, an ``exp`` at or before ``now``, a demo token on a
            production server, or another audience or issuer.
    """
    if not token.isascii():  # a JWT is base64url and dots; anything else is not one
        raise Error("unauthorized", "invalid token: not a JWT")
    keys = (secret.encode(),) if demo is None else (secret.encode(), demo.encode())
    payload = _hs256_payload(token, keys)
    try:
        claims = loads(payload)
    except ValueError:  # orjson's JSONDecodeError
        raise Error("unauthorized", "invalid token: the payload is not JSON") from None
    if not isinstance(claims, dict):
        raise Error("unauthorized", "invalid token: the payload is not an object")
    sub, role, exp = claims.get("sub"), claims.get("role"), claims.get("exp")
    name = claims.get("name", sub)
    rooms = claims.get("rooms")
    if not is_user_id(sub):
        raise Error("unauthorized", "invalid token: bad sub (1 to 128 printable characters)")
    if not isinstance(role, str) or role not in TOKEN_ROLES:
        raise Error("unauthorized", "invalid token: bad role")
    if not _is_time(exp) or exp <= now:
        raise Error("unauthorized", "token expired")
    nbf = claims.get("nbf")
    if nbf is not None and (not _is_time(nbf) or nbf > now):
        raise Error("unauthorized", "token not valid yet")
    if not isinstance(name, str):
        raise Error("unauthorized", "invalid token: bad name")
    if rooms is not None and not (
        isinstance(rooms, list) and all(isinstance(r, str) for r in rooms)
    ):
        raise Error("unauthorized", "invalid token: bad rooms")
    verified = claims.get("verified", False)
    if not isinstance(verified, bool):
        raise Error("unauthorized", "invalid token: bad verified (true or false)")
    if demo is None and DEMO_CLAIM in claims:
        raise Error("unauthorized", "invalid token: a demo token (this server is no demo)")
    if audience is not None:
        aud = claims.get("aud")
        if not (aud == audience or (isinstance(aud, list) and audience in aud)):
            raise Error("unauthorized", "invalid token: not for this audience (aud)")
    if issuer is not None and claims.get("iss") != issuer:
        raise Error("unauthorized", "invalid token: not from the expected issuer (iss)")
    return Principal(
        id=sub,
        name=name[:64],
        role=cast(Role, role),
        rooms=None if rooms is None else frozenset(rooms),
        exp=float(exp),
        verified=verified,
    )
