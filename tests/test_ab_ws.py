"""A/B test of a sale's price (issue 15), on both engines: each buyer pays their arm's
price (the same arm in the server's Lua and in Python), and the report gives each
arm's conversion with its 95 % interval."""

from __future__ import annotations

import asyncio

import aiohttp

from livecommerce.analytics import wilson
from livecommerce.inventory.rules import arm
from tests.conftest import HOST, MOD, ClientFactory, ServerFactory, token
from tests.test_commerce_ws import put_product
from tests.test_coupons_ws import refused


def test_the_wilson_interval() -> None:
    assert wilson(0, 0) is None
    assert wilson(5, 10) == (0.2366, 0.7634)
    lo, hi = wilson(0, 20)  # type: ignore[misc]
    assert lo == 0.0 and 0.1 < hi < 0.2
    assert wilson(20, 20)[1] == 1.0  # type: ignore[index]


def test_arms_are_stable_and_about_even() -> None:
    users = [f"user-{i}" for i in range(2000)]
    arms = [arm("s-1", u) for u in users]
    assert arms == [arm("s-1", u) for u in users]
    assert 900 < arms.count("b") < 1100


async def test_each_arm_pays_its_price_and_the_report_compares_them(
    start_server: ServerFactory, connect: ClientFactory
) -> None:
    server = await start_server(limits={"commerce_burst": 100})
    assert await put_product(server, "mug-01", "Blue mug", 1800) == 200
    host = await connect(server, HOST)
    await host.join("demo")
    args = {"sku": "mug-01", "price": 1200, "stock": 500, "limit_per_user": 2, "duration_s": 300}
    assert await refused(host, "sale.start", room="demo", **args, price_b=1200) == "bad_request"
    sale = (await host.request("sale.start", room="demo", **args, price_b=900))["sale"]
    assert (sale["price"], sale["price_b"]) == (1200, 900)
    names = [f"v{i}" for i in range(30)]
    viewers = [await connect(server, token(n)) for n in names]
    snaps = [await v.join("demo") for v in viewers]
    for n, snap in zip(names, snaps, strict=True):
        assert snap["arms"] == {sale["id"]: arm(sale["id"], n)}
    buyers = names[:20]  # two thirds order
    orders = await asyncio.gather(*(
        v.request("order", room="demo", sale=sale["id"], qty=1, key="k")
        for v in viewers[:20]
    ))  # fmt: skip
    for n, got in zip(buyers, orders, strict=True):
        expected = 900 if arm(sale["id"], n) == "b" else 1200
        assert got["order"]["price"] == expected, n  # the same arm in Lua and here
    url = f"http://127.0.0.1:{server.port}/api/rooms/demo/report"
    async with (
        aiohttp.ClientSession() as s,
        s.get(url, headers={"Authorization": f"Bearer {MOD}"}) as resp,
    ):
        rep = await resp.json()
    (test,) = rep["ab_tests"]
    for group in ("a", "b"):
        seen = sum(1 for n in names if arm(sale["id"], n) == group)
        bought = sum(1 for n in buyers if arm(sale["id"], n) == group)
        a = test["arms"][group]
        assert (a["price"], a["viewers"], a["buyers"], a["orders"]) == (
            900 if group == "b" else 1200, seen, bought, bought,
        )  # fmt: skip
        assert a["conversion"] == round(bought / seen, 4)
        assert a["ci95"] == list(wilson(bought, seen))  # type: ignore[arg-type]
