"""The order bridge over HTTP, on both engines: the sandbox shop end to end, signed
callbacks, a real webhook receiver's payment URL, the dead-letter admin."""

from __future__ import annotations

import hashlib
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from livecommerce.client import Client
from livecommerce.http.orders import ORDER_KEY, SANDBOX
from livecommerce.orders.webhooks import envelope, sign
from livecommerce.protocol import loads
from tests.conftest import HOST, ClientFactory, LiveServer, ServerFactory, free_port, token, until
from tests.test_commerce_ws import is_type, open_sale

WHSEC = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


async def buy(
    server: LiveServer, connect: ClientFactory, user: str
) -> tuple[Client, dict[str, Any]]:
    host = await connect(server, HOST)
    sale = await open_sale(host, server, stock=5, limit=2)
    buyer = await connect(server, token(user))
    await buyer.join("demo")
    reply = await buyer.request("order", room="demo", sale=sale["id"], qty=1, key="k1")
    order: dict[str, Any] = reply["order"]
    return buyer, order


async def post(
    server: LiveServer, path: str, body: bytes, headers: dict[str, str]
) -> tuple[int, Any]:
    url = f"http://127.0.0.1:{server.port}{path}"
    async with aiohttp.ClientSession() as s, s.post(url, data=body, headers=headers) as resp:
        return resp.status, loads(await resp.read())


def callback(
    server: LiveServer, kind: str, oid: str, *, msg_id: str, age_s: int = 0
) -> tuple[bytes, dict[str, str]]:
    now = time.time() - age_s
    body = envelope(f"order.{kind}", {"order_id": oid}, now)
    return body, sign(server.app[ORDER_KEY], msg_id, int(now), body)


async def test_sandbox_checkout_pays_the_hold(
    start_server: ServerFactory, connect: ClientFactory
) -> None:
    server = await start_server()
    buyer, order = await buy(server, connect, "buyer")
    assert order["payment_url"] == f"/sandbox/checkout/{order['id']}"
    shop = server.app[SANDBOX]
    assert shop is not None
    await until(lambda: shop.deliveries[order["id"]] == 1, "the bridge delivered it once")
    assert shop.orders[order["id"]]["qty"] == 1 and shop.orders[order["id"]]["buyer_id"] == "buyer"

    base = f"http://127.0.0.1:{server.port}{order['payment_url']}"
    async with aiohttp.ClientSession() as s:
        async with s.get(base) as resp:
            page = await resp.text()
            assert resp.status == 200 and resp.content_type == "text/html"
            assert "Mug" in page and 'id="pay"' in page and "held" in page
            assert resp.headers["X-Frame-Options"] == "DENY"
            assert "frame-ancestors 'none'" in resp.headers["Content-Security-Policy"]
        mine = {"Authorization": f"Bearer {token('buyer')}"}
        async with s.post(base + "/pay", headers=mine) as resp:
            assert resp.status == 200 and (await resp.json())["order"]["status"] == "paid"
        async with s.get(base) as resp:
            page = await resp.text()
            assert 'id="pay"' not in page and "paid" in page
    update = await buyer.next_event(is_type("order.updated"))
    assert update["order"]["status"] == "paid" and "payment_url" not in update["order"]
    async with aiohttp.ClientSession() as s, s.get(base + "x") as resp:
        assert resp.status == 404


async def test_only_the_buyer_can_pay_or_cancel_in_the_sandbox(
    start_server: ServerFactory, connect: ClientFactory
) -> None:
    """The attack: a cross-site form POST (no token: what another site's page sends)
    cancelled a victim's order; anyone knowing an order id could pay or cancel it."""
    server = await start_server()
    _, order = await buy(server, connect, "victim")
    base = f"http://127.0.0.1:{server.port}{order['payment_url']}"
    form = {"Content-Type": "application/x-www-form-urlencoded", "Origin": "https://evil.test"}
    async with aiohttp.ClientSession() as s:
        for action in ("pay", "cancel"):
            async with s.post(f"{base}/{action}", data=b"", headers=form) as resp:
                assert resp.status == 401
                assert (await resp.json())["error"]["code"] == "unauthorized"
            other = {"Authorization": f"Bearer {token('mallory')}"}
            async with s.post(f"{base}/{action}", headers=other) as resp:
                assert resp.status == 404  # another's order does not exist for you
        async with s.get(f"http://127.0.0.1:{server.port}/api/rooms/demo") as resp:
            assert (await resp.json())["sales"][0]["remaining"] == 4  # still held
        admin = {"Authorization": f"Bearer {token('ops', 'admin')}"}
        async with s.post(f"{base}/cancel", headers=admin) as resp:
            assert resp.status == 200 and (await resp.json())["order"]["status"] == "cancelled"


async def test_order_ids_are_keyed_so_nobody_can_work_them_out(
    start_server: ServerFactory, connect: ClientFactory
) -> None:
    """An order id was sha256(room, user, key): user ids are public in chat and keys
    guessable. It is keyed by the servers' secret now, and still one id per key."""
    server = await start_server()
    buyer, order = await buy(server, connect, "victim")
    unkeyed = hashlib.sha256(b"demo\0victim\0k1").hexdigest()[:20]
    assert order["id"] != f"demo.{unkeyed}"
    sale = order["sale"]
    again = await buyer.request("order", room="demo", sale=sale, qty=1, key="k1")
    assert again["order"]["id"] == order["id"]  # idempotent by key, as before


async def test_callbacks_are_verified_and_applied_once(
    start_server: ServerFactory, connect: ClientFactory
) -> None:
    server = await start_server()
    buyer, order = await buy(server, connect, "buyer")
    oid = order["id"]

    body, headers = callback(server, "paid", oid, msg_id="evt-1")
    bad = {**headers, "webhook-signature": "v1,AAAA" + headers["webhook-signature"][7:]}
    status, answer = await post(server, "/api/orders/events", body, bad)
    assert status == 401 and answer["error"]["code"] == "unauthorized"
    stale_body, stale = callback(server, "paid", oid, msg_id="evt-1", age_s=6 * 60)
    assert (await post(server, "/api/orders/events", stale_body, stale))[0] == 401
    missing = {k: v for k, v in headers.items() if k != "webhook-id"}
    assert (await post(server, "/api/orders/events", body, missing))[0] == 401
    async with aiohttp.ClientSession() as s:
        got = await (await s.get(f"http://127.0.0.1:{server.port}/api/rooms/demo")).json()
    assert got["sales"][0]["remaining"] == 4  # still held: nothing changed

    status, answer = await post(server, "/api/orders/events", body, headers)
    assert status == 200 and answer["applied"] and answer["order"]["status"] == "paid"
    update = await buyer.next_event(is_type("order.updated"))
    assert update["order"] == {**answer["order"]}

    # the same event again, and a refund sent twice under one id
    status, answer = await post(server, "/api/orders/events", body, headers)
    assert status == 200 and answer["duplicate"] and not answer["applied"]
    rbody, rheaders = callback(server, "refunded", oid, msg_id="evt-2")
    assert (await post(server, "/api/orders/events", rbody, rheaders))[1]["applied"]
    again = await post(server, "/api/orders/events", rbody, rheaders)
    assert again[1]["duplicate"] and again[1]["order"]["status"] == "refunded"

    wrong_kind = envelope("order.shipped", {"order_id": oid}, time.time())
    signed = sign(server.app[ORDER_KEY], "evt-3", int(time.time()), wrong_kind)
    assert (await post(server, "/api/orders/events", wrong_kind, signed))[0] == 400
    nobody, nob_headers = callback(server, "paid", "demo.00000000000000000000", msg_id="evt-4")
    assert (await post(server, "/api/orders/events", nobody, nob_headers))[0] == 404


@pytest.fixture
async def shop() -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    """A stand-in order system that answers each delivery with a payment URL."""
    received: list[dict[str, Any]] = []

    async def hook(request: web.Request) -> web.Response:
        doc = loads(await request.read())
        received.append({"headers": dict(request.headers), "doc": doc})
        return web.json_response({"payment_url": f"https://shop.example/pay/{doc['data']['id']}"})

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}/hook", received
    await runner.cleanup()


async def test_an_order_systems_payment_url_reaches_the_buyer(
    start_server: ServerFactory,
    connect: ClientFactory,
    shop: tuple[str, list[dict[str, Any]]],
) -> None:
    url, received = shop
    server = await start_server(order_webhook_url=url, order_webhook_secret=WHSEC)
    buyer, order = await buy(server, connect, "buyer")
    assert "payment_url" not in order  # not known until the shop answers
    update = await buyer.next_event(is_type("order.updated"))
    assert update["order"]["payment_url"] == f"https://shop.example/pay/{order['id']}"
    assert update["order"]["status"] == "held"
    [delivery] = received
    doc, headers = delivery["doc"], delivery["headers"]
    assert doc["type"] == "order.held" and doc["timestamp"].endswith("Z")
    assert doc["data"] == {
        "id": order["id"],
        "room": "demo",
        "sale": order["sale"],
        "sku": "mug",
        "title": "Mug",
        "qty": 1,
        "unit_price": order["price"],
        "currency": "USD",
        "buyer_id": "buyer",
        "created_at": doc["data"]["created_at"],
        "expires_at": order["expires_at"],
    }
    assert headers["webhook-id"] == order["id"]
    assert headers["webhook-signature"].startswith("v1,")
    async with aiohttp.ClientSession() as s:
        resp = await s.get(f"http://127.0.0.1:{server.port}/sandbox/checkout/{order['id']}")
        assert resp.status == 404  # no sandbox when an order system is configured
    joined = await buyer.join("demo")
    assert joined["orders"][0]["payment_url"] == update["order"]["payment_url"]


async def test_dead_letters_are_for_admins(start_server: ServerFactory) -> None:
    server = await start_server()
    base = f"http://127.0.0.1:{server.port}/api/admin/dead-letters"
    async with aiohttp.ClientSession() as s:
        assert (await s.get(base)).status == 401
        viewer = {"Authorization": f"Bearer {token('v')}"}
        assert (await s.get(base, headers=viewer)).status == 403
        admin = {"Authorization": f"Bearer {token('a', 'admin')}"}
        resp = await s.get(base, headers=admin)
        assert resp.status == 200 and await resp.json() == {"dead_letters": [], "backlog": 0}
        resp = await s.post(base + "/redrive", json={"id": "demo/1-0"}, headers=admin)
        assert resp.status == 404
