"""The retention sweeper (issue 15), on both engines: what is older than its kind's
retention goes, what is newer stays."""

from __future__ import annotations

import time

from livecommerce.config import Retention
from livecommerce.http.keys import SERVICE
from livecommerce.protocol import loads
from tests.conftest import HOST, MOD, ClientFactory, ServerFactory, token
from tests.test_commerce_ws import open_sale

DAY_S = 86_400


async def test_old_chats_actions_orders_and_minutes_go_new_ones_stay(
    start_server: ServerFactory, connect: ClientFactory
) -> None:
    server = await start_server(
        retention=Retention(chat_days=2, modlog_days=3, orders_days=4, analytics_days=5)
    )
    host, mod = await connect(server, HOST), await connect(server, MOD)
    ana = await connect(server, token("ana"))
    for c in (host, mod, ana):
        await c.join("demo")
    old_chat = await ana.request("chat", room="demo", text="old news")
    await mod.request("mod.delete", room="demo", msg_id=old_chat["msg_id"])
    sale = await open_sale(host, server)
    order = (await ana.request("order", room="demo", sale=sale["id"], qty=1, key="k"))["order"]
    svc = server.app[SERVICE]
    await svc.settle(order["id"], "paid", event_id=None)
    counters = svc.backends.counters
    now_min = int(time.time() // 60)
    await counters.record_minute("demo", now_min - 1, {"orders": 1})

    def later(days: float) -> None:
        t0 = time.time()
        svc._clock = lambda: t0 + days * DAY_S

    later(1)  # nothing is old enough yet
    assert await svc.forget_old() == {"chats": 0, "actions": 0, "orders": 0, "minutes": 0}
    later(2.5)  # the chat archive's 2 days are over
    assert (await svc.forget_old())["chats"] == 1
    assert await svc.backends.log.chats("demo", 0, 10) == []
    later(3.5)  # then the moderation log's 3
    assert (await svc.forget_old())["actions"] >= 1
    assert await svc.backends.moderation.actions("demo", 10) == []
    later(4.5)  # the paid order's 4
    assert (await svc.forget_old())["orders"] == 1
    assert await svc.backends.inventory.order(order["id"]) is None
    later(5.5)  # and the figures' minutes' 5; the totals stay
    assert (await svc.forget_old())["minutes"] == 1
    assert await counters.minutes("demo") == {}
    assert (await counters.figures("demo"))["orders"] == 1
    fresh = await ana.request("chat", room="demo", text="still here")
    archive = [loads(ln)["msg_id"] for _, ln in await svc.backends.log.chats("demo", 0, 10)]
    assert archive == [fresh["msg_id"]]
