"""Pieces shared by the load tests (``fanout``, ``flash_sale``).

The protocol client (one command, its reply), the pipe between a main process and its
workers, and the readings of ``/proc``: the server's pid found from its port, a process's
CPU seconds and resident memory, the machine's CPU by kind. Nothing here talks to any
address but the one it is given; the tools check that it is 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import resource
import time
from collections.abc import Coroutine, Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Final, Literal, TypeVar
from urllib.parse import urlsplit

import aiohttp

from livecommerce.protocol import dumps, loads

CLK_TCK: Final = os.sysconf("SC_CLK_TCK")
POLL_S: Final = 0.02

WS = aiohttp.ClientWebSocketResponse[Literal[False]]
T = TypeVar("T")


# -- the protocol client ----------------------------------------------------------------


class CommandRefused(Exception):
    """The server answered a command with ``ok: false``."""

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


async def sleep_until(wall: float) -> None:
    delay = wall - time.time()
    if delay > 0:
        await asyncio.sleep(delay)


def raise_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed <= hard or (soft < needed and hard == resource.RLIM_INFINITY):
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


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


# -- figures ----------------------------------------------------------------------------


def percentile(ordered: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile of sorted values (None for none)."""
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def split_evenly(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]
