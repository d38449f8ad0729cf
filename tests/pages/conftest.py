"""Fixtures of the page tests: Debian's Chromium driven by Playwright, and a demo server.

Playwright's async API lives on one event loop, and a browser is worth keeping for
the whole session, so the page tests, the browser and the servers all run on the
session's loop (``pytestmark = pytest.mark.asyncio(loop_scope="session")`` in each
test module). The servers are in-process, started like ``tests/conftest.py``'s
``start_server`` (same secret, so its ``HOST``/``MOD``/``token`` work), in demo mode on
the memory backend.

Playwright never downloads a browser here: it drives ``/usr/bin/chromium`` (Debian's
``chromium`` package, which ``scripts/test`` installs).

What the tests do on pages and in the room (sign in, sales, screenshots, ...) is in
``helpers.py``.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp.test_utils import TestServer
from playwright.async_api import Browser, BrowserContext, ConsoleMessage, Page, async_playwright

from livecommerce.client import Client
from livecommerce.config import Limits, Settings
from livecommerce.http import create_app
from tests.conftest import SECRET, LiveServer, free_port
from tests.pages.helpers import wait_live_page

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]


@pytest.fixture(scope="session")
def chromium_path() -> str:
    """Debian's Chromium; a clear error (not a skip) when it is missing."""
    if not CHROMIUM.is_file():
        raise RuntimeError(f"{CHROMIUM} is missing: apt-get install chromium (scripts/test does)")
    return str(CHROMIUM)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def browser(chromium_path: str) -> AsyncIterator[Browser]:
    """One headless Chromium for the session."""
    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(
            executable_path=chromium_path, headless=True, args=CHROMIUM_ARGS
        )
        yield chromium
        await chromium.close()


PageServerFactory = Callable[..., Awaitable[LiveServer]]


@pytest_asyncio.fixture(loop_scope="session")
async def page_server() -> AsyncIterator[PageServerFactory]:
    """Start demo servers on free ports: ``await page_server(hold_s=4, limits={...})``
    overrides settings; each is closed after the test."""
    servers: list[TestServer] = []

    async def start(**overrides: Any) -> LiveServer:
        limits = overrides.pop("limits", None) or {}
        settings = Settings(
            secret=SECRET,
            demo=True,
            presence_interval_ms=200,
            limits=Limits(connect_timeout_s=2.0, **limits),
        )
        settings = replace(settings, **overrides)
        server = TestServer(create_app(settings), host="127.0.0.1", port=free_port())
        await server.start_server()
        servers.append(server)
        assert server.port is not None
        return LiveServer(server.port, server.app)

    yield start
    for server in reversed(servers):
        await server.close()


PageFactory = Callable[..., Awaitable[Page]]

MEDIA_URL = re.compile(r"/api/rooms/[^/?]+/(whip|whep)(/[^/?]+)?$|/hls/")
"""The video's endpoints, whose refusals are answers the pages act on."""
NOT_FOUND_OK = re.compile(r"/api/rooms/[^/?]+/(whip(/[^/?]+)?|whep/[^/?]+)$")
"""Where a 404 is an answer a page acts on: the studio's WHIP (no such room), a WebRTC
session's URL (the page's DELETE may come after the server ended the session)."""
REFUSAL = re.compile(r"^Failed to load resource: the server responded with a status of (\d+)\b")


def expected_failure(msg: ConsoleMessage) -> bool:
    """Chromium logs every HTTP error answer as a console error; a few answers of the
    video's endpoints are expected (503 past the WebRTC viewer cap, 409 for a second
    publisher, 401/403 refusals, 404 for the DELETE of a session the server ended
    already, or the studio's WHIP for a room that is not), so they do not fail a test. A
    404 for a viewer's stream is not: a page asks for WHEP or HLS only when the room
    says there is a stream."""
    status = REFUSAL.match(msg.text)
    url = msg.location.get("url", "")
    if status is None:
        return False
    if status[1] == "404":
        return bool(NOT_FOUND_OK.search(url))
    return status[1] in ("401", "403", "409", "503") and bool(MEDIA_URL.search(url))


@pytest_asyncio.fixture(loop_scope="session")
async def open_page(browser: Browser) -> AsyncIterator[PageFactory]:
    """Open pages of a server, each in its own browser context (its own
    sessionStorage, so its own sign-in): ``await open_page(server)`` (the viewer
    page of the demo room), ``await open_page(server, "studio.html?room=demo",
    width=390, height=844, init_script=...)``; ``before(page)`` runs before the page
    loads (to route its WebSocket, say).

    The test fails if a page logs an error or throws an uncaught exception (except
    the video endpoints' refusals, see :func:`expected_failure`).
    """
    contexts: list[BrowserContext] = []
    errors: list[str] = []

    async def open_(
        server: LiveServer,
        path: str = "watch.html?room=demo",
        *,
        width: int = 1280,
        height: int = 800,
        scale: float = 1,
        init_script: str | None = None,
        before: Callable[[Page], Awaitable[None]] | None = None,
        wait_live: bool = True,
    ) -> Page:
        context = await browser.new_context(
            viewport={"width": width, "height": height}, device_scale_factor=scale
        )
        contexts.append(context)
        page = await context.new_page()
        url = f"http://127.0.0.1:{server.port}/{path}"

        def console(msg: ConsoleMessage) -> None:
            if msg.type == "error" and not expected_failure(msg):
                errors.append(f"{url}: console: {msg.text}")

        page.on("pageerror", lambda exc: errors.append(f"{url}: {exc}"))
        page.on("console", console)
        if init_script:
            await page.add_init_script(init_script)
        if before:
            await before(page)
        await page.goto(url)
        if wait_live:
            await wait_live_page(page)
        return page

    yield open_
    for context in contexts:
        await context.close()
    assert not errors, "\n".join(errors)


ClientsFactory = Callable[..., Awaitable[Client]]


@pytest_asyncio.fixture(loop_scope="session")
async def clients() -> AsyncIterator[ClientsFactory]:
    """Python clients: ``await clients(server, token)``; closed after the test."""
    opened: list[Client] = []

    async def open_client(server: LiveServer, tok: str | None = None, **kw: Any) -> Client:
        client = Client(f"ws://127.0.0.1:{server.port}/ws", token=tok, **kw)
        await client.connect()
        opened.append(client)
        return client

    yield open_client
    for client in opened:
        await client.close()
