"""Real server processes: two on one Redis serve one room; signals; the command line."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from livecommerce.client import Client
from tests.conftest import ROOT, SECRET, ServerProcess, token


def room_figures(p: ServerProcess) -> dict[str, Any]:
    with urllib.request.urlopen(p.url + "/api/rooms/demo", timeout=5) as resp:
        figures: dict[str, Any] = json.loads(resp.read())
        return figures


async def until(check: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(check):
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


def ws_url(p: ServerProcess) -> str:
    return f"ws://127.0.0.1:{p.port}/ws"


async def open_client(p: ServerProcess, sub: str, **kw: Any) -> Client:
    client = Client(ws_url(p), token=token(sub), **kw)
    await client.connect()
    return client


async def chats(client: Client, n: int) -> list[dict[str, Any]]:
    return [await client.next_event(lambda e: e["type"] == "chat", timeout=10) for _ in range(n)]


async def test_two_processes_on_one_redis_serve_one_room(
    redis_url: str, spawn: Callable[..., ServerProcess]
) -> None:
    p1 = spawn("--redis-url", redis_url, "--secret", SECRET, "--demo", "--tick-ms", "20")
    p2 = spawn("--redis-url", redis_url, "--secret", SECRET, "--demo", "--tick-ms", "20")
    members = [await open_client(p, f"m{i}-{n}") for n, p in enumerate((p1, p2)) for i in range(2)]
    talkers = [await open_client(p, f"t{i}-{n}") for n, p in enumerate((p1, p2)) for i in range(3)]
    try:
        for c in members:
            await c.join("demo")
        sent = []
        for i in range(12):  # alternate processes; each talker speaks twice
            reply = await talkers[i % 6].request("chat", room="demo", text=f"c{i}")
            sent.append(reply["seq"])
        assert sorted(sent) == list(range(sent[0], sent[0] + 12))
        for c in members:
            got = await chats(c, 12)
            assert [e["seq"] for e in got] == sorted(sent), "same contiguous seqs everywhere"
            assert [e["text"] for e in got] == [f"c{i}" for i in range(12)]

        await members[0].request("like", room="demo", count=10)
        await members[3].request("like", room="demo", count=15)
        for c in members:
            await c.next_event(lambda e: e["type"] == "likes" and e["total"] == 25, timeout=10)
        for p in (p1, p2):  # presence sums both processes' members (sent when it changes)
            await until(lambda p=p: room_figures(p)["viewers"] == 4)  # type: ignore[misc]

        # a member of p1 drops and comes back on p2: it resumes without a gap
        mover = members[0]
        last = mover.last_seq("demo")
        mover.url = ws_url(p2)
        assert mover._ws is not None
        await mover._ws.close(code=1012)
        missed = [(await talkers[5].request("chat", room="demo", text="while away"))["seq"]]
        resumed = await mover.next_event(lambda e: e["type"] == "client.resumed", timeout=10)
        assert resumed["recovered"] is True
        got = await chats(mover, 1)
        assert [e["seq"] for e in got] == missed == [last + 1]
    finally:
        for c in members + talkers:
            await c.close()


async def test_moderation_holds_across_processes(
    redis_url: str, spawn: Callable[..., ServerProcess]
) -> None:
    p1 = spawn("--redis-url", redis_url, "--secret", SECRET, "--demo", "--tick-ms", "20")
    p2 = spawn("--redis-url", redis_url, "--secret", SECRET, "--demo", "--tick-ms", "20")
    mod = Client(ws_url(p1), token=token("mod", "moderator", rooms=["demo"]))
    await mod.connect()
    user = await open_client(p2, "troll")
    try:
        await user.join("demo")
        await mod.request("mod.mute", room="demo", user="troll", seconds=30)
        note = await user.next_event(lambda e: e["type"] == "moderation", timeout=10)
        assert note["action"] == "muted"
        with pytest.raises(Exception, match="muted"):
            await user.request("chat", room="demo", text="hi")
        await mod.request("mod.ban", room="demo", user="troll")
        note = await user.next_event(lambda e: e["type"] == "moderation", timeout=10)
        assert note["action"] == "banned"
        with pytest.raises(Exception, match="banned"):
            await user.join("demo")
    finally:
        await mod.close()
        await user.close()


async def test_sigterm_closes_clients_with_1001_and_exits_in_time(
    spawn: Callable[..., ServerProcess],
) -> None:
    p = spawn("--secret", SECRET, "--demo")
    clients = [await open_client(p, f"v{i}", reconnect=False) for i in range(5)]
    for c in clients:
        await c.join("demo")
    started = time.monotonic()
    p.proc.send_signal(signal.SIGTERM)
    for c in clients:
        while c.close_code is None:
            await asyncio.sleep(0.02)
        assert c.close_code == 1001
    while p.proc.poll() is None:
        assert time.monotonic() - started < 10, "the process must exit within 10 s"
        await asyncio.sleep(0.05)
    assert p.proc.returncode == 0
    for c in clients:
        await c.close()


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LIVECOMMERCE_")}
    return subprocess.run(
        [sys.executable, "-m", "livecommerce", *args],
        cwd=ROOT,
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_serve_refuses_to_start_without_a_secret() -> None:
    done = run_cli("serve", "--port", "0")
    assert done.returncode == 2
    assert "no secret" in done.stderr and "--demo" in done.stderr
    done = run_cli("serve", "--port", "0", "--secret", "short")
    assert done.returncode == 2 and "32 bytes" in done.stderr


def test_secret_from_the_environment(spawn: Callable[..., ServerProcess]) -> None:
    p = spawn(env={"LIVECOMMERCE_SECRET": SECRET, "LIVECOMMERCE_SANDBOX_SHOP": "1"})
    assert p.ready()


def test_serve_takes_orders_in_the_sandbox_only_when_told() -> None:
    """A deployment that forgot --order-webhook-url served the sandbox silently: buyers
    "paid" for free. It refuses to start now; --sandbox-shop (or --demo) says so loudly."""
    done = run_cli("serve", "--port", "0", "--secret", SECRET)
    assert done.returncode == 2
    assert "no order system" in done.stderr and "--order-webhook-url" in done.stderr
    url = "https://shop.example/hooks"
    done = run_cli("serve", "--secret", SECRET, "--sandbox-shop", "--order-webhook-url", url)
    assert done.returncode == 2 and "exclude each other" in done.stderr


async def test_a_sandbox_server_says_so_in_its_log(spawn: Callable[..., ServerProcess]) -> None:
    p = spawn("--secret", SECRET, "--sandbox-shop")
    assert p.ready()
    await until(lambda: "SANDBOX SHOP" in p.output(), 10)


def worker_pids(p: ServerProcess, tries: int = 60) -> set[int]:
    """The pids that answer on the port (each request on a new connection; a killed
    worker's queued connections are reset, which counts as no answer)."""
    pids = set()
    for _ in range(tries):
        try:
            with urllib.request.urlopen(p.url + "/healthz", timeout=5) as resp:
                pids.add(json.loads(resp.read())["pid"])
        except OSError:
            pass
    return pids


async def test_workers_share_one_port_and_a_dead_worker_is_replaced(
    redis_url: str, spawn: Callable[..., ServerProcess]
) -> None:
    p = spawn("--redis-url", redis_url, "--secret", SECRET, "--demo", "--workers", "2")
    await until(lambda: len(worker_pids(p)) == 2)
    pids = await asyncio.to_thread(worker_pids, p)
    assert p.proc.pid not in pids  # the parent only supervises
    clients = [await open_client(p, f"w{i}") for i in range(8)]
    try:
        for c in clients:
            await c.join("demo")
        sent = (await clients[0].request("chat", room="demo", text="to both workers"))["seq"]
        for c in clients:  # whichever worker each landed on
            got = await chats(c, 1)
            assert [e["seq"] for e in got] == [sent]

        victim = min(pids)
        os.kill(victim, signal.SIGKILL)
        await until(lambda: victim not in worker_pids(p) and len(worker_pids(p)) == 2, 20)
    finally:
        for c in clients:
            await c.close()
    p.proc.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(p.proc.wait, 20) == 0


def test_workers_need_redis() -> None:
    done = run_cli("serve", "--demo", "--workers", "2")
    assert done.returncode == 2
    assert "redis" in done.stderr


async def test_a_full_collection_follows_a_crowd_that_left(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import gc
    from collections import Counter

    from aiohttp import web

    from livecommerce import cli
    from livecommerce.http.keys import CONNECTIONS, METRICS

    calls: list[int] = []

    def collect() -> int:
        calls.append(1)
        return 0

    monkeypatch.setattr(gc, "collect", collect)
    app = web.Application()
    app[METRICS] = Counter()
    app[CONNECTIONS] = set()
    stop = asyncio.Event()
    task = asyncio.create_task(
        cli._collect_after_churn(app, stop, every_s=0.01, churn=100, quiet=2)
    )
    app[METRICS]["connections_total"] = 99
    await asyncio.sleep(0.05)
    assert calls == []  # 99 closed: not yet
    app[METRICS]["connections_total"] = 150
    await asyncio.sleep(0.05)
    assert calls == [1]  # once, not at every check
    crowd: Any = {object(), object(), object()}
    app[CONNECTIONS].update(crowd)  # a crowd is here: wait
    app[METRICS]["connections_total"] = 263
    await asyncio.sleep(0.05)
    assert calls == [1]
    app[CONNECTIONS].pop()  # it left (but for two)
    await asyncio.sleep(0.05)
    assert calls == [1, 1]
    stop.set()
    await asyncio.wait_for(task, 1)


async def test_slow_headers_and_idle_connections_are_closed_but_not_websockets(
    spawn: Callable[..., ServerProcess],
) -> None:
    """Slowloris: a client that trickles a request's headers held its connection for
    ever. Now the headers must be in within --header-timeout-s of opening (and of the
    last answer); a WebSocket, once open, is not under that deadline."""
    p = spawn("--secret", SECRET, "--demo", "--header-timeout-s", "1")
    live = await open_client(p, "ws-user")
    reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    started = time.monotonic()
    closed_after = None
    for i in range(40):  # a header line every 0.2 s, never the blank line
        writer.write(f"X-Slow-{i}: 1\r\n".encode())
        try:
            data = await asyncio.wait_for(reader.read(1024), 0.2)
        except TimeoutError:
            continue
        if data == b"":
            closed_after = time.monotonic() - started
            break
    writer.close()
    assert closed_after is not None and closed_after < 4, closed_after
    # an idle keep-alive connection goes too, after its answer
    reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)).startswith(b"HTTP/1.1 200")
    rest = await asyncio.wait_for(reader.read(), 5)  # the body, then the close
    assert b"ok" in rest
    writer.close()
    await asyncio.sleep(1.5)
    await live.request("ping")  # the WebSocket outlived the deadline
    await live.close()


async def test_the_access_log_shows_no_order_or_session_id(
    spawn: Callable[..., ServerProcess],
) -> None:
    p = spawn("--secret", SECRET, "--demo")
    oid = "demo.0123456789abcdef0123"
    bearer = {"Authorization": f"Bearer {token('a')}"}
    async with aiohttp.ClientSession() as s:
        for path in (
            f"/api/orders/{oid}",
            f"/sandbox/checkout/{oid}",
            "/api/rooms/demo/whep/S3cr3t",
        ):
            async with s.get(p.url + path, headers=bearer) as resp:
                assert resp.status in (404, 405)
    await until(lambda: "/api/rooms/demo/whep/…" in p.output())
    log = p.output()
    assert "GET /api/orders/… 404" in log and "GET /sandbox/checkout/… 404" in log
    assert oid not in log and "S3cr3t" not in log and token("a") not in log
