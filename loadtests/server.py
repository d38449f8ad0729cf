"""The server under test: one that runs already (``--url``), or one the tool starts.

A started server is ``livecommerce serve --demo`` on a free port, on the memory backend
or on a ``redis-server`` of its own (also on a free port, never 6379, with no
persistence, stopped afterwards), with ``--workers N`` processes. Its output goes to a
log file (a pipe nobody reads would block it). Tokens come from the demo sign-in, or are
signed here when the tool knows the secret (it does for a server it started).

:class:`Watch` reads each server process's CPU and resident memory from ``/proc``; the
processes are found from the listening port (with ``--workers N`` each worker holds its
own listening socket), and found again after one is killed and restarted.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import aiohttp

from livecommerce.auth import issue_token
from loadtests._common import (
    cpu_each,
    demo_token,
    listening_pids,
    loopback_base,
    rss_each,
)

REDIS_DEFAULT_PORT: Final = 6379
TOKEN_TTL_S: Final = 4 * 3600
ROOT: Final = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (never Redis's default port)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port: int = s.getsockname()[1]
        if port != REDIS_DEFAULT_PORT:
            return port


@dataclass(slots=True)
class Server:
    """Where the server is, and what the tool started for it (stopped by :meth:`stop`)."""

    base: str
    port: int
    backend: str | None
    """``memory`` or ``redis`` when the tool started it; None when it was given."""
    workers: int | None
    secret: str | None
    redis_url: str | None = None
    redis_pid: int | None = None
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    workdir: str | None = None
    log_path: str | None = None

    @property
    def host(self) -> str:
        return "127.0.0.1"

    def stop(self) -> None:
        """Stop what the tool started: the server (SIGTERM, then SIGKILL), then Redis."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        self.procs = []
        if self.workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def log_tail(self, lines: int = 20) -> str:
        if not self.log_path:
            return ""
        with contextlib.suppress(OSError):
            return "\n".join(Path(self.log_path).read_text(errors="replace").splitlines()[-lines:])
        return ""


def given(url: str, prog: str, secret: str | None) -> Server:
    """A server that runs already at ``url`` (loopback only)."""
    base, port = loopback_base(url, prog)
    return Server(base=base, port=port, backend=None, workers=None, secret=secret)


def start(
    *,
    backend: str,
    workers: int,
    tick_ms: int | None = None,
    extra: Sequence[str] = (),
    log_dir: str | None = None,
) -> Server:
    """Start ``redis-server`` (for ``backend == "redis"``) and ``livecommerce serve``.

    Raises:
        RuntimeError: ``redis-server`` is missing, or a process did not come up.
    """
    workdir = tempfile.mkdtemp(prefix="loadtests-")
    secret = "loadtests-" + secrets.token_hex(16)
    port = free_port()
    if log_dir:
        Path(log_dir).mkdir(parents=True, exist_ok=True)
    log_path = str(Path(log_dir or workdir) / f"serve-{port}.log")
    server = Server(
        base=f"http://127.0.0.1:{port}",
        port=port,
        backend=backend,
        workers=workers,
        secret=secret,
        workdir=workdir,
        log_path=log_path,
    )
    try:
        args = [
            sys.executable,
            "-m",
            "livecommerce",
            "serve",
            "--port",
            str(port),
            "--demo",
            "--secret",
            secret,
            "--workers",
            str(workers),
            "--log-level",
            "WARNING",
        ]
        if tick_ms is not None:
            args += ["--tick-ms", str(tick_ms)]
        if backend == "redis":
            server.redis_url, server.redis_pid = _start_redis(server, workdir)
            args += ["--redis-url", server.redis_url]
        args += list(extra)
        with open(log_path, "ab") as log:
            server.procs.append(
                subprocess.Popen(args, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
            )
        _wait_ready(server, workers)
    except BaseException:
        server.stop()
        raise
    return server


def redis_found() -> bool:
    return shutil.which("redis-server") is not None


def redis_command(binary: str, port: int, workdir: str, *extra: str) -> list[str]:
    """The command line of a throwaway redis-server on 127.0.0.1:``port`` that keeps
    nothing on disk beyond ``workdir`` (the load tests' and the test suite's own)."""
    common = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", workdir]
    return [binary, "--port", str(port), *common, *extra]


def _start_redis(server: Server, workdir: str) -> tuple[str, int]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed (the redis backend needs it)")
    port = free_port()
    proc = subprocess.Popen(
        redis_command(binary, port, workdir), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    server.procs.insert(0, proc)  # stopped last
    deadline = time.monotonic() + 10
    while True:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5) as s:
            s.sendall(b"PING\r\n")
            if s.recv(16).startswith(b"+PONG"):
                return f"redis://127.0.0.1:{port}/0", proc.pid
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("redis-server did not start")
        time.sleep(0.05)


def _wait_ready(server: Server, workers: int) -> None:
    """Until /healthz answers 200 and ``workers`` processes listen on the port."""
    import urllib.request

    deadline = time.monotonic() + 30
    while True:
        for proc in server.procs:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"a process of the server exited with {proc.returncode}:\n{server.log_tail()}"
                )
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(server.base + "/healthz", timeout=1) as resp,
        ):
            if resp.status == 200 and len(listening_pids(server.port)) >= workers:
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"the server did not come up in 30 s:\n{server.log_tail()}")
        time.sleep(0.1)


# -- tokens -------------------------------------------------------------------------------


async def tokens(server: Server, names: Sequence[str], prog: str) -> list[str]:
    """A viewer token for each name (each name its own user): signed here when the
    secret is known, else from the demo sign-in, 50 at a time."""
    if server.secret:
        now = time.time()
        return [
            issue_token(
                server.secret, sub=f"lt-{n}", name=n, role="viewer", now=now, ttl_s=TOKEN_TTL_S
            )
            for n in names
        ]
    out: list[str] = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        for lo in range(0, len(names), 50):
            out += await asyncio.gather(
                *(demo_token(http, server.base, n, prog=prog) for n in names[lo : lo + 50])
            )
    return out


async def host_token(server: Server, prog: str) -> str:
    """A token of the host of the room ``demo``."""
    if server.secret:
        return issue_token(
            server.secret,
            sub="demo-host",
            name="Demo Host",
            role="host",
            rooms=["demo"],
            now=time.time(),
            ttl_s=TOKEN_TTL_S,
        )
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        return await demo_token(http, server.base, "Demo Host", prog=prog, role="host")


# -- readings -----------------------------------------------------------------------------


@dataclass(slots=True)
class Watch:
    """The server's processes, and readings of their CPU and memory."""

    port: int
    pids: list[int] = field(default_factory=list)

    def find(self) -> list[int]:
        """The processes listening on the port now (also after a restart)."""
        self.pids = listening_pids(self.port)
        return self.pids

    def cpu(self) -> dict[int, float | None]:
        return cpu_each(self.pids)

    def rss(self) -> dict[int, float | None]:
        return rss_each(self.pids)


def cpu_pct(
    before: dict[int, float | None], after: dict[int, float | None], wall: float
) -> dict[int, float | None]:
    """Percent of one core each process used between two :meth:`Watch.cpu` readings."""
    out: dict[int, float | None] = {}
    for pid, a in after.items():
        b = before.get(pid)
        out[pid] = None if a is None or b is None or wall <= 0 else round(100 * (a - b) / wall, 1)
    return out


def cpu_seconds(before: dict[int, float | None], after: dict[int, float | None]) -> float:
    """CPU seconds the processes used between two :meth:`Watch.cpu` readings, in all."""
    used = (
        a - b for pid, a in after.items() if a is not None and (b := before.get(pid)) is not None
    )
    return sum(used)


def kill(pid: int) -> None:
    """SIGKILL ``pid`` (a server process)."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


class MetricsByProcess:
    """``/metrics`` of each server process: one keep-alive HTTP connection pinned to
    each (``SO_REUSEPORT`` spreads new connections over the processes; ``/healthz``
    says which process answered, and is asked again before every read, so a reading
    is never put on the wrong process)."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.sessions: dict[int, aiohttp.ClientSession] = {}

    async def pin(self, pids: Sequence[int], tries: int = 64) -> None:
        """Open connections until one reaches each of ``pids`` (or ``tries`` ran out)."""
        for _ in range(tries):
            if all(pid in self.sessions for pid in pids):
                return
            session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=1),
                timeout=aiohttp.ClientTimeout(total=5),
            )
            pid = await self._pid(session)
            if pid is not None and pid in pids and pid not in self.sessions:
                self.sessions[pid] = session
            else:
                await session.close()

    async def _pid(self, session: aiohttp.ClientSession) -> int | None:
        with contextlib.suppress(aiohttp.ClientError, TimeoutError, KeyError, ValueError):
            async with session.get(self.base + "/healthz") as r:
                body: dict[str, Any] = await r.json()
                return int(body["pid"])
        return None

    async def read(self, name: str) -> dict[int, float | None]:
        """The counter ``name`` of each pinned process (None when its connection now
        reaches another process, or none; that connection is then replaced)."""

        async def one(pid: int, session: aiohttp.ClientSession) -> float | None:
            if await self._pid(session) != pid:
                return None
            with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError):
                async with session.get(self.base + "/metrics") as r:
                    if r.status != 200:
                        return None
                    for row in (await r.text()).splitlines():
                        key, _, value = row.partition(" ")
                        if key == name:
                            return float(value)
                    return 0.0  # a counter appears with its first count
            return None

        pids = list(self.sessions)
        values = await asyncio.gather(*(one(p, self.sessions[p]) for p in pids))
        lost = [p for p, v in zip(pids, values, strict=True) if v is None]
        for pid in lost:
            await self.sessions.pop(pid).close()
        if lost:
            await self.pin(pids, tries=16)
        return dict(zip(pids, values, strict=True))

    async def close(self) -> None:
        for session in self.sessions.values():
            await session.close()
        self.sessions = {}


# -- the server's side of sockets ------------------------------------------------------


def proc_tcp_address(host: str, port: int) -> str:
    """``host:port`` as ``/proc/net/tcp`` writes it (``0100007F:1F90``)."""
    return f"{int.from_bytes(socket.inet_aton(host), 'little'):08X}:{port:04X}"


TCP_ESTABLISHED: Final = 1


def server_side_states(ports: Sequence[int], peers: set[str]) -> dict[str, int]:
    """The TCP state (``/proc/net/tcp`` numbering: 1 established, 4 fin-wait-1, ...)
    of each socket that a server on ``ports`` holds with a peer in
    ``peers`` (addresses as :func:`proc_tcp_address` writes them). A peer missing from
    the answer has no socket on the server's side any more."""
    locals_ = {f":{port:04X}" for port in ports}
    out: dict[str, int] = {}
    with open("/proc/net/tcp") as f:
        for line in f:
            cols = line.split(None, 4)
            if len(cols) < 4 or cols[2] not in peers or cols[1][-5:] not in locals_:
                continue
            out[cols[2]] = int(cols[3], 16)
    return out
