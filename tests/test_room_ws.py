"""The live room over a real WebSocket, on both engines."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import aiohttp
import pytest

from livecommerce.client import ClientError, ConnectionLost
from livecommerce.http import ws as ws_module
from livecommerce.http.keys import SERVICE
from livecommerce.http.ws import _ClientIds
from livecommerce.protocol import dumps, split_frame
from tests.conftest import HOST, MOD, ClientFactory, LiveServer, ServerFactory, token


def is_type(kind: str) -> Any:
    return lambda e: e["type"] == kind


async def raw_ws(
    session: aiohttp.ClientSession, server: LiveServer, tok: str | None = None
) -> aiohttp.ClientWebSocketResponse:
    ws = await session.ws_connect(f"http://127.0.0.1:{server.port}/ws")
    await ws.send_str(dumps({"op": "connect", "id": 0, **({"token": tok} if tok else {})}).decode())
    reply = split_frame(await ws.receive_str(timeout=5))
    assert reply[0]["ok"], reply
    return ws


async def reply_to(ws: aiohttp.ClientWebSocketResponse, cid: int) -> dict[str, Any]:
    """The reply to command ``cid``, past any event frames before it."""
    while True:
        for line in split_frame(await ws.receive_str(timeout=5)):
            if line.get("id") == cid and "type" not in line:
                reply: dict[str, Any] = line
                return reply


async def test_chat_reaches_every_member_with_one_seq(
    start_server: ServerFactory, connect: ClientFactory
) -> None:
    server = await start_server()
    host = await connect(server, HOST)
    viewers = [await connect(server, token(f"v{i}")) for i in range(3)]
    guest = await connect(server)
    for c in [host, *viewers, guest]:
        snap = await c.join("demo")
        assert snap["status"] == "live" and snap["room"] == "demo"
    reply = await viewers[0].request("chat", room="demo", text="  hello  ")
    for c in [host, *viewers, guest]:
        event = await c.next_event(is_type("chat"))
        assert event["seq"] == reply["seq"] and event["msg_id"] == reply["msg_id"]
        assert event["text"] == "hello"
        assert event["user"] == {"id": "v0", "name": "v0"}


async def test_a_tick_goes_out_as_one_frame_with_likes_coalesced(
    start_server: ServerFactory, connect: ClientFactory
) -> None:
    server = await start_server(tick_ms=300)
    senders = [await connect(server, token(f"u{i}")) for i in range(5)]
    async with aiohttp.ClientSession() as session:
        watcher = await raw_ws(session, server)
        await watcher.send_str('{"op":"join","id":1,"room":"demo"}')
        assert split_frame(await watcher.receive_str(timeout=5))[0]["ok"]
        await asyncio.sleep(0.35)  # let the join's own presence/likes tick pass
        while True:  # drain what the first tick sent
            try:
                await watcher.receive_str(timeout=0.05)
            except TimeoutError:
                break
        commands: list[tuple[str, dict[str, Any]]] = [
            ("chat", {"text": "hi"}),
            ("like", {"count": 10}),
            ("like", {"count": 5}),
        ]
        await asyncio.gather(
            *(s.request(op, room="demo", **f) for s in senders for op, f in commands)
        )
        frames: list[list[dict[str, Any]]] = []
        chats = 0
        while chats < 5:
            frame = split_frame(await watcher.receive_str(timeout=5))
            frames.append(frame)
            chats += sum(e["type"] == "chat" for e in frame)
        await watcher.close()
    # 15 commands arrived within one tick or two: at most two frames carried them,
    # and each frame carried at most one likes total.
    assert len(frames) <= 2, frames
    likes = [e for f in frames for e in f if e["type"] == "likes"]
    assert 1 <= len(likes) <= len(frames)
    assert all(sum(e["type"] == "likes" for e in f) <= 1 for f in frames)
    totals = [e["total"] for e in likes]
    if len(frames) == 2 and len(likes) == 1:  # the likes may land in the next tick
        totals.append((await senders[0].request("ping"), 75)[1])
    assert totals[-1] == 75


async def test_presence_counts_members(start_server: ServerFactory, connect: ClientFactory) -> None:
    server = await start_server()
    a = await connect(server, token("a"))
    await a.join("demo")
    others = [await connect(server) for _ in range(3)]
    for c in others:
        await c.join("demo")
    event = await a.next_event(lambda e: e["type"] == "presence" and e["viewers"] == 4)
    assert event["viewers"] == 4
    await others[0].leave("demo")
    await a.next_event(lambda e: e["type"] == "presence" and e["viewers"] == 3)


async def test_join_with_since_replays_missed_events_in_order(
    start_server: ServerFactory, connect: ClientFactory
) -> None:
    server = await start_server()
    talkers = [await connect(server, token(f"t{i}")) for i in range(3)]
    for i in range(3):
        await talkers[i].request("chat", room="demo", text=f"before {i}")
    async with aiohttp.ClientSession() as session:
        ws = await raw_ws(session, server)
        await ws.send_str('{"op":"join","id":1,"room":"demo"}')
        snap = split_frame(await ws.receive_str(timeout=5))[0]["data"]["snapshot"]
        assert [m["text"] for m in snap["recent"]] == ["before 0", "before 1", "before 2"]
        await ws.close()
        missed = [
            (await talkers[i % 3].request("chat", room="demo", text=f"missed {i}"))["seq"]
            for i in range(6)
        ]
        ws = await raw_ws(session, server)
        await ws.send_str(
            dumps(
                {
                    "op": "join",
                    "id": 2,
                    "room": "demo",
                    "since": snap["seq"],
                    "epoch": snap["epoch"],
                }
            ).decode()
        )
        events: list[dict[str, Any]] = []
        while len([e for e in events if e.get("type") == "chat"]) < 6:
            events += split_frame(await ws.receive_str(timeout=5))
        reply = events.pop(0)
        assert reply["id"] == 2 and reply["data"]["recovered"] is True
        seqs = [e["seq"] for e in events if "seq" in e]
        assert seqs == missed == list(range(snap["seq"] + 1, snap["seq"] + 7))
        # live delivery goes on from there, without a repeat
        fresh = await connect(server, token("fresh"))
        live = await fresh.request("chat", room="demo", text="live")
        while True:
            frame = split_frame(await ws.receive_str(timeout=5))
            got = [e["seq"] for e in frame if "seq" in e]
            if got:
                assert got == [live["seq"]]
                break
        await ws.close()


async def test_join_without_full_history_gets_a_fresh_snapshot(
    start_server: ServerFactory, connect: ClientFactory
) -> None:
    server = await start_server(history_size=5)
    talker = await connect(server, token("t"))
    listener = await connect(server, token("l"))
    snap = await listener.join("demo")
    for i in range(3):  # respect the chat burst
        await talker.request("chat", room="demo", text=f"m{i}")
    host = await connect(server, HOST)
    for i in range(8):
        await host.request("announce", room="demo", text=f"a{i}")
    async with aiohttp.ClientSession() as session:
        ws = await raw_ws(session, server)
        await ws.send_str(
            dumps(
                {
                    "op": "join",
                    "id": 1,
                    "room": "demo",
                    "since": snap["seq"],
                    "epoch": snap["epoch"],
                }
            ).decode()
        )
        reply = await reply_to(ws, 1)
        assert reply["data"]["recovered"] is False
        assert reply["data"]["snapshot"]["seq"] == snap["seq"] + 11
        assert reply["data"]["snapshot"]["announcement"]["text"] == "a7"
        await ws.send_str(
            dumps({"op": "join", "id": 2, "room": "demo", "since": 0, "epoch": "wrong"}).decode()
        )
        reply = await reply_to(ws, 2)  # the room's events of the first join may come first
        assert reply["data"]["recovered"] is False
        await ws.close()


async def test_client_library_resumes_after_a_drop_without_a_gap(
    start_server: ServerFactory, connect: ClientFactory
) -> None:
    server = await start_server()
    talker = await connect(server, token("t"))
    listener = await connect(server, token("l"))
    await listener.join("demo")
    first = await talker.request("chat", room="demo", text="one")
    assert (await listener.next_event(is_type("chat")))["seq"] == first["seq"]
    assert listener._ws is not None
    await listener._ws.close(code=1012)  # as if the network dropped
    sent = [await talker.request("chat", room="demo", text=t) for t in ("two", "three")]
    resumed = await listener.next_event(is_type("client.resumed"))
    assert resumed["recovered"] is True
    seqs = [(await listener.next_event(is_type("chat")))["seq"] for _ in sent]
    assert seqs == [s["seq"] for s in sent] == [first["seq"] + 1, first["seq"] + 2]


@pytest.mark.parametrize(
    "frame",
    [
        b"not json",
        b"[1, 2]",
        b'{"op": 5, "id": 3}',
        b'{"op": "fly", "id": 3}',
        b'{"op": "chat", "id": 3, "room": "demo"}',
        b'{"op": "chat", "id": 3, "room": "demo", "text": 7}',
        b'{"op": "like", "id": 3, "room": "demo", "count": true}',
        b'{"op": "join", "id": 3, "room": "NOT A ROOM"}',
        b'{"op": "connect", "id": 3}',
    ],
)
async def test_bad_commands_get_bad_request_and_the_connection_stays_usable(
    start_server: ServerFactory, frame: bytes
) -> None:
    server = await start_server()
    async with aiohttp.ClientSession() as session:
        ws = await raw_ws(session, server, token("v"))
        await ws.send_bytes(frame)
        await ws.send_str('{"op":"ping","id":4}')
        replies: list[dict[str, Any]] = []
        while not any(r.get("id") == 4 for r in replies):
            replies += split_frame(await ws.receive_str(timeout=5))
        if b'"id": 3' in frame:
            assert replies[0] == {"id": 3, "ok": False, "error": replies[0]["error"]}
            assert replies[0]["error"]["code"] == "bad_request"
        assert replies[-1] == {"id": 4, "ok": True, "data": {}}
        await ws.close()


async def test_frame_size_limits(start_server: ServerFactory) -> None:
    server = await start_server()
    async with aiohttp.ClientSession() as session:
        ws = await raw_ws(session, server, token("v"))
        big = dumps({"op": "chat", "id": 9, "room": "demo", "text": "x" * 9000}).decode()
        await ws.send_str(big)
        reply = split_frame(await ws.receive_str(timeout=5))[0]
        assert reply["id"] == 9 and reply["error"]["code"] == "too_large"
        await ws.send_str("y" * (70 * 1024))
        msg = await ws.receive(timeout=5)
        assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 1009


async def test_rate_limits_on_chat_and_likes(
    start_server: ServerFactory, connect: ClientFactory
) -> None:
    server = await start_server()
    c = await connect(server, token("v"))
    for i in range(3):
        await c.request("chat", room="demo", text=str(i))
    with pytest.raises(ClientError) as err:
        await c.request("chat", room="demo", text="one too many")
    assert err.value.code == "rate_limited"
    with pytest.raises(ClientError) as err:  # the shape is checked before the limits
        await c.request("like", room="demo", count=51)
    assert err.value.code == "bad_request"
    for _ in range(5):
        await c.request("like", room="demo", count=50)
    with pytest.raises(ClientError) as err:
        await c.request("like", room="demo", count=1)
    assert err.value.code == "rate_limited"


async def test_sustained_abuse_closes_4008(start_server: ServerFactory) -> None:
    server = await start_server()
    async with aiohttp.ClientSession() as session:
        ws = await raw_ws(session, server, token("v"))
        for i in range(40):
            await ws.send_str(dumps({"op": "nope", "id": i}).decode())
        while True:
            msg = await ws.receive(timeout=5)
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
        assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 4008


async def test_connect_must_come_first_and_in_time(start_server: ServerFactory) -> None:
    server = await start_server()
    url = f"http://127.0.0.1:{server.port}/ws"
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(url)
        await ws.send_str('{"op":"ping","id":1}')
        msg = await ws.receive(timeout=5)
        assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 4001
        ws = await session.ws_connect(url)
        msg = await ws.receive(timeout=5)  # the test server waits 1 s for connect
        assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 4001
        ws = await session.ws_connect(url)
        await ws.send_str(dumps({"op": "connect", "id": 1, "token": token("x", ttl_s=-5)}).decode())
        reply = split_frame(await ws.receive_str(timeout=5))[0]
        assert reply["error"]["code"] == "unauthorized"
        msg = await ws.receive(timeout=5)
        assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 4001


async def test_moderation_mute_ban_slow_and_delete(
    start_server: ServerFactory, connect: ClientFactory
) -> None:
    server = await start_server()
    mod = await connect(server, MOD)
    user = await connect(server, token("bob"))
    other = await connect(server, token("ann"))
    for c in (mod, user, other):
        await c.join("demo")
    said = await user.request("chat", room="demo", text="spam")
    await other.next_event(is_type("chat"))
    await mod.request("mod.delete", room="demo", msg_id=said["msg_id"])
    gone = await other.next_event(is_type("chat.deleted"))
    assert gone["msg_id"] == said["msg_id"]
    with pytest.raises(ClientError) as err:
        await mod.request("mod.delete", room="demo", msg_id=said["msg_id"])
    assert err.value.code == "not_found"

    await mod.request("mod.mute", room="demo", user="bob", seconds=60)
    note = await user.next_event(is_type("moderation"))
    assert note["action"] == "muted" and note["until"] > 0
    with pytest.raises(ClientError) as err:
        await user.request("chat", room="demo", text="let me talk")
    assert err.value.code == "muted" and err.value.data["until"] == note["until"]

    await mod.request("mod.slow", room="demo", seconds=30)
    await other.request("chat", room="demo", text="first")
    with pytest.raises(ClientError) as err:
        await other.request("chat", room="demo", text="second")
    assert err.value.code == "slow_mode"
    for text in ("staff", "are not slowed"):
        await mod.request("chat", room="demo", text=text)
    await mod.request("mod.slow", room="demo", seconds=0)

    await mod.request("mod.ban", room="demo", user="ann")
    note = await other.next_event(is_type("moderation"))
    assert note["action"] == "banned"
    with pytest.raises(ClientError) as err:
        await other.request("chat", room="demo", text="hello?")
    assert err.value.code == "banned"
    with pytest.raises((ClientError, ConnectionLost)) as err2:
        await other.join("demo")
    assert isinstance(err2.value, ClientError) and err2.value.code == "banned"
    await mod.request("mod.unban", room="demo", user="ann")
    await other.join("demo")

    with pytest.raises(ClientError) as err:
        await user.request("mod.ban", room="demo", user="ann")
    assert err.value.code == "forbidden"
    for op, extra in (("mod.ban", {}), ("mod.mute", {"seconds": 5})):
        with pytest.raises(ClientError) as err:
            await mod.request(op, room="demo", user="demo-host", **extra)
        assert err.value.code == "forbidden"


async def test_room_lifecycle_over_http_and_ws(
    start_server: ServerFactory, connect: ClientFactory
) -> None:
    server = await start_server()
    base = f"http://127.0.0.1:{server.port}"
    host_tok = token("h1", "host")
    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"{base}/api/rooms",
            json={"title": "My show", "id": "show-1"},
            headers={"Authorization": f"Bearer {host_tok}"},
        ) as resp:
            assert resp.status == 201
            room = await resp.json()
            assert room["status"] == "scheduled" and room["host"] == "h1"
        async with session.post(
            f"{base}/api/rooms",
            json={"title": "Again", "id": "show-1"},
            headers={"Authorization": f"Bearer {host_tok}"},
        ) as resp:
            assert resp.status == 409
            assert (await resp.json())["error"]["code"] == "conflict"
        async with session.post(
            f"{base}/api/rooms",
            json={"title": "x"},
            headers={"Authorization": f"Bearer {token('v')}"},
        ) as resp:
            assert resp.status == 403
        async with session.post(
            f"{base}/api/rooms",
            json={"id": "no-title"},
            headers={"Authorization": f"Bearer {host_tok}"},
        ) as resp:
            assert resp.status == 400
            assert (await resp.json())["error"]["code"] == "bad_request"
        for path in ("/api/rooms/nope", "/api/nothing/here", "/nope.html"):
            async with session.get(base + path) as resp:
                assert resp.status == 404
                assert (await resp.json())["error"]["code"] == "not_found"
    host = await connect(server, host_tok)
    viewer = await connect(server, token("v"))
    async with (  # a show ended before it began
        aiohttp.ClientSession() as session,
        session.post(
            f"{base}/api/rooms",
            json={"title": "Never", "id": "never"},
            headers={"Authorization": f"Bearer {host_tok}"},
        ) as resp,
    ):
        assert resp.status == 201
    await viewer.join("never")
    await host.request("room.end", room="never")
    assert (await viewer.next_event(is_type("room.ended")))["room"] == "never"
    await host.request("room.end", room="never")  # again: nothing more happens
    with pytest.raises(ClientError) as err:
        await host.request("room.start", room="never")
    assert err.value.code == "bad_request"
    await host.join("show-1")
    await viewer.join("show-1")
    with pytest.raises(ClientError) as err:
        await viewer.request("chat", room="show-1", text="early")
    assert err.value.code == "room_not_live"
    with pytest.raises(ClientError) as err:
        await viewer.request("room.start", room="show-1")
    assert err.value.code == "forbidden"
    await host.request("room.start", room="show-1")
    await host.request("room.start", room="show-1")  # a second press does nothing
    assert (await viewer.next_event(is_type("room.started")))["room"] == "show-1"
    await viewer.request("chat", room="show-1", text="now")
    await host.request("room.end", room="show-1")
    await viewer.next_event(is_type("room.ended"))
    async with aiohttp.ClientSession() as session, session.get(f"{base}/api/rooms/show-1") as r:
        detail = await r.json()
    assert detail["status"] == "ended" and detail["viewers"] >= 0


async def test_guests_watch_but_cannot_talk(
    start_server: ServerFactory, connect: ClientFactory
) -> None:
    server = await start_server()
    guest = await connect(server)
    assert guest.user["role"] == "guest"
    await guest.join("demo")
    attempts: list[tuple[str, dict[str, Any]]] = [("chat", {"text": "hi"}), ("like", {"count": 1})]
    for op, fields in attempts:
        with pytest.raises(ClientError) as err:
            await guest.request(op, room="demo", **fields)
        assert err.value.code == "unauthorized"
    with pytest.raises(ClientError) as err:
        await guest.join("no-such-room")
    assert err.value.code == "not_found"


async def test_replies_come_exactly_once_per_id(
    start_server: ServerFactory,
) -> None:
    server = await start_server()
    async with aiohttp.ClientSession() as session:
        ws = await raw_ws(session, server, token("v"))
        ops = [
            '{"op":"ping","id":%d}',
            '{"op":"join","id":%d,"room":"demo"}',
            '{"op":"chat","id":%d,"room":"demo","text":"x"}',
            '{"op":"nope","id":%d}',
            '{"op":"leave","id":%d,"room":"demo"}',
        ]
        for i in range(10, 30):
            await ws.send_str(ops[i % len(ops)] % i)
        await ws.send_str('{"op":"ping"}')  # no id: no reply
        await ws.send_str('{"op":"ping","id":99}')
        ids: list[int] = []
        while 99 not in ids:
            ids += [e["id"] for e in split_frame(await ws.receive_str(timeout=5)) if "id" in e]
        await ws.close()
    assert sorted(ids) == [*range(10, 30), 99]


async def test_a_room_emptied_and_rejoined_at_once_keeps_delivering(
    start_server: ServerFactory, connect: ClientFactory
) -> None:
    await emptied_and_rejoined(start_server, connect, rounds=20)


async def emptied_and_rejoined(
    start_server: ServerFactory, connect: ClientFactory, *, rounds: int
) -> None:
    """The room empties and fills again ``rounds`` times, across its channel's closing:
    each time the member gets the next chat."""
    server = await start_server(tick_ms=5)
    for i in range(rounds):
        talker = await connect(server, token(f"t{i}"))
        member = await connect(server, token(f"m{i}"))
        await member.join("demo")
        await member.leave("demo")
        await asyncio.sleep(0.002 * (i % 5))
        await member.join("demo")
        sent = await talker.request("chat", room="demo", text=f"still there? {i}")
        assert (await member.next_event(is_type("chat")))["seq"] == sent["seq"]
        await member.leave("demo")


async def test_demo_sign_in_gives_each_named_viewer_their_own_id(
    start_server: ServerFactory,
) -> None:
    server = await start_server()
    url = f"http://127.0.0.1:{server.port}/api/demo/token"
    ids = []
    async with aiohttp.ClientSession() as session:
        for body in (
            {"role": "viewer", "name": "host"},
            {"role": "viewer", "name": "Ann"},
            {"role": "viewer", "name": "!!"},
            {"role": "host"},
        ):
            async with session.post(url, json=body) as resp:
                ids.append((await resp.json())["user"]["id"])
    assert ids == ["demo-viewer-host", "demo-viewer-ann", "demo-viewer", "demo-host"]


async def test_a_crowd_joining_while_chats_flow_shares_reads_and_misses_nothing(
    start_server: ServerFactory, connect: ClientFactory
) -> None:
    server = await start_server()
    chatters = [await connect(server, token(f"c{i}")) for i in range(4)]
    async with aiohttp.ClientSession() as session:
        crowd = [await raw_ws(session, server, token(f"v{i}")) for i in range(40)]
        views = server.app[SERVICE]._views
        reads_before = views.reads
        sent: list[int] = []

        async def chat() -> None:
            for i in range(12):
                reply = await chatters[i % 4].request("chat", room="demo", text=f"m{i}")
                sent.append(reply["seq"])
                await asyncio.sleep(0.005)

        async def join(ws: aiohttp.ClientWebSocketResponse) -> tuple[int, list[int]]:
            await ws.send_str('{"op":"join","id":1,"room":"demo"}')
            snap_seq, seqs = -1, list[int]()
            async with asyncio.timeout(15):
                # until the chats are over and the last one has come (it may come before
                # its sender's reply does: then no frame follows, hence the short reads)
                while not (chatting.done() and max([snap_seq, *seqs]) >= sent[-1]):
                    try:
                        frame = await ws.receive_str(timeout=0.2)
                    except TimeoutError:
                        continue
                    for e in split_frame(frame):
                        if e.get("id") == 1:
                            snap_seq = e["data"]["snapshot"]["seq"]
                        elif "seq" in e:
                            seqs.append(e["seq"])
            return snap_seq, seqs

        chatting = asyncio.create_task(chat())
        joined = await asyncio.gather(*(join(ws) for ws in crowd))
        await chatting
        for ws in crowd:
            await ws.close()
    for snap_seq, seqs in joined:  # after its snapshot, every line once, in order
        assert seqs == list(range(snap_seq + 1, snap_seq + 1 + len(seqs)))
        assert seqs == [] or seqs[-1] >= sent[-1]
    assert views.reads - reads_before < len(crowd)  # joiners of a turn shared a read


async def test_join_may_follow_connect_without_waiting_for_its_reply(
    start_server: ServerFactory,
) -> None:
    server = await start_server()
    url = f"http://127.0.0.1:{server.port}/ws"
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(url)
        await ws.send_str(dumps({"op": "connect", "id": 1, "token": token("v1")}).decode())
        await ws.send_str(dumps({"op": "join", "id": 2, "room": "demo"}).decode())
        replies: list[dict[str, Any]] = []
        while len(replies) < 2:
            replies += [e for e in split_frame(await ws.receive_str(timeout=5)) if "id" in e]
        assert [(r["id"], r["ok"]) for r in replies] == [(1, True), (2, True)]
        assert replies[1]["data"]["snapshot"]["room"] == "demo"
        await ws.close()
        # a refused token: the join after it is never read
        ws = await session.ws_connect(url)
        await ws.send_str(dumps({"op": "connect", "id": 1, "token": "x.y.z"}).decode())
        await ws.send_str(dumps({"op": "join", "id": 2, "room": "demo"}).decode())
        frame = split_frame(await ws.receive_str(timeout=5))
        assert [(r["id"], r["error"]["code"]) for r in frame] == [(1, "unauthorized")]
        msg = await ws.receive(timeout=5)
        assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 4001


def test_client_ids_are_64_random_bits_and_a_forked_child_draws_its_own() -> None:
    ids = _ClientIds()
    drawn = [next(ids) for _ in range(1500)]  # three draws from the OS
    assert len(set(drawn)) == 1500 and all(len(i) == 16 and int(i, 16) >= 0 for i in drawn)
    next(ws_module._client_ids)  # the parent's pool is filled
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: the module's ids were reset at the fork
        os.write(write, next(ws_module._client_ids).encode())
        os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(read, 16).decode() != next(ws_module._client_ids)
