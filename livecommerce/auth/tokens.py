"""HS256 JWTs (PyJWT). Time is an argument, so expiry is checked here, not by PyJWT.

Tokens are verified with PyJWT's signature layer (``PyJWS``) and the claims checked
here. The one change to PyJWT's HS256 is where it checks the key: PyJWT vets the
secret (not empty, not a PEM, SSH, DER or JWK key) on every token, which was most of
the cost of a verification (53 µs a token before, 21 µs after, on this machine); here
the vetted key of a secret is kept, so a crowd connecting pays for its signatures only.
"""

from __future__ import annotations

import math
from typing import Any, TypeGuard, cast

import jwt
from jwt.algorithms import HMACAlgorithm

from livecommerce.auth.principal import TOKEN_ROLES, Principal, Role
from livecommerce.errors import Error
from livecommerce.protocol import loads

_ALGORITHMS = ["HS256"]


class _HS256(HMACAlgorithm):
    """PyJWT's HS256, with each secret's key vetted once instead of per token."""

    def __init__(self) -> None:
        super().__init__(HMACAlgorithm.SHA256)
        self._vetted: dict[str | bytes, bytes] = {}

    def prepare_key(self, key: str | bytes) -> bytes:
        vetted = self._vetted.get(key)
        if vetted is None:
            vetted = super().prepare_key(key)  # raises for a bad key, and keeps nothing
            if len(self._vetted) >= 16:  # a process has one secret; tests have a few
                self._vetted.clear()
            self._vetted[key] = vetted
        return vetted


_JWS = jwt.PyJWS(algorithms=_ALGORITHMS)
_JWS.unregister_algorithm("HS256")
_JWS.register_algorithm("HS256", _HS256())


def issue_token(
    secret: str,
    *,
    sub: str,
    name: str,
    role: Role,
    now: float,
    ttl_s: int,
    rooms: list[str] | None = None,
) -> str:
    """Sign a token with the claims of PROTOCOL.md (used by the demo sign-in and tests)."""
    claims: dict[str, Any] = {"sub": sub, "name": name, "role": role, "exp": int(now) + ttl_s}
    if rooms is not None:
        claims["rooms"] = rooms
    return jwt.encode(claims, secret, algorithm="HS256")


def _is_time(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def verify_token(token: str, secret: str, *, now: float) -> Principal:
    """Return the principal of a valid token.

    Only HS256 is accepted (so ``alg: none`` and key-confusion tricks fail).

    Raises:
        Error: ``unauthorized`` for a bad signature, wrong algorithm, malformed or missing
            claims, an unknown role, or an ``exp`` at or before ``now``.
    """
    if not token.isascii():  # a JWT is base64url and dots; anything else is not one
        raise Error("unauthorized", "invalid token: not a JWT")
    try:
        payload = _JWS.decode_complete(token, secret, algorithms=_ALGORITHMS)["payload"]
        claims = loads(payload)
    except jwt.PyJWTError as exc:
        raise Error("unauthorized", f"invalid token: {exc}") from None
    except ValueError:  # orjson's JSONDecodeError
        raise Error("unauthorized", "invalid token: the payload is not JSON") from None
    if not isinstance(claims, dict):
        raise Error("unauthorized", "invalid token: the payload is not an object")
    sub, role, exp = claims.get("sub"), claims.get("role"), claims.get("exp")
    name = claims.get("name", sub)
    rooms = claims.get("rooms")
    if not (isinstance(sub, str) and 0 < len(sub) <= 128):
        raise Error("unauthorized", "invalid token: bad sub")
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
    return Principal(
        id=sub,
        name=name[:64],
        role=cast(Role, role),
        rooms=None if rooms is None else frozenset(rooms),
    )
