"""The viewers: worker processes that each hold thousands of connections in one room.

A worker is driven by the main process over a pipe (:class:`CrowdHandle` is the main
side). Every viewer connects from its own source address (:func:`source_address`, one
block per worker), signs in with ``connect`` and ``join``\\s the room; from then on it
only reads. What it does per received frame is kept small:

- every viewer checks the order of the room's events without parsing: a line that
  carries a ``seq`` starts with ``{"seq":N,`` (``livecommerce.protocol.sequence``), so
  the first and last seq of a frame and the number of sequenced lines in it are three
  ``bytes`` searches; a frame that does not continue the viewer's last seq counts a gap
  (and the seqs it skips as missing), one that repeats seqs counts duplicates. The hub
  writes the very same frame to every member, so the searches (and the line count) run
  once per distinct frame in a worker, found again by the frame's length and first 64
  bytes;
- inside a measured window, every viewer counts frames and lines (``bytes.count``);
- the *sampled* viewers also parse every line and time each ``chat``: the time of
  receipt (``time.time()``) minus the event's ``ts``.

Slow viewers (the slow-consumers scenario) stop reading at a given time (the main
process watches the server's side of their sockets). With reconnecting on (the
reconnect-storm scenario) a viewer whose connection drops comes back after a random
delay, with backoff, and resumes with ``join`` ``since``/``epoch``; it notes when it
lost the connection, when it was back, whether the server recovered its history, and
the gaps it saw after.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import math
import multiprocessing
import os
import random
import resource
import socket
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any, Final

from livecommerce.protocol import dumps, loads
from loadtests._common import CommandRefused, lag_figures, rss_mib, run_worker, spawn_worker
from loadtests.wsclient import CLOSE_ABNORMAL, WsClient, open_connection, source_address

SEQ: Final = b'{"seq":'
NL_SEQ: Final = b'\n{"seq":'
CONNECT_ID: Final = 1
JOIN_ID: Final = 2
CLOSE_SLOW: Final = 4009
_LAG_EVERY_S: Final = 0.005
BATCH_S: Final = 0.5
"""Seconds of a viewer's stream one batched read takes (see ``Crowd.window``)."""
_KEY_BYTES: Final = 64
_LAST_KEY_BYTES: Final = 24
_SHAPES: Final = 256
_CLOSE_GRACE_S: Final = 3.0


# -- plans and reports, passed between processes ----------------------------------------


@dataclass(frozen=True, slots=True)
class CrowdPlan:
    """One worker: its index, where its viewers connect and how."""

    index: int
    targets: tuple[tuple[str, int], ...]
    """``(host, port)`` of each server; viewer ``i`` starts on ``targets[i % n]``."""
    tokens: tuple[str, ...]
    """Viewer tokens; viewer ``i`` uses ``tokens[i % n]``."""
    room: str
    block: int
    """Source addresses: ``127.<block>.x.y`` (:func:`source_address`)."""
    batch: int
    """Connections opened at once."""
    connect_timeout_s: float
    deadline_s: float
    """Seconds after its start at which the worker gives up, whatever it was doing."""


@dataclass(slots=True)
class AddReport:
    """How one worker's new viewers came up (connected and joined)."""

    asked: int
    connected: int
    seconds: float
    errors: dict[str, int]
    open_viewers: int
    cpu_s: float
    """The worker's CPU while connecting."""
    rss_before_mib: float
    rss_mib: float
    """The worker's resident memory before and after (the generator's cost per
    connection)."""


@dataclass(slots=True)
class WindowReport:
    """One worker's figures over a measured window ``[t0, t1)`` (wall clock)."""

    index: int
    lines: int
    frames: int
    latencies_ms: list[float]
    likes_latencies_ms: list[float]
    bad_lines: int
    gaps: int
    missing: int
    duplicates: int
    closes: list[tuple[float, int, bool]]
    """``(time, code, slow)`` of each connection that ended inside the window."""
    open_viewers: int
    sampled: int
    cpu_s: float
    user_s: float
    """Of ``cpu_s``, in user space (the rest is the kernel's: reads, epoll)."""
    wall_s: float
    lag_p99_ms: float
    lag_max_ms: float
    rss_mib: float
    lowat: int
    """The ``SO_RCVLOWAT`` mark of the counting viewers (0: none)."""


@dataclass(slots=True)
class SlowRecord:
    """One slow viewer: when it stopped reading, and how its connection ended once
    it read again (None: it is still open)."""

    paused_at: float
    code: int | None


@dataclass(slots=True)
class VictimRecord:
    """One viewer whose connection dropped while reconnecting was on."""

    lost_at: float
    lost_code: int
    back_at: float | None
    """When its ``join`` with ``since`` was answered."""
    recovered: bool
    """The server replayed what it missed (``recovered: true``)."""
    attempts: int
    gaps_after: int
    missing_after: int
    duplicates_after: int


@dataclass(slots=True)
class RecoveryReport:
    index: int
    victims: list[VictimRecord]
    others: int
    others_gaps: int
    others_missing: int
    others_duplicates: int
    open_viewers: int


# -- what a worker counts ---------------------------------------------------------------


class Tally:
    """The counters of one worker's viewers (one thread: no locks)."""

    def __init__(self) -> None:
        self.counting = False
        self.lines = 0
        self.frames = 0
        self.bytes = 0
        """Payload bytes received by all viewers, inside windows or not."""
        self.latencies_ms: list[float] = []
        self.likes_latencies_ms: list[float] = []
        """Of the coalesced ``likes`` lines: from their tick to their receipt."""
        self.bad_lines = 0
        self.gaps = 0
        self.missing = 0
        self.duplicates = 0
        self.closes: list[tuple[float, int, bool]] = []
        self.reconnect = False
        self.jitter_s = 1.0
        self.resume_for_s = 30.0
        self.tasks: set[asyncio.Task[None]] = set()
        self.shapes: dict[tuple[int, bytes, bytes], tuple[int, int, int, int]] = {}
        """What :meth:`shape` found in the last frames, by their key."""

    def shape(
        self, key: tuple[int, bytes, bytes], data: bytes | bytearray, start: int, end: int
    ) -> tuple[int, int, int, int]:
        """``(lines, first seq, last seq, sequenced lines)`` of the frame
        ``data[start:end]`` (seqs 0 when it has none), kept under ``key`` (its length
        and first bytes: a seq or a millisecond ``ts`` makes them differ per tick)."""
        lines = data.count(b"\n", start, end) + 1
        if data.startswith(SEQ, start):
            i = start
        else:
            i = data.find(NL_SEQ, start, end)
            if i >= 0:
                i += 1
        first = last = n = 0
        if i >= 0:
            first = int(data[i + 7 : data.index(b",", i + 7, end)])
            j = data.rfind(NL_SEQ, i, end)
            if j < 0:
                last, n = first, 1
            else:
                j += 1
                last = int(data[j + 7 : data.index(b",", j + 7, end)])
                n = data.count(NL_SEQ, i, end) + 1
        if len(self.shapes) >= _SHAPES:
            self.shapes.clear()
        shape = self.shapes[key] = (lines, first, last, n)
        return shape

    def sample(self, data: bytes | bytearray, start: int, end: int) -> None:
        now_ms = time.time() * 1000.0
        lat = self.latencies_ms
        for line in bytes(data[start:end]).split(b"\n"):
            if not line:
                continue
            try:
                event = loads(line)
            except ValueError:
                self.bad_lines += 1
                continue
            kind = event.get("type")
            if kind == "chat":
                lat.append(now_ms - event["ts"])
            elif kind == "likes":
                self.likes_latencies_ms.append(now_ms - event["ts"])

    def spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)


class Viewer(WsClient):
    """One viewer. Reads only; see the module's docstring for what it counts."""

    __slots__ = (
        "attempts",
        "back_at",
        "closing",
        "code_seen",
        "duplicates",
        "epoch",
        "gaps",
        "index",
        "joined",
        "last_seq",
        "lost_at",
        "lost_code",
        "missing",
        "paused_at",
        "plan",
        "recovered",
        "refused",
        "resuming",
        "sampled",
        "slow",
        "tally",
        "target",
    )

    def __init__(self, plan: CrowdPlan, tally: Tally, index: int) -> None:
        host, port = plan.targets[index % len(plan.targets)]
        super().__init__(f"{host}:{port}")
        self.plan = plan
        self.tally = tally
        self.index = index
        self.target = index % len(plan.targets)
        self.last_seq = 0
        self.epoch: str | None = None
        self.joined = False
        self.sampled = False
        self.slow = False
        self.closing = False
        self.resuming = False
        self.gaps = 0
        self.missing = 0
        self.duplicates = 0
        self.lost_at = 0.0
        self.lost_code = 0
        self.refused: str | None = None
        """The code of a refused ``connect`` (pipelined: its reply is a line)."""
        self.back_at: float | None = None
        self.recovered = False
        self.attempts = 0
        self.paused_at = 0.0
        self.code_seen: int | None = None

    # -- events ----------------------------------------------------------------------

    def on_text(self, data: bytes | bytearray, start: int, end: int) -> None:
        t = self.tally
        # The hub writes the same frame to the members at the same point: read it once
        # per worker. The key is its length, its first bytes and the first bytes of its
        # last line (the last seq): frames that begin alike (with the same likes line,
        # say) and are as long, but carry other seqs, are told apart.
        last_line = data.rfind(b"\n", start, end) + 1 or start
        key = (
            end - start,
            bytes(data[start : start + _KEY_BYTES]),
            bytes(data[last_line : last_line + _LAST_KEY_BYTES]),
        )
        shape = t.shapes.get(key)
        if shape is None:
            shape = t.shape(key, data, start, end)
        lines, first, last, n = shape
        t.bytes += end - start
        if first:
            prev = self.last_seq
            if first <= prev:
                dup = min(prev, last) - first + 1
                self.duplicates += dup
                t.duplicates += dup
            elif first > prev + 1:
                self.gaps += 1
                self.missing += first - prev - 1
                t.gaps += 1
                t.missing += first - prev - 1
            if last - first + 1 > n:  # a hole inside the frame
                self.gaps += 1
                self.missing += last - first + 1 - n
                t.gaps += 1
                t.missing += last - first + 1 - n
            if last > prev:
                self.last_seq = last
        if t.counting:
            t.frames += 1
            t.lines += lines
            if self.sampled:
                t.sample(data, start, end)

    def on_line(self, obj: dict[str, Any]) -> None:
        if obj.get("id") == CONNECT_ID and not obj.get("ok", True):
            self.refused = str(obj["error"]["code"])

    def replied(self, obj: dict[str, Any]) -> None:
        if obj.get("id") == JOIN_ID and obj.get("ok"):
            data = obj["data"]
            snap = data["snapshot"]
            if self.resuming:
                self.recovered = bool(data.get("recovered"))
                if not self.recovered:  # the client rebuilds from the snapshot
                    self.last_seq = int(snap["seq"])
            else:
                self.last_seq = int(snap["seq"])
            self.epoch = snap.get("epoch")
            self.joined = True
            self.control = False  # what follows in this read is the room's events
        super().replied(obj)

    def on_lost(self, code: int) -> None:
        t = self.tally
        now = time.time()
        was_joined = self.joined
        self.joined = False
        self.control = True
        if t.counting:
            t.closes.append((now, code, self.slow))
        if self.slow:
            self.code_seen = code
        if t.reconnect and was_joined and not self.closing and not self.slow:
            if self.back_at is None and not self.lost_at:
                self.lost_at, self.lost_code = now, code
            t.spawn(self.resume())

    def set_lowat(self, n: int) -> None:
        """Wake for this socket once ``n`` bytes wait (``SO_RCVLOWAT``; 1: at once)."""
        sock = self.transport.get_extra_info("socket") if self.transport else None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, n)

    # -- connecting --------------------------------------------------------------------

    async def join(self, since: int | None) -> None:
        """Connect (a fresh socket), sign in and join; resume from ``since`` if given.

        Raises:
            OSError, ConnectionError, TimeoutError: it did not work.
        """
        plan = self.plan
        host, port = plan.targets[self.target]
        self.host = f"{host}:{port}"
        source = source_address(plan.block, self.index)
        async with asyncio.timeout(plan.connect_timeout_s):
            await open_connection(lambda: self, host, port, source=source)
            try:
                # connect and join in one write, as a client may (docs/protocol.md)
                token = plan.tokens[self.index % len(plan.tokens)]
                connect = {"op": "connect", "id": CONNECT_ID, "token": token}
                cmd: dict[str, Any] = {"op": "join", "id": JOIN_ID, "room": plan.room}
                if since is not None and self.epoch is not None:
                    cmd["since"], cmd["epoch"] = since, self.epoch
                self.refused = None
                try:
                    reply = await self.request(JOIN_ID, dumps(cmd), ahead=dumps(connect))
                except ConnectionError:
                    if self.refused is not None:  # and the server closed
                        raise CommandRefused(self.refused) from None
                    raise
                if not reply["ok"]:
                    raise CommandRefused(str(reply["error"]["code"]))
            except BaseException:
                self.abort(CLOSE_ABNORMAL)
                raise

    async def resume(self) -> None:
        """Come back after a drop: wait a random part of the jitter, then try, with
        exponential backoff, the next server first (the same when there is one)."""
        t = self.tally
        give_up = time.time() + t.resume_for_s
        delay = random.uniform(0.0, t.jitter_s)
        self.resuming = True
        try:
            while not self.closing and time.time() < give_up:
                await asyncio.sleep(delay)
                self.attempts += 1
                self.target = (self.target + 1) % len(self.plan.targets)
                try:
                    await self.join(self.last_seq)
                except (OSError, ConnectionError, TimeoutError):
                    delay = min(2.0, 0.2 * 2 ** min(self.attempts, 8)) * random.uniform(0.5, 1.0)
                    continue
                if self.back_at is None:
                    self.back_at = time.time()
                return
        finally:
            self.resuming = False


# -- a worker process -------------------------------------------------------------------


def evenly(n: int, k: int, offset: float = 0.0) -> list[int]:
    """``k`` of the positions ``0..n-1``, spread evenly (``offset`` in ``[0, 1)`` of a
    step shifts them, to keep two such choices apart)."""
    if k <= 0 or n <= 0:
        return []
    k = min(k, n)
    return sorted({min(n - 1, int((i + offset) * n / k)) for i in range(k)})


def worker(plan: CrowdPlan, pipe: Connection) -> None:
    """Entry point of a worker process."""
    fds = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    crowd = Crowd(plan, pipe)
    run_worker(plan.index, pipe, crowd.run, plan.deadline_s, int(fds))


class Crowd:
    """One worker's viewers, and the commands of the main process."""

    def __init__(self, plan: CrowdPlan, pipe: Connection) -> None:
        self.plan = plan
        self.pipe = pipe
        self.tally = Tally()
        self.viewers: list[Viewer] = []
        self.byte_rate = 0.0
        """Bytes a second one viewer received, as last measured (for batching)."""

    async def run(self) -> None:
        # The pipe is read in a thread: a reader registered on the loop would make the
        # socket non-blocking, and a large answer would then fail to send.
        self.pipe.send(("started", self.plan.index))
        while True:
            msg: tuple[Any, ...] = await asyncio.to_thread(self.pipe.recv)
            kind = msg[0]
            if kind == "close":
                await self.close_all()
                self.pipe.send(("closed", self.plan.index))
                return
            self.tally.spawn(self.command(kind, msg[1:]))

    async def command(self, kind: str, args: tuple[Any, ...]) -> None:
        try:
            if kind == "add":
                reply: tuple[Any, ...] = ("added", await self.add(*args))
            elif kind == "roles":
                reply = ("roles", self.roles(*args))
            elif kind == "window":
                reply = ("window", await self.window(*args))
            elif kind == "pause":
                reply = ("paused", self.pause(*args))
            elif kind == "slow-report":
                reply = ("slow-report", await self.slow_report())
            elif kind == "reconnect":
                self.tally.reconnect, self.tally.jitter_s, self.tally.resume_for_s = args
                reply = ("reconnect", self.plan.index)
            elif kind == "recovery":
                reply = ("recovery", self.recovery())
            elif kind == "mark":
                self.mark_storm()
                reply = ("marked", self.plan.index)
            else:
                reply = ("error", f"worker {self.plan.index}: unknown command {kind!r}")
        except Exception as exc:  # the main process reports it
            reply = ("error", f"worker {self.plan.index}: {kind}: {type(exc).__name__}: {exc}")
        self.pipe.send(reply)

    async def add(self, n: int) -> AddReport:
        """Connect and join ``n`` more viewers, ``plan.batch`` at a time: a window that
        starts the next as soon as one is done (batches that waited for their slowest
        member left the server idle between them and measured that, not the server)."""
        plan = self.plan
        errors: Counter[str] = Counter()
        rss_before = rss_mib_self()
        cpu0 = time.process_time()
        started = time.monotonic()
        first = len(self.viewers)
        group = [Viewer(plan, self.tally, i) for i in range(first, first + n)]
        self.viewers += group  # a failed one keeps its index (its address)
        window = asyncio.Semaphore(plan.batch)

        async def join(v: Viewer) -> None:
            async with window:
                await v.join(None)

        outcomes = await asyncio.gather(*(join(v) for v in group), return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                code = getattr(outcome, "code", None)
                errors[code if isinstance(code, str) else type(outcome).__name__] += 1
        connected = n - sum(errors.values())
        seconds = time.monotonic() - started
        cpu_s = time.process_time() - cpu0
        # The connections live to the end: keep the collector from walking them again
        # and again (a full collection stalls every reader at once).
        gc.collect()
        gc.freeze()
        return AddReport(
            n,
            connected,
            seconds,
            dict(errors),
            self.open_count(),
            cpu_s,
            rss_before,
            rss_mib_self(),
        )

    def open_count(self) -> int:
        return sum(v.joined for v in self.viewers)

    def roles(self, sampled: int, slow: int) -> tuple[int, int]:
        """Make ``sampled`` of the open viewers parse and time every line and ``slow``
        others slow, both spread evenly over the join order (the server writes to a
        room's members in join order). Returns how many of each were chosen."""
        live = [v for v in self.viewers if v.joined]
        for v in self.viewers:
            v.sampled = v.slow = False
        for i in evenly(len(live), sampled):
            live[i].sampled = True
        rest = [v for v in live if not v.sampled]
        for i in evenly(len(rest), slow, offset=0.5):
            rest[i].slow = True
        return sum(v.sampled for v in live), sum(v.slow for v in live)

    async def window(self, t0: float, t1: float, lowat: int) -> WindowReport:
        """Count between ``t0`` and ``t1`` (wall clock); return the counts.

        Batching: the viewers that only count are woken once some bytes wait
        (``SO_RCVLOWAT``), from the warm-up to a second after ``t1``, so that one read
        takes several frames: that saves the generator most of its cost per frame. The
        mark is what :data:`BATCH_S` of the bytes a viewer receives (measured in the
        warm-up) come to, at most ``lowat`` (0: no batching). Frames are counted when
        they are read: a frame sent just before ``t0`` counts, one sent just before
        ``t1`` does not, and in a steady stream the two even out. Sampled and slow
        viewers read every frame at once.
        """
        t = self.tally
        batched = [v for v in self.viewers if v.joined and not v.sampled and not v.slow]
        mark = 0
        if lowat > 1 and batched:
            span = min(1.0, t0 - time.time() - 0.1)
            if span >= 0.3:
                bytes0, started = t.bytes, time.monotonic()
                await asyncio.sleep(span)
                rate = (t.bytes - bytes0) / (time.monotonic() - started)
                self.byte_rate = rate / max(1, self.open_count())
            mark = int(min(lowat, self.byte_rate * BATCH_S))
            if mark > 1:
                for v in batched:
                    v.set_lowat(mark)
        await sleep_until(t0)
        t.lines = t.frames = t.bad_lines = 0
        t.latencies_ms = []
        t.likes_latencies_ms = []
        t.closes = []
        gaps0, missing0, dups0 = t.gaps, t.missing, t.duplicates
        t.counting = True
        times0, wall0 = os.times(), time.monotonic()
        lags: list[float] = []
        while time.time() < t1:
            before = time.monotonic()
            await asyncio.sleep(_LAG_EVERY_S)
            lags.append((time.monotonic() - before - _LAG_EVERY_S) * 1000.0)
        t.counting = False
        times1, wall1 = os.times(), time.monotonic()
        if mark > 1:
            self.tally.spawn(self._unbatch(batched, 1.0))
        lag_p99, lag_max = lag_figures(sorted(lags))
        report = WindowReport(
            index=self.plan.index,
            lines=t.lines,
            frames=t.frames,
            latencies_ms=t.latencies_ms,
            likes_latencies_ms=t.likes_latencies_ms,
            bad_lines=t.bad_lines,
            gaps=t.gaps - gaps0,
            missing=t.missing - missing0,
            duplicates=t.duplicates - dups0,
            closes=t.closes,
            open_viewers=self.open_count(),
            sampled=sum(v.sampled for v in self.viewers),
            cpu_s=(times1.user + times1.system) - (times0.user + times0.system),
            user_s=times1.user - times0.user,
            wall_s=wall1 - wall0,
            lag_p99_ms=lag_p99,
            lag_max_ms=lag_max,
            rss_mib=rss_mib_self(),
            lowat=mark,
        )
        t.latencies_ms = []
        t.likes_latencies_ms = []
        return report

    async def _unbatch(self, viewers: list[Viewer], after: float) -> None:
        await asyncio.sleep(after)
        for v in viewers:
            v.set_lowat(1)

    def pause(self, at: float) -> list[tuple[str, int]]:
        """At wall time ``at``, the slow viewers stop reading. Returns their sockets'
        local addresses (the server's side of each is watched from ``/proc``)."""
        slow = [v for v in self.viewers if v.slow and v.joined and v.transport is not None]
        self.tally.spawn(self._pause(slow, at))
        out: list[tuple[str, int]] = []
        for v in slow:
            assert v.transport is not None
            host, port = v.transport.get_extra_info("sockname")[:2]
            out.append((str(host), int(port)))
        return out

    async def _pause(self, slow: list[Viewer], at: float) -> None:
        await sleep_until(at)
        for v in slow:
            if v.transport is not None:
                v.transport.pause_reading()
                v.paused_at = time.time()

    async def slow_report(self) -> list[SlowRecord]:
        """Let the slow viewers read again (to see the close frame, if it is still
        there to read), and say what happened to each."""
        slow = [v for v in self.viewers if v.slow and v.paused_at]
        for v in slow:
            if v.transport is not None:
                with contextlib.suppress(RuntimeError):
                    v.transport.resume_reading()
        await asyncio.sleep(1.0)
        return [SlowRecord(v.paused_at, v.code_seen) for v in slow]

    def recovery(self) -> RecoveryReport:
        victims = [v for v in self.viewers if v.lost_at]
        others = [v for v in self.viewers if not v.lost_at and v.joined]
        return RecoveryReport(
            index=self.plan.index,
            victims=[
                VictimRecord(
                    lost_at=v.lost_at,
                    lost_code=v.lost_code,
                    back_at=v.back_at,
                    recovered=v.recovered,
                    attempts=v.attempts,
                    gaps_after=v.gaps,
                    missing_after=v.missing,
                    duplicates_after=v.duplicates,
                )
                for v in victims
            ],
            others=len(others),
            others_gaps=sum(v.gaps for v in others),
            others_missing=sum(v.missing for v in others),
            others_duplicates=sum(v.duplicates for v in others),
            open_viewers=self.open_count(),
        )

    def mark_storm(self) -> None:
        """Reset the per-viewer order counters (the storm's figures start here)."""
        for v in self.viewers:
            v.gaps = v.missing = v.duplicates = 0

    async def close_all(self) -> None:
        self.tally.reconnect = False
        for v in self.viewers:
            v.closing = True
            v.close()
        deadline = time.monotonic() + _CLOSE_GRACE_S
        while any(v.transport is not None for v in self.viewers):
            if time.monotonic() > deadline:
                for v in self.viewers:
                    v.abort(CLOSE_ABNORMAL)
                break
            await asyncio.sleep(0.05)
        for task in list(self.tally.tasks):
            task.cancel()


def rss_mib_self() -> float:
    with contextlib.suppress(OSError):
        return rss_mib(os.getpid())
    return 0.0


async def sleep_until(wall: float) -> None:
    delay = wall - time.time()
    if delay > 0:
        await asyncio.sleep(delay)


# -- the main process's side -------------------------------------------------------------


class CrowdHandle:
    """The main process's side of the workers.

    One thread per pipe reads the worker's messages and files them by kind, so several
    questions may be out at once (a window, and a pause inside it); a worker's
    ``error`` message, or its end, fails every question after it.
    """

    def __init__(self) -> None:
        self.workers: list[tuple[BaseProcess, Connection]] = []
        self.viewers: list[int] = []
        """Viewers asked of each worker so far."""
        self._inbox: dict[tuple[int, str], asyncio.Queue[tuple[Any, ...]]] = {}
        self._failure: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def pipes(self) -> list[Connection]:
        return [pipe for _, pipe in self.workers]

    @classmethod
    async def start(
        cls,
        processes: int,
        *,
        targets: Sequence[tuple[str, int]],
        tokens: Sequence[str],
        room: str,
        batch: int,
        deadline_s: float,
        first_block: int = 10,
    ) -> CrowdHandle:
        ctx = multiprocessing.get_context("spawn")
        handle = cls()
        handle._loop = asyncio.get_running_loop()
        for i in range(processes):
            plan = CrowdPlan(
                index=i,
                targets=tuple(targets),
                tokens=tuple(tokens[i::processes]) or tuple(tokens),  # each its own share
                room=room,
                block=first_block + i,
                batch=batch,
                connect_timeout_s=20.0,
                deadline_s=deadline_s,
            )
            proc, pipe = spawn_worker(ctx, worker, plan)
            handle.workers.append((proc, pipe))
            handle.viewers.append(0)
            threading.Thread(target=handle._read, args=(i, pipe), daemon=True).start()
        try:
            await handle._collect("started", 60.0)
        except BaseException:
            await handle.close(5.0)
            raise
        return handle

    def _queue(self, i: int, kind: str) -> asyncio.Queue[tuple[Any, ...]]:
        q = self._inbox.get((i, kind))
        if q is None:
            q = self._inbox[(i, kind)] = asyncio.Queue()
        return q

    def _read(self, i: int, pipe: Connection) -> None:
        """A reader thread: file each message of worker ``i`` on the loop."""
        loop = self._loop
        assert loop is not None
        while True:
            try:
                msg: tuple[Any, ...] = pipe.recv()
            except (EOFError, OSError):
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(self._fail, f"worker {i} ended")
                return
            with contextlib.suppress(RuntimeError):  # the loop is closed: we are done
                loop.call_soon_threadsafe(self._file, i, msg)

    def _file(self, i: int, msg: tuple[Any, ...]) -> None:
        if msg[0] == "error":
            self._fail(str(msg[1]))
        else:
            self._queue(i, msg[0]).put_nowait(msg)

    def _fail(self, why: str) -> None:
        if self._failure is None:
            self._failure = why

    async def _get(self, i: int, kind: str) -> tuple[Any, ...]:
        q = self._queue(i, kind)
        while True:
            if q.empty() and self._failure is not None:
                raise RuntimeError(self._failure)
            with contextlib.suppress(TimeoutError):
                return await asyncio.wait_for(q.get(), 0.25)

    async def _collect(self, kind: str, timeout_s: float) -> list[Any]:
        try:
            async with asyncio.timeout(timeout_s):
                return [(await self._get(i, kind))[1] for i in range(len(self.workers))]
        except TimeoutError:
            raise TimeoutError(f"the viewer processes did not answer {kind!r} in time") from None

    async def ask(self, msg: tuple[Any, ...], kind: str, timeout_s: float) -> list[Any]:
        """Send ``msg`` to every worker; return each one's answer of ``kind``.

        Raises:
            TimeoutError: not every worker answered in time.
            RuntimeError: a worker failed (its message says how) or ended.
        """
        for pipe in self.pipes:
            pipe.send(msg)
        return await self._collect(kind, timeout_s)

    async def ask_each(
        self, msgs: Sequence[tuple[Any, ...]], kind: str, timeout_s: float
    ) -> list[Any]:
        """Send ``msgs[i]`` to worker ``i``; return each one's answer of ``kind``."""
        for pipe, msg in zip(self.pipes, msgs, strict=True):
            pipe.send(msg)
        return await self._collect(kind, timeout_s)

    async def add(self, n: int, timeout_s: float) -> list[AddReport]:
        """Spread ``n`` more viewers over the workers, the least loaded first."""
        shares = [0] * len(self.workers)
        for _ in range(n):
            i = min(range(len(shares)), key=lambda k: self.viewers[k] + shares[k])
            shares[i] += 1
        for i, s in enumerate(shares):
            self.viewers[i] += s
        reports: list[AddReport] = await self.ask_each(
            [("add", s) for s in shares], "added", timeout_s
        )
        return reports

    async def roles(self, sampled: int, slow: int) -> tuple[int, int]:
        """Spread ``sampled`` and ``slow`` over the workers by their viewers."""
        total = sum(self.viewers) or 1
        sampled_each = _shares(sampled, [v / total for v in self.viewers])
        slow_each = _shares(slow, [v / total for v in self.viewers])
        got = await self.ask_each(
            [("roles", a, b) for a, b in zip(sampled_each, slow_each, strict=True)],
            "roles",
            30.0,
        )
        return sum(a for a, _ in got), sum(b for _, b in got)

    async def close(self, timeout_s: float = 30.0) -> None:
        """Close every viewer and end the workers (terminate what does not end)."""
        with contextlib.suppress(TimeoutError, RuntimeError, OSError):
            for pipe in self.pipes:
                pipe.send(("close",))
            await self._collect("closed", timeout_s)
        for proc, pipe in self.workers:
            await asyncio.to_thread(proc.join, 5)
            if proc.is_alive():
                proc.terminate()
                await asyncio.to_thread(proc.join, 5)
            pipe.close()
        self.workers = []


def _shares(total: int, weights: Sequence[float]) -> list[int]:
    """``total`` split by ``weights`` (largest remainders), summing to ``total``."""
    raw = [total * w for w in weights]
    out = [math.floor(x) for x in raw]
    order = sorted(range(len(raw)), key=lambda i: raw[i] - out[i], reverse=True)
    for i in order[: total - sum(out)]:
        out[i] += 1
    return out
