"""Attacks found against the server (issue 16), each reproduced: they must fail."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest

from livecommerce.auth import verify_token
from livecommerce.cli import _log_setup
from livecommerce.client import ClientError
from livecommerce.errors import Error
from livecommerce.http.logs import redact
from livecommerce.moderation.wordfilter import Term, WordFilter
from livecommerce.protocol import decode, dumps
from livecommerce.rooms.state import clean_text
from tests.conftest import HOST, MOD, SECRET, ClientFactory, LiveServer, ServerFactory, token
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


# -- hardening: headers, metrics, logs, the media directory ------------------------------


async def test_headers_of_every_answer_and_of_the_staff_pages(start_server: ServerFactory) -> None:
    server = await start_server()
    async with aiohttp.ClientSession() as s:
        for path in ("/healthz", "/api/rooms", "/watch.html", "/css/base.css", "/api/nothing"):
            async with s.get(f"http://127.0.0.1:{server.port}{path}") as resp:
                assert resp.headers["Server"] == "livecommerce", path  # no version
                assert resp.headers["X-Content-Type-Options"] == "nosniff", path
        for page in ("studio.html", "console.html"):
            async with s.get(f"http://127.0.0.1:{server.port}/{page}") as resp:
                assert resp.status == 200
                assert resp.headers["X-Frame-Options"] == "DENY"
                csp = resp.headers["Content-Security-Policy"]
                assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp


async def test_metrics_need_the_metrics_token_or_an_admin(start_server: ServerFactory) -> None:
    open_demo = await start_server()
    assert (await http_text(open_demo, "/metrics"))[0] == 200  # a demo shows them
    production = await start_server(demo=False, sandbox_shop=True)
    assert (await http_text(production, "/metrics"))[0] == 401
    assert (await http_text(production, "/metrics", token("v1")))[0] == 403
    status, text = await http_text(production, "/metrics", token("ops", "admin"))
    assert status == 200 and "livecommerce_connections" in text
    scraped = await start_server(demo=False, sandbox_shop=True, metrics_token="scrape-me")
    assert (await http_text(scraped, "/metrics", "wrong"))[0] == 401
    assert (await http_text(scraped, "/metrics", token("ops", "admin")))[0] == 401
    assert (await http_text(scraped, "/metrics", "scrape-me"))[0] == 200


async def http_text(server: LiveServer, path: str, tok: str | None = None) -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {tok}"} if tok else {}
    async with (
        aiohttp.ClientSession() as s,
        s.get(f"http://127.0.0.1:{server.port}{path}", headers=headers) as resp,
    ):
        return resp.status, await resp.text()


def test_the_access_log_names_no_order_or_session() -> None:
    assert redact("/sandbox/checkout/demo.0123456789abcdef0123/pay") == "/sandbox/checkout/…/pay"
    assert redact("/api/orders/demo.0123456789abcdef0123") == "/api/orders/…"
    assert redact("/api/orders/events") == "/api/orders/events"
    assert redact("/api/rooms/demo/whep/AbC-123_x") == "/api/rooms/demo/whep/…"
    assert redact("/api/rooms/demo/whip/AbC") == "/api/rooms/demo/whip/…"
    assert redact("/api/rooms/demo/whep") == "/api/rooms/demo/whep"


def test_ice_checks_are_not_logged_at_info() -> None:
    """aioice logs every connectivity check, with both addresses, at INFO."""
    _log_setup("INFO")
    for name in ("aioice.ice", "aiortc.rtcpeerconnection"):
        assert not logging.getLogger(name).isEnabledFor(logging.INFO)


async def test_a_link_in_the_media_directory_serves_nothing_outside_it(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    media = tmp_path / "media"
    (media / "demo" / "s1").mkdir(parents=True)
    outside = tmp_path / "secret.txt"
    outside.write_text("#EXTM3U\nnot for you\n")
    (media / "demo" / "live.m3u8").symlink_to(outside)
    (media / "demo" / "s1" / "1.m4s").symlink_to(outside)
    (media / "demo" / "s1" / "2.m4s").write_bytes(b"segment")
    server = await start_server(media_dir=str(media))
    assert (await http_text(server, "/hls/demo/live.m3u8"))[0] == 404
    assert (await http_text(server, "/hls/demo/s1/1.m4s"))[0] == 404
    assert (await http_text(server, "/hls/demo/s1/2.m4s"))[0] == 200  # a real file is served


async def test_a_moderator_cannot_mute_or_ban_the_host_admins_or_moderators(
    start_server: ServerFactory, connect: ClientFactory
) -> None:
    server = await start_server()
    mod = await connect(server, MOD)
    other_mod = await connect(server, token("mod-2", "moderator", rooms=["demo"]))
    admin = await connect(server, token("ops", "admin"))
    host = await connect(server, HOST)
    viewer = await connect(server, token("v1"))
    for c in (mod, other_mod, admin, host, viewer):
        await c.join("demo")
    for target in ("demo-host", "mod-2", "ops"):
        for op, extra in (("mod.mute", {"seconds": 60}), ("mod.ban", {})):
            with pytest.raises(ClientError) as refused:
                await mod.request(op, room="demo", user=target, **extra)
            assert refused.value.code == "forbidden", (op, target)
    await mod.request("mod.mute", room="demo", user="v1", seconds=60)  # a viewer: yes
    await host.request("mod.mute", room="demo", user="mod-2", seconds=60)  # down the ranks
    with pytest.raises(ClientError) as refused:
        await host.request("mod.ban", room="demo", user="ops")
    assert refused.value.code == "forbidden"
    with pytest.raises(ClientError) as refused:
        await admin.request("mod.ban", room="demo", user="demo-host")
    assert refused.value.code == "forbidden"
    await admin.request("mod.ban", room="demo", user="mod-1")


async def test_only_allowed_origins_open_the_live_connection(start_server: ServerFactory) -> None:
    server = await start_server(allowed_origins=("https://shop.example",))
    url = f"http://127.0.0.1:{server.port}/ws"
    async with aiohttp.ClientSession() as s:
        for origin, ok in (
            (None, True),  # an app
            (f"http://127.0.0.1:{server.port}", True),  # our own pages
            ("https://shop.example", True),  # allowed
            ("https://evil.test", False),
            (f"http://127.0.0.1:{server.port + 1}", False),
            ("null", False),
        ):
            headers = {"Origin": origin} if origin else {}
            if ok:
                ws = await s.ws_connect(url, headers=headers)
                await ws.close()
            else:
                with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                    await s.ws_connect(url, headers=headers)
                assert refused.value.status == 403, origin


# -- hardening: chat text and the word filter ---------------------------------------------


def test_chat_drops_bidi_controls_and_refuses_text_that_shows_nothing() -> None:
    evil = "price \u202e0001$\u202c only"
    assert clean_text(evil, 500) == "price 0001$ only"
    assert clean_text("\u2067hi\u2069 \u200f", 500) == "hi"
    for blank in ("\u200b\u200b", "\u202e", "\u3164\u3164", " \u2800 ", "\u0301\u0301", "\ufeff"):
        with pytest.raises(Error, match="empty"):
            clean_text(blank, 500)
    assert clean_text("日本語 ok", 500) == "日本語 ok"
    assert clean_text("👍", 500) == "👍"


def test_the_filter_folds_cyrillic_and_greek_look_alikes_and_leetspeak_when_asked() -> None:
    words = WordFilter([Term("spam", "block"), Term("bad", "mask")])
    for disguised in ("ѕрам", "SPАM", "ѕ.р.α.м", "ВАD deal"):  # Cyrillic and Greek letters
        assert words.check(disguised).action != "allow", disguised
    assert words.check("sp4m").action == "allow"  # leetspeak only with the option
    leet = WordFilter([Term("spam", "block"), Term("bad", "mask")], leet=True)
    assert leet.check("buy $p4m").action == "block"
    assert leet.check("so 8@d").text == "so ***"
    assert leet.check("price 100").action == "allow"


async def test_the_leet_option_is_set_per_room(
    start_server: ServerFactory, connect: ClientFactory
) -> None:
    server = await start_server()
    mod = await connect(server, MOD)
    viewer = await connect(server, token("v1"))
    await viewer.join("demo")
    await mod.request("mod.filter", room="demo", add=["spam"], action="block")
    await viewer.request("chat", room="demo", text="sp4m")  # passes: no leet folding yet
    await mod.request("mod.filter", room="demo", leet=True)
    with pytest.raises(ClientError) as refused:
        await viewer.request("chat", room="demo", text="$p4m")
    assert refused.value.code == "blocked_content"


# -- hardening: rate limits, connections, presence ----------------------------------------


async def test_every_staff_command_joins_and_creations_are_rate_limited(
    start_server: ServerFactory, connect: ClientFactory
) -> None:
    server = await start_server(limits={"staff_burst": 3, "join_burst": 3, "create_burst": 2})
    host = await connect(server, HOST)
    for i in range(3):
        await host.request("announce", room="demo", text=f"a{i}")
    with pytest.raises(ClientError) as refused:
        await host.request("mod.slow", room="demo", seconds=0)  # the same bucket as announce
    assert refused.value.code == "rate_limited"
    joiner = await connect(server, token("j1"))
    for _ in range(3):
        await joiner.join("demo")
    with pytest.raises(ClientError) as refused:
        await joiner.join("demo")
    assert refused.value.code == "rate_limited"
    for i in range(2):
        status, _ = await http_json(server, "POST", "/api/rooms", HOST, {"title": f"t{i}"})
        assert status == 201
    status, got = await http_json(server, "POST", "/api/rooms", HOST, {"title": "t3"})
    assert status == 429 and got["error"]["code"] == "rate_limited"


async def test_a_word_filter_holds_a_bounded_number_of_terms(
    start_server: ServerFactory, connect: ClientFactory
) -> None:
    server = await start_server(limits={"max_filter_terms": 150})
    mod = await connect(server, MOD)
    await mod.request("mod.filter", room="demo", add=[f"w{i}" for i in range(100)], action="flag")
    with pytest.raises(ClientError) as refused:
        await mod.request(
            "mod.filter", room="demo", add=[f"x{i}" for i in range(100)], action="flag"
        )
    assert refused.value.code == "limit_exceeded"
    got = await mod.request("mod.filter", room="demo", add=["last"], action="flag")
    assert len(got["terms"]) == 101


async def test_one_user_has_a_bounded_number_of_connections_and_counts_once(
    start_server: ServerFactory, connect: ClientFactory
) -> None:
    server = await start_server(limits={"connections_per_user": 3})
    same = [await connect(server, token("u1"), reconnect=False) for _ in range(3)]
    with pytest.raises(ClientError) as refused:
        await connect(server, token("u1"), reconnect=False)
    assert refused.value.code == "rate_limited"
    for c in same:
        await c.join("demo")
    other = await connect(server, token("u2"))
    snap = await other.join("demo")
    assert snap["viewers"] == 2  # u1 in three tabs is one viewer
    await same[0].close()
    await connect(server, token("u1"), reconnect=False)  # a slot again
