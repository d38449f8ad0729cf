"""Pieces shared by the load tests (``fanout``, ``flash_sale``, ``bridge``, the scenarios).

The protocol client (one command, its reply), the worker processes and the pipe between
them and the main process, and the readings of ``/proc``: the server's pid found from its
port, a process's CPU seconds and resident memory, the machine's CPU by kind (and waiting
for it to be quiet), the readings around a measured window; then the command line's checks
and the printing of the figures. Nothing here talks to any address but the one it is
given; the tools check that it is 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import resource
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.connection import wait as wait_pipes
from multiprocessing.context import SpawnContext
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any, Final, Literal, TypeVar
from urllib.parse import urlsplit

import aiohttp
import uvloop

from livecommerce.protocol import dumps, loads

CLK_TCK: Final = os.sysconf("SC_CLK_TCK")
POLL_S: Final = 0.02

WS = aiohttp.ClientWebSocketResponse[Literal[False]]
T = TypeVar("T")


# -- the protocol client ----------------------------------------------------------------


class CommandRefused(ConnectionError):
    """The server answered a command with ``ok: false`` (a connection that cannot go
    on as asked: callers that retry a dropped connection retry this too)."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


async def request(ws: WS, cid: int, op: str, **fields: Any) -> dict[str, Any]:
    """Send one command and return its reply's data (other lines are skipped).

    Raises:
        CommandRefused: the server refused it.
        ConnectionError: the socket closed first.
    """
    await ws.send_str(dumps({"op": op, "id": cid, **fields}).decode())
    while True:
        msg = await ws.receive()
        if msg.type is not aiohttp.WSMsgType.TEXT:
            raise ConnectionError(f"{op}: socket closed ({ws.close_code})")
        for line in msg.data.split(b"\n"):
            if not line:
                continue
            obj = loads(line)
            if obj.get("id") == cid and "ok" in obj:
                if not obj["ok"]:
                    raise CommandRefused(str(obj["error"]["code"]))
                data: dict[str, Any] = obj["data"]
                return data


async def open_socket(session: aiohttp.ClientSession, url: str) -> WS:
    return await session.ws_connect(
        url, autoping=True, compress=0, max_msg_size=16 * 1024 * 1024, decode_text=False
    )


def error_name(exc: BaseException) -> str:
    if isinstance(exc, CommandRefused):
        return exc.code
    return type(exc).__name__


async def bounded(coro: Coroutine[Any, Any, T], timeout: float) -> T:
    async with asyncio.timeout(timeout):
        return await coro


def loopback_base(url: str, prog: str) -> tuple[str, int]:
    """``(http base URL, port)`` of ``url``, which must point at 127.0.0.1.

    Raises:
        SystemExit: it does not.
    """
    parts = urlsplit(url)
    if parts.scheme != "http" or parts.hostname != "127.0.0.1" or parts.port is None:
        raise SystemExit(f"{prog}: --url must be http://127.0.0.1:PORT (loopback only)")
    return f"http://127.0.0.1:{parts.port}", parts.port


async def demo_token(
    http: aiohttp.ClientSession, base: str, name: str, *, prog: str, role: str = "viewer"
) -> str:
    """A token from the demo sign-in (``serve --demo``) for ``role`` and ``name``."""
    async with http.post(f"{base}/api/demo/token", json={"role": role, "name": name}) as r:
        if r.status != 200:
            raise SystemExit(f"{prog}: demo sign-in failed ({r.status}); is the server --demo?")
        body = await r.json()
    token: str = body["token"]
    return token


async def server_metrics(http: aiohttp.ClientSession, base: str) -> dict[str, float]:
    """The server's ``/metrics`` counters (empty if it has none)."""
    with contextlib.suppress(aiohttp.ClientError, TimeoutError):
        async with http.get(f"{base}/metrics") as r:
            if r.status == 200:
                out: dict[str, float] = {}
                for row in (await r.text()).splitlines():
                    name, _, value = row.partition(" ")
                    with contextlib.suppress(ValueError):
                        out[name] = float(value)
                return out
    return {}


# -- the pipe between the main process and its workers -----------------------------------


async def receive(pipe: Connection, kind: str, deadline: float) -> tuple[Any, ...]:
    """The next message from ``pipe``, which must be of ``kind``, before ``deadline``
    (``time.monotonic``).

    Raises:
        TimeoutError: nothing came in time.
        RuntimeError: another kind came (a worker reports its failure as ``error``).
    """
    while not pipe.poll():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {kind!r} message in time")
        await asyncio.sleep(POLL_S)
    msg: tuple[Any, ...] = pipe.recv()
    if msg[0] != kind:
        raise RuntimeError(f"expected {kind!r}, got {msg[0]!r}: {msg[1:]}")
    return msg


async def receive_all(pipes: Sequence[Connection], kind: str, deadline: float) -> list[Any]:
    """The next message of ``kind`` from every pipe, waiting in a thread (so the moment
    the last one comes is seen at once, with no polling).

    Raises:
        TimeoutError: not every pipe sent one in time.
        RuntimeError: another kind came (a worker reports its failure as ``error``), or
            a worker ended.
    """
    index = {id(pipe): i for i, pipe in enumerate(pipes)}
    pending = list(pipes)
    got: list[Any] = [None] * len(pipes)
    while pending:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no {kind!r} message in time")
        for conn in await asyncio.to_thread(wait_pipes, pending, left):
            assert isinstance(conn, Connection)
            try:
                msg = conn.recv()
            except EOFError:
                raise RuntimeError(f"a worker ended before its {kind!r} message") from None
            if msg[0] != kind:
                raise RuntimeError(f"expected {kind!r}, got {msg[0]!r}: {msg[1:]}")
            got[index[id(conn)]] = msg
            pending.remove(conn)
    return got


async def sleep_until(wall: float) -> None:
    delay = wall - time.time()
    if delay > 0:
        await asyncio.sleep(delay)


def raise_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed <= hard or (soft < needed and hard == resource.RLIM_INFINITY):
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


@dataclass(slots=True)
class ConnectReport:
    """How one worker's connections came up (viewers connected and joined, or buyers
    signed in and connected)."""

    connected: int
    failed: int
    seconds: float
    errors: dict[str, int]


def run_worker(
    index: int,
    pipe: Connection,
    work: Callable[[], Coroutine[Any, Any, None]],
    deadline_s: float,
    fds: int,
) -> None:
    """The body of a worker process: allow ``fds`` open files, run ``work()`` for at most
    ``deadline_s`` seconds, and report a failure on ``pipe`` as ``error`` (then exit 1)."""
    raise_fd_limit(fds)
    try:
        uvloop.run(bounded(work(), deadline_s))
    except BaseException as exc:
        with contextlib.suppress(OSError):
            pipe.send(("error", f"worker {index}: {type(exc).__name__}: {exc}"))
        raise SystemExit(1) from None


def spawn_worker(
    ctx: SpawnContext, target: Callable[[Any, Connection], None], plan: Any
) -> tuple[BaseProcess, Connection]:
    """Start ``target(plan, pipe)`` in a new process; return it and our end of the pipe."""
    ours, theirs = ctx.Pipe()
    proc = ctx.Process(target=target, args=(plan, theirs), daemon=True)
    proc.start()
    theirs.close()
    return proc, ours


async def join_workers(
    workers: Sequence[tuple[BaseProcess, Connection]], finished: bool, close_timeout_s: float
) -> None:
    """Wait for the workers to end (if the run ``finished``); terminate any still alive."""
    for proc, _ in workers:
        if finished:
            await asyncio.to_thread(proc.join, close_timeout_s + 5)
        if proc.is_alive():
            proc.terminate()
            await asyncio.to_thread(proc.join, 5)


def lag_figures(lags: Sequence[float]) -> tuple[float, float]:
    """``(p99, max)`` of sorted event-loop lags (0.0 for none)."""
    return percentile(lags, 0.99) or 0.0, lags[-1] if lags else 0.0


async def close_all(
    sockets: Sequence[WS], readers: Sequence[asyncio.Task[None]], timeout_s: float
) -> None:
    """Close the sockets (for at most ``timeout_s`` seconds), then stop their readers."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout_s):
            await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
    for task in readers:
        task.cancel()
    await asyncio.gather(*readers, return_exceptions=True)


# -- processes: pid, CPU, memory ----------------------------------------------------------


def listening_pids(port: int) -> list[int]:
    """The pids holding a TCP socket that listens on ``port`` (from /proc)."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for row in Path(table).read_text().splitlines()[1:]:
                cols = row.split()
                local, state, inode = cols[1], cols[3], cols[9]
                if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                    inodes.add(f"socket:[{inode}]")
    pids: list[int] = []
    if not inodes:
        return pids
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (proc / "fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) in inodes:
                        pids.append(int(proc.name))
                        break
    return sorted(pids)


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid``, in seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    # fields[0] is the state (field 3 of proc(5)); utime and stime are fields 14 and 15
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def thread_cpu_seconds(pid: int, tid: int | None = None) -> float:
    """Time on a CPU of one thread of ``pid`` (its main thread by default: its id is
    the pid), in seconds, from ``schedstat`` (nanoseconds, where ``stat`` counts
    10 ms ticks)."""
    text = Path(f"/proc/{pid}/task/{tid or pid}/schedstat").read_text()
    return int(text.split()[0]) / 1e9


def cpu_each(pids: Sequence[int]) -> dict[int, float | None]:
    """:func:`cpu_seconds` of each pid (None for a process that is gone)."""
    out: dict[int, float | None] = {}
    for pid in pids:
        try:
            out[pid] = cpu_seconds(pid)
        except (OSError, ValueError, IndexError):
            out[pid] = None
    return out


def rss_each(pids: Sequence[int]) -> dict[int, float | None]:
    """:func:`rss_mib` of each pid (None for a process that is gone)."""
    out: dict[int, float | None] = {}
    for pid in pids:
        try:
            out[pid] = rss_mib(pid)
        except (OSError, ValueError, IndexError):
            out[pid] = None
    return out


def rss_mib(pid: int) -> float:
    for row in Path(f"/proc/{pid}/status").read_text().splitlines():
        if row.startswith("VmRSS:"):
            return int(row.split()[1]) / 1024
    return 0.0


_STAT_FIELDS: Final = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


def machine_cpu() -> dict[str, float]:
    """The machine's CPU seconds so far by kind (``cpu`` line of /proc/stat).

    Loopback delivery runs partly in softirq, which no process is charged for."""
    cols = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    return {k: int(v) / CLK_TCK for k, v in zip(_STAT_FIELDS, cols, strict=False)}


def machine_pct(before: dict[str, float], after: dict[str, float], wall: float) -> dict[str, float]:
    """Percent of one core spent in each kind between two :func:`machine_cpu` readings."""
    spent = {k: after[k] - before[k] for k in before}
    return {
        "user": round(100 * (spent["user"] + spent["nice"]) / wall, 1),
        "system": round(100 * spent["system"] / wall, 1),
        "irq_softirq": round(100 * (spent["irq"] + spent["softirq"]) / wall, 1),
        "idle": round(100 * (spent["idle"] + spent["iowait"]) / wall, 1),
        "steal": round(100 * spent["steal"] / wall, 1),
    }


def sum_cpu(pids: Sequence[int]) -> float:
    return sum(cpu_seconds(pid) for pid in pids)


def busy_pct(before: dict[str, float], after: dict[str, float], wall: float) -> float:
    """Percent of one core busy (not idle, not stolen) between two readings."""
    spent = machine_pct(before, after, wall)
    return round(sum(v for k, v in spent.items() if k not in ("idle", "steal")), 1)


def speed_probe() -> float:
    """Milliseconds a fixed pure-Python loop takes, best of three: how fast this
    machine runs us now (a shared host slows down at times; figures taken when this
    is well above its usual value are of a slower machine)."""
    best = math.inf
    for _ in range(3):
        t0 = time.perf_counter()
        total = 0
        for i in range(1_000_000):
            total += i
        best = min(best, time.perf_counter() - t0)
    return round(best * 1000, 1)


async def wait_quiet(below: float | None, most_s: float) -> dict[str, Any]:
    """Wait until the machine's busy CPU over one second is under ``below`` % of a
    core, for at most ``most_s`` seconds; say how it went (with no ``below``, just
    measure one second: ``quiet`` is then None), and the :func:`speed_probe`."""
    started = time.monotonic()
    while True:
        box0, t0 = machine_cpu(), time.monotonic()
        await asyncio.sleep(1.0)
        busy = busy_pct(box0, machine_cpu(), time.monotonic() - t0)
        waited = round(time.monotonic() - started, 1)
        if below is None or busy < below or waited >= most_s:
            quiet = None if below is None else busy < below
            return {
                "below_pct": below,
                "busy_pct": busy,
                "waited_s": waited,
                "quiet": quiet,
                "probe_ms": speed_probe(),
            }


@dataclass(slots=True)
class Readings:
    """What the main process read around the measured window (CPU in seconds)."""

    wall_s: float = 0.0
    server_cpu_s: float = 0.0
    server_rss_mib: float = 0.0
    redis_cpu_s: float = 0.0
    own_cpu_s: float = 0.0
    machine_pct: dict[str, float] = field(default_factory=dict)
    metrics0: dict[str, float] = field(default_factory=dict)
    metrics1: dict[str, float] = field(default_factory=dict)
    server_cpu_s_each: dict[int, float] = field(default_factory=dict)
    server_rss_mib_each: dict[int, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Mark:
    """The readings at a window's start (see :func:`mark_start`)."""

    box: dict[str, float]
    server_cpu_s: float
    own_cpu_s: float
    wall: float
    redis_cpu_s: float
    server_cpu_s_each: dict[int, float] = field(default_factory=dict)


def mark_start(pids: Sequence[int], redis: Sequence[int]) -> Mark:
    """Read the machine's CPU, the server's (``pids``), this process's, the clock
    (``time.monotonic``) and Redis's (``redis``), in that order."""
    box = machine_cpu()
    each = {pid: cpu_seconds(pid) for pid in pids}
    own, wall = time.process_time(), time.monotonic()
    return Mark(box, sum(each.values()), own, wall, sum_cpu(redis), each)


def mark_end(r: Readings, start: Mark, pids: Sequence[int], redis: Sequence[int]) -> None:
    """Read again, the other way round, and set ``r``'s window, CPU, machine and the
    server's resident memory."""
    each = {pid: cpu_seconds(pid) for pid in pids}
    own1, wall1 = time.process_time(), time.monotonic()
    redis1 = sum_cpu(redis)
    box1 = machine_cpu()
    r.wall_s = wall1 - start.wall
    r.server_cpu_s = sum(each.values()) - start.server_cpu_s
    r.server_cpu_s_each = {
        pid: v - start.server_cpu_s_each[pid]
        for pid, v in each.items()
        if pid in start.server_cpu_s_each
    }
    r.server_rss_mib_each = {pid: rss_mib(pid) for pid in pids}
    r.redis_cpu_s = redis1 - start.redis_cpu_s
    r.own_cpu_s = own1 - start.own_cpu_s
    r.machine_pct = machine_pct(start.box, box1, r.wall_s)
    r.server_rss_mib = sum(r.server_rss_mib_each.values())


# -- figures ----------------------------------------------------------------------------


def percentile(ordered: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile of sorted values (None for none)."""
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def split_evenly(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


# -- the command line and the output -----------------------------------------------------


def quiet_checks(a: argparse.Namespace) -> list[tuple[bool, str]]:
    """The checks of ``--quiet-below`` and ``--quiet-wait`` (for :func:`check_options`)."""
    return [
        (
            a.quiet_below is None or 0 < a.quiet_below <= 200,
            "--quiet-below must be above 0 and at most 200",
        ),
        (0 <= a.quiet_wait <= 3600, "--quiet-wait must be 0 to 3600"),
    ]


def check_options(p: argparse.ArgumentParser, checks: Sequence[tuple[bool, str]]) -> None:
    """Exit through ``p.error`` with the message of the first check that fails."""
    for ok, message in checks:
        if not ok:
            p.error(message)


def print_figures(fig: dict[str, Any], table: str, json_path: str | None) -> None:
    """Print ``table`` and the figures as JSON; also write the JSON to ``json_path``."""
    text = json.dumps(fig, indent=2)
    print(table)
    print(text)
    if json_path:
        Path(json_path).write_text(text + "\n")


def run_and_print(
    prog: str,
    run: Coroutine[Any, Any, dict[str, Any]],
    table: Callable[[dict[str, Any]], str],
    json_path: str | None,
) -> int:
    """A tool's ``main``: run ``run`` on uvloop and print its figures (exit status 0),
    or say why it failed on stderr (exit status 1)."""
    try:
        fig = uvloop.run(run)
    except (
        TimeoutError,
        RuntimeError,
        ConnectionError,
        CommandRefused,
        aiohttp.ClientError,
    ) as exc:
        print(f"{prog}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print_figures(fig, table(fig), json_path)
    return 0
