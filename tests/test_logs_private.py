"""No token, secret or personal data in the logs (issue 15): the logs of a whole show
on a demo server, at DEBUG, searched for every secret and everything a user gave."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable

import aiohttp

from livecommerce.client import Client
from tests.conftest import HOST, SECRET, ServerProcess, token

CHAT = "my phone is 555-0199 call me"
NAME = "Zoë Quinn-Private"
USER = "user-7731-private"
NOTE = "reported for a private reason"


async def test_a_whole_show_leaves_nothing_private_in_the_logs(
    redis_url: str, spawn: Callable[..., ServerProcess]
) -> None:
    p = spawn(
        "--redis-url", redis_url, "--secret", SECRET, "--demo", "--log-level", "DEBUG",
        "--tick-ms", "20",
    )  # fmt: skip
    viewer = token(USER, name=NAME)
    ws = f"ws://127.0.0.1:{p.port}/ws"
    async with aiohttp.ClientSession() as http:
        async with http.put(
            f"{p.url}/api/rooms/demo/products/mug-01",
            json={"title": "Blue mug", "price": 1800},
            headers={"Authorization": f"Bearer {HOST}"},
        ) as resp:
            assert resp.status == 200
        async with Client(ws, token=HOST) as host, Client(ws, token=viewer) as fan:
            await host.join("demo")
            await fan.join("demo")
            said = await fan.request("chat", room="demo", text=CHAT)
            await fan.request("report", room="demo", msg_id=said["msg_id"], reason="other",
                              note=NOTE)  # fmt: skip
            sale = await host.request(
                "sale.start", room="demo", sku="mug-01", price=1200, stock=5,
                limit_per_user=2, duration_s=60,
            )  # fmt: skip
            order = (
                await fan.request("order", room="demo", sale=sale["sale"]["id"], qty=1, key="k1")
            )["order"]
            coupon = (
                await host.request("coupon.drop", room="demo", kind="amount", value=100, quantity=5)
            )["coupon"]
            await fan.request("coupon.claim", room="demo", coupon=coupon["id"])
            with_token = {"Authorization": f"Bearer {viewer}"}
            async with http.get(f"{p.url}/api/orders/{order['id']}", headers=with_token) as resp:
                assert resp.status == 200
            async with http.post(
                f"{p.url}/sandbox/checkout/{order['id']}/pay", headers=with_token
            ) as resp:
                assert resp.status == 200
            async with http.get(f"{p.url}/api/rooms?token={viewer}") as resp:
                pass  # a token in a query string (where it does not belong) is not logged
            await asyncio.sleep(0.5)  # the bridge delivers, the hub ticks
    p.proc.send_signal(signal.SIGTERM)  # the shutdown's lines too
    p.proc.wait(15)
    logs = p.output()
    assert "livecommerce" in logs.lower()  # the logs are there to search
    for secret in (SECRET, HOST, viewer, *viewer.split(".")):
        assert secret not in logs
    for personal in (CHAT, NAME, USER, NOTE, "555-0199"):
        assert personal not in logs, personal
    assert order["id"] not in logs  # an order id names a buyer's order
