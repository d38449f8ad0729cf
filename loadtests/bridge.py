"""Order-bridge load test: delivered orders a second to a local webhook receiver.

On the Redis of ``--redis-url`` (loopback only; this tool starts no Redis, and in the end
deletes the keys it made and nothing else), it writes ``--entries`` outbox entries across
``--rooms`` new rooms, in the field layout of the reservation script
(``backends/redis_inventory.py``: ``id room sale sku title qty price user created_at
expires_at``), and adds the rooms to ``lc:outboxes``. It refuses a database whose
``lc:outboxes`` already lists rooms: its workers would deliver their orders too.

A receiver (a bare aiohttp server on uvloop, in a process of its own, on a free loopback
port) takes the webhooks. With ``--verify hmac`` (the default) it checks each signature
with ``hmac``/``hashlib`` directly: ``v1,`` HMAC-SHA256 of ``id.timestamp.body``, a few
microseconds; it neither parses the body nor checks the timestamp's age. ``--verify
none`` checks nothing. It answers ``{}`` (no payment URL) and notes when each order id
first arrived and how many arrived again.

``--workers`` bridge workers deliver: ``livecommerce bridge`` processes (``--mode cli``,
the default: 64 deliveries in flight each, the command's fixed
``Settings.bridge_concurrency``), or processes each running one in-process
:class:`~livecommerce.orders.bridge.Bridge` (``--mode inproc``, ``--concurrency`` in
flight) on the stores ``livecommerce bridge`` opens. Two more, to find where the time
goes: ``--mode bare`` posts the same signed webhooks with a bare aiohttp client,
``--concurrency`` in flight per process, and no Redis (the yardstick).

The start is a gate: the entries are written, minus the last of each room, before the
workers start, with the consumer group created at the end of each stream (so they look
read); once every worker waits in ``XREADGROUP``, one transaction moves each group back
to the stream's start and appends the last entry, which wakes them. The clock runs from
that transaction to the last order id's first arrival at the receiver (or
``--deadline``). It reports:

- delivered orders a second (distinct order ids over the span), and over the middle
  80 % of the deliveries (the steady rate, without the ramp-up and the tail);
- duplicates (deliveries of an id already received), bad signatures, undelivered ids;
- the time from the start to each id's first delivery (p50, p90, p99, max);
- CPU, as % of one core over the span: each bridge worker, the receiver, Redis (its pid
  from its port, or ``--redis-pid``) and the machine by kind; and the machine's busy CPU
  in the second before the start (others' load, on a shared machine; ``--quiet-below``
  waits for a quiet second first). "untracked" is busy CPU charged to none of them: this
  tool, and others' processes; well above a few % means the run competed for the cores;
- CPU microseconds per delivered order (workers, receiver, Redis, softirq), less
  sensitive to others' load than the rate, and the rate the cores would give at that
  cost if all of them were ours.

Times are ``time.monotonic()`` readings taken in several processes: on Linux that
clock (``CLOCK_MONOTONIC``) is one for the whole machine, so they compare.

Example::

    redis-server --port 6390 --save '' --appendonly no &
    python -m loadtests.bridge --redis-url redis://127.0.0.1:6390/0 --entries 50000 \\
        --rooms 1 --workers 2
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import hmac
import multiprocessing
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any, Final, Literal
from urllib.parse import urlsplit

import aiohttp
import redis.asyncio as aioredis
import uvloop
from aiohttp import web
from redis.exceptions import RedisError

from loadtests._common import (
    check_options,
    cpu_seconds,
    listening_pids,
    machine_cpu,
    machine_pct,
    percentile,
    print_figures,
    quiet_checks,
    receive,
    split_evenly,
    wait_quiet,
)

PROG: Final = "bridge"
ROOT: Final = Path(__file__).resolve().parents[1]
OUTBOX_INDEX: Final = "lc:outboxes"
"""The set of rooms with an outbox (``backends/redis_inventory.py``)."""
GROUP: Final = "bridge"
"""The bridge's consumer group (``backends/redis_outbox.py``)."""
MAX_ENTRIES: Final = 2_000_000
MAX_ROOMS: Final = 100
MAX_WORKERS: Final = 32
_FILL_CHUNK: Final = 2_000
_STARTUP_S: Final = 30.0
_SETTLE_S: Final = 0.5
"""After the last worker is ready: time for each to block in ``XREADGROUP``."""

Mode = Literal["cli", "inproc", "bare"]
Verify = Literal["hmac", "none"]


def key(room: str, name: str) -> str:
    """``backends.redis.key``, repeated so that this tool imports nothing of the server
    in its main process but what it measures."""
    return f"lc:{{{room}}}:{name}"


# -- the receiver --------------------------------------------------------------------------


@dataclass
class Received:
    first: dict[str, float] = field(default_factory=dict)
    """Order id -> monotonic time of its first delivery."""
    requests: int = 0
    duplicates: int = 0
    bad_signatures: int = 0


def receiver(secret: str, verify: Verify, expected: int, pipe: Connection) -> None:
    """The receiver process: serves until told ``stop``."""
    uvloop.run(_receiver(secret, verify, expected, pipe))


async def _receiver(secret: str, verify: Verify, expected: int, pipe: Connection) -> None:
    hook_key = base64.b64decode(secret.removeprefix("whsec_"))
    got = Received()
    answer = b"{}"

    async def webhook(request: web.Request) -> web.Response:
        body = await request.read()
        got.requests += 1
        headers = request.headers
        oid = headers.get("webhook-id", "")
        if verify == "hmac":
            signed = f"{oid}.{headers.get('webhook-timestamp', '')}.".encode() + body
            mac = hmac.new(hook_key, signed, hashlib.sha256).digest()
            expected_sig = "v1," + base64.b64encode(mac).decode()
            given = headers.get("webhook-signature", "").split(" ")
            if not any(hmac.compare_digest(expected_sig, s) for s in given):
                got.bad_signatures += 1
                return web.Response(status=401)
        if oid in got.first:
            got.duplicates += 1
        else:
            now = time.monotonic()
            got.first[oid] = now
            if len(got.first) == expected:
                pipe.send(("done", now))
        return web.Response(body=answer, content_type="application/json")

    app = web.Application()
    app.router.add_post("/webhooks", webhook)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    site = web.SockSite(runner, sock, backlog=1024)
    await site.start()
    pipe.send(("ready", os.getpid(), sock.getsockname()[1]))
    while True:
        msg = await asyncio.to_thread(pipe.recv)
        if msg[0] == "report":
            pipe.send(
                (
                    "report",
                    list(got.first.values()),
                    got.requests,
                    got.duplicates,
                    got.bad_signatures,
                )
            )
        elif msg[0] == "stop":
            break
    await runner.cleanup()


# -- the bridge workers -------------------------------------------------------------------


def inproc_worker(
    redis_url: str, hook: str, secret: str, concurrency: int, pipe: Connection
) -> None:
    """One in-process :class:`Bridge` (the worker of ``--mode inproc``)."""
    uvloop.run(_inproc_worker(redis_url, hook, secret, concurrency, pipe))


async def _inproc_worker(
    redis_url: str, hook: str, secret: str, concurrency: int, pipe: Connection
) -> None:
    # the stores as `livecommerce bridge` opens them (a blocking pool of 64 connections)
    from livecommerce.backends.redis import open_redis_backends
    from livecommerce.config import Settings
    from livecommerce.orders.bridge import Bridge, BridgeSettings, HttpTransport
    from livecommerce.orders.webhooks import parse_secret

    settings = Settings(redis_url=redis_url, secret="unused-by-this-tool-0123456789abcdef")
    async with open_redis_backends(settings) as backends:
        transport = HttpTransport(hook, connections=concurrency)
        outbox: Any = backends.outbox

        async def delivered(oid: str, payment_url: str | None) -> None:
            pass

        bridge = Bridge(
            outbox,
            transport,
            parse_secret(secret),
            consumer=f"loadtest-{os.getpid()}",
            on_delivered=delivered,
            settings=BridgeSettings(concurrency=concurrency),
        )
        task = asyncio.create_task(bridge.run())
        pipe.send(("ready", os.getpid()))
        await asyncio.to_thread(pipe.recv)  # ("stop",)
        bridge.stop()
        await task
        await transport.close()
    pipe.send(("stopped", bridge.delivered, bridge.failures, bridge.buried))


def bare_worker(hook: str, secret: str, ids: list[str], concurrency: int, pipe: Connection) -> None:
    """``--mode bare``: post ``ids`` as signed ``order.held`` webhooks, ``concurrency``
    at a time, with a bare aiohttp client: no Redis, no bridge (the yardstick)."""
    uvloop.run(_bare_worker(hook, secret, ids, concurrency, pipe))


async def _bare_worker(
    hook: str, secret: str, ids: list[str], concurrency: int, pipe: Connection
) -> None:
    from livecommerce.orders.bridge import order_held
    from livecommerce.orders.webhooks import envelope, parse_secret, sign

    hook_key = parse_secret(secret)
    now_ms = int(time.time() * 1000)
    sent = failed = 0
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=concurrency),
        timeout=aiohttp.ClientTimeout(total=10),
    ) as session:
        pipe.send(("ready", os.getpid()))
        await asyncio.to_thread(pipe.recv)  # ("go",)
        todo = iter(ids)

        async def lane() -> None:
            nonlocal sent, failed
            for oid in todo:
                room, _, n = oid.partition(".")
                now = time.time()
                fields = entry_fields(room, int(n, 16), now_ms)
                body = envelope("order.held", order_held(_text(fields), "USD"), now)
                headers = sign(hook_key, oid, int(now), body)
                headers["content-type"] = "application/json"
                try:
                    async with session.post(hook, data=body, headers=headers) as resp:
                        await resp.read()
                    sent += 1
                except (aiohttp.ClientError, TimeoutError):
                    failed += 1

        await asyncio.gather(*(lane() for _ in range(concurrency)))
        await asyncio.to_thread(pipe.recv)  # ("stop",)
    pipe.send(("stopped", sent, failed, 0))


class Worker:
    """A worker process of any mode."""

    def __init__(self, opts: Options, hook: str, secret: str, ids: list[str]) -> None:
        self.pid = 0
        self.cli: subprocess.Popen[bytes] | None = None
        self.proc: BaseProcess | None = None
        self.pipe: Connection | None = None
        self.log = tempfile.NamedTemporaryFile(prefix="bridge-worker-", suffix=".log")  # noqa: SIM115
        self.stats: tuple[int, int, int] | None = None
        if opts.mode == "cli":
            assert opts.redis_url is not None
            env = {k: v for k, v in os.environ.items() if not k.startswith("LIVECOMMERCE_")}
            argv = [sys.executable, "-m", "livecommerce", "bridge", "--redis-url", opts.redis_url]
            argv += ["--order-webhook-url", hook, "--order-webhook-secret", secret]
            argv += ["--log-level", "WARNING"]
            self.cli = subprocess.Popen(
                argv, cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT
            )
            self.pid = self.cli.pid
        else:
            ctx = multiprocessing.get_context("spawn")
            ours, theirs = ctx.Pipe()
            if opts.mode == "bare":
                target: Any = bare_worker
                args: tuple[Any, ...] = (hook, secret, ids, opts.concurrency, theirs)
            else:
                target = inproc_worker
                args = (opts.redis_url, hook, secret, opts.concurrency, theirs)
            self.proc = ctx.Process(target=target, args=args, daemon=True)
            self.proc.start()
            theirs.close()
            self.pipe = ours

    def output(self) -> str:
        with open(self.log.name, encoding="utf-8", errors="replace") as f:
            return f.read()

    async def ready(self, deadline: float) -> None:
        if self.pipe is not None:
            self.pid = (await receive(self.pipe, "ready", deadline))[1]
            return
        assert self.cli is not None
        while " delivering to " not in self.output():
            if self.cli.poll() is not None:
                raise RuntimeError(f"bridge exited with {self.cli.returncode}: {self.output()}")
            if time.monotonic() > deadline:
                raise TimeoutError("a bridge worker did not start in time")
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        if self.pipe is not None and self.proc is not None:
            with contextlib.suppress(OSError, EOFError, TimeoutError, RuntimeError):
                self.pipe.send(("stop",))
                msg = await receive(self.pipe, "stopped", time.monotonic() + 15)
                self.stats = (msg[1], msg[2], msg[3])
            await asyncio.to_thread(self.proc.join, 5)
            if self.proc.is_alive():
                self.proc.kill()
        if self.cli is not None:
            if self.cli.poll() is None:
                self.cli.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(self.cli.wait, 15)
            except subprocess.TimeoutExpired:
                self.cli.kill()
        self.log.close()

    def go(self) -> None:
        """``--mode bare``: start posting."""
        assert self.pipe is not None
        self.pipe.send(("go",))


# -- the outbox --------------------------------------------------------------------------


def _text(fields: dict[str, str | int]) -> dict[str, str]:
    return {k: str(v) for k, v in fields.items()}


def entry_fields(room: str, n: int, now_ms: int) -> dict[str, str | int]:
    """An outbox entry as the reservation script writes it (order ids are
    ``<room>.<20 hex>``)."""
    return {
        "id": f"{room}.{n:020x}",
        "room": room,
        "sale": f"s-{room}",
        "sku": "mug-01",
        "title": "Mug",
        "qty": 1 + n % 2,
        "price": 999,
        "user": f"u{n % 5000}",
        "created_at": now_ms,
        "expires_at": now_ms + 300_000,
    }


@dataclass
class Outbox:
    rooms: list[str]
    last: dict[str, dict[str, str | int]]
    """Room -> its last entry, written at the start."""
    fill_s: float = 0.0


async def fill(r: aioredis.Redis, opts: Options, tag: str) -> Outbox:
    """Write all entries but each room's last; the group starts at the stream's end."""
    rooms = [f"bench{tag}r{i}" for i in range(opts.rooms)]
    now_ms = int(time.time() * 1000)
    out = Outbox(rooms, {})
    began = time.monotonic()
    for room, count in zip(rooms, split_evenly(opts.entries, opts.rooms), strict=True):
        stream = key(room, "outbox")
        for first in range(0, count - 1, _FILL_CHUNK):
            async with r.pipeline(transaction=False) as pipe:
                for n in range(first, min(first + _FILL_CHUNK, count - 1)):
                    pipe.xadd(stream, entry_fields(room, n, now_ms))  # type: ignore[arg-type]
                await pipe.execute()
        await r.xgroup_create(stream, GROUP, id="$", mkstream=True)
        out.last[room] = entry_fields(room, count - 1, now_ms)
    await r.sadd(OUTBOX_INDEX, *rooms)
    out.fill_s = time.monotonic() - began
    return out


async def open_gate(r: aioredis.Redis, box: Outbox) -> None:
    """Every group back to its stream's start, and each room's last entry (which wakes
    the workers blocked in ``XREADGROUP``), in one transaction."""
    async with r.pipeline(transaction=True) as pipe:
        for room in box.rooms:
            pipe.xgroup_setid(key(room, "outbox"), GROUP, "0")
            pipe.xadd(key(room, "outbox"), box.last[room])  # type: ignore[arg-type]
        await pipe.execute()


async def outbox_state(r: aioredis.Redis, box: Outbox) -> dict[str, int | None]:
    """Entries pending (read, not acknowledged), unread (None when Redis cannot tell:
    the group's ``lag`` is unknown after ``XGROUP SETID``), and dead letters."""
    pending, dead = 0, 0
    lag: int | None = 0
    for room in box.rooms:
        for g in await r.xinfo_groups(key(room, "outbox")):
            if g["name"] in (GROUP, GROUP.encode()):
                pending += int(g.get("pending") or 0)
                lag = None if lag is None or g.get("lag") is None else lag + int(g["lag"])
        dead += int(await r.xlen(key(room, "outbox:dead")))
    return {"pending": pending, "unread": lag, "dead_letters": dead}


async def clean(r: aioredis.Redis, box: Outbox) -> None:
    """Delete what :func:`fill` made (and the bridge's keys of those rooms)."""
    if not box.rooms:
        return
    await r.srem(OUTBOX_INDEX, *box.rooms)
    for room in box.rooms:
        await r.delete(key(room, "outbox"), key(room, "outbox:failures"), key(room, "outbox:dead"))


# -- the run ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    redis_url: str | None
    entries: int
    rooms: int
    workers: int
    mode: Mode
    concurrency: int
    verify: Verify
    deadline: float
    redis_pid: int | None
    quiet_below: float | None
    quiet_wait: float
    keep: bool
    json: str | None


@dataclass
class Outcome:
    fill_s: float = 0.0
    busy_before_pct: float = 0.0
    quiet: dict[str, Any] = field(default_factory=dict)
    arrivals: list[float] = field(default_factory=list)
    requests: int = 0
    duplicates: int = 0
    bad_signatures: int = 0
    complete: bool = False
    span_s: float = 0.0
    worker_pids: list[int] = field(default_factory=list)
    worker_cpu_s: list[float] = field(default_factory=list)
    worker_stats: list[tuple[int, int, int] | None] = field(default_factory=list)
    receiver_cpu_s: float = 0.0
    redis_pid: int | None = None
    redis_cpu_s: float | None = None
    machine: dict[str, float] = field(default_factory=dict)
    state: dict[str, int | None] = field(default_factory=dict)


def _cpu(pid: int | None) -> float:
    if pid is None:
        return 0.0
    with contextlib.suppress(OSError):
        return cpu_seconds(pid)
    return 0.0


def redis_pid_of(url: str) -> int | None:
    port = urlsplit(url).port or 6379
    pids = listening_pids(port)
    return pids[0] if len(pids) == 1 else None


async def run(opts: Options) -> tuple[Outcome, Outbox]:
    out = Outcome()
    r = aioredis.Redis.from_url(opts.redis_url or "redis://127.0.0.1:1/0")  # bare: unused
    box = Outbox([], {})
    ctx = multiprocessing.get_context("spawn")
    secret = "whsec_" + base64.b64encode(os.urandom(32)).decode()
    ours, theirs = ctx.Pipe()
    recv_proc = ctx.Process(
        target=receiver, args=(secret, opts.verify, opts.entries, theirs), daemon=True
    )
    workers: list[Worker] = []
    bare = opts.mode == "bare"
    try:
        listed = set() if bare else await r.smembers(OUTBOX_INDEX)
        if listed:
            raise RuntimeError(
                f"{OUTBOX_INDEX} already lists {len(listed)} rooms in this database: the "
                "workers would deliver their orders too. Use an empty database (/N)."
            )
        recv_proc.start()
        theirs.close()
        _, recv_pid, port = await receive(ours, "ready", time.monotonic() + _STARTUP_S)
        hook = f"http://127.0.0.1:{port}/webhooks"
        shares: list[list[str]] = [[] for _ in range(opts.workers)]
        if bare:
            for n in range(opts.entries):
                shares[n % opts.workers].append(f"bare.{n:020x}")
        else:
            box = await fill(r, opts, secrets.token_hex(3))
            out.fill_s = box.fill_s
        workers = [Worker(opts, hook, secret, ids) for ids in shares]
        deadline = time.monotonic() + _STARTUP_S
        for w in workers:
            await w.ready(deadline)
        await asyncio.sleep(_SETTLE_S)
        out.worker_pids = [w.pid for w in workers]
        out.redis_pid = None if bare else opts.redis_pid or redis_pid_of(opts.redis_url or "")

        out.quiet = await wait_quiet(opts.quiet_below, opts.quiet_wait)
        out.busy_before_pct = out.quiet["busy_pct"]

        cpu0 = [_cpu(pid) for pid in out.worker_pids]
        recv0, redis0, box0 = _cpu(recv_pid), _cpu(out.redis_pid), machine_cpu()
        t0 = time.monotonic()
        if bare:
            for w in workers:
                w.go()
        else:
            await open_gate(r, box)
        ended = t0 + opts.deadline
        last = ended
        while time.monotonic() < ended:
            if ours.poll():
                _, last = ours.recv()
                out.complete = True
                break
            await asyncio.sleep(0.005)
        t1 = time.monotonic()
        out.worker_cpu_s = [_cpu(pid) - c for pid, c in zip(out.worker_pids, cpu0, strict=True)]
        out.receiver_cpu_s = _cpu(recv_pid) - recv0
        if out.redis_pid is not None:
            out.redis_cpu_s = _cpu(out.redis_pid) - redis0
        out.machine = machine_pct(box0, machine_cpu(), t1 - t0)
        out.span_s = (last if out.complete else t1) - t0

        ours.send(("report",))
        _, arrivals, out.requests, out.duplicates, out.bad_signatures = await receive(
            ours, "report", time.monotonic() + 60
        )
        out.arrivals = sorted(a - t0 for a in arrivals)
        out.state = {} if bare else await outbox_state(r, box)
    finally:
        for w in workers:
            await w.stop()
        out.worker_stats = [w.stats for w in workers]
        if recv_proc.is_alive():
            with contextlib.suppress(OSError):
                ours.send(("stop",))
            await asyncio.to_thread(recv_proc.join, 10)
            if recv_proc.is_alive():
                recv_proc.kill()
        if not opts.keep and not bare:
            await clean(r, box)
        await r.aclose()
    return out, box


def figures(opts: Options, out: Outcome) -> dict[str, Any]:
    span = out.span_s or 1.0
    arr = out.arrivals
    delivered = len(arr)
    lo, hi = int(delivered * 0.1), int(delivered * 0.9)
    mid = (hi - lo) / (arr[hi - 1] - arr[lo]) if hi - lo > 1 and arr[hi - 1] > arr[lo] else None

    def ms(x: float | None) -> float | None:
        return None if x is None else round(1000 * x, 1)

    def pct(cpu_s: float | None) -> float | None:
        return None if cpu_s is None else round(100 * cpu_s / span, 1)

    machine = out.machine

    def per(cpu_s: float | None) -> float | None:
        return None if cpu_s is None or not delivered else round(1e6 * cpu_s / delivered, 1)

    per_delivery = {
        "workers": per(sum(out.worker_cpu_s)),
        "receiver": per(out.receiver_cpu_s),
        "redis": per(out.redis_cpu_s),
        "softirq": per(machine.get("irq_softirq", 0.0) * span / 100),
    }
    total_us = sum(v for v in per_delivery.values() if v is not None)
    cores = multiprocessing.cpu_count()
    return {
        "redis_url": opts.redis_url,
        "entries": opts.entries,
        "rooms": opts.rooms,
        "workers": opts.workers,
        "mode": opts.mode,
        "in_flight_per_worker": opts.concurrency if opts.mode != "cli" else 64,
        "verify": opts.verify,
        "fill_s": round(out.fill_s, 2),
        "delivered": delivered,
        "undelivered": opts.entries - delivered,
        "complete": out.complete,
        "span_s": round(out.span_s, 3),
        "delivered_per_s": round(delivered / span, 1),
        "steady_per_s_10_90": None if mid is None else round(mid, 1),
        "requests": out.requests,
        "duplicates": out.duplicates,
        "bad_signatures": out.bad_signatures,
        "to_delivery_ms": {
            "p50": ms(percentile(arr, 0.50)),
            "p90": ms(percentile(arr, 0.90)),
            "p99": ms(percentile(arr, 0.99)),
            "max": ms(arr[-1] if arr else None),
        },
        "delivered_within_s": {
            str(s): sum(1 for a in arr if a <= s) for s in (1, 2, 5, 10, 30, 60) if s <= span + 1
        },
        "cpu_pct_of_a_core": {
            "workers": [pct(c) for c in out.worker_cpu_s],
            "workers_total": pct(sum(out.worker_cpu_s)),
            "receiver": pct(out.receiver_cpu_s),
            "redis": pct(out.redis_cpu_s),
        },
        # CPU microseconds per delivered order: less sensitive to others' load than the
        # rate; the bound is what the cores would deliver if all of them were ours
        "cpu_us_per_delivery": {**per_delivery, "total": round(total_us, 1)},
        "cpu_bound_per_s": round(cores * 1e6 / total_us) if total_us else None,
        "worker_pids": out.worker_pids,
        "worker_delivered_failures_buried": out.worker_stats,
        "redis_pid": out.redis_pid,
        "machine": {
            "cores": cores,
            "busy_pct_before_start": out.busy_before_pct,
            "quiet_wait": out.quiet,
            "cpu_pct_of_a_core": machine,
            # busy time not charged to the workers, receiver or Redis: softirq (loopback),
            # this tool, and other processes on a shared machine
            "untracked_pct": round(
                sum(v for k, v in machine.items() if k not in ("idle", "steal"))
                - 100
                * (sum(out.worker_cpu_s) + out.receiver_cpu_s + (out.redis_cpu_s or 0))
                / span,
                1,
            ),
        },
        "outbox_after": out.state,
    }


def table(fig: dict[str, Any]) -> str:
    lat, cpu, m = fig["to_delivery_ms"], fig["cpu_pct_of_a_core"], fig["machine"]
    steady = fig["steady_per_s_10_90"]
    rows = [
        (
            "setup",
            f"{fig['entries']} entries in {fig['rooms']} rooms (written in {fig['fill_s']} s); "
            f"{fig['workers']} workers ({fig['mode']}, {fig['in_flight_per_worker']} in flight "
            f"each); "
            f"receiver verifies: {fig['verify']}",
        ),
        (
            "delivered",
            f"{fig['delivered']} of {fig['entries']} in {fig['span_s']} s: "
            f"{fig['delivered_per_s']:,.0f}/s"
            + ("" if steady is None else f" (middle 80 %: {steady:,.0f}/s)")
            + ("" if fig["complete"] else "  INCOMPLETE at the deadline"),
        ),
        (
            "checks",
            f"duplicates {fig['duplicates']}, bad signatures {fig['bad_signatures']}, "
            f"requests {fig['requests']}; outbox after: {fig['outbox_after']}",
        ),
        (
            "to delivery",
            f"p50 {lat['p50']} ms, p90 {lat['p90']} ms, p99 {lat['p99']} ms, max {lat['max']} ms",
        ),
        (
            "cpu",
            f"workers {cpu['workers']} (total {cpu['workers_total']}), receiver "
            f"{cpu['receiver']}, redis {cpu['redis']} (% of a core)",
        ),
        (
            "per order",
            "CPU "
            + ", ".join(f"{k} {v} µs" for k, v in fig["cpu_us_per_delivery"].items())
            + f": all {m['cores']} cores would deliver {fig['cpu_bound_per_s']}/s",
        ),
        (
            "machine",
            f"{m['cores']} cores; busy before the start {m['busy_pct_before_start']} % of a "
            f"core{_waited(m['quiet_wait'])}; during, % of a core: "
            + ", ".join(f"{k} {v:.0f}" for k, v in m["cpu_pct_of_a_core"].items())
            + f"; untracked {m['untracked_pct']:.0f}",
        ),
    ]
    return "\n".join(["order bridge", *(f"  {k:<12} {text}" for k, text in rows)])


def _waited(q: dict[str, Any]) -> str:
    if not q or q.get("below_pct") is None:
        return ""
    return f" (waited {q['waited_s']} s for < {q['below_pct']} %" + (
        ")" if q["quiet"] else ", never quiet)"
    )


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m loadtests.bridge",
        description="Order-bridge load test: outbox entries in Redis, bridge workers, a "
        "local webhook receiver; delivered orders a second.",
    )
    p.add_argument(
        "--redis-url",
        help="redis://127.0.0.1:PORT/DB of a Redis to use (loopback; nothing else is touched)",
    )
    p.add_argument("--entries", type=int, default=50_000, help="outbox entries (50000)")
    p.add_argument("--rooms", type=int, default=1, help="rooms they are spread over (1)")
    p.add_argument("--workers", type=int, default=2, help="bridge worker processes (2)")
    p.add_argument(
        "--mode",
        choices=["cli", "inproc", "bare"],
        default="cli",
        help="cli: `livecommerce bridge` processes; inproc: processes running a Bridge; "
        "bare: processes posting with a bare aiohttp client, no Redis (the yardstick)",
    )
    p.add_argument(
        "--concurrency", type=int, default=64, help="deliveries in flight per inproc worker (64)"
    )
    p.add_argument(
        "--verify",
        choices=["hmac", "none"],
        default="hmac",
        help="receiver's signature check: hmac (default) or none",
    )
    p.add_argument(
        "--deadline", type=float, default=120.0, help="most seconds to wait for the last (120)"
    )
    p.add_argument("--redis-pid", type=int, help="Redis's pid (default: found from its port)")
    p.add_argument(
        "--quiet-below",
        type=float,
        metavar="PCT",
        help="before the start, wait until the machine's busy CPU over 1 s is under PCT %% "
        "of a core (on a shared machine); default: do not wait",
    )
    p.add_argument(
        "--quiet-wait", type=float, default=300.0, help="most seconds to wait for it (300)"
    )
    p.add_argument("--keep", action="store_true", help="leave the entries in Redis afterwards")
    p.add_argument("--json", metavar="PATH", help="also write the figures as JSON to PATH")
    return p


def options(argv: Sequence[str] | None = None) -> Options:
    p = _parser()
    a = p.parse_args(argv)
    url = urlsplit(a.redis_url or "")
    checks = [
        (a.redis_url is not None or a.mode == "bare", "--redis-url is required"),
        (
            a.redis_url is None
            or (url.scheme == "redis" and url.hostname == "127.0.0.1" and url.port is not None),
            "--redis-url must be redis://127.0.0.1:PORT/DB (loopback only)",
        ),
        (1 <= a.entries <= MAX_ENTRIES, f"--entries must be 1 to {MAX_ENTRIES}"),
        (1 <= a.rooms <= MAX_ROOMS, f"--rooms must be 1 to {MAX_ROOMS}"),
        (a.rooms <= a.entries, "--rooms must be at most --entries"),
        (1 <= a.workers <= MAX_WORKERS, f"--workers must be 1 to {MAX_WORKERS}"),
        (1 <= a.concurrency <= 4096, "--concurrency must be 1 to 4096"),
        (0 < a.deadline <= 3600, "--deadline must be above 0 and at most 3600"),
        *quiet_checks(a),
    ]
    check_options(p, checks)
    return Options(
        redis_url=a.redis_url,
        entries=a.entries,
        rooms=a.rooms,
        workers=a.workers,
        mode=a.mode,
        concurrency=a.concurrency,
        verify=a.verify,
        deadline=a.deadline,
        redis_pid=a.redis_pid,
        quiet_below=a.quiet_below,
        quiet_wait=a.quiet_wait,
        keep=a.keep,
        json=a.json,
    )


def main(argv: Sequence[str] | None = None) -> int:
    opts = options(argv)
    try:
        out, _ = uvloop.run(run(opts))
    except (TimeoutError, RuntimeError, ConnectionError, OSError, RedisError) as exc:
        print(f"{PROG}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    fig = figures(opts, out)
    print_figures(fig, table(fig), opts.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
