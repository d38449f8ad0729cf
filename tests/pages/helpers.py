"""What the page tests do again and again: wait for a page, sign a viewer page in, put
products and sales in the demo room, cut a page's network, take screenshots.

The fixtures these work with (``page_server``, ``open_page``, ``clients``) are in
``conftest.py``. The test modules import this module as ``helpers``.
"""

from __future__ import annotations

import asyncio
import re
from typing import TYPE_CHECKING, Any

import aiohttp
from playwright.async_api import Page, WebSocketRoute, expect

from livecommerce.client import Client
from tests.conftest import HOST, ROOT, LiveServer, token

if TYPE_CHECKING:
    from tests.pages.conftest import ClientsFactory

SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"
WS_PATH = re.compile(r"/ws$")

MUG = "Stoneware mug, speckled"
# A small picture of a mug, so screenshots show a product image (no external assets).
MUG_IMAGE = (
    "data:image/svg+xml,"
    "<svg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 80 80'>"
    "<rect width='80' height='80' fill='%23efe9e1'/>"
    "<path d='M54 32h5a8 8 0 0 1 0 16h-5' fill='none' stroke='%23556070' stroke-width='4'/>"
    "<rect x='20' y='24' width='34' height='36' rx='5' fill='%23556070'/>"
    "<circle cx='30' cy='36' r='1.6' fill='%23c9cfd8'/><circle cx='42' cy='44' r='1.6' "
    "fill='%23c9cfd8'/><circle cx='34' cy='52' r='1.6' fill='%23c9cfd8'/></svg>"
)


async def until_true(page: Page, expression: str, timeout_s: float = 30.0) -> None:
    """Until the JavaScript ``expression`` holds on ``page``. Like Playwright's
    ``wait_for_function``, which evaluates its predicate with ``eval`` in the page: the
    staff pages' Content-Security-Policy forbids that (``page.evaluate`` goes through
    the DevTools protocol, which is not bound by it)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await page.evaluate(f"() => Boolean({expression})"):
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not within {timeout_s} s: {expression}")
        await asyncio.sleep(0.05)


async def wait_live_page(page: Page) -> None:
    """Until the page is connected and has the room's snapshot."""
    await until_true(
        page,
        "window.__live && window.__live.client.state === 'live'"
        " && window.__live.client.roomState('demo')?.joined",
    )


async def sign_in(page: Page, name: str) -> None:
    """Press "Sign in" on a viewer page (demo sign-in) and wait until the page is
    back, signed in."""
    await page.locator("#sign-in").click()
    await expect(page.locator("#me")).to_have_text(f"Signed in as {name}")
    await wait_live_page(page)


async def screenshot(page: Page, name: str, *, full_page: bool = False) -> None:
    """``test-artifacts/screenshots/<name>.png``: what the page looks like now."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=SCREENSHOTS / f"{name}.png", full_page=full_page)


async def put_product(
    server: LiveServer, sku: str, title: str, price: int, image: str | None = None
) -> None:
    """Add a product to the demo room's lineup, as its host."""
    url = f"http://127.0.0.1:{server.port}/api/rooms/demo/products/{sku}"
    body: dict[str, Any] = {"title": title, "price": price}
    if image:
        body["image"] = image
    async with (
        aiohttp.ClientSession() as session,
        session.put(url, json=body, headers={"Authorization": f"Bearer {HOST}"}) as resp,
    ):
        assert resp.status == 200, await resp.text()


async def open_sale(
    host: Client, *, stock: int = 20, limit: int = 2, duration_s: int = 90, pin: bool = True
) -> dict[str, Any]:
    """As the host: (pin and) open a flash sale of ``mug-01`` at $12.00."""
    if pin:
        await host.request("pin", room="demo", sku="mug-01")
    reply = await host.request(
        "sale.start",
        room="demo",
        sku="mug-01",
        price=1200,
        stock=stock,
        limit_per_user=limit,
        duration_s=duration_s,
    )
    sale: dict[str, Any] = reply["sale"]
    return sale


async def dress_room(server: LiveServer, clients: ClientsFactory) -> dict[str, Any]:
    """The demo room as the screenshots show it: the mug (with its picture) pinned, a
    15-minute flash sale of 50 at $12.00 (3 per person), an announcement. Returns
    the sale."""
    await put_product(server, "mug-01", MUG, 1800, MUG_IMAGE)
    host = await clients(server, HOST)
    sale = await open_sale(host, stock=50, limit=3, duration_s=15 * 60)
    await host.request("announce", room="demo", text="Free shipping on every order tonight!")
    return sale


async def chatter(
    server: LiveServer, clients: ClientsFactory, name: str, text: str, likes: int
) -> Client:
    """A viewer (a Python client, ``demo-viewer-<name>``) who says ``text`` in the demo
    room and taps like ``likes`` times."""
    client = await clients(server, token(f"demo-viewer-{name.lower()}", name=name))
    await client.request("chat", room="demo", text=text)
    await client.request("like", room="demo", count=likes)
    return client


class Link:
    """The page's WebSocket, routed through Playwright so that the test can cut it
    like a dropped network: both ends are closed, and while the link is down every
    new connection is refused (closed at once, the server never sees it).

    Route a page through it before it loads: ``open_page(..., before=link.install)``.
    """

    def __init__(self) -> None:
        self.up = True
        self.open: list[tuple[WebSocketRoute, WebSocketRoute]] = []
        self.refused = 0
        self.connections = 0
        self.frames: list[tuple[int, str, str | bytes]] = []
        """``(connection number, "page" or "server", message)`` in the order they
        passed the link."""

    async def install(self, page: Page) -> None:
        await page.route_web_socket(WS_PATH, self.route)

    async def route(self, ws: WebSocketRoute) -> None:
        if not self.up:
            self.refused += 1
            await ws.close(code=1001, reason="network down")
            return
        server = ws.connect_to_server()
        n = self.connections
        self.connections += 1

        def to_server(message: str | bytes) -> None:
            self.frames.append((n, "page", message))
            server.send(message)

        def to_page(message: str | bytes) -> None:
            self.frames.append((n, "server", message))
            ws.send(message)

        ws.on_message(to_server)
        server.on_message(to_page)
        self.open.append((ws, server))

    async def cut(self) -> None:
        self.up = False
        for page_side, server_side in self.open:
            await server_side.close()
            await page_side.close(code=1001, reason="network down")
        self.open.clear()
