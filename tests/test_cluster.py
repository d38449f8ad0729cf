"""The Redis engine on a 3-master Redis Cluster that the test session starts itself.

The store contract suites run here once more, on the cluster; then rooms whose keys live
on different masters are served by two servers at once (two apps, and a real process),
over WebSocket: join, chat, presence, private lines, resume, and a flash sale.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from livecommerce.backends import Backends, make_backends
from livecommerce.backends.redis import REDIS_CONCURRENCY, ROOMS_INDEX
from livecommerce.backends.redis_inventory import OUTBOX_INDEX, SWEEP_INDEX
from livecommerce.client import Client, ClientError
from livecommerce.config import Limits, Settings
from livecommerce.errors import ConfigError
from livecommerce.http.keys import BACKENDS
from livecommerce.inventory.rules import Attempt, Sale, order_id, room_of_order
from livecommerce.protocol import dumps, encode_event, split_frame
from livecommerce.rooms.state import Room
from tests import (
    test_contract_inventory,
    test_contract_outbox,
    test_contract_stores,
    test_room_ws,
)
from tests.conftest import (
    ID_KEY,
    SECRET,
    ClientFactory,
    LiveServer,
    RedisClusterNodes,
    ServerFactory,
    ServerProcess,
    token,
)
from tests.test_room_ws import raw_ws

pytestmark = [pytest.mark.redis, pytest.mark.slow]

GLOBAL_KEYS = {ROOMS_INDEX, SWEEP_INDEX, OUTBOX_INDEX}


@pytest.fixture
def settings(redis_cluster: RedisClusterNodes) -> Settings:
    """The conftest's test settings, on the cluster (``backends`` and ``start_server``
    use them)."""
    return Settings(
        secret=SECRET,
        demo=True,
        tick_ms=10,
        redis_url=redis_cluster.url,
        presence_interval_ms=100,
        limits=Limits(connect_timeout_s=1.0),
    )


# The contract suites of every store, on the cluster. The one test that reads the
# single Redis's keys has its cluster version below.
for _suite in (test_contract_stores, test_contract_inventory, test_contract_outbox):
    for _name in dir(_suite):
        if _name.startswith("test_") and _name != "test_redis_keys_of_a_room_share_one_hash_tag":
            globals()[f"{_name}_on_cluster"] = getattr(_suite, _name)


# Two room tests over WebSocket: a room's shard subscription dropped and taken again at
# once, and the private lines of moderation (the rest of those suites passes on the
# cluster too, but takes a minute).
async def test_a_room_emptied_and_rejoined_on_cluster(
    start_server: ServerFactory, connect: ClientFactory
) -> None:
    # fewer rounds than on one Redis: each one reopens the room's channel on the
    # cluster (subscribe, snapshot, the promotions' reads), over a second a round here
    await test_room_ws.emptied_and_rejoined(start_server, connect, rounds=6)


test_moderation_on_cluster = test_room_ws.test_moderation_mute_ban_slow_and_delete


def master_of(cluster: RedisClusterNodes, name: str) -> int:
    """The port of the master that holds key ``name`` (CLUSTER KEYSLOT, CLUSTER SLOTS)."""
    node = cluster.node(cluster.ports[0])
    try:
        slot = int(node.cluster("KEYSLOT", name))
        for start, end, (_host, port, *_), *_replicas in node.cluster("SLOTS"):
            if start <= slot <= end:
                return int(port)
    finally:
        node.close()
    raise AssertionError(f"slot of {name} not covered")


def rooms_on_distinct_masters(cluster: RedisClusterNodes, n: int) -> list[str]:
    """``n`` room ids whose keys live on ``n`` different masters."""
    found: dict[int, str] = {}
    for i in range(200):
        found.setdefault(master_of(cluster, f"lc:{{show-{i}}}:seq"), f"show-{i}")
        if len(found) == n:
            return list(found.values())
    raise AssertionError("no rooms found on distinct masters")


def all_keys(cluster: RedisClusterNodes) -> dict[int, list[str]]:
    """Every key of the cluster, by the port of the master that holds it."""
    out = {}
    for port in cluster.ports:
        node = cluster.node(port)
        out[port] = sorted(k.decode() for k in node.scan_iter(count=1000))
        node.close()
    return out


def is_type(kind: str) -> Callable[[dict[str, Any]], bool]:
    return lambda e: e["type"] == kind


def chat_saying(text: str) -> Callable[[dict[str, Any]], bool]:
    return lambda e: e["type"] == "chat" and e["text"] == text


def presence_of(room: str, viewers: int) -> Callable[[dict[str, Any]], bool]:
    return lambda e: e["type"] == "presence" and e["room"] == room and e["viewers"] == viewers


async def new_room(server: LiveServer, room: str, host_token: str) -> None:
    """Create ``room`` over HTTP, with a product ``mug``."""
    base = f"http://127.0.0.1:{server.port}/api/rooms"
    auth = {"Authorization": f"Bearer {host_token}"}
    async with aiohttp.ClientSession() as s:
        async with s.post(base, json={"title": room, "id": room}, headers=auth) as resp:
            assert resp.status == 201, await resp.text()
        product = {"title": "Mug", "price": 1800}
        async with s.put(f"{base}/{room}/products/mug", json=product, headers=auth) as resp:
            assert resp.status == 200, await resp.text()


async def test_every_key_of_a_room_is_in_its_slot(
    backends: Backends, redis_cluster: RedisClusterNodes
) -> None:
    r1, r2 = rooms_on_distinct_masters(redis_cluster, 2)
    now = 1_800_000_000_000
    for room in (r1, r2):
        await backends.rooms.create(Room(room, "T", "h", "scheduled", 1))
        await backends.log.publish(room, b'{"type":"chat","msg_id":"m"}', kind="chat", ref="m")
        await backends.log.publish(room, b'{"type":"announcement"}', kind="announcement")
        await backends.log.send_private(room, "u", b'{"type":"x"}')
        await backends.counters.add_likes(room, 1)
        await backends.counters.report_presence(room, "n", 1, 1)
        await backends.counters.count(room, {"chats": 1})
        await backends.counters.note_viewers(room, 3)
        m = backends.moderation
        await m.set_banned(room, "u", True)
        await m.mute(room, "u", 1)
        await m.set_slow(room, 5)
        await m.admit_chat(room, "v", 1)
        await m.change_filter(room, ["bad"], [], "block")
        await m.flag(room, "m", b"{}")
        await m.log_action(room, b"{}")
        sale = Sale("s1", room, "mug", "Mug", 100, 5, 2, now, now + 60_000)
        await backends.inventory.start_sale(sale, encode_event("sale.started", room, now, {}))
        attempts = [Attempt(order_id(room, u, "k", ID_KEY), u, "k", 1) for u in ("a", "b")]
        outs = await backends.inventory.reserve(room, "s1", attempts, now_ms=now, hold_ms=1)
        first, second = (o.order for o in outs)
        assert first is not None and second is not None
        await backends.inventory.settle(first.id, "paid", event_id="e1", now_ms=now)
        await backends.inventory.sweep(room, now + 10)  # the second hold expires
        await backends.inventory.settle(second.id, "paid", event_id="e2", now_ms=now + 20)
        [entry, *_] = await backends.outbox.read("w", 10, block_ms=0)
        await backends.outbox.failed(entry)
        await backends.outbox.bury(entry, "test", now)
    keys = all_keys(redis_cluster)
    held = {room: master_of(redis_cluster, f"lc:{{{room}}}:seq") for room in (r1, r2)}
    assert held[r1] != held[r2]
    for room, port in held.items():
        mine = [k for k in keys[port] if k.startswith(f"lc:{{{room}}}:")]
        assert len(mine) >= 25, mine  # log, chats, figures, moderation, sales, orders, outbox
        for other in redis_cluster.ports:
            if other != port:
                assert not [k for k in keys[other] if k.startswith(f"lc:{{{room}}}:")]
    # Everything else is one of the three indexes, each a key of its own
    rest = {k for ks in keys.values() for k in ks if not k.startswith(("lc:{show-",))}
    assert rest == GLOBAL_KEYS


def test_a_cluster_url_names_a_node_of_database_0() -> None:
    ok = Settings(
        secret=SECRET, sandbox_shop=True, redis_url="redis+cluster://10.0.0.1:7000"
    ).check()
    assert ok.redis_cluster
    assert (
        Settings(secret=SECRET, sandbox_shop=True, redis_url="rediss+cluster://r:7000/0")
        .check()
        .redis_cluster
    )
    assert (
        not Settings(secret=SECRET, sandbox_shop=True, redis_url="redis://r:6379/3")
        .check()
        .redis_cluster
    )
    for url in ("redis+cluster://", "redis+cluster://r:7000/2"):
        with pytest.raises(ConfigError):
            Settings(secret=SECRET, sandbox_shop=True, redis_url=url).check()


async def test_two_servers_share_rooms_on_different_masters(
    start_server: ServerFactory, connect: ClientFactory, redis_cluster: RedisClusterNodes
) -> None:
    r1, r2 = rooms_on_distinct_masters(redis_cluster, 2)
    a, b = await start_server(), await start_server()
    host_token = token("h1", "host")
    host = await connect(a, host_token)
    for room in (r1, r2):
        await new_room(a, room, host_token)
        await host.request("room.start", room=room)
    on_a, on_b = await connect(a, token("ann")), await connect(b, token("bob"))
    watchers = [await connect(b) for _ in range(2)]
    for room in (r1, r2):
        for c in (host, on_a, on_b, *watchers):
            await c.join(room)

    # A chat said on one server reaches the other with the same seq, in each room
    said = await on_a.request("chat", room=r1, text="hello from a")
    heard = await on_b.next_event(lambda e: e["type"] == "chat" and e["room"] == r1)
    assert (heard["seq"], heard["text"]) == (said["seq"], "hello from a")
    said = await on_b.request("chat", room=r2, text="hello from b")
    heard = await on_a.next_event(lambda e: e["type"] == "chat" and e["room"] == r2)
    assert (heard["seq"], heard["text"]) == (said["seq"], "hello from b")

    # Presence adds up both servers' members: host, ann, bob and two watchers. Each
    # room says it once (presence goes out when it changes), in either order; asked
    # of the host, whose events nothing has read yet (waiting for a chat above drops
    # the events before it, and a presence may come before a chat).
    waiting = {r1, r2}
    while waiting:
        event = await host.next_event(lambda e: any(presence_of(r, 5)(e) for r in waiting))
        waiting.discard(event["room"])

    # A line for one user reaches that user on the other server, and only them
    await host.request("mod.mute", room=r1, user="bob", seconds=60)
    note = await on_b.next_event(is_type("moderation"))
    assert note["room"] == r1 and note["action"] == "muted"
    with pytest.raises(ClientError) as err:
        await on_b.request("chat", room=r1, text="let me talk")
    assert err.value.code == "muted"
    with pytest.raises(TimeoutError):
        await watchers[0].next_event(is_type("moderation"), timeout=0.3)


async def test_history_resumes_on_the_other_server(
    start_server: ServerFactory, connect: ClientFactory, redis_cluster: RedisClusterNodes
) -> None:
    [room] = rooms_on_distinct_masters(redis_cluster, 1)
    a, b = await start_server(), await start_server()
    host_token = token("h1", "host")
    host = await connect(a, host_token)
    await new_room(a, room, host_token)
    await host.request("room.start", room=room)
    talker = await connect(a, token("t"))
    async with aiohttp.ClientSession() as session:
        ws = await raw_ws(session, b)
        await ws.send_str(dumps({"op": "join", "id": 1, "room": room}).decode())
        snap = split_frame(await ws.receive_str(timeout=5))[0]["data"]["snapshot"]
        await ws.close()
        missed = [
            (await host.request("announce", room=room, text=f"a{i}"))["seq"] for i in range(5)
        ]
        missed.append((await talker.request("chat", room=room, text="missed"))["seq"])
        ws = await raw_ws(session, a)  # back, on the other server
        join = {"op": "join", "id": 2, "room": room, "since": snap["seq"], "epoch": snap["epoch"]}
        await ws.send_str(dumps(join).decode())
        events: list[dict[str, Any]] = []
        while len([e for e in events if "seq" in e]) < len(missed):
            events += split_frame(await ws.receive_str(timeout=5))
        assert events[0]["id"] == 2 and events[0]["data"]["recovered"] is True
        assert [e["seq"] for e in events if "seq" in e] == missed
        assert missed == list(range(snap["seq"] + 1, snap["seq"] + 7))
        await ws.close()

    # The client library: a dropped connection comes back and resumes without a gap
    listener = await connect(b, token("l"))
    await listener.join(room)
    assert listener._ws is not None
    await listener._ws.close(code=1012)
    sent = [await talker.request("chat", room=room, text=t) for t in ("two", "three")]
    resumed = await listener.next_event(is_type("client.resumed"))
    assert resumed["recovered"] is True
    seqs = [(await listener.next_event(is_type("chat")))["seq"] for _ in sent]
    assert seqs == [s["seq"] for s in sent]


async def test_a_flash_sale_served_by_two_servers_sells_the_stock_exactly(
    start_server: ServerFactory, connect: ClientFactory, redis_cluster: RedisClusterNodes
) -> None:
    r1, r2 = rooms_on_distinct_masters(redis_cluster, 2)
    a, b = await start_server(), await start_server()
    host_token = token("h1", "host")
    host = await connect(a, host_token)
    sales = {}
    for room in (r1, r2):
        await new_room(a, room, host_token)
        await host.request("room.start", room=room)
        reply = await host.request(
            "sale.start",
            room=room,
            sku="mug",
            price=999,
            stock=7,
            limit_per_user=1,
            duration_s=300,
        )
        sales[room] = reply["sale"]["id"]
    watcher = await connect(b)
    await watcher.join(r1)
    buyers = [await connect(a if i % 2 else b, token(f"buyer-{i}")) for i in range(24)]

    async def buy(c: Client, room: str) -> str | None:
        try:
            reply = await c.request("order", room=room, sale=sales[room], qty=1, key="k")
        except ClientError as exc:
            assert exc.code == "sold_out"
            return None
        oid: str = reply["order"]["id"]
        return oid

    results = await asyncio.gather(*(buy(c, room) for c in buyers for room in (r1, r2)))
    for room in (r1, r2):
        placed = sorted(oid for oid in results if oid and room_of_order(oid) == room)
        store = a.app[BACKENDS]
        sale = await store.inventory.sale(room, sales[room])
        assert sale is not None and sale.remaining == 0 and sale.held == 7
        orders = await store.inventory.orders(room)
        assert len(orders) == 7 and {o.status for o in orders} == {"held"}
        assert sorted(o.id for o in orders) == placed
        # each hold was written with its outbox entry, in the room's slot
        assert sorted(e["id"] for e in await store.inventory.outbox(room)) == placed
    stock = await watcher.next_event(lambda e: e["type"] == "stock" and e["remaining"] == 0)
    assert stock["sale_id"] == sales[r1]
    # The order bridges of both servers deliver every entry to the sandbox shop
    deadline = time.monotonic() + 15
    while await a.app[BACKENDS].outbox.backlog():
        assert time.monotonic() < deadline, "the outbox was not delivered"
        await asyncio.sleep(0.1)


async def test_a_read_waits_for_entries_of_rooms_on_different_masters(
    backends: Backends, redis_cluster: RedisClusterNodes
) -> None:
    r1, r2, r3 = rooms_on_distinct_masters(redis_cluster, 3)
    for room in (r1, r2, r3):
        await test_contract_outbox.orders(backends, 1, room)
    assert len(await backends.outbox.read("w1", 10, block_ms=0)) == 3
    waiting = asyncio.create_task(backends.outbox.read("w1", 10, block_ms=3000))
    await asyncio.sleep(0.2)
    assert not waiting.done()
    late = Attempt(order_id(r3, "late", "k", ID_KEY), "late", "k", 1)
    await backends.inventory.reserve(
        r3, "s1", [late], now_ms=test_contract_outbox.NOW, hold_ms=60_000
    )
    got = await asyncio.wait_for(waiting, 3)
    assert [e.fields["id"] for e in got] == [late.order_id]


async def test_scripts_are_loaded_again_after_a_script_flush_on_every_master(
    backends: Backends, redis_cluster: RedisClusterNodes
) -> None:
    rooms = rooms_on_distinct_masters(redis_cluster, 3)
    for room in rooms:
        await test_contract_outbox.orders(backends, 1, room)
    for port in redis_cluster.ports:
        node = redis_cluster.node(port)
        node.script_flush()
        node.close()
    for room in rooms:
        assert await backends.log.publish(room, b'{"type":"x"}') == 2  # after sale.started
        assert len(await test_contract_outbox.orders(backends, 2, room)) == 2  # u0 again, u1
        assert len(await backends.inventory.outbox(room)) == 2
        assert (await backends.log.head(room)).seq == 2


async def test_a_burst_of_commands_waits_for_turns(
    settings: Settings, redis_cluster: RedisClusterNodes
) -> None:
    """More commands at once than a node's connection limit: they queue for a turn
    instead of failing with "Too many connections"."""
    rooms = rooms_on_distinct_masters(redis_cluster, 1) * 4
    async with make_backends(settings) as b:
        burst = [b.log.publish(room, b'{"type":"x"}') for room in rooms for _ in range(150)]
        burst += [b.counters.add_likes(room, 1) for room in rooms for _ in range(150)]
        assert len(burst) > 10 * REDIS_CONCURRENCY
        done = await asyncio.gather(*burst)
        assert sorted(done[:600]) == list(range(1, 601))
        assert max(done[600:]) == 600


async def test_a_server_process_runs_on_the_cluster(
    start_server: ServerFactory,
    connect: ClientFactory,
    redis_cluster: RedisClusterNodes,
    spawn: Callable[..., ServerProcess],
) -> None:
    proc = spawn("--redis-url", redis_cluster.url, "--secret", SECRET, "--demo", "--tick-ms", "20")
    app = await start_server()
    there = await connect(proc.port, token("p"))
    here = await connect(app, token("q"))
    for c in (there, here):
        await c.join("demo")
    for speaker, listener, text in ((there, here, "from the process"), (here, there, "app")):
        said = await speaker.request("chat", room="demo", text=text)
        heard = await listener.next_event(chat_saying(text))
        assert heard["seq"] == said["seq"]


def test_the_fixture_started_a_three_master_cluster(redis_cluster: RedisClusterNodes) -> None:
    assert 6379 not in redis_cluster.ports
    node = redis_cluster.node(redis_cluster.ports[0])
    info = node.cluster("INFO")
    node.close()
    assert info["cluster_state"] == "ok" and info["cluster_size"] == "3"
