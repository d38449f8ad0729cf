"""The webhook client against scripted HTTP servers (raw sockets: every byte is ours)."""

from __future__ import annotations

import asyncio
import datetime
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from livecommerce.orders.http11 import MAX_ANSWER, HttpError, WebhookClient

Script = Callable[[bytes, int], bytes | None]
"""Given a request (head and body) and its number on the connection, the bytes to
answer with; None closes the connection without answering."""


class Server:
    """Reads each request whole, answers with the script's bytes, keeps the connection
    open unless the script said None or ``close_after`` requests were served."""

    def __init__(self, script: Script, *, close_after: int | None = None) -> None:
        self.script = script
        self.close_after = close_after
        self.connections = 0
        self.requests: list[bytes] = []
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self, ssl_context: ssl.SSLContext | None = None) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=ssl_context)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        n = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                request = head + await reader.readexactly(length)
                self.requests.append(request)
                n += 1
                answer = self.script(request, n)
                if answer is None:
                    break
                writer.write(answer)
                await writer.drain()
                if self.close_after is not None and n >= self.close_after:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., asyncio.Future[Server]]]:
    servers: list[Server] = []

    async def start(script: Script, **kw: object) -> Server:
        server = Server(script, **kw)  # type: ignore[arg-type]
        await server.start()
        servers.append(server)
        return server

    yield start  # type: ignore[misc]
    for s in servers:
        await s.stop()


def ok(body: bytes = b"{}", extra: str = "") -> Script:
    head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode()
    return lambda request, n: head + body


async def test_posts_with_the_headers_and_reuses_the_connection(
    serve: Callable[..., asyncio.Future[Server]],
) -> None:
    server = await serve(ok(b'{"payment_url": "/pay"}'))
    client = WebhookClient(f"http://127.0.0.1:{server.port}/hooks/orders?x=1")
    for i in range(3):
        status, body = await client.post(b'{"n": %d}' % i, {"webhook-id": f"o{i}"})
        assert (status, body) == (200, b'{"payment_url": "/pay"}')
    await client.close()
    assert server.connections == 1  # kept alive
    head, _, body = server.requests[2].partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "POST /hooks/orders?x=1 HTTP/1.1"
    assert f"Host: 127.0.0.1:{server.port}" in lines
    assert "Content-Type: application/json" in lines and "webhook-id: o2" in lines
    assert body == b'{"n": 2}'


async def test_reads_chunked_answers_with_trailers_and_skips_interim_ones(
    serve: Callable[..., asyncio.Future[Server]],
) -> None:
    def script(request: bytes, n: int) -> bytes:
        chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        chunked += b'4\r\n{"a"\r\n3;x=y\r\n: 1\r\n1\r\n}\r\n0\r\n'
        trailer = b"X-Check: 1\r\n\r\n" if n == 1 else b"\r\n"
        return b"HTTP/1.1 100 Continue\r\n\r\n" + chunked + trailer

    server = await serve(script)
    client = WebhookClient(f"http://127.0.0.1:{server.port}/")
    assert await client.post(b"{}", {}) == (200, b'{"a": 1}')
    assert await client.post(b"{}", {}) == (200, b'{"a": 1}')  # the parser ended cleanly
    await client.close()
    assert server.connections == 1


async def test_an_answer_ended_by_the_server_closing(
    serve: Callable[..., asyncio.Future[Server]],
) -> None:
    server = await serve(lambda r, n: b"HTTP/1.0 500 Oops\r\n\r\nno length", close_after=1)
    client = WebhookClient(f"http://127.0.0.1:{server.port}/")
    assert await client.post(b"{}", {}) == (500, b"no length")
    assert await client.post(b"{}", {}) == (500, b"no length")  # on a new connection
    await client.close()
    assert server.connections == 2


async def test_connection_close_is_honoured(serve: Callable[..., asyncio.Future[Server]]) -> None:
    server = await serve(ok(b"{}", "Connection: close\r\n"))
    client = WebhookClient(f"http://127.0.0.1:{server.port}/")
    for _ in range(2):
        assert await client.post(b"{}", {}) == (200, b"{}")
    await client.close()
    assert server.connections == 2


async def test_a_kept_alive_connection_closed_by_the_server_is_retried_once(
    serve: Callable[..., asyncio.Future[Server]],
) -> None:
    # each connection answers once, then closes on its next request without answering
    server = await serve(lambda r, n: None if n == 2 else ok()(r, n))
    client = WebhookClient(f"http://127.0.0.1:{server.port}/")
    assert await client.post(b"{}", {"webhook-id": "a"}) == (200, b"{}")
    assert await client.post(b"{}", {"webhook-id": "b"}) == (200, b"{}")
    await client.close()
    assert server.connections == 2
    ids = [r.split(b"webhook-id: ")[1][:1] for r in server.requests]
    assert ids == [b"a", b"b", b"b"]  # b: on the stale connection, then on a new one


async def test_a_closed_idle_connection_is_not_used(
    serve: Callable[..., asyncio.Future[Server]],
) -> None:
    server = await serve(ok(), close_after=1)  # closes after each answer, without saying so
    client = WebhookClient(f"http://127.0.0.1:{server.port}/")
    assert await client.post(b"{}", {}) == (200, b"{}")
    await asyncio.sleep(0.05)  # the close reaches the client
    assert await client.post(b"{}", {}) == (200, b"{}")
    await client.close()
    assert (server.connections, len(server.requests)) == (2, 2)


async def test_a_fresh_connection_closed_without_an_answer_is_an_error(
    serve: Callable[..., asyncio.Future[Server]],
) -> None:
    server = await serve(lambda r, n: None)
    client = WebhookClient(f"http://127.0.0.1:{server.port}/")
    with pytest.raises(HttpError):
        await client.post(b"{}", {})
    await client.close()
    assert len(server.requests) == 1  # not sent twice: nothing was stale about it


@pytest.mark.parametrize(
    "answer",
    [
        b"SMTP ready\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nbroken header\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (MAX_ANSWER + 1),
    ],
)
async def test_malformed_or_huge_answers_are_errors(
    serve: Callable[..., asyncio.Future[Server]], answer: bytes
) -> None:
    server = await serve(lambda r, n: answer)
    client = WebhookClient(f"http://127.0.0.1:{server.port}/")
    with pytest.raises(HttpError):
        await client.post(b"{}", {})
    await client.close()


async def test_a_cut_short_answer_is_an_error(serve: Callable[..., asyncio.Future[Server]]) -> None:
    server = await serve(
        lambda r, n: b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{}", close_after=1
    )
    client = WebhookClient(f"http://127.0.0.1:{server.port}/")
    with pytest.raises(HttpError):
        await client.post(b"{}", {})
    await client.close()


async def test_timeouts_abort_the_connection(serve: Callable[..., asyncio.Future[Server]]) -> None:
    slow = asyncio.Event()

    def script(request: bytes, n: int) -> bytes:
        return b"" if not slow.is_set() else ok()(request, n)  # type: ignore[return-value]

    server = await serve(script)
    client = WebhookClient(f"http://127.0.0.1:{server.port}/", timeout_s=0.2)
    with pytest.raises(TimeoutError):
        await client.post(b"{}", {})
    slow.set()
    assert await client.post(b"{}", {}) == (200, b"{}")  # a new connection, not the stuck one
    await client.close()
    assert server.connections == 2


async def test_requests_beyond_the_pool_wait_for_a_connection(
    serve: Callable[..., asyncio.Future[Server]],
) -> None:
    server = await serve(ok())
    client = WebhookClient(f"http://127.0.0.1:{server.port}/", connections=3)
    results = await asyncio.gather(*(client.post(b"{}", {}) for _ in range(30)))
    assert results == [(200, b"{}")] * 30
    await client.close()
    assert server.connections <= 3


def test_bad_urls_and_headers_are_refused() -> None:
    with pytest.raises(ValueError):
        WebhookClient("ftp://example.com/")
    with pytest.raises(ValueError):
        WebhookClient("/relative")


async def test_header_injection_is_refused(serve: Callable[..., asyncio.Future[Server]]) -> None:
    server = await serve(ok())
    client = WebhookClient(f"http://127.0.0.1:{server.port}/")
    with pytest.raises(ValueError):
        await client.post(b"{}", {"webhook-id": "a\r\nX-Evil: 1"})
    await client.close()
    assert server.requests == []


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def test_https_with_a_verified_certificate(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    seen: list[bytes] = []

    async def hook(request: web.Request) -> web.Response:
        seen.append(await request.read())
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ctx)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        trusting = ssl.create_default_context(cafile=str(cert))
        client = WebhookClient(f"https://localhost:{port}/hook", ssl_context=trusting)
        assert await client.post(b'{"x": 1}', {}) == (200, b'{"ok": true}')
        await client.close()
        assert seen == [b'{"x": 1}']
        untrusting = WebhookClient(f"https://localhost:{port}/hook")  # the system's CAs
        with pytest.raises(ssl.SSLError):
            await untrusting.post(b"{}", {})
        await untrusting.close()
    finally:
        await runner.cleanup()
