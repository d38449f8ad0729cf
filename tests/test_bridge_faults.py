"""The order bridge against a real HTTP order system that misbehaves (Redis backend).

The order system here is an aiohttp server of the test's own, on a free port. It checks
every delivery with the reference ``standardwebhooks`` package, applies each order once
(it dedupes by ``webhook-id``, as the Standard Webhooks receiver must), and can be told to
answer 500, to time out or to drop the connection without an answer, at random. Orders
are placed through the WebSocket API of real ``livecommerce serve`` processes; the
bridge runs in those processes, in ``livecommerce bridge`` processes, or (where the command
line has no knob for what the test needs: the HTTP timeout, the takeover delay) as an
in-process :class:`Bridge` on the same Redis outbox.
"""

from __future__ import annotations

import asyncio
import base64
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import aiohttp
import pytest
import redis.asyncio as aioredis
from aiohttp import web
from standardwebhooks import Webhook, WebhookVerificationError

from livecommerce.backends.redis import key
from livecommerce.backends.redis_outbox import GROUP, RedisOutboxStore
from livecommerce.client import Client
from livecommerce.orders.bridge import Bridge, BridgeSettings, HttpTransport
from livecommerce.orders.webhooks import parse_secret
from livecommerce.protocol import dumps, loads
from tests.conftest import HOST, ROOT, SECRET, ServerProcess, token

OUTBOX = key("demo", "outbox")
ADMIN = token("adm", "admin")
PRICE = 999
Fault = Literal["none", "error", "drop", "timeout"]


def new_secret() -> str:
    """A Standard Webhooks secret: ``whsec_`` and 32 random bytes in base64."""
    return "whsec_" + base64.b64encode(os.urandom(32)).decode()


@dataclass(repr=False)
class OrderSystem:
    """The shop's order system: receives ``order.held`` webhooks on ``/webhooks``.

    Every delivery is verified with ``standardwebhooks`` (401 if it does not verify).
    An order is applied the first time its ``webhook-id`` is seen; later deliveries of it
    are answered 200 and change nothing. ``fault`` makes it misbehave at random with
    probability ``fault_rate``, at most ``max_faults`` times per order (so a test's time
    stays bounded by the bridge's backoff): ``error`` answers 500; ``drop`` closes the
    connection with no answer, half of the time after applying the order (the answer
    is lost, not the order); ``timeout`` answers after ``timeout_s`` (longer than the
    bridge waits), applying the order late. ``delay_s`` delays every answer, after the
    order is applied. Orders of ``reject_buyers`` are refused with 400 (poison).
    """

    secret: str = field(default_factory=new_secret)
    seed: int = field(default_factory=lambda: random.SystemRandom().randrange(2**32))
    fault: Fault = "none"
    fault_rate: float = 0.3
    max_faults: int = 3
    timeout_s: float = 1.0
    delay_s: float = 0.0
    reject_buyers: set[str] = field(default_factory=set)

    deliveries: Counter[str] = field(default_factory=Counter)
    """Order id -> verified deliveries (every attempt that reached us, whatever we did)."""
    applied: Counter[str] = field(default_factory=Counter)
    """Order id -> times applied (1 for each order, if dedupe by ``webhook-id`` works)."""
    orders: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Order id -> ``data`` of the delivery that applied it."""
    faults: Counter[str] = field(default_factory=Counter)
    """Order id -> deliveries we failed on purpose."""
    rejected: Counter[str] = field(default_factory=Counter)
    seen: set[str] = field(default_factory=set)
    raw: list[tuple[bytes, dict[str, str]]] = field(default_factory=list)
    bad_signatures: int = 0
    id_mismatches: int = 0
    """Deliveries whose ``webhook-id`` is not the order id, or not an ``order.held``."""
    active: int = 0
    port: int = 0

    def __repr__(self) -> str:  # for assertion messages: the seed and the counts
        return (
            f"OrderSystem(seed={self.seed}, fault={self.fault!r}, "
            f"deliveries={sum(self.deliveries.values())}, applied={len(self.applied)}, "
            f"faults={sum(self.faults.values())}, rejected={sum(self.rejected.values())}, "
            f"bad_signatures={self.bad_signatures})"
        )

    def __post_init__(self) -> None:
        self.webhook = Webhook(self.secret)
        self.rng = random.Random(self.seed)
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/webhooks"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/webhooks", self.receive)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert isinstance(server, asyncio.base_events.Server)
        self.port = server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def _apply(self, webhook_id: str, data: dict[str, Any]) -> None:
        if webhook_id in self.seen:
            return  # a redelivery: already applied
        self.seen.add(webhook_id)
        self.applied[data["id"]] += 1
        self.orders[data["id"]] = data

    def _fault(self, oid: str) -> Fault:
        if self.fault == "none" or self.faults[oid] >= self.max_faults:
            return "none"
        if self.rng.random() >= self.fault_rate:
            return "none"
        self.faults[oid] += 1
        return self.fault

    async def receive(self, request: web.Request) -> web.Response:
        self.active += 1
        try:
            return await self._receive(request)
        finally:
            self.active -= 1

    async def _receive(self, request: web.Request) -> web.Response:
        body = await request.read()
        headers = dict(request.headers)
        try:
            payload = self.webhook.verify(body, headers)
        except WebhookVerificationError:
            self.bad_signatures += 1
            return web.json_response({"error": "bad signature"}, status=401)
        self.raw.append((body, headers))
        data: dict[str, Any] = payload["data"]
        oid: str = data["id"]
        webhook_id = request.headers["webhook-id"]
        if webhook_id != oid or payload["type"] != "order.held":
            self.id_mismatches += 1
        self.deliveries[oid] += 1
        if data["buyer_id"] in self.reject_buyers:
            self.rejected[oid] += 1
            return web.json_response({"error": "we do not sell to you"}, status=400)
        fault = self._fault(oid)
        if fault == "error":
            return web.json_response({"error": "try later"}, status=500)
        if fault == "drop":
            if self.rng.random() < 0.5:
                self._apply(webhook_id, data)
            assert request.transport is not None
            request.transport.close()
            return web.Response()  # never sent: the connection is gone
        if fault == "timeout":
            await asyncio.sleep(self.timeout_s)
            self._apply(webhook_id, data)
            return web.json_response({})  # the bridge stopped waiting long ago
        self._apply(webhook_id, data)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        return web.json_response({})

    def redelivered(self) -> set[str]:
        return {oid for oid, n in self.deliveries.items() if n > 1}


@pytest.fixture
async def shop() -> AsyncIterator[OrderSystem]:
    system = OrderSystem()
    await system.start()
    yield system
    for _ in range(200):  # let late answers (timeouts, delays) finish
        if not system.active:
            break
        await asyncio.sleep(0.02)
    await system.stop()


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    r = aioredis.Redis.from_url(redis_url)
    yield r
    await r.aclose()


def serve_args(redis_url: str, shop: OrderSystem, *extra: str) -> list[str]:
    return [
        "--redis-url",
        redis_url,
        "--secret",
        SECRET,
        "--demo",
        "--order-webhook-url",
        shop.url,
        "--order-webhook-secret",
        shop.secret,
        *extra,
    ]


async def until(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        await asyncio.sleep(0.05)


# -- orders through the WebSocket API -------------------------------------------------


@dataclass(frozen=True)
class Placed:
    user: str
    order: dict[str, Any]


async def open_sale(port: int, *, stock: int = 5000, limit: int = 10) -> str:
    async with Client(f"ws://127.0.0.1:{port}/ws", token=HOST) as host:
        reply = await host.request(
            "sale.start",
            room="demo",
            sku="mug-01",
            price=PRICE,
            stock=stock,
            limit_per_user=limit,
            duration_s=600,
        )
    sale: str = reply["sale"]["id"]
    return sale


async def place_orders(port: int, sale: str, users: list[str], per_user: int) -> dict[str, Placed]:
    """``per_user`` orders of each user (at most 5: the server's burst of ``order``
    commands per user), each over the user's own connection; order id -> who and what."""
    assert per_user <= 5
    placed: dict[str, Placed] = {}

    async def buy(user: str) -> None:
        async with Client(f"ws://127.0.0.1:{port}/ws", token=token(user)) as c:
            for j in range(per_user):
                reply = await c.request(
                    "order", room="demo", sale=sale, qty=1 + j % 2, key=f"{user}-k{j}"
                )
                order = reply["order"]
                assert order["status"] == "held"
                placed[order["id"]] = Placed(user, order)

    await asyncio.gather(*(buy(u) for u in users))
    assert len(placed) == len(users) * per_user
    return placed


def check_applied(shop: OrderSystem, placed: dict[str, Placed], sale: str) -> None:
    """Every accepted order reached the order system, was applied exactly once, and
    carried what the buyer was told; nothing else arrived; every delivery verified."""
    assert shop.bad_signatures == 0
    assert shop.id_mismatches == 0, "webhook-id must be the order id, on every attempt"
    assert set(shop.applied) == set(placed), "every accepted order, and nothing else"
    assert set(shop.applied.values()) == {1}, "each order applied exactly once"
    for oid, p in placed.items():
        data = shop.orders[oid]
        assert (data["room"], data["sale"], data["sku"], data["buyer_id"]) == (
            "demo",
            sale,
            "mug-01",
            p.user,
        )
        assert (data["qty"], data["unit_price"], data["currency"]) == (
            p.order["qty"],
            PRICE,
            "USD",
        )
        assert data["expires_at"] == p.order["expires_at"]


async def admin(base: str, method: str, path: str, body: Any = None, tok: str = ADMIN) -> Any:
    async with (
        aiohttp.ClientSession() as s,
        s.request(
            method, base + path, json=body, headers={"Authorization": f"Bearer {tok}"}
        ) as resp,
    ):
        return resp.status, await resp.json()


async def dead_letters(base: str) -> tuple[list[dict[str, Any]], int]:
    status, body = await admin(base, "GET", "/api/admin/dead-letters")
    assert status == 200, body
    return body["dead_letters"], body["backlog"]


async def drained(base: str) -> bool:
    return (await dead_letters(base))[1] == 0


# -- 1. errors, dropped connections and timeouts --------------------------------------


@pytest.mark.parametrize("fault", ["error", "drop"])
async def test_every_order_arrives_once_through_errors_and_dropped_connections(
    fault: Fault,
    redis_url: str,
    shop: OrderSystem,
    spawn: Callable[..., ServerProcess],
) -> None:
    # The server's own bridge, with the default backoff (1 s, doubling, full jitter):
    # the order system fails an order at most 3 times, so the last try of any order
    # comes at most 1 + 2 + 4 s after its first.
    shop.fault, shop.fault_rate = fault, 0.5 if fault == "error" else 0.3
    p = spawn(*serve_args(redis_url, shop, "--order-webhook-max-attempts", "20"))
    sale = await open_sale(p.port)
    placed = await place_orders(p.port, sale, [f"b{i}" for i in range(60)], 5)

    await until(lambda: drained(p.url), 25, "every order delivered and acknowledged")
    check_applied(shop, placed, sale)
    letters, _ = await dead_letters(p.url)
    assert letters == []
    assert sum(shop.faults.values()) >= 30, "the order system did misbehave"
    assert set(shop.faults) <= shop.redelivered(), "every failed delivery was tried again"
    assert all(shop.deliveries[oid] == shop.faults[oid] + 1 for oid in placed), (
        "each failure followed by one more try; an acknowledged order never sent again"
    )


async def test_timed_out_deliveries_are_retried_and_applied_once(
    redis_url: str,
    redis: aioredis.Redis,
    shop: OrderSystem,
    spawn: Callable[..., ServerProcess],
) -> None:
    # `serve` has no flag for the delivery timeout (Settings.bridge_timeout_s, 10 s),
    # so the orders come from a server without a bridge and an in-process Bridge with
    # a 0.5 s timeout and a short backoff delivers them from the same Redis outbox.
    shop.fault, shop.fault_rate, shop.timeout_s = "timeout", 0.3, 1.0
    p = spawn(*serve_args(redis_url, shop, "--no-bridge"))
    sale = await open_sale(p.port)
    placed = await place_orders(p.port, sale, [f"t{i}" for i in range(40)], 5)
    assert shop.deliveries == Counter(), "--no-bridge: the server delivers nothing"

    store = RedisOutboxStore(redis)
    transport = HttpTransport(shop.url, timeout_s=0.5)
    told: Counter[str] = Counter()

    async def delivered(oid: str, payment_url: str | None) -> None:
        told[oid] += 1

    bridge = Bridge(
        store,
        transport,
        parse_secret(shop.secret),
        consumer="timeouts",
        on_delivered=delivered,
        settings=BridgeSettings(backoff_base_s=0.05, backoff_max_s=0.5, max_failures=50),
    )
    task = asyncio.create_task(bridge.run())
    try:

        async def done() -> bool:
            return await store.backlog() == 0

        await until(done, 25, "every order delivered and acknowledged")
    finally:
        bridge.stop()
        await task
        await transport.close()
    check_applied(shop, placed, sale)
    timed_out = set(shop.faults)
    assert len(timed_out) >= 20, "the order system did time out"
    # each timeout is a failed delivery (a busy machine may add a slow answer or two)
    assert bridge.failures >= sum(shop.faults.values())
    assert bridge.delivered == len(placed) and bridge.buried == 0
    assert told == Counter(set(placed)), "each order reported delivered once"
    assert timed_out <= shop.redelivered()
    assert await store.dead_letters() == []


# -- 2. a bridge process killed in the middle of a batch -------------------------------


class BridgeProcess:
    """A real ``livecommerce bridge`` process; output to a file (never a pipe)."""

    def __init__(self, redis_url: str, shop: OrderSystem) -> None:
        self.log = tempfile.NamedTemporaryFile(prefix="livecommerce-bridge-", suffix=".log")  # noqa: SIM115
        argv = [sys.executable, "-m", "livecommerce", "bridge", "--redis-url", redis_url]
        argv += ["--order-webhook-url", shop.url, "--order-webhook-secret", shop.secret]
        clean = {k: v for k, v in os.environ.items() if not k.startswith("LIVECOMMERCE_")}
        self.proc = subprocess.Popen(
            argv, cwd=ROOT, env=clean, stdout=self.log, stderr=subprocess.STDOUT
        )

    @property
    def consumer(self) -> str:
        """Its name in the consumer group (``make_bridge``: host and pid)."""
        return f"{socket.gethostname()}-{self.proc.pid}"

    def output(self) -> str:
        with open(self.log.name, encoding="utf-8", errors="replace") as f:
            return f.read()

    async def started(self) -> None:
        deadline = time.monotonic() + 15
        while f"bridge {self.consumer} delivering" not in self.output():
            assert self.proc.poll() is None, self.output()
            assert time.monotonic() < deadline, self.output()
            await asyncio.sleep(0.05)

    def stop(self, sig: int = signal.SIGKILL) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait(15)
        self.log.close()
        return code


@pytest.fixture
def bridges() -> Iterator[list[BridgeProcess]]:
    started: list[BridgeProcess] = []
    yield started
    for b in started:
        b.stop()


async def pending_of(r: aioredis.Redis) -> dict[str, set[str]]:
    """Consumer -> order ids pending on it, in the demo room's outbox."""
    rows: Any = await r.xpending_range(OUTBOX, GROUP, min="-", max="+", count=100_000)
    out: dict[str, set[str]] = {}
    for row in rows:
        entry: Any = await r.xrange(OUTBOX, row["message_id"], row["message_id"])
        if entry:  # not acknowledged (and so deleted) since the pending list was read
            out.setdefault(row["consumer"].decode(), set()).add(entry[0][1][b"id"].decode())
    return out


async def unread(r: aioredis.Redis) -> int:
    """Entries nobody has read: the stream holds only what is pending or unread
    (delivered entries leave it), and Redis forgets the group's lag once its last-read
    entry is deleted."""
    async with r.pipeline(transaction=True) as pipe:
        pipe.xlen(OUTBOX)
        pipe.xinfo_groups(OUTBOX)
        length, groups = await pipe.execute()
    pending = next(g["pending"] for g in groups if g["name"] == GROUP.encode())
    return int(length) - int(pending)


async def test_a_bridge_killed_mid_batch_loses_nothing(
    redis_url: str,
    redis: aioredis.Redis,
    shop: OrderSystem,
    spawn: Callable[..., ServerProcess],
    bridges: list[BridgeProcess],
) -> None:
    shop.delay_s = 0.2  # 64 deliveries in flight, for 0.2 s each: a batch to kill
    p = spawn(*serve_args(redis_url, shop, "--no-bridge"))
    sale = await open_sale(p.port)
    placed = await place_orders(p.port, sale, [f"k{i}" for i in range(60)], 5)

    first = BridgeProcess(redis_url, shop)
    bridges.append(first)
    await first.started()

    async def under_way() -> bool:
        return len(shop.deliveries) >= 100

    await until(under_way, 15, "deliveries under way")
    assert first.stop(signal.SIGKILL) == -signal.SIGKILL
    await asyncio.sleep(0.5)  # requests the dead process had sent are read and answered
    arrived = set(shop.deliveries)
    assert len(arrived) < len(placed), "killed mid-way"
    orphans = (await pending_of(redis)).get(first.consumer, set())
    assert orphans, "the killed worker had entries in flight"
    assert orphans & arrived, "some of them had reached the order system, unanswered"

    # A new process: a new consumer name (host-pid). It delivers everything nobody
    # had read, and leaves the dead worker's entries pending, not lost: it takes them
    # over only once idle for claim_idle_s, 60 s, which the command line cannot lower.
    second = BridgeProcess(redis_url, shop)
    bridges.append(second)
    await second.started()

    async def rest_delivered() -> bool:
        return await unread(redis) == 0 and set(await pending_of(redis)) == {first.consumer}

    await until(rest_delivered, 15, "the second bridge delivering the unread entries")
    assert (await pending_of(redis))[first.consumer] == orphans
    assert set(shop.applied) == set(placed) - (orphans - arrived)
    assert second.stop(signal.SIGTERM) == 0

    # The takeover, with claim_idle_s lowered to 1 s (in process: no flag for it).
    store = RedisOutboxStore(redis)
    transport = HttpTransport(shop.url)

    async def delivered(oid: str, payment_url: str | None) -> None:
        pass

    heir = Bridge(
        store,
        transport,
        parse_secret(shop.secret),
        consumer="heir",
        on_delivered=delivered,
        settings=BridgeSettings(claim_idle_s=1.0),
    )
    task = asyncio.create_task(heir.run())
    try:

        async def done() -> bool:
            return await store.backlog() == 0

        await until(done, 15, "the dead worker's entries taken over and delivered")
    finally:
        heir.stop()
        await task
        await transport.close()
    assert heir.delivered == len(orphans), "exactly the dead worker's entries"
    check_applied(shop, placed, sale)
    assert shop.redelivered() == orphans & arrived, (
        "only what the dead worker had sent without an acknowledgement came twice"
    )
    assert max(shop.deliveries.values()) == 2
    assert await pending_of(redis) == {}


# -- 3. poison entries ------------------------------------------------------------------


async def test_poison_entries_go_to_the_dead_letters_and_can_be_redriven(
    redis_url: str,
    redis: aioredis.Redis,
    shop: OrderSystem,
    spawn: Callable[..., ServerProcess],
) -> None:
    shop.reject_buyers = {"poison"}
    p = spawn(*serve_args(redis_url, shop, "--order-webhook-max-attempts", "3"))
    sale = await open_sale(p.port)
    # a malformed entry (no qty, price or times) first, then an order the order system
    # always refuses, then the others: neither may hold them up
    await redis.xadd(
        OUTBOX,
        {"id": "demo.malformed", "room": "demo", "sale": sale, "sku": "mug-01", "user": "x"},
    )
    poison = next(iter(await place_orders(p.port, sale, ["poison"], 1)))
    placed = await place_orders(p.port, sale, [f"g{i}" for i in range(20)], 5)

    async def others_applied() -> bool:
        return set(placed) <= set(shop.applied)

    await until(others_applied, 10, "the other orders delivered")

    async def buried() -> bool:
        letters, backlog = await dead_letters(p.url)
        return len(letters) == 2 and backlog == 0

    await until(buried, 15, "both poison entries in the dead letters")
    letters, _ = await dead_letters(p.url)
    by_order = {d["order_id"]: d for d in letters}
    assert set(by_order) == {"demo.malformed", poison}
    assert by_order["demo.malformed"]["reason"] == "malformed"
    assert (by_order[poison]["reason"], by_order[poison]["failures"]) == ("HTTP 400", 3)
    assert by_order[poison]["entry"]["user"] == "poison"
    assert shop.rejected[poison] == shop.deliveries[poison] == 3, "3 attempts, then buried"
    assert poison not in shop.applied and "demo.malformed" not in shop.deliveries
    check_applied(shop, placed, sale)

    viewer = token("nosy")
    assert (await admin(p.url, "GET", "/api/admin/dead-letters", tok=viewer))[0] == 403
    redrive = "/api/admin/dead-letters/redrive"
    assert (await admin(p.url, "POST", redrive, {"id": by_order[poison]["id"]}, viewer))[0] == 403
    assert (await admin(p.url, "POST", redrive, {"id": "demo/1-1"}))[0] == 404

    shop.reject_buyers.clear()  # the order system was fixed: re-drive the order
    status, body = await admin(p.url, "POST", redrive, {"id": by_order[poison]["id"]})
    assert (status, body) == (200, {"redriven": by_order[poison]["id"]})

    async def poison_applied() -> bool:
        return poison in shop.applied and await drained(p.url)

    await until(poison_applied, 10, "the re-driven order delivered")
    assert shop.applied[poison] == 1 and shop.deliveries[poison] == 4
    letters, _ = await dead_letters(p.url)
    assert [d["order_id"] for d in letters] == ["demo.malformed"]

    # a malformed entry re-driven is buried again (as a new dead letter), never sent
    malformed = letters[0]["id"]
    assert (await admin(p.url, "POST", redrive, {"id": malformed}))[0] == 200

    async def reburied() -> bool:
        letters, backlog = await dead_letters(p.url)
        ids = [(d["order_id"], d["id"] != malformed) for d in letters]
        return ids == [("demo.malformed", True)] and backlog == 0

    await until(reburied, 10, "the malformed entry buried again")
    assert "demo.malformed" not in shop.deliveries
    assert (await admin(p.url, "POST", redrive, {"id": malformed}))[0] == 404, "moved on"


# -- 4. signatures, with the reference package -----------------------------------------


def signed(
    wh: Webhook, msg_id: str, kind: str, order_id: str, at: datetime
) -> tuple[bytes, dict[str, str]]:
    """A callback of the order system, signed by ``standardwebhooks``."""
    body = dumps(
        {
            "type": kind,
            "timestamp": at.isoformat().replace("+00:00", "Z"),
            "data": {"order_id": order_id},
        }
    )
    headers = {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": wh.sign(msg_id, at, body.decode()),
        "content-type": "application/json",
    }
    return body, headers


async def post_event(base: str, body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as s,
        s.post(base + "/api/orders/events", data=body, headers=headers) as resp,
    ):
        return resp.status, loads(await resp.read())


async def order_status(base: str, oid: str, user: str) -> str:
    async with (
        aiohttp.ClientSession() as s,
        s.get(
            f"{base}/api/orders/{oid}", headers={"Authorization": f"Bearer {token(user)}"}
        ) as resp,
    ):
        assert resp.status == 200
        status: str = (await resp.json())["status"]
        return status


async def test_deliveries_and_callbacks_verify_with_standardwebhooks(
    redis_url: str, shop: OrderSystem, spawn: Callable[..., ServerProcess]
) -> None:
    p = spawn(*serve_args(redis_url, shop))
    sale = await open_sale(p.port)
    placed = await place_orders(p.port, sale, ["payer"], 2)

    async def delivered() -> bool:
        return set(shop.applied) == set(placed) and await drained(p.url)

    await until(delivered, 10, "both orders delivered")
    check_applied(shop, placed, sale)  # each delivery verified by standardwebhooks
    body, headers = shop.raw[0]
    Webhook(shop.secret).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(body, headers)  # another secret
    altered = body.replace(b'"qty":', b'"qty": ')
    assert altered != body
    with pytest.raises(WebhookVerificationError):
        Webhook(shop.secret).verify(altered, headers)  # one byte more in the body

    oid = min(placed)
    other = max(placed)
    wh = Webhook(shop.secret)
    now = datetime.now(UTC)
    buyer = Client(f"ws://127.0.0.1:{p.port}/ws", token=token("payer"))
    await buyer.connect()
    try:
        await buyer.join("demo")
        refused = [
            signed(Webhook(new_secret()), "evt-1", "order.paid", oid, now),  # wrong secret
            signed(wh, "evt-1", "order.paid", oid, now - timedelta(minutes=6)),  # stale
            signed(wh, "evt-1", "order.paid", oid, now + timedelta(minutes=6)),  # future
        ]
        tampered_body, tampered_headers = signed(wh, "evt-1", "order.paid", other, now)
        refused.append((tampered_body.replace(other.encode(), oid.encode()), tampered_headers))
        for body, headers in refused:
            status, answer = await post_event(p.url, body, headers)
            assert status == 401, answer
            assert answer["error"]["code"] == "unauthorized"
        assert await order_status(p.url, oid, "payer") == "held", "refused: nothing changed"
        assert await order_status(p.url, other, "payer") == "held"

        # the same event id, properly signed and fresh: applied (refusals left no trace)
        status, answer = await post_event(p.url, *signed(wh, "evt-1", "order.paid", oid, now))
        assert status == 200, answer
        assert (answer["applied"], answer["duplicate"]) == (True, False)
        assert answer["order"]["status"] == "paid"
        update = await buyer.next_event(lambda e: e["type"] == "order.updated", timeout=10)
        assert (update["order"]["id"], update["order"]["status"]) == (oid, "paid")
        assert await order_status(p.url, oid, "payer") == "paid"

        # the same event again: nothing more happens
        status, answer = await post_event(p.url, *signed(wh, "evt-1", "order.paid", oid, now))
        assert status == 200 and (answer["applied"], answer["duplicate"]) == (False, True)
        assert await order_status(p.url, other, "payer") == "held"
    finally:
        await buyer.close()


# -- the outbox reads (regressions of two bugs found with this file) --------------------


async def test_a_read_with_no_outbox_yet_waits(redis: aioredis.Redis) -> None:
    # Before any sale, no room has an outbox: a read that returned at once made every
    # idle Bridge.run spin on SMEMBERS (~4,400 a second, a third of a core).
    store = RedisOutboxStore(redis)
    started = time.monotonic()
    assert await store.read("idle", 10, block_ms=300) == []
    assert time.monotonic() - started >= 0.25, "OutboxStore.read: waits up to block_ms"


async def test_reads_across_rooms_hand_over_every_entry_they_take(
    redis: aioredis.Redis,
) -> None:
    # XREADGROUP's COUNT is per stream: a read of 5 over 3 rooms takes up to 15 onto
    # the reader's pending list. Each of them must come out of some later read, or it
    # waits, pending and unstarted, for claim_idle_s before anyone delivers it.
    rooms = ("r1", "r2", "r3")
    for room in rooms:
        await redis.sadd("lc:outboxes", room)
        for i in range(10):
            await redis.xadd(key(room, "outbox"), {"id": f"{room}.{i:020d}"})
    store = RedisOutboxStore(redis)
    got = await store.read("reader", 5, block_ms=100)
    assert len(got) == 5
    while batch := await store.read("reader", 5, block_ms=100):
        assert len(batch) <= 5
        got += batch
    pending = [(await redis.xpending(key(room, "outbox"), GROUP))["pending"] for room in rooms]
    assert sorted(e.fields["id"] for e in got) == sorted(
        f"{room}.{i:020d}" for room in rooms for i in range(10)
    )
    assert sum(pending) == len(got) == 30
