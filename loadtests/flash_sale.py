"""Flash-sale load test: a burst of order attempts at one sale.

Against a running ``serve --demo``, the host opens a sale of ``--stock`` units of one
product with ``--limit`` units per user; then ``--buyers`` demo users, each with its own
WebSocket (opened beforehand, ``--batch`` at a time, spread over ``--processes`` worker
processes), fire ``--attempts`` ``order`` commands between them as fast as the generator
can. Each buyer pipelines its attempts (it sends them one after the other without waiting
for replies). The server lets a user send 5 ``order`` commands a second (bursts of 5), so a
buyer sends at most 5 in the burst: ``--attempts`` may be at most 5 × ``--buyers``.

Quantities are drawn from 1 to ``--qty-max``, so some exceed the limit on their own; a
``--repeat-keys`` fraction of the attempts repeat an earlier attempt of the same buyer,
key and quantity included, like a client that retries. ``--rate`` paces the sending at an
offered load instead (attempts a second in all), to see the time to reply at that load
rather than behind the backlog of a burst. On a shared machine, ``--quiet-below`` waits,
once the buyers are connected, until the machine's CPU is quiet before opening the sale.

It measures, from the first attempt sent to the last reply received:

- attempts a second, and the replies by code (``ok``, ``sold_out``, ``limit_exceeded``,
  ...; ``no_reply`` for an attempt unanswered after ``--reply-timeout`` seconds);
- accepted units: the sum of ``qty`` over the distinct order ids answered ``ok``; oversold
  units (accepted units beyond ``--stock``); users whose accepted units pass the limit;
  keys that got more than one order id (a retry that placed a second hold);
- the time to reply of each attempt, send to receipt (p50, p90, p99, max); when all are
  sent at once, the late ones wait behind the backlog, so p99 is about the burst's span;
- where the attempts that placed orders stood in the order of sending (served in arrival
  order, they are the earliest ones);
- the server's CPU (utime + stime from ``/proc/PID/stat``, as a percentage of one core)
  and resident memory, optionally Redis's CPU (``--redis-pid``), the generator's own CPU
  and event-loop lag, and the machine's CPU by kind, over the burst.

After the burst it reads the sale from ``GET /api/rooms/{room}`` and checks that its
``remaining`` equals ``--stock`` minus the accepted units, then stops the sale.

Times are ``time.monotonic()`` readings, taken in several processes: on Linux that clock
(``CLOCK_MONOTONIC``) is one for the whole machine, so they compare.

The figures are measurements of one machine, never assertions. The tool talks only to
127.0.0.1, stops by itself (every phase has a deadline), and prints a short table and the
figures as JSON (``--json PATH`` also writes them to a file).

Example::

    livecommerce serve --port 8100 --demo &
    python -m loadtests.flash_sale --url http://127.0.0.1:8100 --buyers 2000 --attempts 4000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import multiprocessing
import random
import secrets
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any, Final

import aiohttp

from livecommerce.protocol import dumps, loads
from loadtests._common import (
    WS,
    CommandRefused,
    ConnectReport,
    Readings,
    bounded,
    check_options,
    close_all,
    demo_token,
    error_name,
    join_workers,
    lag_figures,
    listening_pids,
    loopback_base,
    mark_end,
    mark_start,
    open_socket,
    percentile,
    quiet_checks,
    receive,
    receive_all,
    request,
    rss_mib,
    run_and_print,
    run_worker,
    server_metrics,
    spawn_worker,
    split_evenly,
    wait_quiet,
)

PROG: Final = "flash_sale"
SERVER_ORDER_BURST: Final = 5
"""``order`` commands one user may send at once (PROTOCOL.md: 5 a second, bursts of 5)."""
MAX_BUYERS: Final = 50_000
MAX_ATTEMPTS: Final = 250_000
MAX_PROCESSES: Final = 32
MAX_STOCK: Final = 1_000_000
MAX_QTY: Final = 100
"""The protocol's bounds on ``stock``, ``limit_per_user`` and ``qty``."""
_FIRST_ID: Final = 10
"""Command id of a buyer's first attempt (1 is its ``connect``)."""
_SEND_CHUNK: Final = 50
"""Buyers whose attempts go out before the worker lets its loop read replies."""
_LEAD_S: Final = 1.0
"""Between the sale's start and the burst: the workers encode their frames."""
_CONNECT_TIMEOUT_S: Final = 20.0
_CLOSE_TIMEOUT_S: Final = 10.0
_LAG_EVERY_S: Final = 0.005


# -- plans and results, passed between processes ----------------------------------------


@dataclass(frozen=True, slots=True)
class AttemptPlan:
    """One ``order`` command: ``repeat`` if it repeats an earlier attempt's key and qty."""

    key: str
    qty: int
    repeat: bool


@dataclass(frozen=True, slots=True)
class BuyerPlan:
    index: int
    name: str
    attempts: tuple[AttemptPlan, ...]


@dataclass(frozen=True, slots=True)
class WorkerPlan:
    """What one worker process does: sign in, connect and fire for ``buyers``."""

    index: int
    base: str
    ws_url: str
    room: str
    buyers: tuple[BuyerPlan, ...]
    batch: int
    rate: float
    """Attempts a second this worker offers (0: as fast as it can)."""
    reply_timeout_s: float
    deadline_s: float
    """Seconds after its start at which the worker gives up, whatever it was doing."""


@dataclass(frozen=True, slots=True)
class Reply:
    """What one attempt got. ``code`` is ``ok``, an error code, ``no_reply`` or
    ``send_failed``; ``order_*`` come from an ``ok`` reply's order."""

    buyer: int
    user: str
    key: str
    qty: int
    repeat: bool
    code: str
    sent: float
    ms: float | None
    order_id: str | None = None
    order_qty: int | None = None
    order_status: str | None = None


@dataclass(slots=True)
class WorkerResult:
    index: int
    replies: list[Reply]
    first_send: float
    last_send: float
    last_reply: float
    closes: dict[int, int]
    cpu_s: float
    wall_s: float
    lag_p99_ms: float
    lag_max_ms: float


# -- a worker's buyers ------------------------------------------------------------------


class Buyer:
    """One buyer's socket, and the replies to its attempts as they come."""

    __slots__ = ("frames", "got", "plan", "replies", "sent_at", "user", "ws")

    def __init__(self, plan: BuyerPlan, ws: WS, user: str) -> None:
        self.plan = plan
        self.ws = ws
        self.user = user
        n = len(plan.attempts)
        self.frames: list[bytes] = []
        self.sent_at: list[float] = [0.0] * n
        self.got: list[tuple[float, dict[str, Any]] | None] = [None] * n
        self.replies = 0


class Burst:
    """The replies of one worker's buyers, counted as they come (one thread: no locks)."""

    def __init__(self) -> None:
        self.expected = 0
        """Replies to wait for: set (with :meth:`expect`) once the buyers are connected."""
        self.received = 0
        self.last_reply = 0.0
        self.all_in = asyncio.Event()
        self.closes: Counter[int] = Counter()

    def expect(self, n: int) -> None:
        self.expected = n
        if self.received >= n:
            self.all_in.set()


async def read_replies(buyer: Buyer, burst: Burst) -> None:
    """Read a buyer's frames; keep each attempt's reply with the time it arrived."""
    text = aiohttp.WSMsgType.TEXT
    n = len(buyer.got)
    async for msg in buyer.ws:
        if msg.type is not text:
            continue
        now = time.monotonic()
        for line in msg.data.split(b"\n"):
            if not line:
                continue
            obj = loads(line)
            cid = obj.get("id")
            if type(cid) is not int or "ok" not in obj:
                continue
            i = cid - _FIRST_ID
            if 0 <= i < n and buyer.got[i] is None:
                buyer.got[i] = (now, obj)
                buyer.replies += 1
                burst.received += 1
                burst.last_reply = now
                if burst.expected and burst.received >= burst.expected:
                    burst.all_in.set()
    burst.closes[buyer.ws.close_code if buyer.ws.close_code is not None else 0] += 1


async def open_buyer(
    http: aiohttp.ClientSession, session: aiohttp.ClientSession, plan: WorkerPlan, bp: BuyerPlan
) -> Buyer:
    """Sign in as the buyer (demo token), open its socket and ``connect``."""
    token = await demo_token(http, plan.base, bp.name, prog=PROG)
    ws = await open_socket(session, plan.ws_url)
    try:
        data = await request(ws, 1, "connect", token=token)
    except BaseException:
        await ws.close()
        raise
    return Buyer(bp, ws, str(data["user"]["id"]))


async def connect_buyers(
    http: aiohttp.ClientSession,
    session: aiohttp.ClientSession,
    plan: WorkerPlan,
    burst: Burst,
    readers: list[asyncio.Task[None]],
) -> tuple[ConnectReport, list[Buyer]]:
    """Sign in and connect the plan's buyers, ``plan.batch`` at a time; each starts
    reading at once (an unread socket would not answer the server's pings)."""
    buyers: list[Buyer] = []
    errors: Counter[str] = Counter()
    started = time.monotonic()
    for first in range(0, len(plan.buyers), plan.batch):
        group = plan.buyers[first : first + plan.batch]
        outcomes = await asyncio.gather(
            *(bounded(open_buyer(http, session, plan, bp), _CONNECT_TIMEOUT_S) for bp in group),
            return_exceptions=True,
        )
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                errors[error_name(outcome)] += 1
            else:
                buyers.append(outcome)
                readers.append(asyncio.create_task(read_replies(outcome, burst)))
    report = ConnectReport(
        connected=len(buyers),
        failed=sum(errors.values()),
        seconds=time.monotonic() - started,
        errors=dict(errors),
    )
    return report, buyers


def encode_attempts(buyers: list[Buyer], room: str, sale: str) -> None:
    """Every buyer's ``order`` frames, ready before the burst."""
    for b in buyers:
        b.frames = [
            dumps(
                {
                    "op": "order",
                    "id": _FIRST_ID + j,
                    "room": room,
                    "sale": sale,
                    "qty": a.qty,
                    "key": a.key,
                }
            )
            for j, a in enumerate(b.plan.attempts)
        ]


async def fire(buyers: list[Buyer], failed: list[tuple[Buyer, int]], rate: float) -> float:
    """Send every buyer's attempts, each buyer's back to back, as fast as this process
    can, or paced at ``rate`` a second; every ``_SEND_CHUNK`` buyers the loop reads what
    came in (so replies are timed when they arrive, not when the sending is over).
    Returns when the last attempt went out."""
    text = aiohttp.WSMsgType.TEXT
    start = last = time.monotonic()
    sent = 0
    for n, b in enumerate(buyers, 1):
        for j, frame in enumerate(b.frames):
            b.sent_at[j] = time.monotonic()
            try:
                await b.ws.send_frame(frame, text)
            except (ConnectionError, aiohttp.ClientError, RuntimeError):
                failed.append((b, j))
        sent += len(b.frames)
        last = time.monotonic()
        if n % _SEND_CHUNK == 0:
            ahead = start + sent / rate - time.monotonic() if rate else 0.0
            await asyncio.sleep(max(0.0, ahead))
    return last


async def loop_lag(stop: asyncio.Event) -> list[float]:
    """How late (ms) this process's event loop woke up, sampled every few ms until
    ``stop``: a late loop delays every reading after it."""
    lags: list[float] = []
    while not stop.is_set():
        before = time.monotonic()
        await asyncio.sleep(_LAG_EVERY_S)
        lags.append((time.monotonic() - before - _LAG_EVERY_S) * 1000.0)
    return sorted(lags)


def collect(buyers: list[Buyer], failed: list[tuple[Buyer, int]]) -> list[Reply]:
    """One :class:`Reply` per attempt of the connected buyers."""
    failed_at = {(id(b), j) for b, j in failed}
    out: list[Reply] = []
    for b in buyers:
        for j, a in enumerate(b.plan.attempts):
            got = b.got[j]
            if got is None:
                code = "send_failed" if (id(b), j) in failed_at else "no_reply"
                sent = b.sent_at[j]
                out.append(Reply(b.plan.index, b.user, a.key, a.qty, a.repeat, code, sent, None))
                continue
            at, obj = got
            ms = (at - b.sent_at[j]) * 1000.0
            if not obj["ok"]:
                code = str(obj.get("error", {}).get("code", "?"))
                out.append(
                    Reply(b.plan.index, b.user, a.key, a.qty, a.repeat, code, b.sent_at[j], ms)
                )
                continue
            order = obj.get("data", {}).get("order", {})
            out.append(
                Reply(
                    b.plan.index,
                    b.user,
                    a.key,
                    a.qty,
                    a.repeat,
                    "ok",
                    b.sent_at[j],
                    ms,
                    order_id=order.get("id"),
                    order_qty=order.get("qty"),
                    order_status=order.get("status"),
                )
            )
    return out


# -- a worker process -------------------------------------------------------------------


def worker(plan: WorkerPlan, pipe: Connection) -> None:
    """Entry point of a worker process."""
    run_worker(
        plan.index, pipe, lambda: _worker(plan, pipe), plan.deadline_s, len(plan.buyers) + 256
    )


async def _worker(plan: WorkerPlan, pipe: Connection) -> None:
    deadline = time.monotonic() + plan.deadline_s
    connector = aiohttp.TCPConnector(limit=0)
    http_connector = aiohttp.TCPConnector(limit=plan.batch)
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        aiohttp.ClientSession(
            connector=http_connector, timeout=aiohttp.ClientTimeout(total=30)
        ) as http,
    ):
        pipe.send(("started", plan.index))
        await receive(pipe, "connect", deadline)
        burst = Burst()
        readers: list[asyncio.Task[None]] = []
        report, buyers = await connect_buyers(http, session, plan, burst, readers)
        # The connections live to the end: keep the collector from walking them again
        # and again (a full collection stalls every reader at once).
        gc.freeze()
        pipe.send(("ready", report))
        _, sale, t0 = await receive(pipe, "burst", deadline)
        encode_attempts(buyers, plan.room, sale)
        stop_lag = asyncio.Event()
        delay = t0 - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        lag = asyncio.create_task(loop_lag(stop_lag))
        cpu0, wall0 = time.process_time(), time.monotonic()
        failed: list[tuple[Buyer, int]] = []
        first_send = time.monotonic()
        last_send = await fire(buyers, failed, plan.rate)
        burst.expect(sum(len(b.frames) for b in buyers) - len(failed))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(burst.all_in.wait(), plan.reply_timeout_s)
        cpu1, wall1 = time.process_time(), time.monotonic()
        pipe.send(("done", burst.received))
        stop_lag.set()
        lag_p99_ms, lag_max_ms = lag_figures(await lag)
        pipe.send(
            (
                "result",
                WorkerResult(
                    index=plan.index,
                    replies=collect(buyers, failed),
                    first_send=first_send,
                    last_send=last_send,
                    last_reply=burst.last_reply,
                    closes=dict(burst.closes),
                    cpu_s=cpu1 - cpu0,
                    wall_s=wall1 - wall0,
                    lag_p99_ms=lag_p99_ms,
                    lag_max_ms=lag_max_ms,
                ),
            )
        )
        # Closing thousands of sockets costs the server CPU: not before it has been read.
        await receive(pipe, "close", deadline)
        await close_all([b.ws for b in buyers], readers, _CLOSE_TIMEOUT_S)


# -- the main process -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Options:
    """The command line, checked (see :func:`options`)."""

    url: str
    room: str
    sku: str
    attempts: int
    buyers: int
    stock: int
    limit: int
    qty_max: int
    repeat_keys: float
    processes: int
    batch: int
    rate: float
    seed: int
    reply_timeout: float
    quiet_below: float | None
    quiet_wait: float
    server_pid: list[int]
    redis_pid: int | None
    json: str | None


@dataclass(slots=True)
class Plan:
    """Every buyer's attempts, drawn before anything connects."""

    nonce: str
    buyers: list[BuyerPlan]
    repeats_requested: int
    repeats: int


def make_plan(opts: Options) -> Plan:
    """Spread the attempts over the buyers (at most :data:`SERVER_ORDER_BURST` each),
    draw their quantities, and make some of them repeat an earlier attempt of the same
    buyer (same key, same qty). Keys and user names carry a fresh nonce, so runs against
    one server do not meet each other's orders."""
    rng = random.Random(opts.seed)
    nonce = secrets.token_hex(3)
    counts = split_evenly(opts.attempts, opts.buyers)
    drawn: list[list[AttemptPlan]] = [
        [AttemptPlan(f"{nonce}-{b}-{j}", rng.randint(1, opts.qty_max), False) for j in range(n)]
        for b, n in enumerate(counts)
    ]
    eligible = [(b, j) for b, n in enumerate(counts) for j in range(1, n)]
    wanted = round(opts.repeat_keys * opts.attempts)
    chosen = sorted(rng.sample(eligible, min(wanted, len(eligible))), key=lambda bj: bj[1])
    for b, j in chosen:
        earlier = drawn[b][rng.randrange(j)]
        drawn[b][j] = AttemptPlan(earlier.key, earlier.qty, True)
    buyers = [
        BuyerPlan(index=b, name=f"fs{nonce}u{b}", attempts=tuple(a)) for b, a in enumerate(drawn)
    ]
    return Plan(nonce=nonce, buyers=buyers, repeats_requested=wanted, repeats=len(chosen))


@dataclass(slots=True)
class Outcome:
    """Everything a run gathered, before it is summed up by :func:`figures`."""

    base: str
    pids: list[int]
    plan: Plan
    sale: dict[str, Any] = field(default_factory=dict)
    connect_s: float = 0.0
    reports: list[ConnectReport] = field(default_factory=list)
    results: list[WorkerResult] = field(default_factory=list)
    readings: Readings = field(default_factory=Readings)
    sale_after: dict[str, Any] | None = None
    quiet: dict[str, Any] | None = None
    sale_listed: bool = False
    stopped: bool = False
    rss_before_connect_mib: float | None = None
    rss_connected_mib: float | None = None


def start_workers(
    opts: Options, base: str, ws_url: str, plan: Plan, deadline_s: float
) -> list[tuple[BaseProcess, Connection]]:
    """Start ``opts.processes`` workers, each with a contiguous share of the buyers."""
    ctx = multiprocessing.get_context("spawn")
    started: list[tuple[BaseProcess, Connection]] = []
    first = 0
    for i, n in enumerate(split_evenly(opts.buyers, opts.processes)):
        wplan = WorkerPlan(
            index=i,
            base=base,
            ws_url=ws_url,
            room=opts.room,
            buyers=tuple(plan.buyers[first : first + n]),
            batch=opts.batch,
            rate=opts.rate / opts.processes,
            reply_timeout_s=opts.reply_timeout,
            deadline_s=deadline_s,
        )
        first += n
        started.append(spawn_worker(ctx, worker, wplan))
    return started


async def host_command(
    session: aiohttp.ClientSession, ws_url: str, token: str, op: str, **fields: Any
) -> dict[str, Any]:
    """One command of the host, on a socket opened for it (an idle socket that reads
    nothing would not answer the server's pings, and be closed)."""
    ws = await bounded(open_socket(session, ws_url), _CONNECT_TIMEOUT_S)
    try:
        await bounded(request(ws, 1, "connect", token=token), _CONNECT_TIMEOUT_S)
        return await bounded(request(ws, 2, op, **fields), _CONNECT_TIMEOUT_S)
    finally:
        await ws.close()


async def start_sale(
    session: aiohttp.ClientSession, ws_url: str, token: str, opts: Options
) -> dict[str, Any]:
    data = await host_command(
        session,
        ws_url,
        token,
        "sale.start",
        room=opts.room,
        sku=opts.sku,
        price=999,
        stock=opts.stock,
        limit_per_user=opts.limit,
        duration_s=600,
    )
    sale: dict[str, Any] = data["sale"]
    return sale


async def listed_sale(http: aiohttp.ClientSession, base: str, room: str, sale: str) -> Any:
    """The sale as ``GET /api/rooms/{room}`` lists it (None if it is not listed)."""
    async with http.get(f"{base}/api/rooms/{room}") as r:
        if r.status != 200:
            raise RuntimeError(f"GET /api/rooms/{room}: {r.status}")
        body = await r.json()
    return next((s for s in body.get("sales", []) if s.get("id") == sale), None)


async def measure_burst(
    opts: Options, http: aiohttp.ClientSession, out: Outcome, pipes: list[Connection]
) -> None:
    """Start the burst in every worker at once and read the server around it."""
    redis = [] if opts.redis_pid is None else [opts.redis_pid]
    r = out.readings
    r.metrics0 = await server_metrics(http, out.base)
    t0 = time.monotonic() + _LEAD_S
    for pipe in pipes:
        pipe.send(("burst", out.sale["id"], t0))
    # Wake a little early and wait out the rest blocking: the readings are then taken
    # at the burst's start, even when this process's loop would wake up late.
    await asyncio.sleep(max(0.0, t0 - time.monotonic() - 0.02))
    time.sleep(max(0.0, t0 - time.monotonic()))  # noqa: ASYNC251
    start = mark_start(out.pids, redis)
    await receive_all(pipes, "done", start.wall + opts.reply_timeout + 60.0 + opts.attempts / 1000)
    mark_end(r, start, out.pids, redis)
    out.results = [m[1] for m in await receive_all(pipes, "result", time.monotonic() + 60.0)]
    r.metrics1 = await server_metrics(http, out.base)


async def run(opts: Options) -> dict[str, Any]:
    """Run the whole test; return the figures (see :func:`figures`)."""
    base, port = loopback_base(opts.url, PROG)
    ws_url = f"ws://127.0.0.1:{port}/ws"
    plan = make_plan(opts)
    if plan.repeats < plan.repeats_requested:
        print(
            f"note: --repeat-keys asks for {plan.repeats_requested} repeated attempts but "
            f"only {plan.repeats} attempts have an earlier one of the same buyer",
            file=sys.stderr,
        )
    out = Outcome(base=base, pids=list(opts.server_pid) or listening_pids(port), plan=plan)
    per_worker = -(-opts.buyers // opts.processes)
    connect_budget = 30.0 + per_worker / 50
    worker_life = connect_budget + opts.reply_timeout + opts.attempts / 1000 + 120.0
    if opts.quiet_below is not None:
        worker_life += opts.quiet_wait + 5.0
    workers: list[tuple[BaseProcess, Connection]] = []
    finished = False
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http,
        aiohttp.ClientSession() as ws_session,
    ):
        try:
            host_token = await demo_token(http, base, "flash-host", prog=PROG, role="host")
            workers = start_workers(opts, base, ws_url, plan, worker_life)
            pipes = [pipe for _, pipe in workers]
            await receive_all(pipes, "started", time.monotonic() + 60.0)
            out.rss_before_connect_mib = _rss_total(out.pids)
            began = time.monotonic()
            for pipe in pipes:
                pipe.send(("connect",))
            ready = await receive_all(pipes, "ready", began + connect_budget)
            out.reports = [m[1] for m in ready]
            out.connect_s = time.monotonic() - began
            await asyncio.sleep(1.0)  # the server idle again: its memory per connection
            out.rss_connected_mib = _rss_total(out.pids)
            if opts.quiet_below is not None:
                out.quiet = await wait_quiet(opts.quiet_below, opts.quiet_wait)
            out.sale = await start_sale(ws_session, ws_url, host_token, opts)
            await measure_burst(opts, http, out, pipes)
            listed = await listed_sale(http, base, opts.room, out.sale["id"])
            out.sale_listed = listed is not None
            out.sale_after = listed
            for pipe in pipes:
                pipe.send(("close",))
            with contextlib.suppress(CommandRefused):
                await host_command(
                    ws_session, ws_url, host_token, "sale.stop", room=opts.room, sale=out.sale["id"]
                )
                out.stopped = True
            finished = True
        finally:
            await join_workers(workers, finished, _CLOSE_TIMEOUT_S)
    return figures(opts, out)


def _rss_total(pids: Sequence[int]) -> float | None:
    return sum(rss_mib(pid) for pid in pids) if pids else None


def figures(opts: Options, out: Outcome) -> dict[str, Any]:
    """The figures of a run, as printed and written to ``--json``."""
    r, results, reports = out.readings, out.results, out.reports
    replies = [x for w in results for x in w.replies]
    codes: Counter[str] = Counter(x.code for x in replies)
    ok = [x for x in replies if x.code == "ok"]
    # accepted units: each distinct order once, however many attempts its key got
    orders: dict[str, Reply] = {}
    for x in ok:
        if x.order_id is not None:
            orders.setdefault(x.order_id, x)
    units = sum(x.order_qty or 0 for x in orders.values())
    per_user: defaultdict[str, int] = defaultdict(int)
    for x in orders.values():
        per_user[x.user] += x.order_qty or 0
    per_key: defaultdict[tuple[str, str], set[str]] = defaultdict(set)
    for x in ok:
        if x.order_id is not None:
            per_key[(x.user, x.key)].add(x.order_id)
    owners: defaultdict[str, set[tuple[str, str]]] = defaultdict(set)
    for (user, key), ids in per_key.items():
        for oid in ids:
            owners[oid].add((user, key))
    repeats = [x for x in replies if x.repeat]
    # where the attempts that placed the orders stood in the order of sending (0 first,
    # 1 last): served in arrival order, they would be the earliest eligible ones
    by_send = sorted(range(len(replies)), key=lambda i: replies[i].sent)
    place = {i: n / max(1, len(replies) - 1) for n, i in enumerate(by_send)}
    placing: dict[str, int] = {}
    for i, x in enumerate(replies):
        if x.code != "ok" or x.order_id is None:
            continue
        if x.order_id not in placing or x.sent < replies[placing[x.order_id]].sent:
            placing[x.order_id] = i
    places = sorted(place[i] for i in placing.values())
    eligible = sorted(place[i] for i, x in enumerate(replies) if x.qty <= opts.limit)
    first_send = min((w.first_send for w in results), default=0.0)
    last_reply = max((w.last_reply for w in results), default=0.0)
    last_send = max((w.last_send for w in results), default=0.0)
    span = last_reply - first_send if last_reply > first_send else 0.0
    sent = len(replies) - codes.get("send_failed", 0)
    latencies = sorted(x.ms for x in replies if x.ms is not None)
    ok_latencies = sorted(x.ms for x in ok if x.ms is not None)
    wall = r.wall_s or 1.0
    after = out.sale_after
    expected_remaining = opts.stock - units
    closes: Counter[int] = Counter()
    errors: Counter[str] = Counter()
    for w in results:
        closes.update(w.closes)
    for c in reports:
        errors.update(c.errors)

    def rounded(x: float | None) -> float | None:
        return None if x is None else round(x, 1)

    def pct(cpu_s: float) -> float:
        return round(100 * cpu_s / wall, 1)

    return {
        "url": out.base,
        "room": opts.room,
        "sale": {
            "id": out.sale.get("id"),
            "sku": opts.sku,
            "stock": opts.stock,
            "limit_per_user": opts.limit,
            "stopped_after": out.stopped,
        },
        "buyers": {
            "requested": opts.buyers,
            "connected": sum(c.connected for c in reports),
            "failed": sum(c.failed for c in reports),
            "errors": dict(errors),
            "connect_s": round(out.connect_s, 3),
            "batch": opts.batch,
        },
        "attempts": {
            "planned": opts.attempts,
            "of_connected_buyers": len(replies),
            "sent": sent,
            "per_s": round(sent / span, 1) if span else None,
            "span_s": round(span, 4),
            "offered_per_s": opts.rate or None,
            "send_s": round(last_send - first_send, 4) if results else None,
            "qty_max": opts.qty_max,
            "over_limit_qty": sum(x.qty > opts.limit for x in replies),
            "repeats": len(repeats),
            "repeat_replies": dict(Counter(x.code for x in repeats)),
            "seed": opts.seed,
        },
        "replies": dict(sorted(codes.items())),
        "outcome": {
            "accepted_orders": len(orders),
            "accepted_units": units,
            "oversold": max(0, units - opts.stock),
            "unsold": max(0, opts.stock - units),
            "users_over_limit": sum(u > opts.limit for u in per_user.values()),
            "duplicate_orders_for_a_key": sum(len(ids) > 1 for ids in per_key.values()),
            "orders_shared_by_keys": sum(len(k) > 1 for k in owners.values()),
            "qty_mismatches": sum(x.order_qty != x.qty for x in ok),
            "not_held": sum(x.order_status != "held" for x in ok),
        },
        "serving_order": {
            "placing_attempts": len(places),
            "place_p50": _round3(percentile(places, 0.50)),
            "place_max": _round3(places[-1] if places else None),
            # roughly: where the first as many attempts with qty within the limit end
            "earliest_possible_max": _round3(
                eligible[len(places) - 1] if 0 < len(places) <= len(eligible) else None
            ),
        },
        "check": {
            "listed": out.sale_listed,
            "remaining": None if after is None else after.get("remaining"),
            "expected_remaining": expected_remaining,
            "ok": after is not None and after.get("remaining") == expected_remaining,
        },
        "reply_ms": {
            "replies": len(latencies),
            "p50": rounded(percentile(latencies, 0.50)),
            "p90": rounded(percentile(latencies, 0.90)),
            "p99": rounded(percentile(latencies, 0.99)),
            "p999": rounded(percentile(latencies, 0.999)),
            "max": rounded(latencies[-1] if latencies else None),
            "ok_p50": rounded(percentile(ok_latencies, 0.50)),
            "ok_p99": rounded(percentile(ok_latencies, 0.99)),
        },
        "closes": {str(code): n for code, n in sorted(closes.items())},
        "server": {
            "pids": out.pids,
            "window_s": round(wall, 4),
            "cpu_pct": pct(r.server_cpu_s) if out.pids else None,
            "cpu_s": round(r.server_cpu_s, 2) if out.pids else None,
            "rss_mib": round(r.server_rss_mib, 1) if out.pids else None,
            "cpu_pct_each": {str(p): pct(v) for p, v in r.server_cpu_s_each.items()},
            "rss_mib_each": {str(p): round(v, 1) for p, v in r.server_rss_mib_each.items()},
            "rss_before_connect_mib": rounded(out.rss_before_connect_mib),
            "rss_connected_mib": rounded(out.rss_connected_mib),
            "rss_per_connection_kib": (
                round(
                    (out.rss_connected_mib - out.rss_before_connect_mib)
                    * 1024
                    / max(1, sum(c.connected for c in reports)),
                    2,
                )
                if out.rss_connected_mib is not None and out.rss_before_connect_mib is not None
                else None
            ),
            "metrics_delta": {
                k: v - r.metrics0.get(k, 0.0)
                for k, v in sorted(r.metrics1.items())
                if v != r.metrics0.get(k, 0.0)
            },
        },
        "redis": {
            "pid": opts.redis_pid,
            "cpu_pct": None if opts.redis_pid is None else pct(r.redis_cpu_s),
            "rss_mib": None if opts.redis_pid is None else round(rss_mib(opts.redis_pid), 1),
        },
        "machine": {
            "cores": multiprocessing.cpu_count(),
            "quiet_before_burst": out.quiet,
            "cpu_pct_of_a_core": r.machine_pct,
            # busy time not charged to the server, Redis or the generator: interrupts
            # and softirq (loopback delivery), and other processes; well above the
            # irq_softirq figure means something else competed for the cores
            "untracked_pct": round(
                sum(v for k, v in r.machine_pct.items() if k not in ("idle", "steal"))
                - (pct(r.server_cpu_s) if out.pids else 0.0)
                - (0.0 if opts.redis_pid is None else pct(r.redis_cpu_s))
                - pct(r.own_cpu_s)
                - sum(100 * w.cpu_s / wall for w in results),
                1,
            ),
        },
        "generator": {
            "processes": opts.processes,
            "worker_cpu_pct": [round(100 * w.cpu_s / w.wall_s, 1) for w in results if w.wall_s],
            "worker_loop_lag_p99_ms": [round(w.lag_p99_ms, 1) for w in results],
            "worker_loop_lag_max_ms": [round(w.lag_max_ms, 1) for w in results],
            "main_cpu_pct": pct(r.own_cpu_s),
        },
    }


def _round3(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


def table(fig: dict[str, Any]) -> str:
    """A short human summary of :func:`run`'s figures."""
    b, a, o, chk = fig["buyers"], fig["attempts"], fig["outcome"], fig["check"]
    so = fig["serving_order"]
    lat, srv, rds, gen = fig["reply_ms"], fig["server"], fig["redis"], fig["generator"]
    box = fig["machine"]["cpu_pct_of_a_core"]

    def ms(x: float | None) -> str:
        return "-" if x is None else f"{x:.1f} ms"

    q = fig["machine"]["quiet_before_burst"]
    quiet = (
        ""
        if q is None
        else f"; before the sale waited {q['waited_s']} s, then {q['busy_pct']} % busy"
        + ("" if q["quiet"] else " (never quiet)")
    )
    rate = "-" if a["per_s"] is None else f"{a['per_s']:,.0f}/s"
    cpu = "-" if srv["cpu_pct"] is None else f"{srv['cpu_pct']:.1f} % of a core"
    rss = "-" if srv["rss_mib"] is None else f"{srv['rss_mib']:.1f} MiB"
    workers = ", ".join(
        f"{c:.0f} % (loop lag p99 {p:.0f} ms)"
        for c, p in zip(gen["worker_cpu_pct"], gen["worker_loop_lag_p99_ms"], strict=False)
    )
    rows = [
        ("buyers", f"{b['connected']} connected, {b['failed']} failed, {b['connect_s']:.1f} s"),
        (
            "attempts",
            f"{a['sent']} sent in {a['send_s']} s, all answered in {a['span_s']} s: {rate} "
            f"({a['repeats']} repeats, {a['over_limit_qty']} over the limit on their own)",
        ),
        ("replies", ", ".join(f"{k} {v}" for k, v in fig["replies"].items())),
        (
            "outcome",
            f"{o['accepted_units']} units in {o['accepted_orders']} orders of "
            f"{fig['sale']['stock']}; oversold {o['oversold']}, unsold {o['unsold']}; "
            f"users over the limit {o['users_over_limit']}; "
            f"keys with 2+ orders {o['duplicate_orders_for_a_key']}",
        ),
        (
            "served",
            f"the attempts that placed orders stood at {so['place_p50']} (median) to "
            f"{so['place_max']} of the sending order (0 first, 1 last; the earliest "
            f"eligible ones would end at {so['earliest_possible_max']})",
        ),
        (
            "check",
            f"remaining {chk['remaining']} (expected {chk['expected_remaining']}): "
            + ("ok" if chk["ok"] else "MISMATCH"),
        ),
        (
            "reply time",
            f"p50 {ms(lat['p50'])}, p90 {ms(lat['p90'])}, p99 {ms(lat['p99'])}, "
            f"max {ms(lat['max'])} ({lat['replies']} replies)",
        ),
        ("server", f"pids {srv['pids']}: CPU {cpu}, RSS {rss} over {srv['window_s']} s"),
        ("redis", "-" if rds["pid"] is None else f"CPU {rds['cpu_pct']:.1f} % of a core"),
        ("generator", f"workers {workers}; main {gen['main_cpu_pct']:.0f} %"),
        (
            "machine",
            f"{fig['machine']['cores']} cores, % of a core: "
            + ", ".join(f"{k} {v:.0f}" for k, v in box.items())
            + f"; untracked {fig['machine']['untracked_pct']:.0f}"
            + quiet,
        ),
    ]
    head = f"flash sale {fig['sale']['id']} in room {fig['room']!r} at {fig['url']}"
    return "\n".join([head, *(f"  {k:<11} {text}" for k, text in rows)])


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m loadtests.flash_sale",
        description="Flash-sale load test: a burst of order attempts at one sale of a "
        "running `serve --demo`.",
    )
    p.add_argument("--url", default="http://127.0.0.1:8080", help="server base URL (loopback)")
    p.add_argument("--room", default="demo", help="room of the sale (default: demo)")
    p.add_argument("--sku", default="mug-01", help="product on sale (default: mug-01)")
    p.add_argument("--attempts", type=int, default=20_000, help="order attempts (default 20000)")
    p.add_argument(
        "--buyers",
        type=int,
        default=10_000,
        help="buyer users, each with its own connection (default 10000)",
    )
    p.add_argument("--stock", type=int, default=500, help="units on sale (default 500)")
    p.add_argument("--limit", type=int, default=2, help="units per user (default 2)")
    p.add_argument("--qty-max", type=int, default=3, help="qty is drawn from 1 to this (default 3)")
    p.add_argument(
        "--repeat-keys",
        type=float,
        default=0.05,
        help="fraction of attempts that repeat an earlier attempt of the same buyer, "
        "key and qty included, like a client retry (default 0.05)",
    )
    p.add_argument("--processes", type=int, default=2, help="generator processes (default 2)")
    p.add_argument(
        "--batch", type=int, default=200, help="concurrent sign-ins per process (default 200)"
    )
    p.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="offer the attempts at this many a second in all, paced "
        "(default 0: as fast as the generator can)",
    )
    p.add_argument("--seed", type=int, default=1, help="seed of the quantities and repeats (1)")
    p.add_argument(
        "--reply-timeout",
        type=float,
        default=60.0,
        help="seconds to wait for the last reply after the burst starts (default 60)",
    )
    p.add_argument(
        "--quiet-below",
        type=float,
        metavar="PCT",
        help="once the buyers are connected, wait until the machine's busy CPU over 1 s is "
        "under PCT %% of a core before opening the sale (on a shared machine); "
        "default: do not wait",
    )
    p.add_argument(
        "--quiet-wait",
        type=float,
        default=600.0,
        help="most seconds to wait for --quiet-below; then go on (default 600)",
    )
    p.add_argument(
        "--server-pid",
        type=int,
        action="append",
        default=[],
        help="server pid (repeat to sum several); default: found from the port",
    )
    p.add_argument("--redis-pid", type=int, help="also report this Redis server's CPU")
    p.add_argument("--json", metavar="PATH", help="also write the figures as JSON to PATH")
    return p


def options(argv: Sequence[str] | None = None) -> Options:
    p = _parser()
    a = p.parse_args(argv)
    checks = [
        (1 <= a.buyers <= MAX_BUYERS, f"--buyers must be 1 to {MAX_BUYERS}"),
        (1 <= a.attempts <= MAX_ATTEMPTS, f"--attempts must be 1 to {MAX_ATTEMPTS}"),
        (
            a.attempts <= SERVER_ORDER_BURST * a.buyers,
            f"--attempts must be at most {SERVER_ORDER_BURST} × --buyers: the server lets "
            f"one user send {SERVER_ORDER_BURST} orders at once",
        ),
        (1 <= a.stock <= MAX_STOCK, f"--stock must be 1 to {MAX_STOCK}"),
        (1 <= a.limit <= MAX_QTY, f"--limit must be 1 to {MAX_QTY}"),
        (1 <= a.qty_max <= MAX_QTY, f"--qty-max must be 1 to {MAX_QTY}"),
        (0.0 <= a.repeat_keys <= 1.0, "--repeat-keys must be 0 to 1"),
        (1 <= a.processes <= MAX_PROCESSES, f"--processes must be 1 to {MAX_PROCESSES}"),
        (a.processes <= a.buyers, "--processes must be at most --buyers"),
        (1 <= a.batch <= 5000, "--batch must be 1 to 5000"),
        (0 <= a.rate <= 1_000_000, "--rate must be 0 to 1000000"),
        (0 < a.reply_timeout <= 600, "--reply-timeout must be above 0 and at most 600"),
        *quiet_checks(a),
    ]
    check_options(p, checks)
    loopback_base(a.url, PROG)
    return Options(
        url=a.url,
        room=a.room,
        sku=a.sku,
        attempts=a.attempts,
        buyers=a.buyers,
        stock=a.stock,
        limit=a.limit,
        qty_max=a.qty_max,
        repeat_keys=a.repeat_keys,
        processes=a.processes,
        batch=a.batch,
        rate=a.rate,
        seed=a.seed,
        reply_timeout=a.reply_timeout,
        quiet_below=a.quiet_below,
        quiet_wait=a.quiet_wait,
        server_pid=a.server_pid,
        redis_pid=a.redis_pid,
        json=a.json,
    )


def main(argv: Sequence[str] | None = None) -> int:
    opts = options(argv)
    return run_and_print(PROG, run(opts), table, opts.json)


if __name__ == "__main__":
    raise SystemExit(main())
