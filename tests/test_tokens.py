"""Tokens to principals (pure), roles per room, and both over the real WebSocket."""

from __future__ import annotations

import base64
import hmac
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import jwt
import pytest
from aiohttp import ClientWebSocketResponse, WSMsgType
from aiohttp.test_utils import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st
from pytest_aiohttp import AiohttpClient

from livecommerce.auth import Principal, Role, guest, issue_token, tokens, verify_token
from livecommerce.config import Settings
from livecommerce.errors import ConfigError, Error
from livecommerce.http import create_app
from livecommerce.protocol import split_frame

SECRET = "x" * 32
NOW = 1_700_000_000.0
DEMO_ROOM = "demo"
DEMO_HOST = "demo-host"
RECEIVE_TIMEOUT = 5.0


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def hand_made(
    header: dict[str, Any],
    claims: dict[str, Any] | str,
    *,
    sign: str | None,
    digest: str = "sha256",
) -> str:
    """A JWT built by hand; ``sign`` is the HMAC key, or None for an empty signature."""
    body = claims if isinstance(claims, str) else json.dumps(claims)
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(body.encode())}"
    if sign is None:
        return signing_input + "."
    mac = hmac.new(sign.encode(), signing_input.encode(), digest).digest()
    return f"{signing_input}.{b64url(mac)}"


_DROP = object()


def claims(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"sub": "u1", "name": "Ann", "role": "viewer", "exp": int(NOW) + 60}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not _DROP}


def refused(token: str, *, now: float = NOW, secret: str = SECRET) -> Error:
    with pytest.raises(Error) as info:
        verify_token(token, secret, now=now)
    assert info.value.code == "unauthorized"
    return info.value


# -- verify_token ----------------------------------------------------------------------


def test_valid_token_is_accepted() -> None:
    token = issue_token(
        SECRET, sub="h1", name="Hana", role="host", now=NOW, ttl_s=60, rooms=["a", "b"]
    )
    assert verify_token(token, SECRET, now=NOW) == Principal(
        id="h1", name="Hana", role="host", rooms=frozenset({"a", "b"})
    )
    assert verify_token(token, SECRET, now=NOW + 59.999).id == "h1"


def test_viewer_token_without_rooms_or_name() -> None:
    token = jwt.encode(claims(name=_DROP), SECRET, algorithm="HS256")
    assert verify_token(token, SECRET, now=NOW) == Principal(id="u1", name="u1", role="viewer")


@pytest.mark.parametrize("delta", [0.0, 0.5, 1.0, 3600.0])
def test_expired_token_is_refused(delta: float) -> None:
    """``exp <= now`` is expired: the boundary itself is refused."""
    token = issue_token(SECRET, sub="u1", name="Ann", role="viewer", now=NOW, ttl_s=0)
    assert "expired" in refused(token, now=NOW + delta).message


def test_expiry_uses_the_given_time_not_the_clock() -> None:
    past = 1_000_000_000.0
    token = issue_token(SECRET, sub="u1", name="Ann", role="viewer", now=past, ttl_s=60)
    assert verify_token(token, SECRET, now=past + 1).id == "u1"
    refused(token, now=time.time())


def test_wrong_signature_is_refused() -> None:
    token = issue_token("y" * 32, sub="u1", name="Ann", role="admin", now=NOW, ttl_s=60)
    refused(token)
    good = issue_token(SECRET, sub="u1", name="Ann", role="viewer", now=NOW, ttl_s=60)
    head, payload, sig = good.split(".")
    tampered_claims = b64url(json.dumps(claims(role="admin")).encode())
    refused(f"{head}.{tampered_claims}.{sig}")
    refused(f"{head}.{payload}.{sig[:-2]}")
    refused(f"{head}.{payload}.")


def test_each_secret_verifies_its_own_tokens_only() -> None:
    other = "z" * 32
    mine = issue_token(SECRET, sub="u1", name="Ann", role="viewer", now=NOW, ttl_s=60)
    theirs = issue_token(other, sub="u2", name="Bob", role="viewer", now=NOW, ttl_s=60)
    for _ in range(3):
        assert verify_token(mine, SECRET, now=NOW).id == "u1"
        assert verify_token(theirs, other, now=NOW).id == "u2"
        refused(mine, secret=other)
        refused(theirs)
    refused(mine, secret="-----BEGIN PUBLIC KEY-----\nMIIB\n-----END PUBLIC KEY-----\n")


def test_alg_none_is_refused() -> None:
    token = hand_made({"alg": "none", "typ": "JWT"}, claims(role="admin"), sign=None)
    assert token.endswith(".") and token.count(".") == 2
    refused(token)
    refused(hand_made({"alg": "None", "typ": "JWT"}, claims(role="admin"), sign=None))


@pytest.mark.parametrize(("alg", "digest"), [("HS384", "sha384"), ("HS512", "sha512")])
def test_other_hmac_algorithms_are_refused(alg: str, digest: str) -> None:
    """Correctly signed with the right secret, but not HS256."""
    token = hand_made({"alg": alg, "typ": "JWT"}, claims(), sign=SECRET, digest=digest)
    assert jwt.get_unverified_header(token)["alg"] == alg
    refused(token)


@pytest.mark.parametrize("alg", ["RS256", "ES256", "PS256", "EdDSA"])
def test_asymmetric_algorithm_headers_are_refused(alg: str) -> None:
    """Key confusion: an HMAC made with the secret under an asymmetric ``alg`` header."""
    refused(hand_made({"alg": alg, "typ": "JWT"}, claims(), sign=SECRET))


def test_hand_made_hs256_is_accepted() -> None:
    """The control for the two tests above: the same construction with HS256 passes."""
    token = hand_made({"alg": "HS256", "typ": "JWT"}, claims(), sign=SECRET)
    assert verify_token(token, SECRET, now=NOW).id == "u1"


@pytest.mark.parametrize("missing", ["sub", "role", "exp"])
def test_missing_claim_is_refused(missing: str) -> None:
    refused(jwt.encode(claims(**{missing: _DROP}), SECRET, algorithm="HS256"))


@pytest.mark.parametrize(
    "bad",
    [
        {"sub": ""},
        {"sub": 5},
        {"sub": None},
        {"sub": "s" * 129},
        {"exp": "99999999999"},
        {"exp": True},
        {"exp": None},
        {"name": 5},
        {"name": None},
    ],
)
def test_malformed_claims_are_refused(bad: dict[str, Any]) -> None:
    refused(jwt.encode(claims(**bad), SECRET, algorithm="HS256"))


@pytest.mark.parametrize("exp", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_exp_is_refused(exp: str) -> None:
    """A JSON number that never compares as past must not make an eternal token."""
    payload = f'{{"sub": "u1", "name": "Ann", "role": "viewer", "exp": {exp}}}'
    refused(hand_made({"alg": "HS256", "typ": "JWT"}, payload, sign=SECRET))


@pytest.mark.parametrize(
    "role", ["guest", "superuser", "Admin", "", 1, None, ["admin"], {"admin": 1}]
)
def test_unknown_role_is_refused(role: Any) -> None:
    refused(jwt.encode(claims(role=role), SECRET, algorithm="HS256"))


@pytest.mark.parametrize("rooms", ["demo", {"demo": True}, [1], ["demo", None], 5, True])
def test_non_list_rooms_are_refused(rooms: Any) -> None:
    refused(jwt.encode(claims(role="host", rooms=rooms), SECRET, algorithm="HS256"))


@pytest.mark.parametrize("token", ["", "a", "a.b", "a.b.c", "...", "é.é.é", "x" * 5000])
def test_garbage_is_refused(token: str) -> None:
    refused(token)


@pytest.mark.parametrize("token", ["\udcff\udcfe", "Bearer-\udcc3", "a.b.\udced\udca0\udc80"])
def test_undecodable_bytes_are_refused(token: str) -> None:
    """aiohttp hands over header bytes that are not UTF-8 as lone surrogates
    (``surrogateescape``); such a token is garbage like any other."""
    refused(token)


def test_shortest_allowed_secret_signs_and_verifies_cleanly() -> None:
    """RFC 7518 section 3.2: an HS256 key has at least 256 bits, and PyJWT warns on every
    sign and verify with a shorter one (an error in this suite), so the settings must
    refuse any secret that would make it warn."""
    with pytest.raises(ConfigError):
        Settings(secret="s" * 31, sandbox_shop=True).check()
    for secret in ("s" * 32, "é" * 16):
        Settings(secret=secret, sandbox_shop=True).check()
        token = issue_token(secret, sub="u1", name="Ann", role="viewer", now=NOW, ttl_s=60)
        assert verify_token(token, secret, now=NOW).id == "u1"


_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ !"


def pyjwt_payload(token: str, secret: str) -> bytes | None:
    """What PyJWT's own decoder makes of a token: its payload, or None if refused."""
    try:
        return bytes(jwt.PyJWS().decode_complete(token, secret, algorithms=["HS256"])["payload"])
    except jwt.PyJWTError:
        return None


def our_payload(token: str, secret: str) -> bytes | None:
    try:
        return tokens._hs256_payload(token, (secret.encode(),))
    except Error as err:
        assert err.code == "unauthorized"
        return None


@settings(max_examples=400, deadline=None)
@given(
    header=st.fixed_dictionaries(
        {"alg": st.sampled_from(["HS256", "HS384", "none", "RS256", "hs256"])},
        optional={"typ": st.sampled_from(["JWT", "jwt", 1]), "kid": st.text(max_size=4)},
    ),
    signer=st.sampled_from([SECRET, "y" * 32, None]),
    edits=st.lists(
        st.tuples(
            st.integers(0, 400), st.sampled_from(["set", "drop", "add"]), st.sampled_from(_ALPHABET)
        ),
        max_size=3,
    ),
)
def test_what_we_accept_pyjwt_accepts_and_the_other_way_round(
    header: dict[str, Any], signer: str | None, edits: list[tuple[int, str, str]]
) -> None:
    """Our HS256 check against PyJWT's on hand-made and mangled tokens: never more
    lenient; and a token PyJWT takes is taken here too (we are stricter only on
    padded segments, more than three parts and base64url that is not canonical, which
    no signer writes)."""
    token = hand_made(header, claims(), sign=signer)
    for at, how, char in edits:
        at %= len(token) + 1
        if how == "set" and at < len(token):
            token = token[:at] + char + token[at + 1 :]
        elif how == "drop":
            token = token[:at] + token[at + 1 :]
        else:
            token = token[:at] + char + token[at:]
    ours, theirs = our_payload(token, SECRET), pyjwt_payload(token, SECRET)
    if ours is not None:
        assert ours == theirs
    elif theirs is not None:
        assert "=" in token or token.count(".") != 2 or not canonical(token), token


def canonical(token: str) -> bool:
    """Whether each segment is base64url as an encoder writes it (no stray character,
    no spare bit set)."""
    for part in token.split("."):
        try:
            raw = base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
        except ValueError:
            return False
        if base64.urlsafe_b64encode(raw).rstrip(b"=") != part.encode():
            return False
    return True


# -- roles per room --------------------------------------------------------------------


def principal(role: Role, rooms: list[str] | None = None, id_: str = "p1") -> Principal:
    return Principal(id=id_, name="P", role=role, rooms=None if rooms is None else frozenset(rooms))


def test_host_without_the_room_is_a_viewer_there() -> None:
    host = principal("host", ["other"])
    assert host.role_in("demo", DEMO_HOST) == "viewer"
    assert host.role_in("other", DEMO_HOST) == "host"
    assert principal("host").role_in("demo", DEMO_HOST) == "viewer"
    assert principal("host", []).role_in("demo", None) == "viewer"


def test_host_is_host_in_the_rooms_they_own() -> None:
    owner = principal("host", ["other"], id_=DEMO_HOST)
    assert owner.role_in("demo", DEMO_HOST) == "host"
    assert principal("host", None, id_=DEMO_HOST).role_in("demo", DEMO_HOST) == "host"
    # owning is about the id, not the name or the token's room list
    assert principal("host", ["other"], id_="someone").role_in("demo", DEMO_HOST) == "viewer"


def test_moderator_only_in_listed_rooms() -> None:
    mod = principal("moderator", ["demo"], id_=DEMO_HOST)
    assert mod.role_in("demo", DEMO_HOST) == "moderator"
    assert mod.role_in("other", DEMO_HOST) == "viewer"
    # a moderator who happens to be the room's host id is still only a moderator
    assert principal("moderator", [], id_="m").role_in("m-room", "m") == "viewer"
    assert principal("moderator").role_in("demo", DEMO_HOST) == "viewer"


def test_admin_everywhere() -> None:
    admin = principal("admin")
    for room, host in [("demo", DEMO_HOST), ("other", "x"), ("r", None)]:
        assert admin.role_in(room, host) == "admin"
    assert principal("admin", ["only"]).role_in("demo", DEMO_HOST) == "admin"


def test_guest_and_viewer_stay_what_they_are() -> None:
    g = guest("abc")
    assert g.id == "guest:abc"
    assert g.role_in("demo", DEMO_HOST) == "guest"
    assert g.role_in("demo", g.id) == "guest"
    assert principal("viewer", ["demo"], id_=DEMO_HOST).role_in("demo", DEMO_HOST) == "viewer"


def test_token_round_trip_gives_the_room_role() -> None:
    token = issue_token(
        SECRET, sub="m1", name="Mo", role="moderator", now=NOW, ttl_s=9, rooms=["demo"]
    )
    mod = verify_token(token, SECRET, now=NOW)
    assert mod.role_in("demo", DEMO_HOST) == "moderator"
    assert mod.role_in("elsewhere", DEMO_HOST) == "viewer"


# -- over the WebSocket ----------------------------------------------------------------


@pytest.fixture
async def client(aiohttp_client: AiohttpClient) -> AsyncIterator[TestClient[Any, Any]]:
    app = create_app(Settings(secret=SECRET, demo=True, tick_ms=10))
    yield await aiohttp_client(app)


def token_for(role: Role, sub: str, *, ttl_s: int = 600, rooms: list[str] | None = None) -> str:
    return issue_token(
        SECRET, sub=sub, name=sub, role=role, now=time.time(), ttl_s=ttl_s, rooms=rooms
    )


class Peer:
    """A WebSocket client that matches replies to commands by id and keeps events aside."""

    def __init__(self, ws: ClientWebSocketResponse) -> None:
        self.ws = ws
        self.events: list[dict[str, Any]] = []
        self._next = 1

    async def send(self, op: str, **fields: Any) -> dict[str, Any]:
        cid = self._next
        self._next += 1
        await self.ws.send_str(json.dumps({"op": op, "id": cid, **fields}))
        while True:
            msg = await self.ws.receive(timeout=RECEIVE_TIMEOUT)
            assert msg.type is WSMsgType.TEXT, f"expected the reply to {op}, got {msg!r}"
            obj: dict[str, Any]
            for obj in split_frame(msg.data):
                if "type" in obj:
                    self.events.append(obj)
                    continue
                assert obj.get("id") == cid, f"unexpected reply {obj!r} to {op} #{cid}"
                assert set(obj) == ({"id", "ok", "data"} if obj["ok"] else {"id", "ok", "error"})
                return obj

    async def expect_close(self) -> int:
        msg = await self.ws.receive(timeout=RECEIVE_TIMEOUT)
        assert msg.type is WSMsgType.CLOSE, msg
        code: int = msg.data
        return code


async def connect(client: TestClient[Any, Any], token: str | None) -> tuple[Peer, dict[str, Any]]:
    peer = Peer(await client.ws_connect("/ws"))
    reply = await peer.send("connect", **({} if token is None else {"token": token}))
    return peer, reply


def error_code(reply: dict[str, Any]) -> str:
    assert reply["ok"] is False, reply
    code: str = reply["error"]["code"]
    return code


async def test_expired_token_gets_unauthorized_and_4001(client: TestClient[Any, Any]) -> None:
    peer, reply = await connect(client, token_for("viewer", "v1", ttl_s=-1))
    assert error_code(reply) == "unauthorized"
    assert await peer.expect_close() == 4001
    assert peer.ws.close_code == 4001


@pytest.mark.parametrize(
    "token",
    [
        issue_token("y" * 32, sub="v1", name="v", role="viewer", now=time.time(), ttl_s=600),
        hand_made({"alg": "none", "typ": "JWT"}, claims(exp=int(time.time()) + 600), sign=None),
        "not-a-token",
        jwt.encode(claims(role=["admin"], exp=int(time.time()) + 600), SECRET, algorithm="HS256"),
    ],
    ids=["wrong-secret", "alg-none", "garbage", "role-not-a-string"],
)
async def test_bad_token_gets_unauthorized_and_4001(
    client: TestClient[Any, Any], token: str
) -> None:
    peer, reply = await connect(client, token)
    assert error_code(reply) == "unauthorized"
    assert await peer.expect_close() == 4001


async def test_valid_token_connects(client: TestClient[Any, Any]) -> None:
    peer, reply = await connect(client, token_for("viewer", "v1"))
    assert reply["ok"] is True
    assert reply["data"]["user"] == {"id": "v1", "name": "v1", "role": "viewer"}
    assert (await peer.send("ping"))["ok"] is True
    await peer.ws.close()


@pytest.mark.parametrize(
    ("op", "fields"),
    [
        ("room.start", {}),
        ("room.end", {}),
        ("announce", {"text": "free stuff"}),
        ("mod.ban", {"user": "someone"}),
        ("mod.mute", {"user": "someone", "seconds": 60}),
        ("mod.slow", {"seconds": 5}),
    ],
)
async def test_viewer_may_not_run_the_room(
    client: TestClient[Any, Any], op: str, fields: dict[str, Any]
) -> None:
    peer, reply = await connect(client, token_for("viewer", "v1"))
    assert reply["ok"] is True
    assert error_code(await peer.send(op, room=DEMO_ROOM, **fields)) == "forbidden"
    # still connected, and the room is untouched
    joined = await peer.send("join", room=DEMO_ROOM)
    assert joined["ok"] is True
    snapshot = joined["data"]["snapshot"]
    assert (snapshot["status"], snapshot["announcement"]) == ("live", None)
    await peer.ws.close()


async def test_host_of_another_room_may_not_announce(client: TestClient[Any, Any]) -> None:
    peer, reply = await connect(client, token_for("host", "host-2", rooms=["other"]))
    assert reply["data"]["user"]["role"] == "host"
    assert error_code(await peer.send("announce", room=DEMO_ROOM, text="hi")) == "forbidden"
    assert error_code(await peer.send("room.end", room=DEMO_ROOM)) == "forbidden"
    await peer.ws.close()


async def test_demo_host_may_announce(client: TestClient[Any, Any]) -> None:
    """The control for the refusals above: the right token does get through."""
    peer, _ = await connect(client, token_for("host", DEMO_HOST, rooms=["other"]))
    reply = await peer.send("announce", room=DEMO_ROOM, text="welcome")
    assert reply["ok"] is True, reply
    assert type(reply["data"]["seq"]) is int and reply["data"]["seq"] >= 1
    await peer.ws.close()


async def test_moderator_of_the_room_may_ban(client: TestClient[Any, Any]) -> None:
    peer, _ = await connect(client, token_for("moderator", "m1", rooms=[DEMO_ROOM]))
    assert (await peer.send("mod.ban", room=DEMO_ROOM, user="troll"))["ok"] is True
    other, _ = await connect(client, token_for("moderator", "m2", rooms=["other"]))
    assert error_code(await other.send("mod.ban", room=DEMO_ROOM, user="troll")) == "forbidden"
    await peer.ws.close()
    await other.ws.close()


async def test_guest_may_join_but_not_chat(client: TestClient[Any, Any]) -> None:
    peer, reply = await connect(client, None)
    assert reply["ok"] is True
    user = reply["data"]["user"]
    assert user["role"] == "guest" and user["id"].startswith("guest:")
    assert error_code(await peer.send("chat", room=DEMO_ROOM, text="hello")) == "unauthorized"
    assert error_code(await peer.send("like", room=DEMO_ROOM, count=1)) == "unauthorized"
    joined = await peer.send("join", room=DEMO_ROOM)
    assert joined["ok"] is True, joined
    snapshot = joined["data"]["snapshot"]
    assert (snapshot["room"], snapshot["host"], snapshot["status"]) == (
        DEMO_ROOM,
        DEMO_HOST,
        "live",
    )
    assert error_code(await peer.send("chat", room=DEMO_ROOM, text="hello")) == "unauthorized"
    await peer.ws.close()


async def test_viewer_may_chat(client: TestClient[Any, Any]) -> None:
    """The control for the guest: a signed-in viewer's chat is accepted."""
    peer, _ = await connect(client, token_for("viewer", "v9"))
    reply = await peer.send("chat", room=DEMO_ROOM, text="hello")
    assert reply["ok"] is True, reply
    assert set(reply["data"]) == {"msg_id", "seq"}
    await peer.ws.close()
