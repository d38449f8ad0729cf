"""A show's figures, checked against a scripted show whose true counts are known
(issue 15), on both engines: the report's totals, rates, products, minute series and
CSV, and who may read them."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import signal
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import redis.asyncio as aioredis

from livecommerce.analytics import report
from livecommerce.client import Client
from livecommerce.http.keys import SERVICE
from tests.conftest import (
    HOST,
    MOD,
    SECRET,
    ClientFactory,
    LiveServer,
    ServerFactory,
    ServerProcess,
    token,
)
from tests.test_commerce_ws import put_product


async def _get(server: LiveServer, path: str, tok: str | None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {tok}"} if tok else {}
    async with (
        aiohttp.ClientSession() as s,
        s.get(f"http://127.0.0.1:{server.port}{path}", headers=headers) as resp,
    ):
        body = await resp.json() if resp.content_type == "application/json" else await resp.text()
        return resp.status, body


async def test_a_scripted_show_gives_its_true_figures(
    start_server: ServerFactory, connect: ClientFactory
) -> None:
    server = await start_server(
        tick_ms=20, limits={"chat_burst": 100, "chat_rate": 100.0, "commerce_burst": 100}
    )
    assert await put_product(server, "mug-01", "Blue mug", 1800) == 200
    assert await put_product(server, "lamp-02", "Lamp", 8900) == 200
    host = await connect(server, HOST)
    ana, bo, cy = [await connect(server, token(n)) for n in ("ana", "bo", "cy")]
    for c in (host, ana, bo, cy):
        await c.join("demo")  # 4 views, 4 unique viewers
    await host.request("pin", room="demo", sku="mug-01")
    await asyncio.sleep(0.2)  # the hub's next tick knows the pin: chats count for the mug
    for c in (ana, bo):
        for i in range(3):
            await c.request("chat", room="demo", text=f"hi {i}")  # 6 chats
        await c.request("product.open", room="demo", sku="mug-01")  # 2 clicks on the mug
    await cy.request("product.open", room="demo", sku="lamp-02")  # 1 on the lamp
    await cy.request("like", room="demo", count=5)
    sale = (
        await host.request(
            "sale.start", room="demo", sku="mug-01", price=1200, stock=10,
            limit_per_user=3, duration_s=300,
        )
    )["sale"]  # fmt: skip
    paid = (await ana.request("order", room="demo", sale=sale["id"], qty=2, key="a1"))["order"]
    dropped = (await bo.request("order", room="demo", sale=sale["id"], qty=1, key="b1"))["order"]
    svc = server.app[SERVICE]
    await svc.settle(paid["id"], "paid", event_id=None)
    await svc.settle(dropped["id"], "cancelled", event_id=None)
    coupon = (await host.request("coupon.drop", room="demo", kind="amount", value=100, quantity=9))[
        "coupon"
    ]
    for c in (ana, bo):
        await c.request("coupon.claim", room="demo", coupon=coupon["id"])
    g = (
        await host.request("giveaway.start", room="demo", prize="Mug", duration_s=60,
                           entry="button")
    )["giveaway"]  # fmt: skip
    for c in (ana, cy):
        await c.request("giveaway.enter", room="demo", giveaway=g["id"])
    deal = (
        await host.request("deal.start", room="demo", sku="lamp-02", price=8000, size=2,
                           window_minutes=10, stock=10)
    )["deal"]  # fmt: skip
    await cy.request("group.open", room="demo", deal=deal["id"])
    lot = (
        await host.request("auction.start", room="demo", sku="lamp-02", start_bid=1000,
                           duration_s=120)
    )["auction"]  # fmt: skip
    await ana.request("bid", room="demo", auction=lot["id"], amount=1000)
    await bo.request("bid", room="demo", auction=lot["id"], amount=1100)
    await cy.leave("demo")  # watch time is counted as viewers leave
    await asyncio.sleep(1.2)  # the hub's ticks add the likes, clicks and watch time

    status, rep = await _get(server, "/api/rooms/demo/report", MOD)
    assert status == 200
    t = rep["totals"]
    expected = {
        "views": 4, "unique_viewers": 4, "chats": 6, "likes": 5, "clicks": 3,
        "orders": 2, "gmv": 2400,  # 2 x 12.00 held and paid; bo's 12.00 cancelled: out
        "paid_orders": 1, "paid_gmv": 2400, "units_sold": 2, "revenue": 2400,
        "buyers": 1, "first_time_buyers": 1, "coupon_claims": 2, "coupons_spent": 0,
        "giveaway_entries": 2, "groups_opened": 1, "groups_filled": 0, "auction_bids": 2,
    }  # fmt: skip
    assert {k: t[k] for k in expected} == expected
    assert t["avg_watch_s"] is not None and t["avg_watch_s"] > 0  # cy watched, then left
    assert rep["rates"] == {
        "conversion": 0.25, "click_to_order": round(2 / 3, 4), "gmv_per_1000_views": 600000.0,
        "group_fill_rate": 0.0,
    }  # fmt: skip
    mug = next(p for p in rep["products"] if p["sku"] == "mug-01")
    assert (mug["chats"], mug["clicks"], mug["orders"], mug["paid_gmv"]) == (6, 2, 2, 2400)
    assert mug["likes"] == 5 and mug["clip"] is None
    lamp = next(p for p in rep["products"] if p["sku"] == "lamp-02")
    assert (lamp["clicks"], lamp["groups_opened"]) == (1, 1)

    status, text = await _get(server, "/api/rooms/demo/report?format=csv", MOD)
    rows = list(csv.reader(io.StringIO(text)))
    assert status == 200 and rows[0] == ["figure", "value"] and ["gmv", "2400"] in rows
    assert any(r[:2] == ["mug-01", "Blue mug"] for r in rows)
    assert (await _get(server, "/api/rooms/demo/report", token("ana")))[0] == 403
    assert (await _get(server, "/api/rooms/demo/report", None))[0] == 401

    # the minute ends: its figures are kept (one process writes them) for the series
    svc.hub._clock = lambda: time.time() + 61
    for _ in range(100):
        if await svc.backends.counters.minutes("demo"):
            break
        await asyncio.sleep(0.05)
    status, rep = await _get(server, "/api/rooms/demo/report", MOD)
    assert len(rep["series"]) == 1 and rep["series"][0]["chats"] == 6
    assert rep["series"][0]["viewers"] >= 3 and rep["series"][0]["orders"] == 2


def test_the_series_is_what_each_minute_added() -> None:
    rep = report(
        figures={"orders": 5, "joins": 10, "buyers": 2, "clicks": 4, "gmv": 10_000},
        likes=7,
        viewers_now=3,
        unique_viewers=8,
        minutes={
            1: {"viewers": 4, "chats": 2, "orders": 1, "gmv": 1000},
            2: {"viewers": 6, "chats": 5, "orders": 4, "gmv": 7000},
        },
        products=[],
    )
    assert [
        (p["minute"], p["viewers"], p["chats"], p["orders"], p["gmv"]) for p in rep["series"]
    ] == [
        (60_000, 4, 2, 1, 1000),
        (120_000, 6, 3, 3, 6000),
    ]
    assert rep["rates"]["conversion"] == 0.25 and rep["rates"]["click_to_order"] == 1.25
    assert rep["rates"]["gmv_per_1000_views"] == 1_000_000.0 and rep["totals"]["likes"] == 7


async def test_without_analytics_only_the_scripts_figures_are_counted(
    start_server: ServerFactory, connect: ClientFactory
) -> None:
    server = await start_server(analytics=False)
    assert await put_product(server, "mug-01", "Blue mug", 1800) == 200
    host, ana = await connect(server, HOST), await connect(server, token("ana"))
    for c in (host, ana):
        await c.join("demo")
    await ana.request("product.open", room="demo", sku="mug-01")  # answered, not counted
    sale = (
        await host.request("sale.start", room="demo", sku="mug-01", price=1200, stock=5,
                           limit_per_user=2, duration_s=60)
    )["sale"]  # fmt: skip
    await ana.request("order", room="demo", sale=sale["id"], qty=1, key="k1")
    await ana.leave("demo")
    await asyncio.sleep(0.3)
    status, rep = await _get(server, "/api/rooms/demo/report", MOD)
    assert status == 200
    t = rep["totals"]
    assert (t["views"], t["unique_viewers"], t["clicks"], t["avg_watch_s"]) == (0, 0, 0, None)
    assert (t["orders"], t["gmv"]) == (1, 1200)


async def test_figures_add_up_over_two_processes_and_a_kill(
    redis_url: str, spawn: Callable[..., ServerProcess]
) -> None:
    """A scripted show over two processes on one Redis, one killed in the middle: every
    chat, view and order answered ok is counted, once, whichever process took it."""
    args = ("--redis-url", redis_url, "--secret", SECRET, "--demo", "--tick-ms", "20")
    p1, p2 = spawn(*args), spawn(*args)
    async with (
        aiohttp.ClientSession() as http,
        http.put(
            f"{p2.url}/api/rooms/demo/products/mug-01",
            json={"title": "Blue mug", "price": 1800},
            headers={"Authorization": f"Bearer {HOST}"},
        ) as resp,
    ):
        assert resp.status == 200
    ok = {"views": 0, "chats": 0, "orders": 0}
    async with Client(f"ws://127.0.0.1:{p2.port}/ws", token=HOST) as host:
        sale = (
            await host.request("sale.start", room="demo", sku="mug-01", price=1000, stock=100,
                               limit_per_user=2, duration_s=300)
        )["sale"]  # fmt: skip
        viewers: list[Client] = []
        for i in range(20):
            p = p1 if i % 2 else p2
            c = Client(f"ws://127.0.0.1:{p.port}/ws", token=token(f"v{i}"), reconnect=False)
            await c.__aenter__()
            await c.join("demo")
            ok["views"] += 1
            viewers.append(c)

        async def act(c: Client, n: int) -> None:
            for j in range(2):
                with contextlib.suppress(Exception):
                    said = c.request("chat", room="demo", text=f"round {n} line {j}")
                    await asyncio.wait_for(said, 3)
                    ok["chats"] += 1
            with contextlib.suppress(Exception):
                bought = c.request("order", room="demo", sale=sale["id"], qty=1, key=f"k{n}")
                await asyncio.wait_for(bought, 3)
                ok["orders"] += 1

        await asyncio.gather(*(act(c, 1) for c in viewers))
        p1.proc.send_signal(signal.SIGKILL)  # half the viewers lose their process
        p1.proc.wait(10)
        await asyncio.gather(*(act(c, 2) for c in viewers))  # only p2's get through
        for c in viewers:
            with contextlib.suppress(Exception):
                await c.close()
        await asyncio.sleep(0.3)
        r = aioredis.Redis.from_url(redis_url, decode_responses=True)
        try:
            stats = await r.hgetall("lc:{demo}:stats")
            unique = await r.pfcount("lc:{demo}:uv")
        finally:
            await r.aclose()
    assert ok["chats"] >= 40 and ok["orders"] == 20 + 10  # answered (some chats hit the limit)
    assert int(stats["chats"]) == ok["chats"] and int(stats["orders"]) == ok["orders"]
    assert int(stats["joins"]) == ok["views"] and unique == 20
    assert int(stats["gmv"]) == ok["orders"] * 1000
