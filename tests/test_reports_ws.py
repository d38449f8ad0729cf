"""Viewers report a message or the show; the staff's review queue gets it once, with
the message's neighbours (issue 15), on both engines."""

from __future__ import annotations

import csv
import io

import aiohttp

from tests.conftest import MOD, ClientFactory, ServerFactory, token
from tests.test_commerce_ws import is_type
from tests.test_coupons_ws import refused


async def test_a_reported_message_reaches_the_queue_once_with_its_context(
    start_server: ServerFactory, connect: ClientFactory
) -> None:
    server = await start_server(limits={"chat_burst": 100, "chat_rate": 100.0})
    mod = await connect(server, MOD)
    ana, bo, cy = [await connect(server, token(n)) for n in ("ana", "bo", "cy")]
    for c in (mod, ana, bo, cy):
        await c.join("demo")
    ids = [(await ana.request("chat", room="demo", text=f"line {i}"))["msg_id"] for i in range(8)]
    bad = ids[4]

    got = await bo.request("report", room="demo", msg_id=bad, reason="spam", note="a scam link")
    assert got == {"reported": bad, "new": True}
    raised = await mod.next_event(is_type("report.raised"))
    assert (raised["msg_id"], raised["text"], raised["user"]["id"]) == (bad, "line 4", "ana")
    assert raised["report"] == {"count": 1, "reasons": {"spam": 1}}
    assert [c["text"] for c in raised["context"]] == [f"line {i}" for i in range(1, 8)]
    assert raised["note"] == "a scam link"

    again = await bo.request("report", room="demo", msg_id=bad, reason="fraud")
    assert again == {"reported": bad, "new": False}  # one report per user
    await cy.request("report", room="demo", msg_id=bad, reason="fraud")
    counted = await mod.next_event(is_type("report.counted"))
    assert counted["report"] == {"count": 2, "reasons": {"spam": 1, "fraud": 1}}

    await bo.request("report", room="demo", reason="false_claims")  # the show itself
    show = await mod.next_event(lambda e: e["type"] == "report.raised" and e["msg_id"] == "show")
    assert show["report"] == {"count": 1, "reasons": {"false_claims": 1}}

    staff = await (await connect(server, MOD)).join("demo")
    queued = {e["msg_id"]: e for e in staff["flagged"]}
    assert set(queued) == {bad, "show"} and queued[bad]["report"]["count"] == 1
    viewer = await (await connect(server, token("dee"))).join("demo")
    assert "flagged" not in viewer  # the queue is the staff's
    await mod.request("mod.approve", room="demo", msg_id=bad)
    await mod.request("mod.approve", room="demo", msg_id="show")
    assert (await (await connect(server, MOD)).join("demo"))["flagged"] == []


async def test_bad_reports_are_refused(start_server: ServerFactory, connect: ClientFactory) -> None:
    server = await start_server()
    ana, guest = await connect(server, token("ana")), await connect(server)
    await ana.join("demo")
    assert await refused(guest, "report", room="demo", reason="spam") == "unauthorized"
    assert await refused(ana, "report", room="demo", reason="rude") == "bad_request"
    assert await refused(ana, "report", room="demo", reason="spam", msg_id="nope") == "not_found"
    long_note = "x" * 201
    assert await refused(ana, "report", room="demo", reason="other", note=long_note) == (
        "bad_request"
    )


async def test_staff_export_the_chat_with_its_moderation_as_json_and_csv(
    start_server: ServerFactory, connect: ClientFactory
) -> None:
    server = await start_server(limits={"chat_burst": 100, "chat_rate": 100.0})
    mod = await connect(server, MOD)
    ana = await connect(server, token("ana", name="Ana"))
    for c in (mod, ana):
        await c.join("demo")
    first = await ana.request("chat", room="demo", text="hello, mug fans")
    second = await ana.request("chat", room="demo", text='=HYPERLINK("http://x")')
    await mod.request("mod.delete", room="demo", msg_id=second["msg_id"])
    url = f"http://127.0.0.1:{server.port}/api/rooms/demo/chat"
    async with aiohttp.ClientSession() as s:
        async with s.get(url, headers={"Authorization": f"Bearer {MOD}"}) as resp:
            assert resp.status == 200
            doc = await resp.json()
        async with s.get(url + "?format=csv", headers={"Authorization": f"Bearer {MOD}"}) as resp:
            assert resp.status == 200 and resp.content_type == "text/csv"
            rows = list(csv.reader(io.StringIO(await resp.text())))
        async with s.get(url, headers={"Authorization": f"Bearer {token('ana')}"}) as resp:
            assert resp.status == 403
        async with s.get(url) as resp:
            assert resp.status == 401
        async with s.get(url + "?format=xml", headers={"Authorization": f"Bearer {MOD}"}) as resp:
            assert resp.status == 400
    texts = [(m["msg_id"], m["text"], "deleted" in m) for m in doc["messages"]]
    assert texts == [
        (first["msg_id"], "hello, mug fans", False),
        (second["msg_id"], '=HYPERLINK("http://x")', True),
    ]
    assert doc["messages"][1]["deleted"]["by"]["id"] == "mod-1"
    assert [a["action"] for a in doc["actions"]] == ["delete"]
    assert rows[0] == ["time", "kind", "user_id", "user_name", "text", "target", "moderation"]
    kinds = [(r[1], r[4], r[6]) for r in rows[1:]]
    assert kinds == [
        ("chat", "hello, mug fans", ""),
        ("chat", '\'=HYPERLINK("http://x")', "deleted by mod-1"),  # no formula in a sheet
        ("action", "", "delete"),
    ]
