"""Attacks found against the server (issue 16), each reproduced: they must fail."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import jwt
import pytest

from livecommerce.auth import verify_token
from livecommerce.client import ClientError
from livecommerce.errors import Error
from livecommerce.protocol import decode, dumps
from tests.conftest import MOD, SECRET, ClientFactory, LiveServer, ServerFactory, token
from tests.test_contract_stores import CONTROLS

# -- hole 2: a user id that breaks a frame ---------------------------------------------

FORGED = '{"type":"chat","room":"demo","user":{"id":"demo-host","name":"Host"},"text":"pay here"}'


@pytest.mark.parametrize("op", ["mod.mute", "mod.ban", "mod.unban"])
def test_a_user_field_with_any_control_character_is_refused(op: str) -> None:
    for c in [*CONTROLS, "\u200b", "\ufeff", "\u202e"]:  # and invisible format characters
        cmd = {"op": op, "id": 1, "room": "demo", "user": f"x{c}{FORGED}", "seconds": 60}
        with pytest.raises(Error) as refused:
            decode(dumps(cmd))
        assert refused.value.code == "bad_request", repr(c)
    ok = decode(dumps({"op": op, "id": 1, "room": "demo", "user": "ünï-çødé 用户", "seconds": 60}))
    assert ok.args["user"] == "ünï-çødé 用户"


def test_a_token_whose_sub_holds_a_control_character_is_refused() -> None:
    for c in CONTROLS:
        claims = {"sub": f"u{c}1", "role": "viewer", "exp": time.time() + 60}
        with pytest.raises(Error, match="bad sub"):
            verify_token(jwt.encode(claims, SECRET, algorithm="HS256"), SECRET, now=time.time())


async def test_a_moderator_cannot_inject_a_line_through_a_user_id(
    start_server: ServerFactory, connect: ClientFactory
) -> None:
    """The attack on Redis: ``mod.ban`` with ``user`` = ``x\\n<a chat from Host>``."""
    server = await start_server()
    mod = await connect(server, MOD)
    viewer = await connect(server, token("v1"))
    await mod.join("demo")
    await viewer.join("demo")
    for op in ("mod.ban", "mod.mute"):
        with pytest.raises(ClientError) as refused:
            await mod.request(op, room="demo", user=f"x\n{FORGED}", seconds=60)
        assert refused.value.code == "bad_request"
    reply = await viewer.request("chat", room="demo", text="still here")
    seen = await viewer.next_event(lambda e: e.get("type") == "chat")
    assert seen["seq"] == reply["seq"] and seen["text"] == "still here"  # nothing before it
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(viewer.next_event(lambda e: e.get("type") == "chat"), 0.3)


# -- hole 3: the demo's tokens in production -------------------------------------------


async def http_json(
    server: LiveServer, method: str, path: str, tok: str | None = None, body: Any = None
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {tok}"} if tok else {}
    url = f"http://127.0.0.1:{server.port}{path}"
    async with (
        aiohttp.ClientSession() as s,
        s.request(method, url, json=body, headers=headers) as resp,
    ):
        return resp.status, await resp.json()


async def test_a_demo_server_with_the_production_secret_mints_nothing_production_takes(
    start_server: ServerFactory,
) -> None:
    """The attack: ``serve --demo`` run with the production secret, its demo sign-in
    asked for an admin token, the token used on production."""
    demo = await start_server()  # --demo, with SECRET (the production secret here)
    production = await start_server(demo=False, sandbox_shop=True)
    status, got = await http_json(demo, "POST", "/api/demo/token", body={"role": "admin"})
    assert status == 200
    admin = got["token"]
    assert jwt.decode(admin, options={"verify_signature": False})["demo"] is True
    status, _ = await http_json(demo, "GET", "/api/admin/dead-letters", admin)
    assert status == 200  # the demo takes its own token
    status, refused = await http_json(production, "GET", "/api/admin/dead-letters", admin)
    assert status == 401 and refused["error"]["code"] == "unauthorized"
    with pytest.raises(Error, match="signature"):  # not signed with the production secret
        verify_token(admin, SECRET, now=time.time())
    # and a token that says demo is refused by production whoever signed it
    forged = token("ops", "admin", extra={"demo": True})
    with pytest.raises(Error, match="demo token"):
        verify_token(forged, SECRET, now=time.time())
    status, _ = await http_json(production, "GET", "/api/admin/dead-letters", token("ops", "admin"))
    assert status == 200


# -- hardening: tokens ------------------------------------------------------------------


def test_a_signature_with_extra_or_changed_characters_is_refused() -> None:
    good = token("u1")
    head, body, sig = good.split(".")
    assert verify_token(good, SECRET, now=time.time()).id == "u1"
    last = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".index(sig[-1])
    spare = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"[last ^ 1]
    for bad in (
        f"{head}.{body}.{sig[:10]}!{sig[10:]}",  # the decoder skipped the "!"
        f"{head}.{body}.{sig[:10]}~{sig[10:]}",
        f"{head}.{body}.{sig[:-1]}{spare}",  # a spare bit of the last character
        f"{head}.{body} .{sig}",
    ):
        with pytest.raises(Error) as refused:
            verify_token(bad, SECRET, now=time.time())
        assert refused.value.code == "unauthorized", bad


async def test_audience_and_issuer_are_checked_when_configured(
    start_server: ServerFactory, connect: ClientFactory
) -> None:
    server = await start_server(token_audience="shop-a", token_issuer="https://id.shop-a")
    good = {"aud": "shop-a", "iss": "https://id.shop-a"}
    for claims, ok in (
        (good, True),
        ({"aud": ["other", "shop-a"], "iss": "https://id.shop-a"}, True),
        ({"iss": "https://id.shop-a"}, False),
        ({"aud": "shop-b", "iss": "https://id.shop-a"}, False),
        ({"aud": "shop-a"}, False),
        ({"aud": "shop-a", "iss": "https://evil"}, False),
    ):
        status, _ = await http_json(server, "GET", "/api/orders/demo.x", token("u1", extra=claims))
        assert (status != 401) is ok, claims
        if not ok:
            with pytest.raises(ClientError) as refused:
                await connect(server, token("u1", extra=claims))
            assert refused.value.code == "unauthorized"
    status, got = await http_json(server, "POST", "/api/demo/token", body={"role": "viewer"})
    assert status == 200
    client = await connect(server, got["token"])  # the demo's own carry both
    assert client.user is not None and client.user["role"] == "viewer"


async def test_a_token_that_expires_while_connected_ends_the_session_unless_refreshed(
    start_server: ServerFactory, connect: ClientFactory
) -> None:
    server = await start_server()
    lapsing = await connect(server, token("u1", ttl_s=2), reconnect=False)
    kept = await connect(server, token("u2", ttl_s=2), reconnect=False)
    await lapsing.join("demo")
    await kept.join("demo")
    with pytest.raises(ClientError) as refused:  # another user's token: no
        await kept.request("refresh", token=token("u3", ttl_s=60))
    assert refused.value.code == "forbidden"
    with pytest.raises(ClientError) as refused:  # a higher role: no
        await kept.request("refresh", token=token("u2", "admin", ttl_s=60))
    assert refused.value.code == "forbidden"
    fresh = await kept.request("refresh", token=token("u2", ttl_s=60))
    assert fresh["user"]["id"] == "u2" and fresh["exp"] > time.time() + 30
    deadline = time.monotonic() + 10
    while lapsing.close_code is None and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert lapsing.close_code == 4001
    assert kept.close_code is None
    await kept.request("chat", room="demo", text="still signed in")
