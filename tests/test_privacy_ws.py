"""Each user's data under their control (issue 15), on both engines: GET /api/me/data
exports everything the server holds about the signed-in user, DELETE erases it, the
show's figures stay whole, and nothing of theirs is left (on Redis: every key's name
and value searched)."""

from __future__ import annotations

from typing import Any

import aiohttp
import redis.asyncio as aioredis

from livecommerce.auth import Principal
from livecommerce.http.keys import SERVICE
from livecommerce.protocol import loads
from tests.conftest import HOST, MOD, ClientFactory, LiveServer, ServerFactory, token
from tests.test_commerce_ws import put_product

USER = "user-ana-7f3k"
NAME = "Ana Private"


async def _me(server: LiveServer, method: str, tok: str | None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {tok}"} if tok else {}
    async with (
        aiohttp.ClientSession() as s,
        s.request(method, f"http://127.0.0.1:{server.port}/api/me/data", headers=headers) as r,
    ):
        return r.status, await r.json()


async def _everything_in_redis(url: str) -> list[tuple[str, bytes]]:
    """Every key of the Redis and every value it holds, as bytes."""
    r: Any = aioredis.Redis.from_url(url)  # its replies' many types: read as bytes
    found: list[tuple[str, bytes]] = []
    try:
        async for raw in r.scan_iter(count=1000):
            name = raw.decode()
            kind = (await r.type(raw)).decode()
            values: list[bytes] = []
            if kind == "string":
                values = [await r.get(raw) or b""]
            elif kind == "hash":
                values = [b for kv in (await r.hgetall(raw)).items() for b in kv]
            elif kind == "list":
                values = await r.lrange(raw, 0, -1)
            elif kind == "set":
                values = list(await r.smembers(raw))
            elif kind == "zset":
                values = await r.zrange(raw, 0, -1)
            elif kind == "stream":
                values = [b for _, f in await r.xrange(raw) for kv in f.items() for b in kv]
            found.append((name, b"".join(values)))
    finally:
        await r.aclose()
    return found


async def test_a_user_exports_then_erases_their_data(
    start_server: ServerFactory, connect: ClientFactory, settings: Any
) -> None:
    server = await start_server(tick_ms=20, limits={"commerce_burst": 100})
    assert await put_product(server, "mug-01", "Blue mug", 1800) == 200
    host = await connect(server, HOST)
    ana = await connect(server, token(USER, name=NAME))
    bo = await connect(server, token("bo"))
    for c in (host, ana, bo):
        await c.join("demo")
    said = [
        (await ana.request("chat", room="demo", text=f"ana says {i}"))["msg_id"] for i in (1, 2)
    ]
    bo_said = (await bo.request("chat", room="demo", text="hello from bo"))["msg_id"]
    await ana.request("report", room="demo", msg_id=bo_said, reason="spam")
    await bo.request("report", room="demo", msg_id=said[0], reason="harassment")
    sale = (
        await host.request("sale.start", room="demo", sku="mug-01", price=1200, stock=5,
                           limit_per_user=2, duration_s=60)
    )["sale"]  # fmt: skip
    order = (await ana.request("order", room="demo", sale=sale["id"], qty=1, key="k1"))["order"]
    svc = server.app[SERVICE]
    await svc.settle(order["id"], "paid", event_id=None)
    coupon = (await host.request("coupon.drop", room="demo", kind="amount", value=100, quantity=5))[
        "coupon"
    ]
    await ana.request("coupon.claim", room="demo", coupon=coupon["id"])
    g = (
        await host.request("giveaway.start", room="demo", prize="Mug", duration_s=60,
                           entry="button", winners=2)
    )["giveaway"]  # fmt: skip
    await ana.request("giveaway.enter", room="demo", giveaway=g["id"])
    await bo.request("giveaway.enter", room="demo", giveaway=g["id"])
    await host.request("giveaway.draw", room="demo", giveaway=g["id"])  # both win
    deal = (
        await host.request("deal.start", room="demo", sku="mug-01", price=1000, size=3,
                           window_minutes=10, stock=9)
    )["deal"]  # fmt: skip
    group = (await ana.request("group.open", room="demo", deal=deal["id"]))["group"]
    lot = (
        await host.request("auction.start", room="demo", sku="mug-01", start_bid=500,
                           duration_s=120)
    )["auction"]  # fmt: skip
    await ana.request("bid", room="demo", auction=lot["id"], amount=500, max=900)
    await bo.request("bid", room="demo", auction=lot["id"], amount=600)

    status, doc = await _me(server, "GET", token(USER, name=NAME))
    assert status == 200 and doc["user"]["id"] == USER
    mine = doc["rooms"]["demo"]
    assert [c["text"] for c in mine["chats"]] == ["ana says 1", "ana says 2"]
    assert sorted(o["sale"] for o in mine["orders"]) == sorted([sale["id"], g["id"]])
    assert mine["coupon_claims"] == {coupon["id"]: 1}
    assert mine["giveaway_entries"] == [g["id"]] and mine["groups"] == [group["id"]]
    assert [(b["amount"], b["max"]) for b in mine["bids"]] == [(500, 900)]
    assert mine["reports"] == [bo_said]
    assert (await _me(server, "GET", None))[0] == 401
    before = await svc.show_report(_staff(), "demo")

    status, erased = await _me(server, "DELETE", token(USER, name=NAME))
    assert status == 200 and erased["rooms"] == ["demo"]
    assert erased["erased"] == {"chats": 2, "orders": 2, "coupon_claims": 1, "entries": 1,
                                "groups": 1, "bids": 1, "reports": 1}  # fmt: skip
    alias = erased["alias"]
    assert alias.startswith("erased-") and USER not in alias
    status, doc = await _me(server, "GET", token(USER, name=NAME))
    assert status == 200 and doc["rooms"] == {}  # nothing of theirs is left
    after = await svc.show_report(_staff(), "demo")
    assert after["totals"]["orders"] == before["totals"]["orders"]  # the figures stay whole
    assert after["totals"]["paid_gmv"] == before["totals"]["paid_gmv"] == 1200
    joined = await (await connect(server, MOD)).join("demo")
    assert all(USER not in str(c) and NAME not in str(c) for c in joined["recent"])
    assert all(USER not in str(e) for e in joined["flagged"])
    log = [loads(e) for e in await svc.backends.moderation.actions("demo", 1000)]
    assert [e["action"] for e in log if e["action"].startswith("data.")] == [
        "data.export", "data.erase",
    ]  # fmt: skip
    assert USER not in str(log)
    bids = (await svc.auction_bids(lot["id"]))["bids"]
    assert [b["user"] for b in bids] == [alias, "bo"]  # the log still replays, under the alias
    if settings.redis_url:
        for name, values in await _everything_in_redis(settings.redis_url):
            assert USER not in name, name
            assert USER.encode() not in values and NAME.encode() not in values, name


def _staff() -> Principal:
    return Principal(id="admin-1", name="Admin", role="admin")
