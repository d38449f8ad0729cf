"""What the studio and the console rely on, on both engines: the word filter and its
review queue, slow mode, the moderation log, and the staff's live figures."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from livecommerce.client import Client, ClientError
from livecommerce.http.keys import SERVICE
from tests.conftest import HOST, MOD, ClientFactory, LiveServer, ServerFactory, token
from tests.test_commerce_ws import is_type, open_sale


async def staff_and_viewer(
    server: LiveServer, connect: ClientFactory
) -> tuple[Client, Client, dict[str, Any]]:
    mod = await connect(server, MOD)
    viewer = await connect(server, token("v1", name="Vee"))
    joined = await mod.join("demo")
    await viewer.join("demo")
    return mod, viewer, joined


async def test_the_word_filter_blocks_masks_and_flags(
    start_server: ServerFactory, connect: ClientFactory
) -> None:
    server = await start_server(limits={"chat_burst": 20, "chat_rate": 20.0})
    mod, viewer, snap = await staff_and_viewer(server, connect)
    assert snap["filter"] == [] and snap["flagged"] == [] and snap["slow"] == 0
    reply = await mod.request("mod.filter", room="demo", add=["spam", "scam"], action="block")
    assert reply["terms"] == [
        {"text": "scam", "action": "block"},
        {"text": "spam", "action": "block"},
    ]
    await mod.request("mod.filter", room="demo", add=["darn"], action="mask")
    reply = await mod.request(
        "mod.filter", room="demo", add=["cheap"], remove=["scam"], action="flag"
    )
    assert [t["text"] for t in reply["terms"]] == ["cheap", "darn", "spam"]

    for text in ("buy S.P.A.M now", "ｓｐａｍ", "s p a m"):
        with pytest.raises(ClientError) as err:
            await viewer.request("chat", room="demo", text=text)
        assert err.value.code == "blocked_content"
    await viewer.request("chat", room="demo", text="well D-A-R-N it")
    masked = await viewer.next_event(is_type("chat"))
    assert masked["text"] == "well ******* it"

    sent = await viewer.request("chat", room="demo", text="is it cheap?")
    published = await viewer.next_event(is_type("chat"))
    assert published["text"] == "is it cheap?"  # flag lets it through...
    flagged = await mod.next_event(is_type("chat.flagged"))  # ...and queues it for review
    assert flagged["msg_id"] == sent["msg_id"] and flagged["terms"] == ["cheap"]
    assert flagged["user"] == {"id": "v1", "name": "Vee"}
    rejoined = await (await connect(server, MOD)).join("demo")
    assert [f["msg_id"] for f in rejoined["flagged"]] == [sent["msg_id"]]
    assert "flagged" not in (await viewer.join("demo"))  # staff only

    await mod.request("mod.approve", room="demo", msg_id=sent["msg_id"])
    reviewed = await mod.next_event(is_type("chat.reviewed"))
    assert reviewed == {**reviewed, "msg_id": sent["msg_id"], "action": "approved", "by": "mod-1"}
    with pytest.raises(ClientError) as err:
        await mod.request("mod.approve", room="demo", msg_id=sent["msg_id"])
    assert err.value.code == "not_found"

    other = await viewer.request("chat", room="demo", text="CHEAP stuff")
    await mod.next_event(lambda e: e["type"] == "chat.flagged" and e["msg_id"] == other["msg_id"])
    await mod.request("mod.delete", room="demo", msg_id=other["msg_id"])
    reviewed = await mod.next_event(is_type("chat.reviewed"))
    assert reviewed["msg_id"] == other["msg_id"] and reviewed["action"] == "deleted"
    assert (await (await connect(server, MOD)).join("demo"))["flagged"] == []


async def test_filter_changes_are_checked(
    start_server: ServerFactory, connect: ClientFactory
) -> None:
    server = await start_server()
    mod, viewer, _ = await staff_and_viewer(server, connect)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"add": ["x"]}, "bad_request"),  # no action
        ({"add": ["!!!"], "action": "block"}, "bad_request"),  # no letters
        ({"add": ["x"], "action": "allow"}, "bad_request"),
        ({"add": "spam", "action": "block"}, "bad_request"),
    ]
    for args, code in cases:
        with pytest.raises(ClientError) as err:
            await mod.request("mod.filter", room="demo", **args)
        assert err.value.code == code
    with pytest.raises(ClientError) as err:
        await viewer.request("mod.filter", room="demo", add=["x"], action="block")
    assert err.value.code == "forbidden"
    assert (await mod.request("mod.filter", room="demo"))["terms"] == []


async def test_a_blocked_message_does_not_use_a_slow_mode_slot(
    start_server: ServerFactory, connect: ClientFactory
) -> None:
    server = await start_server()
    mod, viewer, _ = await staff_and_viewer(server, connect)
    await mod.request("mod.filter", room="demo", add=["spam"], action="block")
    await mod.request("mod.slow", room="demo", seconds=30)
    slow = await viewer.next_event(is_type("room.slow"))
    assert slow["seconds"] == 30
    assert (await viewer.join("demo"))["slow"] == 30
    with pytest.raises(ClientError):
        await viewer.request("chat", room="demo", text="spam")
    await viewer.request("chat", room="demo", text="hello")  # the slot was still free
    with pytest.raises(ClientError) as err:
        await viewer.request("chat", room="demo", text="again")
    assert err.value.code == "slow_mode"


async def modlog(server: LiveServer, tok: str, limit: int = 200) -> tuple[int, Any]:
    url = f"http://127.0.0.1:{server.port}/api/rooms/demo/modlog?limit={limit}"
    async with (
        aiohttp.ClientSession() as s,
        s.get(url, headers={"Authorization": f"Bearer {tok}"}) as resp,
    ):
        return resp.status, await resp.json()


async def test_every_moderation_action_is_logged(
    start_server: ServerFactory, connect: ClientFactory
) -> None:
    server = await start_server()
    mod, viewer, _ = await staff_and_viewer(server, connect)
    said = await viewer.request("chat", room="demo", text="hi")
    await mod.request("mod.delete", room="demo", msg_id=said["msg_id"])
    await mod.request("mod.mute", room="demo", user="v1", seconds=60)
    await mod.request("mod.ban", room="demo", user="v1")
    await mod.request("mod.unban", room="demo", user="v1")
    await mod.request("mod.slow", room="demo", seconds=5)
    await mod.request("mod.filter", room="demo", add=["spam"], action="block")
    await mod.request("announce", room="demo", text="Welcome!")
    live = await mod.next_event(is_type("mod.logged"))
    assert live["entry"]["action"] == "delete" and live["entry"]["target"] == said["msg_id"]

    status, body = await modlog(server, MOD)
    assert status == 200
    entries = body["entries"]
    assert [(e["action"], e["target"]) for e in entries] == [
        ("delete", said["msg_id"]),
        ("mute", "v1"),
        ("ban", "v1"),
        ("unban", "v1"),
        ("slow", None),
        ("filter", None),
        ("announce", None),
    ]
    assert all(e["by"] == {"id": "mod-1", "name": "mod-1"} and e["at"] > 0 for e in entries)
    assert entries[1]["details"]["seconds"] == 60 and entries[4]["details"] == {"seconds": 5}
    assert [e["action"] for e in (await modlog(server, MOD, limit=2))[1]["entries"]] == [
        "filter",
        "announce",
    ]
    assert (await modlog(server, token("v1")))[0] == 403
    assert (await modlog(server, MOD, limit=0))[0] == 400


@pytest.mark.redis
async def test_the_log_survives_a_restart_on_redis(
    redis_url: str, start_server: ServerFactory, connect: ClientFactory
) -> None:
    first = await start_server(redis_url=redis_url)
    mod = await connect(first, MOD)
    await mod.request("mod.mute", room="demo", user="troll", seconds=30)
    await first.app.shutdown()
    second = await start_server(redis_url=redis_url)
    status, body = await modlog(second, MOD)
    assert status == 200 and [e["target"] for e in body["entries"]] == ["troll"]


async def test_the_staff_get_live_figures(
    start_server: ServerFactory, connect: ClientFactory
) -> None:
    server = await start_server(limits={"chat_burst": 20, "chat_rate": 20.0})
    host = await connect(server, HOST)
    await host.join("demo")
    sale = await open_sale(host, server, stock=10, limit=5, price=500)
    viewer = await connect(server, token("v1"))
    await viewer.join("demo")
    await viewer.request("chat", room="demo", text="before the pin")
    await viewer.request("like", room="demo", count=3)
    await host.request("pin", room="demo", sku="mug")
    await viewer.next_event(is_type("product.pinned"))
    await viewer.request("chat", room="demo", text="c1")
    await viewer.request("chat", room="demo", text="c2")
    await viewer.request("like", room="demo", count=4)
    paid = await viewer.request("order", room="demo", sale=sale["id"], qty=2, key="a")
    await viewer.request("order", room="demo", sale=sale["id"], qty=1, key="b")
    await server.app[SERVICE].confirm_payment(paid["order"]["id"])

    def done(e: dict[str, Any]) -> bool:  # likes count per tick, presence per second
        if e["type"] != "stats" or e["units_sold"] != 2 or e["chats"] != 3:
            return False
        mug = e["products"].get("mug")
        return bool(mug and mug["likes"] == 4 and mug["peak_viewers"] >= 2)

    stats = await host.next_event(done, timeout=10)
    assert stats["orders"] == 2 and stats["revenue"] == 1000 and stats["likes"] == 7
    assert stats["viewers"] == 2 and stats["peak_viewers"] >= 2
    assert stats["products"]["mug"] == {
        "peak_viewers": stats["products"]["mug"]["peak_viewers"],
        "likes": 4,  # the 3 before the pin count for the room only
        "chats": 2,
        "orders": 2,
        "units_sold": 2,
        "revenue": 1000,
    }
    with pytest.raises(TimeoutError):  # viewers never get them
        await viewer.next_event(is_type("stats"), timeout=1.5)


@pytest.mark.redis
async def test_figures_add_up_across_processes(
    redis_url: str, start_server: ServerFactory, connect: ClientFactory
) -> None:
    a = await start_server(redis_url=redis_url)
    b = await start_server(redis_url=redis_url)
    host = await connect(a, HOST)
    await host.join("demo")
    sale = await open_sale(host, a, stock=10, limit=5, price=300)
    buyer = await connect(b, token("v2"))  # on the other process
    order = await buyer.request("order", room="demo", sale=sale["id"], qty=3, key="k")
    await b.app[SERVICE].confirm_payment(order["order"]["id"])
    await buyer.request("chat", room="demo", text="from b")
    stats = await host.next_event(
        lambda e: e["type"] == "stats" and e["units_sold"] == 3 and e["chats"] == 1, timeout=10
    )
    assert stats["revenue"] == 900 and stats["orders"] == 1
