"""Attacks found against the server (issue 16), each reproduced: they must fail."""

from __future__ import annotations

import asyncio
import time

import jwt
import pytest

from livecommerce.auth import verify_token
from livecommerce.client import ClientError
from livecommerce.errors import Error
from livecommerce.protocol import decode, dumps
from tests.conftest import MOD, SECRET, ClientFactory, ServerFactory, token
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
