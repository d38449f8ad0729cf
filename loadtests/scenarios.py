"""The room scenarios of ``python -m loadtests``: what a live show does to one room.

Every scenario runs on a *rig*: the server (``--url``, or one the tool starts: Redis
when ``redis-server`` is found, two processes), the viewers (:mod:`loadtests.crowd`,
``--processes`` worker processes, sources spread over 127.0.0.0/8) and the users who
chat and tap likes (:mod:`loadtests.actors`, in this process). A measurement is:

1. *connect*: the server's resident memory (all its processes) is read, viewers are
   added, the memory is read again once the server is idle: RSS per idle connection is
   the difference over the viewers added. The connect rate is the viewers added over
   the time it took (sign-in with a token and ``join`` included).
2. *window*: the chats and likes run for ``--warmup`` seconds, then ``--duration``
   seconds are measured: deliveries (event lines received by all viewers), chat
   delivery latency on the sampled viewers (p50, p90, p99, p99.9, max), gaps and
   duplicates on every viewer, closes (4009: the server dropped a slow consumer), each
   server process's CPU (% of one core; all summed) and RSS, Redis's CPU, the
   generator's CPU (its workers and this process) and the machine's CPU by kind.

Scenarios: ``sweep`` (a list of room sizes, one result each, viewers added step by
step), ``chat-storm`` and ``like-storm`` (one load alone at a high rate),
``slow-consumers`` (a baseline window, then a share of viewers stop reading: the others'
latency against the baseline, and how long the server took to drop the slow ones),
``reconnect-storm`` (a server process is killed; its viewers reconnect and resume with
``since``: the share recovered without a gap within 10 s, and the time it took) and
``quick`` (a small run of a room and a flash sale, for CI).

The figures are measurements, never assertions: a scenario exits 0 whatever they are,
and 1 only when the tool itself could not run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import math
import os
import shlex
import sys
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from loadtests import server as srv
from loadtests._common import (
    CommandRefused,
    check_options,
    cpu_seconds,
    machine_cpu,
    machine_pct,
    percentile,
    rss_mib,
    speed_probe,
    wait_quiet,
)
from loadtests.actors import CHAT_USER_RATE, LIKE_USER_RATE, MAX_TAPS, Load, Sent, users_for
from loadtests.crowd import (
    CLOSE_SLOW,
    AddReport,
    CrowdHandle,
    RecoveryReport,
    SlowRecord,
    WindowReport,
)

DEFAULT_RESULTS: Final = Path(__file__).resolve().parent / "results"
VIEWERS_PER_PROCESS: Final = 2500
"""Viewers per generator process when ``--processes`` is 0 (auto)."""
MAX_VIEWERS: Final = 50_000
MAX_PROCESSES: Final = 16
LOWAT: Final = 64 * 1024
"""The most ``SO_RCVLOWAT`` of the counting viewers in a window (``Crowd.window``)."""
SHARED_TOKENS: Final = 16
"""Viewers share this many tokens when they come from the demo sign-in (a request
each); signed here (the tool knows the secret), each viewer has its own, as in a real
crowd: the server's per-joiner work (token check, ban check, orders) is all there."""
_SETTLE_S: Final = 1.5


# -- options --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Options:
    """A scenario's command line, checked (see :func:`parse`)."""

    scenario: str
    urls: tuple[str, ...]
    backend: str
    server_workers: int
    tick_ms: int | None
    secret: str | None
    room: str
    viewers: tuple[int, ...]
    processes: int
    batch: int
    sample: int
    lowat: int
    chats: float
    likes: float
    taps_per_like: int
    duration: float
    warmup: float
    settle: float
    slow_share: float
    slow_duration: float
    kill_after: float
    storm_window: float
    recover_within: float
    jitter: float
    kill_pid: int | None
    redis_pid: int | None
    quiet_below: float | None
    quiet_wait: float
    json: str | None
    results_dir: str | None
    command: str


DEFAULTS: Final[dict[str, dict[str, Any]]] = {
    "sweep": {"viewers": "100,1000,5000,10000", "chats": 200.0, "likes": 10_000.0},
    "chat-storm": {"viewers": "1000", "chats": 1000.0, "likes": 0.0},
    "like-storm": {"viewers": "1000", "chats": 0.0, "likes": 100_000.0, "taps_per_like": 50},
    "slow-consumers": {"viewers": "1000", "chats": 200.0, "likes": 10_000.0},
    "reconnect-storm": {"viewers": "2000", "chats": 50.0, "likes": 1000.0},
    "quick": {
        "viewers": "200",
        "chats": 50.0,
        "likes": 1000.0,
        "duration": 3.0,
        "warmup": 1.0,
        "sample": 50,
        "settle": 0.5,
    },
}
HELP: Final[dict[str, str]] = {
    "sweep": "one room at each size of --viewers, with the live load; one result per size",
    "chat-storm": "chats alone at a high rate",
    "like-storm": "like taps alone at a high rate",
    "slow-consumers": "a share of viewers stop reading: the others' latency, and the drops",
    "reconnect-storm": "a server process is killed; its viewers reconnect and resume",
    "quick": "a small room and a small flash sale on a server of its own (CI)",
}


def _viewer_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v.replace("_", "")) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError("a comma-separated list of numbers") from None
    if not values:
        raise argparse.ArgumentTypeError("at least one number")
    return values


def parser(scenario: str) -> argparse.ArgumentParser:
    d = {
        "duration": 10.0,
        "warmup": 3.0,
        "sample": 100,
        "settle": _SETTLE_S,
        "taps_per_like": 10,
        **DEFAULTS[scenario],
    }
    p = argparse.ArgumentParser(prog=f"python -m loadtests {scenario}", description=HELP[scenario])
    server = p.add_argument_group("the server")
    server.add_argument(
        "--url",
        action="append",
        default=[],
        help="a running `serve --demo` (loopback; repeat for several servers on one "
        "Redis); default: start one",
    )
    server.add_argument(
        "--backend",
        choices=("auto", "memory", "redis"),
        default="auto",
        help="of a server the tool starts: auto = redis if redis-server is found",
    )
    server.add_argument(
        "--server-workers",
        type=int,
        default=0,
        help="processes of a server the tool starts (default: 2 on redis, 1 on memory)",
    )
    server.add_argument("--tick-ms", type=int, help="--tick-ms of a server the tool starts")
    server.add_argument(
        "--secret", help="the server's token secret: sign tokens here (default: demo sign-in)"
    )
    server.add_argument("--room", default="demo", help="the room (default: demo)")
    server.add_argument("--redis-pid", type=int, help="also read this redis-server's CPU")
    load = p.add_argument_group("the load")
    load.add_argument(
        "--viewers",
        type=_viewer_list,
        default=_viewer_list(str(d["viewers"])),
        help=f"viewers in the room (a list for sweep; default {d['viewers']})",
    )
    load.add_argument(
        "--chats", type=float, default=d["chats"], help=f"chats a second (default {d['chats']:g})"
    )
    load.add_argument(
        "--likes",
        type=float,
        default=d["likes"],
        help=f"like taps a second (default {d['likes']:g})",
    )
    load.add_argument(
        "--taps-per-like",
        type=int,
        default=d["taps_per_like"],
        help=f"taps one like command carries, 1 to {MAX_TAPS} (default {d['taps_per_like']})",
    )
    load.add_argument(
        "--duration",
        type=float,
        default=d["duration"],
        help=f"measured seconds (default {d['duration']:g})",
    )
    load.add_argument(
        "--warmup",
        type=float,
        default=d["warmup"],
        help=f"seconds of load before the window (default {d['warmup']:g})",
    )
    load.add_argument(
        "--settle",
        type=float,
        default=d["settle"],
        help=f"seconds to let the server go idle around connecting (default {d['settle']:g})",
    )
    gen = p.add_argument_group("the generator")
    gen.add_argument(
        "--processes",
        type=int,
        default=0 if scenario != "quick" else 1,
        help=f"viewer processes (default: one per {VIEWERS_PER_PROCESS} viewers)",
    )
    gen.add_argument(
        "--batch", type=int, default=100, help="connections being opened at once per process (100)"
    )
    gen.add_argument(
        "--sample",
        type=int,
        default=d["sample"],
        help=f"viewers that parse every line and time chats (default {d['sample']})",
    )
    gen.add_argument(
        "--lowat",
        type=int,
        default=LOWAT,
        help="batch the counting viewers' reads in a window: wake one once half a "
        "second of its stream waits, at most this many bytes "
        f"(SO_RCVLOWAT; 0: read every frame at once; default {LOWAT})",
    )
    if scenario == "slow-consumers":
        s = p.add_argument_group("slow consumers")
        s.add_argument(
            "--slow-share", type=float, default=0.05, help="share that stops reading (0.05)"
        )
        s.add_argument(
            "--slow-duration",
            type=float,
            default=30.0,
            help="seconds measured after they stop (default 30)",
        )
    if scenario == "reconnect-storm":
        s = p.add_argument_group("reconnect storm")
        s.add_argument(
            "--kill-after", type=float, default=2.0, help="seconds into the window (default 2)"
        )
        s.add_argument(
            "--storm-window", type=float, default=20.0, help="measured seconds (default 20)"
        )
        s.add_argument(
            "--recover-within",
            type=float,
            default=10.0,
            help="the recovery deadline reported on (default 10)",
        )
        s.add_argument(
            "--jitter",
            type=float,
            default=1.0,
            help="a dropped viewer waits a random 0 to this many seconds (default 1)",
        )
        s.add_argument("--kill-pid", type=int, help="the server process to kill (default: one)")
    out = p.add_argument_group("output")
    out.add_argument(
        "--quiet-below",
        type=float,
        metavar="PCT",
        help="before each window, wait until the machine's busy CPU is under PCT %% of a core",
    )
    out.add_argument("--quiet-wait", type=float, default=120.0, help="at most (default 120 s)")
    out.add_argument("--json", metavar="PATH", help="also write the figures to PATH")
    out.add_argument(
        "--results-dir",
        default=str(DEFAULT_RESULTS),
        help="write SCENARIO-DATE.json here ('' for not at all; default loadtests/results)",
    )
    return p


def parse(scenario: str, argv: Sequence[str]) -> Options:
    p = parser(scenario)
    a = p.parse_args(argv)
    workers = a.server_workers
    backend = a.backend
    if backend == "auto":
        backend = "redis" if srv.redis_found() else "memory"
    if not workers:
        workers = 2 if backend == "redis" else 1
    checks = [
        (all(1 <= v <= MAX_VIEWERS for v in a.viewers), f"--viewers: 1 to {MAX_VIEWERS} each"),
        (list(a.viewers) == sorted(set(a.viewers)), "--viewers must increase"),
        (0 <= a.chats <= 5000, "--chats must be 0 to 5000"),
        (0 <= a.likes <= 1_000_000, "--likes must be 0 to 1000000"),
        (1 <= a.taps_per_like <= MAX_TAPS, f"--taps-per-like must be 1 to {MAX_TAPS}"),
        (
            users_for(a.chats, CHAT_USER_RATE)
            + users_for(a.likes / a.taps_per_like, LIKE_USER_RATE)
            <= 20_000,
            "--chats and --likes need more than 20000 users",
        ),
        (0 < a.duration <= 3600, "--duration must be above 0 and at most 3600"),
        (0 <= a.warmup <= 600, "--warmup must be 0 to 600"),
        (0 <= a.settle <= 60, "--settle must be 0 to 60"),
        (0 <= a.processes <= MAX_PROCESSES, f"--processes must be 0 to {MAX_PROCESSES}"),
        (1 <= a.batch <= 5000, "--batch must be 1 to 5000"),
        (a.sample >= 0, "--sample must not be negative"),
        (0 <= a.lowat <= 1 << 20, "--lowat must be 0 to 1048576"),
        (1 <= workers <= 16, "--server-workers must be 1 to 16"),
        (backend == "redis" or workers == 1, "several server processes need --backend redis"),
        (a.quiet_below is None or 0 < a.quiet_below <= 200, "--quiet-below: above 0, at most 200"),
        (0 <= a.quiet_wait <= 3600, "--quiet-wait must be 0 to 3600"),
    ]
    slow: dict[str, Any] = {}
    reconnect: dict[str, Any] = {}
    if scenario == "slow-consumers":
        checks += [
            (0 < a.slow_share < 1, "--slow-share must be between 0 and 1"),
            (0 < a.slow_duration <= 600, "--slow-duration must be above 0, at most 600"),
        ]
        slow = {"slow_share": a.slow_share, "slow_duration": a.slow_duration}
    if scenario == "reconnect-storm":
        checks += [
            (0 <= a.kill_after < a.storm_window, "--kill-after must be inside --storm-window"),
            (0 < a.storm_window <= 600, "--storm-window must be above 0, at most 600"),
            (0 < a.recover_within <= 600, "--recover-within must be above 0, at most 600"),
            (0 <= a.jitter <= 60, "--jitter must be 0 to 60"),
            (bool(a.url) or backend == "redis", "a started server needs --backend redis here"),
            (bool(a.url) or workers >= 2, "a started server needs --server-workers 2 or more"),
        ]
        reconnect = {
            "kill_after": a.kill_after,
            "storm_window": a.storm_window,
            "recover_within": a.recover_within,
            "jitter": a.jitter,
            "kill_pid": a.kill_pid,
        }
    check_options(p, checks)
    for url in a.url:
        srv.given(url, f"loadtests {scenario}", None)  # exits unless loopback
    return Options(
        scenario=scenario,
        urls=tuple(a.url),
        backend=backend,
        server_workers=workers,
        tick_ms=a.tick_ms,
        secret=a.secret,
        room=a.room,
        viewers=tuple(a.viewers),
        processes=a.processes,
        batch=a.batch,
        sample=a.sample,
        lowat=a.lowat,
        chats=a.chats,
        likes=a.likes,
        taps_per_like=a.taps_per_like,
        duration=a.duration,
        warmup=a.warmup,
        settle=a.settle,
        slow_share=slow.get("slow_share", 0.0),
        slow_duration=slow.get("slow_duration", 0.0),
        kill_after=reconnect.get("kill_after", 0.0),
        storm_window=reconnect.get("storm_window", 0.0),
        recover_within=reconnect.get("recover_within", 10.0),
        jitter=reconnect.get("jitter", 1.0),
        kill_pid=reconnect.get("kill_pid"),
        redis_pid=a.redis_pid,
        quiet_below=a.quiet_below,
        quiet_wait=a.quiet_wait,
        json=a.json,
        results_dir=a.results_dir or None,
        command=shlex.join(["python", "-m", "loadtests", scenario, *argv]),
    )


# -- the rig ----------------------------------------------------------------------------


@dataclass(slots=True)
class Connected:
    """One round of adding viewers, and the server's memory around it."""

    asked: int
    reports: list[AddReport]
    seconds: float
    rss_before: dict[int, float | None]
    rss_after: dict[int, float | None]
    server_processes: int
    server_cpu_s: float
    """The server's CPU while connecting (all its processes)."""


@dataclass(slots=True)
class Window:
    """What one measured window gathered."""

    chats_per_s: float
    taps_per_s: float
    reports: list[WindowReport]
    sent: Sent
    wall_s: float
    cpu_before: dict[int, float | None]
    cpu_after: dict[int, float | None]
    rss_after: dict[int, float | None]
    redis_cpu_s: float | None
    redis_rss_mib: float | None
    own_cpu_s: float
    machine: dict[str, float]
    quiet: dict[str, Any] | None
    answers: dict[str, dict[str, int]]


@dataclass
class Rig:
    """The server, the viewers and the actors of one scenario run."""

    opts: Options
    servers: list[srv.Server] = field(default_factory=list)
    started: bool = False
    watch: srv.Watch | None = None
    crowd: CrowdHandle | None = None
    load: Load | None = None
    viewers: int = 0

    @property
    def server(self) -> srv.Server:
        return self.servers[0]

    async def __aenter__(self) -> Rig:
        opts = self.opts
        try:
            if opts.urls:
                self.servers = [srv.given(u, "loadtests", opts.secret) for u in opts.urls]
            else:
                self.servers = [
                    await asyncio.to_thread(
                        srv.start,
                        backend=opts.backend,
                        workers=opts.server_workers,
                        tick_ms=opts.tick_ms,
                        log_dir=opts.results_dir,  # kept beside the figures
                    )
                ]
                self.started = True
            self.watch = srv.Watch(self.server.port)
            self.find_pids()
            prog = f"loadtests {opts.scenario}"
            chat_users = users_for(self.max_chats(), CHAT_USER_RATE)
            like_users = users_for(self.max_likes() / opts.taps_per_like, LIKE_USER_RATE)
            viewers = max(opts.viewers) if self.server.secret else SHARED_TOKENS
            viewer_tokens = await srv.tokens(
                self.server, [f"viewer{i}" for i in range(viewers)], prog
            )
            chat_tokens = await srv.tokens(
                self.server, [f"chatter{i}" for i in range(chat_users)], prog
            )
            like_tokens = await srv.tokens(
                self.server, [f"liker{i}" for i in range(like_users)], prog
            )
            most = max(opts.viewers)
            processes = opts.processes or min(
                MAX_PROCESSES, max(1, math.ceil(most / VIEWERS_PER_PROCESS))
            )
            life = 600.0 + most / 20 + 3 * (opts.duration + opts.warmup) * len(opts.viewers)
            life += opts.slow_duration + opts.storm_window + opts.quiet_wait * len(opts.viewers)
            self.crowd = await CrowdHandle.start(
                processes,
                targets=[(s.host, s.port) for s in self.servers],
                tokens=viewer_tokens,
                room=opts.room,
                batch=opts.batch,
                deadline_s=life,
            )
            self.load = Load(self.server.host, self.server.port, opts.room)
            await self.load.connect(chat_tokens, like_tokens)
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.load is not None:
            with contextlib.suppress(Exception):
                await self.load.close()
        if self.crowd is not None:
            await self.crowd.close()
        if self.started:
            for s in self.servers:
                await asyncio.to_thread(s.stop)

    def max_chats(self) -> float:
        return self.opts.chats

    def max_likes(self) -> float:
        return self.opts.likes

    def find_pids(self) -> list[int]:
        assert self.watch is not None
        pids: set[int] = set()
        for s in self.servers:
            pids.update(srv.Watch(s.port).find())
        self.watch.pids = sorted(pids)
        return self.watch.pids

    def redis_pid(self) -> int | None:
        return self.opts.redis_pid or self.server.redis_pid

    async def connect(self, n: int) -> Connected:
        """Add ``n`` viewers; read the server's memory before and after (idle)."""
        assert self.crowd is not None and self.watch is not None
        await asyncio.sleep(self.opts.settle)
        before = self.watch.rss()
        cpu_before = self.watch.cpu()
        started = time.monotonic()
        reports = await self.crowd.add(n, 120.0 + n / 10)
        seconds = time.monotonic() - started
        cpu_s = srv.cpu_seconds(cpu_before, self.watch.cpu())
        await asyncio.sleep(self.opts.settle)
        self.viewers += n
        return Connected(
            asked=n,
            reports=reports,
            seconds=seconds,
            rss_before=before,
            rss_after=self.watch.rss(),
            server_processes=len(self.watch.pids),
            server_cpu_s=cpu_s,
        )

    async def measure(
        self,
        *,
        chats: float,
        likes: float,
        duration: float,
        warmup: float,
        during: Callable[[float, float], Coroutine[Any, Any, None]] | None = None,
    ) -> Window:
        """Run the load; measure ``duration`` seconds after ``warmup`` seconds.
        ``during(t0, t1)`` runs alongside (a kill, slow viewers stopping...)."""
        assert self.crowd is not None and self.watch is not None and self.load is not None
        if self.opts.quiet_below is not None:
            quiet = await wait_quiet(self.opts.quiet_below, self.opts.quiet_wait)
        else:
            quiet = {"probe_ms": speed_probe()}
        start = time.time() + 0.5
        t0 = start + warmup
        t1 = t0 + duration
        window = asyncio.create_task(
            self.crowd.ask(("window", t0, t1, self.opts.lowat), "window", t1 - time.time() + 120.0)
        )
        running = asyncio.create_task(
            self.load.run(
                chats_per_s=chats,
                taps_per_s=likes,
                taps_per_like=self.opts.taps_per_like,
                start=start,
                t0=t0,
                t1=t1,
            )
        )
        side = asyncio.create_task(during(t0, t1)) if during else None
        redis = self.redis_pid()
        try:
            await _sleep_until(t0)
            box0 = machine_cpu()
            cpu0, own0, wall0 = self.watch.cpu(), time.process_time(), time.monotonic()
            redis0 = _cpu_or_none(redis)
            await _sleep_until(t1)
            cpu1, own1, wall1 = self.watch.cpu(), time.process_time(), time.monotonic()
            redis1 = _cpu_or_none(redis)
            box1 = machine_cpu()
            rss1 = self.watch.rss()
            sent = await running
            reports: list[WindowReport] = await window
            if side is not None:
                await side
        finally:
            for task in (window, running, side):
                if task is not None and not task.done():
                    task.cancel()
        wall = wall1 - wall0
        return Window(
            chats_per_s=chats,
            taps_per_s=likes,
            reports=reports,
            sent=sent,
            wall_s=wall,
            cpu_before=cpu0,
            cpu_after=cpu1,
            rss_after=rss1,
            redis_cpu_s=None if redis0 is None or redis1 is None else redis1 - redis0,
            redis_rss_mib=_rss_or_none(redis),
            own_cpu_s=own1 - own0,
            machine=machine_pct(box0, box1, wall),
            quiet=quiet,
            answers=self.load.answers_by_kind(),
        )

    def describe(self) -> dict[str, Any]:
        assert self.watch is not None
        return {
            "urls": [s.base for s in self.servers],
            "started_by_tool": self.started,
            "backend": self.server.backend,
            "workers": self.server.workers,
            "tick_ms": self.opts.tick_ms,
            "pids": list(self.watch.pids),
            "redis_pid": self.redis_pid(),
        }


def _cpu_or_none(pid: int | None) -> float | None:
    if pid is None:
        return None
    with contextlib.suppress(OSError, ValueError, IndexError):
        return cpu_seconds(pid)
    return None


def _rss_or_none(pid: int | None) -> float | None:
    if pid is None:
        return None
    with contextlib.suppress(OSError, ValueError, IndexError):
        return round(rss_mib(pid), 1)
    return None


async def _sleep_until(wall: float) -> None:
    delay = wall - time.time()
    if delay > 0:
        await asyncio.sleep(delay)


# -- figures ----------------------------------------------------------------------------


def _r(x: float | None, digits: int = 1) -> float | None:
    return None if x is None else round(x, digits)


def _total(values: dict[int, float | None]) -> float:
    return sum(v for v in values.values() if v is not None)


def connection_figures(c: Connected) -> dict[str, Any]:
    connected = sum(r.connected for r in c.reports)
    errors: Counter[str] = Counter()
    for r in c.reports:
        errors.update(r.errors)
    rate = connected / c.seconds if c.seconds > 0 else None
    before, after = _total(c.rss_before), _total(c.rss_after)
    gen_grew = sum(r.rss_mib - r.rss_before_mib for r in c.reports)
    return {
        "requested": c.asked,
        "connected": connected,
        "failed": c.asked - connected,
        "errors": dict(errors),
        "seconds": round(c.seconds, 3),
        "connects_per_s": _r(rate),
        "connects_per_s_per_server_process": (
            _r(rate / c.server_processes) if rate and c.server_processes else None
        ),
        "open": sum(r.open_viewers for r in c.reports),
        # the server's CPU per connection: a process with a core to itself connects
        # 1e6 / this many viewers a second, whatever the generator's pace
        "server_cpu_us_per_connect": (
            round(1e6 * c.server_cpu_s / connected, 1) if connected and c.server_cpu_s else None
        ),
        # the viewer processes' CPU while connecting (each, % of one core): near 100
        # means the generator, not the server, set the connect rate
        "generator_cpu_pct": [
            round(100 * r.cpu_s / c.seconds, 1) if c.seconds > 0 else None for r in c.reports
        ],
        "idle_rss": {
            "before_mib": round(before, 1),
            "after_mib": round(after, 1),
            "per_connection_kib": (
                round((after - before) * 1024 / connected, 2) if connected else None
            ),
            "generator_per_connection_kib": (
                round(gen_grew * 1024 / connected, 2) if connected else None
            ),
        },
    }


def window_figures(w: Window, viewers: int, lowat: int) -> dict[str, Any]:
    reps = w.reports
    wall = w.wall_s or 1.0
    latencies = sorted(x for r in reps for x in r.latencies_ms)
    likes = sorted(x for r in reps for x in r.likes_latencies_ms)
    closes: Counter[int] = Counter(code for r in reps for _, code, _ in r.closes)
    each = srv.cpu_pct(w.cpu_before, w.cpu_after, wall)
    frames = sum(r.frames for r in reps)
    lines = sum(r.lines for r in reps)
    worker_cpu = [100 * r.cpu_s / r.wall_s for r in reps if r.wall_s]
    own = 100 * w.own_cpu_s / wall
    viewers_cpu_s = sum(r.cpu_s for r in reps)
    open_viewers = sum(r.open_viewers for r in reps)
    chats_per_s = w.sent.chats_in_window / wall
    busy = sum(v for k, v in w.machine.items() if k not in ("idle", "steal"))
    server_cpu = sum(v for v in each.values() if v is not None)
    redis_pct = None if w.redis_cpu_s is None else 100 * w.redis_cpu_s / wall
    return {
        "window_s": round(wall, 3),
        "viewers": viewers,
        "open_viewers": open_viewers,
        "load": {
            "chats_per_s_target": w.chats_per_s,
            "chats_per_s": round(chats_per_s, 1),
            "like_taps_per_s_target": w.taps_per_s,
            "like_taps_per_s": round(w.sent.taps_in_window / wall, 1),
            "unsent": w.sent.unsent,
            "answers": w.answers,
        },
        "deliveries": {
            "lines_per_s": round(lines / wall, 1),
            "frames_per_s": round(frames / wall, 1),
            "frames_per_viewer_per_s": round(frames / wall / open_viewers, 2)
            if open_viewers
            else None,
            "expected_chat_lines_per_s": round(chats_per_s * open_viewers, 1),
        },
        "latency_ms": {
            "sampled_viewers": sum(r.sampled for r in reps),
            "chats_timed": len(latencies),
            "p50": _r(percentile(latencies, 0.50)),
            "p90": _r(percentile(latencies, 0.90)),
            "p99": _r(percentile(latencies, 0.99)),
            "p999": _r(percentile(latencies, 0.999)),
            "max": _r(latencies[-1] if latencies else None),
        },
        "likes_latency_ms": {
            "lines_timed": len(likes),
            "p50": _r(percentile(likes, 0.50)),
            "p99": _r(percentile(likes, 0.99)),
            "p999": _r(percentile(likes, 0.999)),
        },
        "order": {
            "gaps": sum(r.gaps for r in reps),
            "missing": sum(r.missing for r in reps),
            "duplicates": sum(r.duplicates for r in reps),
            "bad_lines": sum(r.bad_lines for r in reps),
        },
        "closes": {str(k): v for k, v in sorted(closes.items())},
        "closes_4009": closes.get(CLOSE_SLOW, 0),
        "server": {
            "cpu_pct_total": round(server_cpu, 1),
            "cpu_pct_each": {str(pid): v for pid, v in each.items()},
            "rss_mib_total": round(_total(w.rss_after), 1),
            "rss_mib_each": {str(pid): _r(v) for pid, v in w.rss_after.items()},
        },
        "redis": {"cpu_pct": _r(redis_pct), "rss_mib": w.redis_rss_mib},
        "generator": {
            "processes": len(reps),
            "cpu_pct_total": round(sum(worker_cpu) + own, 1),
            "worker_cpu_pct": [round(x, 1) for x in worker_cpu],
            "worker_user_pct": [round(100 * r.user_s / r.wall_s, 1) for r in reps if r.wall_s],
            "viewers_cpu_pct_per_1000": (
                round(sum(worker_cpu) * 1000 / open_viewers, 2) if open_viewers else None
            ),
            "lowat_max": lowat,
            "lowat_bytes": [r.lowat for r in reps],
            "main_cpu_pct": round(own, 1),
            # the viewer processes' CPU over the frames they read (the actors' sending
            # is in main_cpu_pct)
            "viewer_cpu_us_per_frame": round(1e6 * viewers_cpu_s / frames, 2) if frames else None,
            "worker_loop_lag_p99_ms": [round(r.lag_p99_ms, 1) for r in reps],
            "worker_loop_lag_max_ms": [round(r.lag_max_ms, 1) for r in reps],
            "worker_rss_mib": [round(r.rss_mib, 1) for r in reps],
        },
        "machine": {
            "cores": os.cpu_count(),
            "cpu_pct_of_a_core": w.machine,
            # busy time no measured process accounts for: loopback delivery (softirq)
            # and other processes; well above irq_softirq means the run was disturbed
            "untracked_pct": round(
                busy - server_cpu - (redis_pct or 0.0) - sum(worker_cpu) - own, 1
            ),
            "quiet_before": w.quiet,
        },
    }


def room_result(
    step: int, c: Connected | None, w: Window, viewers: int, lowat: int
) -> dict[str, Any]:
    """One result: the connecting (if viewers were added for it) and the window."""
    return {"step": step, "connections": None if c is None else connection_figures(c)} | (
        window_figures(w, viewers, lowat)
    )


# -- the scenarios ----------------------------------------------------------------------


async def sweep(opts: Options) -> dict[str, Any]:
    """A room at each size of ``--viewers``, viewers added step by step."""
    results: list[dict[str, Any]] = []
    async with Rig(opts) as rig:
        assert rig.crowd is not None
        for step, n in enumerate(opts.viewers, 1):
            c = await rig.connect(n - rig.viewers)
            await rig.crowd.roles(opts.sample, 0)
            w = await rig.measure(
                chats=opts.chats, likes=opts.likes, duration=opts.duration, warmup=opts.warmup
            )
            results.append(room_result(step, c, w, n, opts.lowat))
            print(row(results[-1]), flush=True)
        return document(opts, rig, results)


async def storm(opts: Options) -> dict[str, Any]:
    """One room of ``--viewers`` with one of the loads (chat-storm, like-storm)."""
    async with Rig(opts) as rig:
        assert rig.crowd is not None
        n = opts.viewers[-1]
        c = await rig.connect(n)
        await rig.crowd.roles(opts.sample, 0)
        w = await rig.measure(
            chats=opts.chats, likes=opts.likes, duration=opts.duration, warmup=opts.warmup
        )
        return document(opts, rig, [room_result(1, c, w, n, opts.lowat)])


async def slow_consumers(opts: Options) -> dict[str, Any]:
    """A baseline window, then a window in which ``--slow-share`` of the viewers stop
    reading at its start: the others' latency against the baseline (the sampled viewers
    are never slow), and when the server dropped the slow ones."""
    async with Rig(opts) as rig:
        assert rig.crowd is not None and rig.watch is not None
        n = opts.viewers[-1]
        c = await rig.connect(n)
        sampled, slow = await rig.crowd.roles(opts.sample, round(opts.slow_share * n))
        base = await rig.measure(
            chats=opts.chats, likes=opts.likes, duration=opts.duration, warmup=opts.warmup
        )
        poller = srv.MetricsByProcess(rig.server.base)
        await poller.pin(rig.watch.pids)
        decisions: list[tuple[float, dict[int, float | None]]] = []
        dropped: dict[str, float] = {}
        stop_at: list[float] = []

        async def stop_reading(t0: float, t1: float) -> None:
            assert rig.crowd is not None
            stop_at.append(t0)
            answers = await rig.crowd.ask(("pause", t0), "paused", 30.0)
            peers = {srv.proc_tcp_address(h, p) for a in answers for h, p in a}
            ports = [s.port for s in rig.servers]
            while time.time() < t1 + 5.0:
                decisions.append((time.time(), await poller.read("livecommerce_slow_closes")))
                now = time.time()
                states = await asyncio.to_thread(srv.server_side_states, ports, peers)
                for peer in peers - dropped.keys():
                    if states.get(peer) != srv.TCP_ESTABLISHED:
                        dropped[peer] = now
                await asyncio.sleep(0.25)

        try:
            with_slow = await rig.measure(
                chats=opts.chats,
                likes=opts.likes,
                duration=opts.slow_duration,
                warmup=0.0,
                during=stop_reading,
            )
        finally:
            await poller.close()
        records: list[list[SlowRecord]] = await rig.crowd.ask(("slow-report",), "slow-report", 60)
        results = [
            room_result(1, c, base, n, opts.lowat),
            room_result(2, None, with_slow, n, opts.lowat),
        ]
        results[0]["phase"] = "baseline"
        results[1]["phase"] = "slow consumers"
        doc = document(opts, rig, results)
        start = stop_at[0] if stop_at else math.nan
        doc["slow_consumers"] = slow_figures(
            [x for r in records for x in r],
            decisions,
            sorted(t - start for t in dropped.values()),
            start,
            results,
            slow,
            sampled,
        )
        return doc


def slow_figures(
    records: list[SlowRecord],
    decisions: list[tuple[float, dict[int, float | None]]],
    closed: list[float],
    stopped: float,
    results: list[dict[str, Any]],
    slow: int,
    sampled: int,
) -> dict[str, Any]:
    """The slow viewers' fate, and the others' latency with them against without."""
    codes = Counter(str(r.code) for r in records)
    # the server's decisions: each process's slow_closes counter, polled every 0.1 s
    first = decisions[0][1] if decisions else {}
    times: list[float] = []
    last = dict(first)
    for at, values in decisions:
        for pid, v in values.items():
            prev = last.get(pid)
            if v is not None and prev is not None and v > prev:
                times += [at - stopped] * int(v - prev)
            if v is not None:
                last[pid] = v
    base, loaded = results[0]["latency_ms"], results[1]["latency_ms"]

    def change(key: str) -> float | None:
        a, b = base[key], loaded[key]
        return None if a in (None, 0) or b is None else round(100 * (b - a) / a, 1)

    return {
        "slow": slow,
        "sampled_others": sampled,
        "others_p50_ms": {"baseline": base["p50"], "with_slow": loaded["p50"]},
        "others_p99_ms": {"baseline": base["p99"], "with_slow": loaded["p99"]},
        "others_p99_change_pct": change("p99"),
        "others_p50_change_pct": change("p50"),
        "server_decided_s": {
            "closes": len(times),
            "first": _r(min(times), 2) if times else None,
            "p50": _r(percentile(sorted(times), 0.5), 2),
            "max": _r(max(times), 2) if times else None,
            "note": "after the slow viewers stopped reading; from each process's "
            "slow_closes counter, polled every 0.1 s",
        },
        "socket_closed_s": {
            "closed": len(closed),
            "still_open": slow - len(closed),
            "first": _r(closed[0] if closed else None, 2),
            "p50": _r(percentile(closed, 0.5), 2),
            "max": _r(closed[-1] if closed else None, 2),
            "note": "after they stopped reading, until the server's side of their "
            "socket left ESTABLISHED (/proc/net/tcp, every 0.25 s): the decision plus "
            "the server's close grace",
        },
        "codes_read_afterwards": dict(codes),
    }


async def reconnect_storm(opts: Options) -> dict[str, Any]:
    """Kill one server process in the middle of a window; its viewers reconnect (to
    another process, or to the one that replaces it) and resume with ``since``."""
    async with Rig(opts) as rig:
        assert rig.crowd is not None and rig.watch is not None
        n = opts.viewers[-1]
        c = await rig.connect(n)
        await rig.crowd.roles(opts.sample, 0)
        pids = rig.find_pids()
        if len(pids) < 2 and len(rig.servers) < 2:
            raise RuntimeError(
                f"the server has {len(pids)} process(es) on port {rig.server.port}: the "
                "reconnect storm needs `serve --workers 2` or two servers on one Redis"
            )
        victim = opts.kill_pid or pids[0]
        if victim not in pids:
            raise RuntimeError(f"--kill-pid {victim} does not listen on the server's port")
        await rig.crowd.ask(("reconnect", True, opts.jitter, 60.0), "reconnect", 30)
        await rig.crowd.ask(("mark",), "marked", 30)
        assert rig.load is not None
        rig.load.reconnect = True
        killed: list[float] = []

        async def kill(t0: float, t1: float) -> None:
            await _sleep_until(t0 + opts.kill_after)
            killed.append(time.time())
            srv.kill(victim)

        w = await rig.measure(
            chats=opts.chats,
            likes=opts.likes,
            duration=opts.storm_window,
            warmup=opts.warmup,
            during=kill,
        )
        reports: list[RecoveryReport] = await rig.crowd.ask(("recovery",), "recovery", 60)
        after = rig.find_pids()
        results = [room_result(1, c, w, n, opts.lowat)]
        doc = document(opts, rig, results)
        doc["reconnect_storm"] = recovery_figures(
            reports, killed[0] if killed else math.nan, opts.recover_within
        ) | {"killed_pid": victim, "pids_before": pids, "pids_after": after}
        return doc


def recovery_figures(reports: list[RecoveryReport], killed: float, within: float) -> dict[str, Any]:
    victims = [v for r in reports for v in r.victims if v.lost_at >= killed - 0.5]
    back = sorted(v.back_at - killed for v in victims if v.back_at is not None)
    clean = [
        v
        for v in victims
        if v.back_at is not None
        and v.back_at - killed <= within
        and v.recovered
        and v.gaps_after == 0
    ]
    return {
        "victims": len(victims),
        "lost_codes": dict(Counter(str(v.lost_code) for v in victims)),
        "back": len(back),
        "not_back": len(victims) - len(back),
        "recovered_by_server": sum(v.recovered for v in victims),
        "recovered_without_gap_within_s": within,
        "recovered_without_gap": len(clean),
        "recovered_without_gap_share": round(len(clean) / len(victims), 5) if victims else None,
        "time_to_recover_s": {
            "p50": _r(percentile(back, 0.5), 3),
            "p99": _r(percentile(back, 0.99), 3),
            "max": _r(back[-1] if back else None, 3),
        },
        "attempts": dict(Counter(str(v.attempts) for v in victims)),
        "victims_gaps": sum(v.gaps_after for v in victims),
        "victims_missing": sum(v.missing_after for v in victims),
        "victims_duplicates": sum(v.duplicates_after for v in victims),
        "others": sum(r.others for r in reports),
        "others_gaps": sum(r.others_gaps for r in reports),
        "others_missing": sum(r.others_missing for r in reports),
        "others_duplicates": sum(r.others_duplicates for r in reports),
        "open_at_end": sum(r.open_viewers for r in reports),
    }


async def quick(opts: Options) -> dict[str, Any]:
    """A small room, then a small flash sale, on the same server."""
    from loadtests import flash_sale

    async with Rig(opts) as rig:
        assert rig.crowd is not None
        n = opts.viewers[-1]
        c = await rig.connect(n)
        await rig.crowd.roles(opts.sample, 0)
        w = await rig.measure(
            chats=opts.chats, likes=opts.likes, duration=opts.duration, warmup=opts.warmup
        )
        doc = document(opts, rig, [room_result(1, c, w, n, opts.lowat)])
        await rig.crowd.close()
        rig.crowd = None
        buyers = max(10, n)
        argv = [
            "--url",
            rig.server.base,
            "--buyers",
            str(buyers),
            "--attempts",
            str(2 * buyers),
            "--stock",
            str(max(1, buyers // 4)),
            "--processes",
            "1",
            "--reply-timeout",
            "20",
        ]
        if rig.redis_pid():
            argv += ["--redis-pid", str(rig.redis_pid())]
        fopts = flash_sale.options(argv)
        fig = await flash_sale.run(fopts)
        doc["flash_sale"] = {
            "command": shlex.join(["python", "-m", "loadtests", "flash-sale", *argv]),
            "summary": flash_summary(fig),
            "figures": fig,
        }
        return doc


def flash_summary(fig: dict[str, Any]) -> dict[str, Any]:
    """The flash sale's figures under the names the room scenarios use."""
    b, a, lat, server = fig["buyers"], fig["attempts"], fig["reply_ms"], fig["server"]
    connect_s = b.get("connect_s") or 0.0
    return {
        "connections": {
            "requested": b["requested"],
            "connected": b["connected"],
            "failed": b["failed"],
            "connects_per_s": round(b["connected"] / connect_s, 1) if connect_s else None,
            "rss_per_connection_kib": server.get("rss_per_connection_kib"),
        },
        "attempts_per_s": a["per_s"],
        "reply_latency_ms": {k: lat.get(k) for k in ("p50", "p90", "p99", "p999", "max")},
        "outcome": fig["outcome"],
        "check_ok": fig["check"]["ok"],
        "closes_4009": fig["closes"].get(str(CLOSE_SLOW), 0),
        "server": {
            "cpu_pct_total": server["cpu_pct"],
            "cpu_pct_each": server.get("cpu_pct_each"),
            "rss_mib_total": server["rss_mib"],
            "rss_mib_each": server.get("rss_mib_each"),
        },
        "generator_cpu_pct": round(
            sum(fig["generator"]["worker_cpu_pct"]) + fig["generator"]["main_cpu_pct"], 1
        ),
    }


# -- output -----------------------------------------------------------------------------


def document(opts: Options, rig: Rig, results: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "tool": "loadtests",
        "scenario": opts.scenario,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": opts.command,
        "server": rig.describe(),
        "generator": {
            "processes": len(rig.crowd.workers) if rig.crowd else None,
            "sampled_viewers": opts.sample,
            "chat_users": len(rig.load.chatters) if rig.load else 0,
            "like_users": len(rig.load.likers) if rig.load else 0,
            "taps_per_like": opts.taps_per_like,
        },
        "results": results,
    }


def _f(x: float | None, fmt: str = ",.0f") -> str:
    return "-" if x is None else format(x, fmt)


HEADER: Final = (
    f"{'viewers':>8} {'conn/s':>7} {'deliv/s':>9} {'p50':>7} {'p99':>7} {'p99.9':>7} "
    f"{'gaps':>5} {'dups':>5} {'4009':>5} {'server CPU % (each)':>24} {'RSS MiB':>8} "
    f"{'KiB/conn':>8} {'gen CPU %':>9}"
)


def row(r: dict[str, Any]) -> str:
    """One result as a table row (see :data:`HEADER`)."""
    c = r["connections"] or {}
    lat, o, s = r["latency_ms"], r["order"], r["server"]
    each = "+".join(_f(v, ".0f") for v in s["cpu_pct_each"].values())
    cpu = (
        f"{s['cpu_pct_total']:.0f} ({each})"
        if len(s["cpu_pct_each"]) > 1
        else (f"{s['cpu_pct_total']:.0f}")
    )
    kib = (c.get("idle_rss") or {}).get("per_connection_kib")
    return (
        f"{r['viewers']:>8} {_f(c.get('connects_per_s')):>7} "
        f"{_f(r['deliveries']['lines_per_s']):>9} {_f(lat['p50'], '.1f'):>7} "
        f"{_f(lat['p99'], '.1f'):>7} {_f(lat['p999'], '.1f'):>7} {o['gaps']:>5} "
        f"{o['duplicates']:>5} {r['closes_4009']:>5} {cpu:>24} {s['rss_mib_total']:>8.1f} "
        f"{_f(kib, '.1f'):>8} {r['generator']['cpu_pct_total']:>9.0f}"
    )


def table(doc: dict[str, Any]) -> str:
    server = doc["server"]
    head = (
        f"{doc['scenario']} at {', '.join(server['urls'])} "
        f"({server['backend'] or 'given server'}, pids {server['pids']}), {doc['date']}"
    )
    lines = [head, HEADER, *(row(r) for r in doc["results"])]
    for r in doc["results"]:
        load = r["load"]
        c = r["connections"] or {}
        per = c.get("server_cpu_us_per_connect")
        lines.append(
            f"  step {r['step']}{' (' + r['phase'] + ')' if 'phase' in r else ''}: "
            + (f"server CPU {per:g} µs per connect (a core: {1e6 / per:,.0f}/s); " if per else "")
            + f"{load['chats_per_s']:g} chats/s, {load['like_taps_per_s']:g} taps/s, "
            f"answers {load['answers']}, unsent {load['unsent']}; "
            f"{r['deliveries']['frames_per_viewer_per_s']} frames/viewer/s; "
            f"latency on {r['latency_ms']['sampled_viewers']} viewers "
            f"({r['latency_ms']['chats_timed']} chats); likes lines p50 "
            f"{r['likes_latency_ms']['p50']} ms, p99 {r['likes_latency_ms']['p99']} ms; "
            f"closes {r['closes'] or '{}'}; "
            f"machine idle {r['machine']['cpu_pct_of_a_core'].get('idle')} % of a core, "
            f"untracked {r['machine']['untracked_pct']}, "
            f"speed probe {r['machine']['quiet_before']['probe_ms']} ms"
        )
    if "slow_consumers" in doc:
        s = doc["slow_consumers"]
        lines.append(
            f"  slow consumers: {s['slow']} stopped reading; others' p99 "
            f"{s['others_p99_ms']['baseline']} -> {s['others_p99_ms']['with_slow']} ms "
            f"({s['others_p99_change_pct']} %); server decided {s['server_decided_s']['closes']}"
            f" closes, first {s['server_decided_s']['first']} s, max "
            f"{s['server_decided_s']['max']} s; sockets closed {s['socket_closed_s']['closed']}"
            f", p50 {s['socket_closed_s']['p50']} s, max {s['socket_closed_s']['max']} s; "
            f"codes read {s['codes_read_afterwards']}"
        )
    if "reconnect_storm" in doc:
        s = doc["reconnect_storm"]
        t = s["time_to_recover_s"]
        lines.append(
            f"  reconnect storm: killed {s['killed_pid']}; {s['victims']} viewers dropped, "
            f"{s['recovered_without_gap']} recovered without a gap within "
            f"{s['recovered_without_gap_within_s']:g} s (share "
            f"{s['recovered_without_gap_share']}); back p50 {t['p50']} s, p99 {t['p99']} s, "
            f"max {t['max']} s; not back {s['not_back']}; others' gaps {s['others_gaps']}"
        )
    if "flash_sale" in doc:
        f = doc["flash_sale"]["summary"]
        lat = f["reply_latency_ms"]
        lines.append(
            f"  flash sale: {f['connections']['connected']} buyers "
            f"({f['connections']['connects_per_s']}/s), {f['attempts_per_s']} attempts/s, "
            f"reply p50 {lat['p50']} ms, p99 {lat['p99']} ms, p99.9 {lat['p999']} ms; "
            f"sold {f['outcome']['accepted_units']}, oversold {f['outcome']['oversold']}, "
            f"check {'ok' if f['check_ok'] else 'MISMATCH'}; server CPU "
            f"{f['server']['cpu_pct_total']} %"
        )
    return "\n".join(lines)


def write(doc: dict[str, Any], opts: Options | argparse.Namespace) -> list[str]:
    """Write the document to ``--json`` and to the results directory."""
    text = json.dumps(doc, indent=2) + "\n"
    paths: list[str] = []
    if opts.json:
        Path(opts.json).write_text(text)
        paths.append(opts.json)
    if opts.results_dir:
        folder = Path(opts.results_dir)
        folder.mkdir(parents=True, exist_ok=True)
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
        path = folder / f"{opts.scenario}-{stamp}.json"
        path.write_text(text)
        paths.append(str(path))
    return paths


def flash_sale_main(argv: Sequence[str]) -> int:
    """``python -m loadtests flash-sale``: ``loadtests.flash_sale`` (all its options),
    its figures also under the room scenarios' names (``summary``), written to
    ``--json`` and to the results directory like every scenario."""
    import uvloop

    from loadtests import flash_sale

    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--results-dir", default=str(DEFAULT_RESULTS))
    ours, rest = pre.parse_known_args(argv)
    if "-h" in rest or "--help" in rest:
        print(
            f"--results-dir DIR: also write flash-sale-DATE.json there (default {DEFAULT_RESULTS})"
        )
    fopts = flash_sale.options(rest)
    try:
        fig = uvloop.run(flash_sale.run(fopts))
    except (RuntimeError, OSError, ConnectionError, TimeoutError, CommandRefused) as exc:
        print(f"loadtests flash-sale: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    summary = flash_summary(fig)
    doc: dict[str, Any] = {
        "tool": "loadtests",
        "scenario": "flash-sale",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": shlex.join(["python", "-m", "loadtests", "flash-sale", *argv]),
        "summary": summary,
        "figures": fig,
        "results": [],
    }
    print(flash_sale.table(fig))
    print(
        f"  summary     {json.dumps(summary['reply_latency_ms'])} ms; server CPU each "
        f"{summary['server']['cpu_pct_each']}; RSS per connection "
        f"{summary['connections']['rss_per_connection_kib']} KiB; generator CPU "
        f"{summary['generator_cpu_pct']} %"
    )
    opts = argparse.Namespace(
        json=fopts.json, results_dir=ours.results_dir or None, scenario="flash-sale"
    )
    for path in write(doc, opts):
        print(f"figures written to {path}")
    return 0


RUNNERS: Final[dict[str, Callable[[Options], Coroutine[Any, Any, dict[str, Any]]]]] = {
    "sweep": sweep,
    "chat-storm": storm,
    "like-storm": storm,
    "slow-consumers": slow_consumers,
    "reconnect-storm": reconnect_storm,
    "quick": quick,
}


def main(scenario: str, argv: Sequence[str]) -> int:
    """Run ``scenario``; print its table and write its JSON. 0 whatever the figures,
    1 if the tool could not run (said on stderr)."""
    import uvloop

    opts = parse(scenario, argv)
    if scenario == "sweep":
        print(HEADER, flush=True)
    try:
        doc = uvloop.run(RUNNERS[scenario](opts))
    except (RuntimeError, OSError, ConnectionError, TimeoutError) as exc:
        print(f"loadtests {scenario}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(table(doc))
    for path in write(doc, opts):
        print(f"figures written to {path}")
    return 0
