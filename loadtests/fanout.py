"""Fan-out load test: many viewers in one room while a few users chat.

Runs ``--viewers`` WebSocket viewers in one room of a running server (``serve --demo``),
spread over ``--processes`` worker processes, while ``--senders`` users send ``--rate``
chats a second in total. Over a window of ``--duration`` seconds (after ``--warmup``
seconds of chatting) it measures:

- deliveries a second: event lines received by all viewers (chats, and the coalesced
  ``likes``/``presence`` lines), and WebSocket frames a second;
- delivery latency of chats, ``time.time()`` at receipt minus the event's ``ts``, on
  ``--sample`` viewers that parse every line (the others only count lines);
- per sampled viewer, seq gaps and duplicates; for every viewer, the close codes seen
  (4009: the server dropped a slow consumer);
- the server's CPU (utime + stime from ``/proc/PID/stat``, as a percentage of one core)
  and resident memory (``VmRSS``); optionally Redis's CPU (``--redis-pid``);
- the generator's own CPU and how late its event loops woke up, and the machine's CPU
  by kind (loopback delivery is partly softirq work that no process is charged for),
  so one can tell whether the generator, or something else on the machine, was the
  bottleneck.

The server lets one user chat once a second (bursts of 3), so when ``--rate`` needs
more users than ``--senders`` (at most ``--user-rate`` chats a second each) the tool
uses more and says so. Viewers share one demo viewer token; every sender is its own
demo user.

The figures are measurements of one machine, never assertions. The tool talks only to
127.0.0.1, stops by itself (every phase has a deadline), and prints a short table and
the figures as JSON (``--json PATH`` also writes them to a file).

Example::

    livecommerce serve --port 8100 --demo &
    python -m loadtests.fanout --url http://127.0.0.1:8100 --viewers 1000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import math
import multiprocessing
import os
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any, Final

import aiohttp

from livecommerce.protocol import dumps, loads
from loadtests import _common
from loadtests._common import (
    WS,
    ConnectReport,
    check_options,
    close_all,
    join_workers,
    lag_figures,
    listening_pids,
    mark_end,
    mark_start,
    open_socket,
    percentile,
    receive,
    request,
    rss_mib,
    run_and_print,
    run_worker,
    server_metrics,
    sleep_until,
    spawn_worker,
    split_evenly,
)
from loadtests._common import bounded as _bounded
from loadtests._common import error_name as _error_name

CLOSE_SLOW: Final = 4009
SERVER_USER_RATE: Final = 1.0
"""Chats a second the server lets one user send (PROTOCOL.md, limits)."""
MAX_VIEWERS: Final = 50_000
MAX_PROCESSES: Final = 32
_CLOSE_TIMEOUT_S: Final = 10.0
_CONNECT_TIMEOUT_S: Final = 20.0
_GAUGE: Final = "livecommerce_connections"


# -- plans and results, passed between processes ----------------------------------------


@dataclass(frozen=True, slots=True)
class WorkerPlan:
    """What one worker process does: ``viewers`` viewers, ``sampled`` of them parsed."""

    index: int
    ws_url: str
    token: str
    room: str
    viewers: int
    sampled: int
    batch: int
    connect_timeout_s: float
    deadline_s: float
    """Seconds after its start at which the worker gives up, whatever it was doing."""


@dataclass(slots=True)
class WorkerResult:
    """One worker's figures over the measurement window."""

    index: int
    lines: int
    frames: int
    latencies_ms: list[float]
    gaps: int
    missing: int
    duplicates: int
    closes: dict[int, int]
    open_at_end: int
    cpu_s: float
    wall_s: float
    lag_p99_ms: float
    lag_max_ms: float


# -- what a worker counts ---------------------------------------------------------------


class Tally:
    """Counters shared by the viewers of one worker (one thread: no locks).

    Lines and frames count only when received inside ``[t0, t1)`` (wall clock).
    """

    def __init__(self) -> None:
        self.t0 = math.inf
        self.t1 = math.inf
        self.counting_closes = True
        self.lines = 0
        self.frames = 0
        self.latencies_ms: list[float] = []
        self.gaps = 0
        self.missing = 0
        self.duplicates = 0
        self.closes: Counter[int] = Counter()

    def closed(self, code: int | None) -> None:
        if self.counting_closes:
            self.closes[code if code is not None else 0] += 1


async def loop_lag(t0: float, t1: float, every_s: float = 0.005) -> list[float]:
    """How late (ms) this process's event loop woke up, sampled every ``every_s``
    between ``t0`` and ``t1`` (wall clock): a late loop delays every reading after it."""
    await sleep_until(t0)
    lags: list[float] = []
    while time.time() < t1:
        before = time.monotonic()
        await asyncio.sleep(every_s)
        lags.append((time.monotonic() - before - every_s) * 1000.0)
    return sorted(lags)


async def count_frames(ws: WS, tally: Tally) -> None:
    """Read a viewer's frames, counting lines without parsing them."""
    text = aiohttp.WSMsgType.TEXT
    async for msg in ws:
        if msg.type is text:
            now = time.time()
            if tally.t0 <= now < tally.t1:
                tally.frames += 1
                tally.lines += msg.data.count(b"\n") + 1
    tally.closed(ws.close_code)


async def sample_frames(ws: WS, tally: Tally, last_seq: int) -> None:
    """Read a viewer's frames, parsing every line: latency of chats, gaps, repeats."""
    text = aiohttp.WSMsgType.TEXT
    async for msg in ws:
        if msg.type is not text:
            continue
        now = time.time()
        inside = tally.t0 <= now < tally.t1
        now_ms = now * 1000.0
        lines = 0
        for line in msg.data.split(b"\n"):
            if not line:
                continue
            lines += 1
            event = loads(line)
            seq = event.get("seq")
            if seq is not None:
                if seq <= last_seq:
                    tally.duplicates += 1
                    continue
                if seq != last_seq + 1:
                    tally.gaps += 1
                    tally.missing += seq - last_seq - 1
                last_seq = seq
            if inside and event.get("type") == "chat":
                tally.latencies_ms.append(now_ms - event["ts"])
        if inside:
            tally.frames += 1
            tally.lines += lines
    tally.closed(ws.close_code)


async def open_viewer(session: aiohttp.ClientSession, plan: WorkerPlan) -> tuple[WS, int]:
    """Connect, sign in and join; return the socket and the snapshot's seq."""
    ws = await open_socket(session, plan.ws_url)
    try:
        await request(ws, 1, "connect", token=plan.token)
        joined = await request(ws, 2, "join", room=plan.room)
    except BaseException:
        await ws.close()
        raise
    return ws, int(joined["snapshot"]["seq"])


def _sampled_indices(n: int, k: int) -> set[int]:
    """``k`` of ``n`` join positions, spread evenly (the hub writes in join order)."""
    return {i * n // k for i in range(k)} if k else set()


async def connect_viewers(
    session: aiohttp.ClientSession, plan: WorkerPlan, tally: Tally
) -> tuple[ConnectReport, list[WS], list[asyncio.Task[None]]]:
    """Connect the plan's viewers, ``plan.batch`` at a time, and start their readers."""
    sampled = _sampled_indices(plan.viewers, plan.sampled)
    sockets: list[WS] = []
    readers: list[asyncio.Task[None]] = []
    errors: Counter[str] = Counter()
    started = time.monotonic()
    for first in range(0, plan.viewers, plan.batch):
        positions = range(first, min(first + plan.batch, plan.viewers))
        outcomes = await asyncio.gather(
            *(_bounded(open_viewer(session, plan), plan.connect_timeout_s) for _ in positions),
            return_exceptions=True,
        )
        for position, outcome in zip(positions, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                errors[_error_name(outcome)] += 1
                continue
            ws, seq = outcome
            sockets.append(ws)
            if position in sampled:
                reader = sample_frames(ws, tally, seq)
            else:
                reader = count_frames(ws, tally)
            readers.append(asyncio.create_task(reader))
    report = ConnectReport(
        connected=len(sockets),
        failed=sum(errors.values()),
        seconds=time.monotonic() - started,
        errors=dict(errors),
    )
    return report, sockets, readers


# -- a worker process -------------------------------------------------------------------


def worker(plan: WorkerPlan, pipe: Connection) -> None:
    """Entry point of a worker process."""
    run_worker(plan.index, pipe, lambda: _worker(plan, pipe), plan.deadline_s, plan.viewers + 256)


async def _worker(plan: WorkerPlan, pipe: Connection) -> None:
    deadline = time.monotonic() + plan.deadline_s
    tally = Tally()
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        pipe.send(("started", plan.index))
        await receive(pipe, "connect", deadline)
        report, sockets, readers = await connect_viewers(session, plan, tally)
        # The connections live to the end: keep the collector from walking them again
        # and again (a full collection stalls every reader at once).
        gc.freeze()
        pipe.send(("ready", report))
        _, t0, t1 = await receive(pipe, "window", deadline)
        tally.t0, tally.t1 = t0, t1
        lag = asyncio.create_task(loop_lag(t0, t1))
        await sleep_until(t0)
        cpu0, wall0 = time.process_time(), time.monotonic()
        await sleep_until(t1)
        cpu1, wall1 = time.process_time(), time.monotonic()
        tally.counting_closes = False
        lag_p99_ms, lag_max_ms = lag_figures(await lag)
        pipe.send(
            (
                "result",
                WorkerResult(
                    index=plan.index,
                    lines=tally.lines,
                    frames=tally.frames,
                    latencies_ms=tally.latencies_ms,
                    gaps=tally.gaps,
                    missing=tally.missing,
                    duplicates=tally.duplicates,
                    closes=dict(tally.closes),
                    open_at_end=sum(not ws.closed for ws in sockets),
                    cpu_s=cpu1 - cpu0,
                    wall_s=wall1 - wall0,
                    lag_p99_ms=lag_p99_ms,
                    lag_max_ms=lag_max_ms,
                ),
            )
        )
        # Closing thousands of sockets costs the server CPU: not before it has been read.
        await receive(pipe, "close", deadline)
        await close_all(sockets, readers, _CLOSE_TIMEOUT_S)


# -- the main process -------------------------------------------------------------------


@dataclass(slots=True)
class Sender:
    """One chatting user's connection, with what the server answered it."""

    ws: WS
    ids: int = 10
    answers: Counter[str] = field(default_factory=Counter)
    close_code: int | None = None
    reader: asyncio.Task[None] | None = None

    async def read(self) -> None:
        async for msg in self.ws:
            if msg.type is not aiohttp.WSMsgType.TEXT:
                continue
            for line in msg.data.split(b"\n"):
                if line:
                    obj = loads(line)
                    if "ok" in obj:
                        self.answers["ok" if obj["ok"] else str(obj["error"]["code"])] += 1
        self.close_code = self.ws.close_code


def loopback_base(url: str) -> tuple[str, int]:
    """``(http base URL, port)`` of ``url``, which must point at 127.0.0.1.

    Raises:
        SystemExit: it does not.
    """
    return _common.loopback_base(url, "fanout")


async def demo_token(http: aiohttp.ClientSession, base: str, name: str) -> str:
    return await _common.demo_token(http, base, name, prog="fanout")


def sender_count(requested: int, rate: float, user_rate: float) -> int:
    """Enough users that none chats faster than ``user_rate`` a second."""
    return max(requested, math.ceil(rate / user_rate))


async def chat_loop(
    senders: list[Sender], room: str, rate: float, t0: float, t1: float, start: float
) -> tuple[int, int]:
    """Send ``rate`` chats a second round-robin from ``start`` to ``t1``; return how
    many were sent in all and how many inside ``[t0, t1)``."""
    interval = 1.0 / rate
    sent = in_window = 0
    while True:
        due = start + sent * interval
        if due >= t1:
            return sent, in_window
        await sleep_until(due)
        sender = senders[sent % len(senders)]
        sender.ids += 1
        text = f"fanout {sent:07d} from {sent % len(senders)}"
        with contextlib.suppress(ConnectionError, aiohttp.ClientError):
            await sender.ws.send_str(
                dumps({"op": "chat", "id": sender.ids, "room": room, "text": text}).decode()
            )
        sent += 1
        if t0 <= due:
            in_window += 1


@dataclass(frozen=True, slots=True)
class Options:
    """The command line, checked (see :func:`options`)."""

    url: str
    room: str
    viewers: int
    senders: int
    rate: float
    duration: float
    warmup: float
    sample: int
    processes: int
    batch: int
    server_pid: list[int]
    redis_pid: int | None
    user_rate: float
    json: str | None


@dataclass(slots=True)
class Readings(_common.Readings):
    """What the main process read around the window (CPU in seconds), and the chats."""

    chats_sent: int = 0
    chats_in_window: int = 0


@dataclass(slots=True)
class Outcome:
    """Everything a run gathered, before it is summed up by :func:`figures`."""

    base: str
    pids: list[int]
    senders: int
    connect_s: float = 0.0
    reports: list[ConnectReport] = field(default_factory=list)
    results: list[WorkerResult] = field(default_factory=list)
    answers: Counter[str] = field(default_factory=Counter)
    readings: Readings = field(default_factory=Readings)


def start_workers(
    opts: Options, ws_url: str, token: str, deadline_s: float
) -> list[tuple[BaseProcess, Connection]]:
    """Start ``opts.processes`` workers sharing the viewers and the sampled ones."""
    ctx = multiprocessing.get_context("spawn")
    viewers = split_evenly(opts.viewers, opts.processes)
    sampled = split_evenly(min(opts.sample, opts.viewers), opts.processes)
    started: list[tuple[BaseProcess, Connection]] = []
    for i in range(opts.processes):
        plan = WorkerPlan(
            index=i,
            ws_url=ws_url,
            token=token,
            room=opts.room,
            viewers=viewers[i],
            sampled=min(sampled[i], viewers[i]),
            batch=opts.batch,
            connect_timeout_s=_CONNECT_TIMEOUT_S,
            deadline_s=deadline_s,
        )
        started.append(spawn_worker(ctx, worker, plan))
    return started


async def open_senders(
    session: aiohttp.ClientSession, ws_url: str, tokens: list[str]
) -> list[Sender]:
    senders: list[Sender] = []
    for token in tokens:
        ws = await _bounded(open_socket(session, ws_url), _CONNECT_TIMEOUT_S)
        senders.append(Sender(ws))
        await _bounded(request(ws, 1, "connect", token=token), _CONNECT_TIMEOUT_S)
        senders[-1].reader = asyncio.create_task(senders[-1].read())
    return senders


async def close_senders(senders: list[Sender]) -> None:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(_CLOSE_TIMEOUT_S):
            await asyncio.gather(*(s.ws.close() for s in senders), return_exceptions=True)
    tasks = [s.reader for s in senders if s.reader is not None]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def measure(
    opts: Options,
    http: aiohttp.ClientSession,
    out: Outcome,
    senders: list[Sender],
    pipes: list[Connection],
) -> None:
    """Chat, and read the server around the window; collect the workers' results."""
    redis = [] if opts.redis_pid is None else [opts.redis_pid]
    start = time.time() + 0.2
    t0 = start + opts.warmup
    t1 = t0 + opts.duration
    for pipe in pipes:
        pipe.send(("window", t0, t1))
    chats = asyncio.create_task(chat_loop(senders, opts.room, opts.rate, t0, t1, start))
    try:
        r = out.readings
        await sleep_until(t0)
        r.metrics0 = await server_metrics(http, out.base)
        mark = mark_start(out.pids, redis)
        await sleep_until(t1)
        mark_end(r, mark, out.pids, redis)
        r.metrics1 = await server_metrics(http, out.base)
        r.chats_sent, r.chats_in_window = await chats
    finally:
        chats.cancel()
    deadline = time.monotonic() + 30.0
    out.results = [(await receive(pipe, "result", deadline))[1] for pipe in pipes]
    for pipe in pipes:
        pipe.send(("close",))
    await asyncio.sleep(0.5)  # the answers to the last chats


async def run(opts: Options) -> dict[str, Any]:
    """Run the whole test; return the figures (see :func:`figures`)."""
    base, port = loopback_base(opts.url)
    ws_url = f"ws://127.0.0.1:{port}/ws"
    out = Outcome(
        base=base,
        pids=list(opts.server_pid) or listening_pids(port),
        senders=sender_count(opts.senders, opts.rate, opts.user_rate),
    )
    if out.senders != opts.senders:
        print(
            f"note: {opts.rate:g} chats/s with at most {opts.user_rate:g}/s per user "
            f"(server limit {SERVER_USER_RATE:g}/s) needs {out.senders} sender users, "
            f"not {opts.senders}; using {out.senders}",
            file=sys.stderr,
        )
    connect_budget = 30.0 + opts.viewers / 20
    worker_life = connect_budget + opts.warmup + opts.duration + 60.0
    workers: list[tuple[BaseProcess, Connection]] = []
    finished = False
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http,
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as chat_session,
    ):
        try:
            viewer_token = await demo_token(http, base, "fanout-viewer")
            tokens = [
                await demo_token(http, base, f"fanout-sender-{i}") for i in range(out.senders)
            ]
            workers = start_workers(opts, ws_url, viewer_token, worker_life)
            pipes = [pipe for _, pipe in workers]
            deadline = time.monotonic() + 60.0
            for pipe in pipes:
                await receive(pipe, "started", deadline)
            began = time.monotonic()
            for pipe in pipes:
                pipe.send(("connect",))
            deadline = began + connect_budget
            out.reports = [(await receive(pipe, "ready", deadline))[1] for pipe in pipes]
            out.connect_s = time.monotonic() - began
            senders: list[Sender] = []
            try:
                senders = await open_senders(chat_session, ws_url, tokens)
                await measure(opts, http, out, senders, pipes)
            finally:
                await close_senders(senders)
                for s in senders:
                    out.answers.update(s.answers)
            finished = True
        finally:
            await join_workers(workers, finished, _CLOSE_TIMEOUT_S)
    return figures(opts, out)


def figures(opts: Options, out: Outcome) -> dict[str, Any]:
    """The figures of a run, as printed and written to ``--json``."""
    r, results, reports = out.readings, out.results, out.reports
    wall = r.wall_s
    latencies = sorted(x for w in results for x in w.latencies_ms)
    closes: Counter[int] = Counter()
    errors: Counter[str] = Counter()
    for w in results:
        closes.update(w.closes)
    for c in reports:
        errors.update(c.errors)
    connected = sum(c.connected for c in reports)
    chats_per_s = r.chats_in_window / opts.duration

    def rounded(x: float | None) -> float | None:
        return None if x is None else round(x, 1)

    def pct(cpu_s: float) -> float:
        return round(100 * cpu_s / wall, 1)

    return {
        "url": out.base,
        "room": opts.room,
        "window_s": round(wall, 3),
        "viewers": {
            "requested": opts.viewers,
            "connected": connected,
            "failed": sum(c.failed for c in reports),
            "errors": dict(errors),
            "connect_s": round(out.connect_s, 3),
            "connects_per_s": round(connected / out.connect_s, 1) if out.connect_s else None,
            "batch": opts.batch,
            "open_at_end": sum(w.open_at_end for w in results),
        },
        "chats": {
            "senders": out.senders,
            "senders_requested": opts.senders,
            "target_per_s": opts.rate,
            "sent": r.chats_sent,
            "sent_in_window": r.chats_in_window,
            "per_s": round(chats_per_s, 2),
            "answers": dict(out.answers),
        },
        "deliveries": {
            "lines_per_s": round(sum(w.lines for w in results) / wall, 1),
            "frames_per_s": round(sum(w.frames for w in results) / wall, 1),
            "expected_chat_lines_per_s": round(chats_per_s * connected, 1),
        },
        "latency_ms": {
            "sampled_viewers": min(opts.sample, opts.viewers),
            "chats": len(latencies),
            "p50": rounded(percentile(latencies, 0.50)),
            "p90": rounded(percentile(latencies, 0.90)),
            "p99": rounded(percentile(latencies, 0.99)),
            "max": rounded(latencies[-1] if latencies else None),
        },
        "order": {
            "gaps": sum(w.gaps for w in results),
            "missing": sum(w.missing for w in results),
            "duplicates": sum(w.duplicates for w in results),
        },
        "closes": {str(code): n for code, n in sorted(closes.items())},
        "closes_4009": closes.get(CLOSE_SLOW, 0),
        "server": {
            "pids": out.pids,
            "cpu_pct": pct(r.server_cpu_s) if out.pids else None,
            "rss_mib": round(r.server_rss_mib, 1) if out.pids else None,
            "connections": r.metrics1.get(_GAUGE),
            "metrics_delta": {
                k: v - r.metrics0.get(k, 0.0)
                for k, v in sorted(r.metrics1.items())
                if k != _GAUGE and v != r.metrics0.get(k, 0.0)
            },
        },
        "redis": {
            "pid": opts.redis_pid,
            "cpu_pct": None if opts.redis_pid is None else pct(r.redis_cpu_s),
            "rss_mib": None if opts.redis_pid is None else round(rss_mib(opts.redis_pid), 1),
        },
        "machine": {
            "cores": os.cpu_count(),
            "cpu_pct_of_a_core": r.machine_pct,
            # busy time not charged to the server, Redis or the generator: interrupts
            # and softirq (loopback delivery), and other processes; well above the
            # irq_softirq figure means something else disturbed the run
            "untracked_pct": round(
                sum(v for k, v in r.machine_pct.items() if k not in ("idle", "steal"))
                - (pct(r.server_cpu_s) if out.pids else 0.0)
                - (0.0 if opts.redis_pid is None else pct(r.redis_cpu_s))
                - pct(r.own_cpu_s)
                - sum(100 * w.cpu_s / w.wall_s for w in results),
                1,
            ),
        },
        "generator": {
            "processes": opts.processes,
            "worker_cpu_pct": [round(100 * w.cpu_s / w.wall_s, 1) for w in results],
            "worker_loop_lag_p99_ms": [round(w.lag_p99_ms, 1) for w in results],
            "worker_loop_lag_max_ms": [round(w.lag_max_ms, 1) for w in results],
            "main_cpu_pct": pct(r.own_cpu_s),
        },
    }


def table(fig: dict[str, Any]) -> str:
    """A short human summary of :func:`run`'s figures."""
    v, c, d, lat = fig["viewers"], fig["chats"], fig["deliveries"], fig["latency_ms"]
    srv, gen, order = fig["server"], fig["generator"], fig["order"]
    box, rds = fig["machine"]["cpu_pct_of_a_core"], fig["redis"]

    def ms(x: float | None) -> str:
        return "-" if x is None else f"{x:.1f} ms"

    cpu = "-" if srv["cpu_pct"] is None else f"{srv['cpu_pct']:.1f} % of a core"
    rss = "-" if srv["rss_mib"] is None else f"{srv['rss_mib']:.1f} MiB"
    workers = ", ".join(
        f"{cpu:.0f} % (loop lag p99 {p99:.0f} ms, max {top:.0f} ms)"
        for cpu, p99, top in zip(
            gen["worker_cpu_pct"],
            gen["worker_loop_lag_p99_ms"],
            gen["worker_loop_lag_max_ms"],
            strict=True,
        )
    )
    rows = [
        (
            "viewers",
            f"{v['connected']} connected, {v['failed']} failed, "
            f"{v['connect_s']:.2f} s ({v['connects_per_s']}/s)",
        ),
        (
            "chats",
            f"{c['per_s']:.1f}/s from {c['senders']} users "
            f"(target {c['target_per_s']:g}/s); answers {c['answers']}",
        ),
        (
            "deliveries",
            f"{d['lines_per_s']:,.0f} lines/s, {d['frames_per_s']:,.0f} frames/s "
            f"(chat lines expected {d['expected_chat_lines_per_s']:,.0f}/s)",
        ),
        (
            "latency",
            f"p50 {ms(lat['p50'])}, p90 {ms(lat['p90'])}, p99 {ms(lat['p99'])}, "
            f"max {ms(lat['max'])} ({lat['chats']} chats on "
            f"{lat['sampled_viewers']} viewers)",
        ),
        (
            "order",
            f"gaps {order['gaps']} (missing {order['missing']}), duplicates {order['duplicates']}",
        ),
        ("closes", f"4009: {fig['closes_4009']}; all: {fig['closes'] or '{}'}"),
        ("server", f"pids {srv['pids']}: CPU {cpu}, RSS {rss}"),
        ("redis", "-" if rds["pid"] is None else f"CPU {rds['cpu_pct']:.1f} % of a core"),
        ("generator", f"workers {workers}; main {gen['main_cpu_pct']:.0f} %"),
        (
            "machine",
            f"{fig['machine']['cores']} cores, % of a core: "
            + ", ".join(f"{k} {v:.0f}" for k, v in box.items())
            + f"; untracked {fig['machine']['untracked_pct']:.0f}",
        ),
    ]
    head = f"fanout over {fig['window_s']:.1f} s in room {fig['room']!r} at {fig['url']}"
    return "\n".join([head, *(f"  {k:<11} {text}" for k, text in rows)])


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m loadtests.fanout",
        description="Fan-out load test: viewers in one room of a running `serve --demo`.",
    )
    p.add_argument("--url", default="http://127.0.0.1:8080", help="server base URL (loopback)")
    p.add_argument("--room", default="demo", help="room to join (default: demo)")
    p.add_argument("--viewers", type=int, default=1000, help="viewers (default 1000)")
    p.add_argument("--senders", type=int, default=20, help="users that chat (default 20)")
    p.add_argument("--rate", type=float, default=50.0, help="chats a second in all (default 50)")
    p.add_argument("--duration", type=float, default=10.0, help="measured seconds (default 10)")
    p.add_argument("--warmup", type=float, default=2.0, help="chatting before the window (2)")
    p.add_argument(
        "--sample",
        type=int,
        default=100,
        help="viewers that parse every line and time latency (default 100)",
    )
    p.add_argument("--processes", type=int, default=1, help="generator processes (default 1)")
    p.add_argument("--batch", type=int, default=200, help="concurrent connects (default 200)")
    p.add_argument(
        "--server-pid",
        type=int,
        action="append",
        default=[],
        help="server pid (repeat to sum several); default: found from the port",
    )
    p.add_argument(
        "--user-rate",
        type=float,
        default=0.9,
        help="most chats a second one sender user sends; more senders are used "
        "when --rate needs them (default 0.9; the server allows 1)",
    )
    p.add_argument("--redis-pid", type=int, help="also report this Redis server's CPU")
    p.add_argument("--json", metavar="PATH", help="also write the figures as JSON to PATH")
    return p


def options(argv: Sequence[str] | None = None) -> Options:
    p = _parser()
    a = p.parse_args(argv)
    checks = [
        (1 <= a.viewers <= MAX_VIEWERS, f"--viewers must be 1 to {MAX_VIEWERS}"),
        (1 <= a.senders <= 1000, "--senders must be 1 to 1000"),
        (0 < a.rate <= 5000, "--rate must be above 0 and at most 5000"),
        (0 < a.duration <= 600, "--duration must be above 0 and at most 600"),
        (0 <= a.warmup <= 60, "--warmup must be 0 to 60"),
        (a.sample >= 0, "--sample must not be negative"),
        (1 <= a.processes <= MAX_PROCESSES, f"--processes must be 1 to {MAX_PROCESSES}"),
        (1 <= a.batch <= 5000, "--batch must be 1 to 5000"),
        (0 < a.user_rate <= SERVER_USER_RATE, "--user-rate must be above 0 and at most 1"),
        (math.ceil(a.rate / a.user_rate) <= 1000, "--rate needs more than 1000 sender users"),
    ]
    check_options(p, checks)
    loopback_base(a.url)
    return Options(
        url=a.url,
        room=a.room,
        viewers=a.viewers,
        senders=a.senders,
        rate=a.rate,
        duration=a.duration,
        warmup=a.warmup,
        sample=a.sample,
        processes=a.processes,
        batch=a.batch,
        server_pid=a.server_pid,
        redis_pid=a.redis_pid,
        user_rate=a.user_rate,
        json=a.json,
    )


def main(argv: Sequence[str] | None = None) -> int:
    opts = options(argv)
    return run_and_print("fanout", run(opts), table, opts.json)


if __name__ == "__main__":
    raise SystemExit(main())
