"""Shared fixtures: a redis-server of the session's own, servers, tokens and clients."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import redis
from aiohttp import web
from aiohttp.test_utils import TestServer

from livecommerce.auth import Role, issue_token
from livecommerce.backends import Backends, make_backends
from livecommerce.client import Client
from livecommerce.config import Limits, Settings
from livecommerce.http import create_app
from loadtests.server import redis_command

SECRET = "test-secret-0123456789abcdef-0123456789"
ID_KEY = b"test order ids"
"""The order-id key of the pure and store tests (a server derives its own)."""
ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def until(check: Callable[[], bool], what: str, timeout: float = 20) -> None:
    """Poll ``check()`` on the event loop until it holds; fail naming ``what`` after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        await asyncio.sleep(0.02)


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not ready after {timeout} s")
        time.sleep(0.02)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A redis-server on a free port, started for this session and stopped after it."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed (scripts/test installs it)")
    port = free_port()
    workdir = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(redis_command(binary, port, str(workdir)), stdout=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)

    def up() -> bool:
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            return False

    try:
        wait_until(up, 10, "redis-server")
        yield url
    finally:
        client.close()
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def redis_url(redis_server: str) -> str:
    """The session's Redis, emptied for this test (it is ours: nobody else uses it)."""
    client = redis.Redis.from_url(redis_server)
    client.flushall()
    client.close()
    return redis_server


@pytest.fixture(params=["memory", "redis"])
def engine(request: pytest.FixtureRequest) -> str:
    engine: str = request.param
    return engine


@pytest.fixture
def settings(engine: str, request: pytest.FixtureRequest) -> Settings:
    """Test settings on the engine under test: short tick, the session's Redis."""
    url = request.getfixturevalue("redis_url") if engine == "redis" else None
    return Settings(
        secret=SECRET,
        demo=True,
        tick_ms=10,
        redis_url=url,
        presence_interval_ms=100,
        limits=Limits(connect_timeout_s=1.0),
    )


@pytest.fixture
async def backends(settings: Settings) -> AsyncIterator[Backends]:
    async with make_backends(settings) as b:
        yield b


def token(
    sub: str,
    role: Role = "viewer",
    *,
    rooms: list[str] | None = None,
    ttl_s: int = 3600,
    name: str | None = None,
    extra: dict[str, Any] | None = None,
) -> str:
    return issue_token(
        SECRET,
        sub=sub,
        name=name or sub,
        role=role,
        rooms=rooms,
        now=time.time(),
        ttl_s=ttl_s,
        extra=extra,
    )


HOST = token("demo-host", "host", rooms=["demo"])
MOD = token("mod-1", "moderator", rooms=["demo"])


@dataclass(frozen=True)
class LiveServer:
    """An in-process server of a test."""

    port: int
    app: web.Application


ServerFactory = Callable[..., Awaitable[LiveServer]]


@pytest.fixture
async def start_server(settings: Settings) -> AsyncIterator[ServerFactory]:
    """Start in-process servers: ``await start_server(tick_ms=..., ...)`` overrides
    settings; every server is closed after the test."""
    servers: list[TestServer] = []

    async def start(**overrides: Any) -> LiveServer:
        limits = overrides.pop("limits", None)
        s = replace(settings, **overrides)
        if limits:
            s = replace(s, limits=replace(s.limits, **limits))
        server = TestServer(create_app(s), host="127.0.0.1", port=free_port())
        await server.start_server()
        servers.append(server)
        assert server.port is not None
        return LiveServer(server.port, server.app)

    yield start
    for server in reversed(servers):
        await server.close()


ClientFactory = Callable[..., Awaitable[Client]]


@pytest.fixture
async def connect() -> AsyncIterator[ClientFactory]:
    """Open clients: ``await connect(server_or_port, token=...)``; closed after the test."""
    clients: list[Client] = []

    async def open_client(server: LiveServer | int, token: str | None = None, **kw: Any) -> Client:
        port = server if isinstance(server, int) else server.port
        client = Client(f"ws://127.0.0.1:{port}/ws", token=token, **kw)
        await client.connect()
        clients.append(client)
        return client

    yield open_client
    for c in clients:
        await c.close()


class ServerProcess:
    """A real ``livecommerce serve`` process (for the Redis and signal tests).

    Its output goes to a file, never to a pipe nobody reads: a full pipe blocks the
    server's next log line, and with it the whole server.
    """

    def __init__(self, port: int, args: list[str], env: dict[str, str] | None = None) -> None:
        self.port = port
        self.log = tempfile.NamedTemporaryFile(prefix="livecommerce-", suffix=".log")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "livecommerce", "serve", "--port", str(port), *args],
            cwd=ROOT,
            env={**os.environ, **(env or {})},
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        wait_until(self.ready, 15, f"server on {port}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        with open(self.log.name, encoding="utf-8", errors="replace") as f:
            return f.read()

    def ready(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.output()}")
        try:
            with urllib.request.urlopen(self.url + "/healthz", timeout=1) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(15)
        self.log.close()


@pytest.fixture
def spawn() -> Iterator[Callable[..., ServerProcess]]:
    procs: list[ServerProcess] = []

    def start(*args: str, env: dict[str, str] | None = None) -> ServerProcess:
        p = ServerProcess(free_port(), list(args), env)
        procs.append(p)
        return p

    yield start
    for p in procs:
        p.stop(signal.SIGKILL)


@dataclass(frozen=True)
class RedisClusterNodes:
    """A Redis Cluster of the test session's own: one master per port, no replicas."""

    ports: tuple[int, ...]

    @property
    def url(self) -> str:
        """The server's ``--redis-url`` for it (one node; the client finds the rest)."""
        return f"redis+cluster://127.0.0.1:{self.ports[0]}"

    def node(self, port: int) -> redis.Redis:
        """A plain client of one node (close it after use)."""
        return redis.Redis(host="127.0.0.1", port=port)


def _free_ports(n: int) -> list[int]:
    ports: set[int] = set()
    while len(ports) < n:
        ports.add(free_port())
    return sorted(ports)


@pytest.fixture(scope="session")
def redis_cluster_nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterNodes]:
    """A 3-master Redis Cluster on free ports (cluster bus ports too; never 6379),
    started for this session in a temporary directory and stopped after it.

    ``redis-server --cluster-enabled yes`` three times, ``redis-cli --cluster create``,
    then every node must report ``cluster_state:ok`` and know the other two.
    """
    server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if server is None or cli is None:
        raise RuntimeError("redis-server and redis-cli are needed (scripts/test installs them)")
    workdir = tmp_path_factory.mktemp("redis-cluster")
    free = _free_ports(6)
    ports, buses = tuple(free[:3]), free[3:]
    procs = []
    try:
        for port, bus in zip(ports, buses, strict=True):
            cluster = ["--cluster-enabled", "yes", "--cluster-port", str(bus)]
            cluster += ["--cluster-config-file", f"nodes-{port}.conf"]
            cluster += ["--cluster-node-timeout", "5000"]
            command = redis_command(server, port, str(workdir), *cluster)
            procs.append(subprocess.Popen(command, stdout=subprocess.DEVNULL))
        nodes = RedisClusterNodes(ports)
        clients = [nodes.node(port) for port in ports]

        def up() -> bool:
            try:
                return all(c.ping() for c in clients)
            except redis.ConnectionError:
                return False

        wait_until(up, 10, "redis cluster nodes")
        subprocess.run(
            [cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports), "--cluster-yes"],
            check=True,
            stdout=subprocess.DEVNULL,
            timeout=30,
        )

        def formed() -> bool:
            infos = [c.cluster("INFO") for c in clients]
            return all(
                i["cluster_state"] == "ok" and int(i["cluster_known_nodes"]) == len(ports)
                for i in infos
            )

        wait_until(formed, 20, "redis cluster")
        for c in clients:
            c.close()
        yield nodes
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(10)


@pytest.fixture
def redis_cluster(redis_cluster_nodes: RedisClusterNodes) -> RedisClusterNodes:
    """The session's Redis Cluster, every master emptied for this test (it is ours)."""
    for port in redis_cluster_nodes.ports:
        client = redis_cluster_nodes.node(port)
        client.flushall()
        client.close()
    return redis_cluster_nodes
