"""Accessibility of every page: axe-core (the accessibility engine, from the npm
registry: ``scripts/test`` installs it into ``.cache/axe``) runs in Debian's Chromium
on each page in a realistic state, and no "serious" or "critical" finding may remain.
Moderate and minor findings are printed (``pytest -s`` shows them), not failed.

And the keyboard: on the viewer page, Tab reaches the Buy button and the chat box,
and Enter or Space on Buy places an order.
"""

from __future__ import annotations

from typing import Any

import pytest
from playwright.async_api import Page, expect

from livecommerce.client import Client
from tests.conftest import HOST, MOD, ROOT, LiveServer
from tests.pages import helpers
from tests.pages.conftest import ClientsFactory, PageFactory, PageServerFactory
from tests.pages.helpers import MUG, MUG_IMAGE
from tests.pages.test_media_pages import make_clips
from tests.pages.test_studio_console import open_console, open_studio

pytestmark = pytest.mark.asyncio(loop_scope="session")

AXE = ROOT / ".cache" / "axe" / "node_modules" / "axe-core" / "axe.min.js"
BLOCKING = {"serious", "critical"}


async def axe_violations(page: Page, name: str) -> list[dict[str, Any]]:
    """Run axe-core on the page; print every violation; return them."""
    if not AXE.is_file():
        pytest.fail(f"{AXE} is missing: run scripts/test (it installs axe-core with npm)")
    if not await page.evaluate("() => typeof window.axe === 'object'"):
        # evaluated, not a <script>: the staff pages' Content-Security-Policy allows no
        # inline script (and the DevTools protocol is not bound by it)
        await page.evaluate(AXE.read_text() + "\n;undefined")
    result: dict[str, Any] = await page.evaluate(
        """async () => {
            const result = await axe.run(document, {resultTypes: ["violations"]});
            const violations = result.violations.map((v) => ({
                id: v.id, impact: v.impact, help: v.help, count: v.nodes.length,
                target: v.nodes[0] ? v.nodes[0].target.join(" ") : "",
                summary: v.nodes[0] ? v.nodes[0].failureSummary : "",
            }));
            const review = result.incomplete.map(
                (v) => `${v.id} ×${v.nodes.length} (${v.nodes[0].target.join(" ")})`
            );
            return {violations, review};
        }"""
    )
    violations: list[dict[str, Any]] = result["violations"]
    print(f"\naxe on {name}: {len(violations)} violation(s)")
    for v in violations:
        print(f"  {v['impact']:<8} {v['id']} ×{v['count']}: {v['target']} ({v['help']})")
    if result["review"]:  # what axe could not decide by itself (a person should look)
        print(f"  needs review: {', '.join(result['review'])}")
    return violations


def assert_no_blocking(results: dict[str, list[dict[str, Any]]]) -> None:
    blocking = [
        f"{name}: {v['impact']} {v['id']} ×{v['count']} at {v['target']}: {v['summary']}"
        for name, violations in results.items()
        for v in violations
        if v["impact"] in BLOCKING
    ]
    assert not blocking, "\n".join(blocking)


async def no_favicon(page: Page) -> None:
    """The sandbox page links no icon: answer the browser's /favicon.ico with nothing
    (not a 404, which the page fixture counts as a console error)."""
    await page.route("**/favicon.ico", lambda route: route.fulfill(status=204, body=""))


async def live_room(server: LiveServer, clients: ClientsFactory) -> Client:
    """The demo room with the mug pinned, a sale open, an announcement and some chat."""
    await helpers.dress_room(server, clients)
    await helpers.chatter(server, clients, "Bo", "Hi from Lisbon!", likes=3)
    await helpers.chatter(server, clients, "Cy", "Is the mug dishwasher safe?", likes=2)
    return await clients(server, MOD)


async def test_viewer_pages_have_no_serious_accessibility_finding(
    page_server: PageServerFactory, open_page: PageFactory, clients: ClientsFactory
) -> None:
    server = await page_server()
    results: dict[str, list[dict[str, Any]]] = {}

    index = await open_page(server, "index.html", wait_live=False)
    await index.wait_for_load_state("networkidle")
    results["index.html"] = await axe_violations(index, "index.html")

    empty = await open_page(server)
    await expect(empty.locator("#composer-guest")).to_be_visible()
    results["watch.html (guest, no sale)"] = await axe_violations(empty, "watch.html guest")

    await live_room(server, clients)
    guest = await open_page(server, width=390, height=844)
    await expect(guest.locator("#sale")).to_be_visible()
    await expect(guest.locator("#feed .msg")).to_have_count(2)
    results["watch.html (guest, phone)"] = await axe_violations(guest, "watch.html guest phone")

    ana = await open_page(server, "watch.html?room=demo&name=Ana")
    await helpers.sign_in(ana, "Ana")
    await expect(ana.locator("#sale")).to_be_visible()
    await ana.locator("#buy").click()
    order = ana.locator("#order-list .order")
    await expect(order).to_have_count(1)
    await ana.locator("#chat-text").fill("Hello!")
    await ana.locator("#chat-text").press("Enter")
    await expect(ana.locator("#feed .msg")).to_have_count(3)
    results["watch.html (signed in)"] = await axe_violations(ana, "watch.html signed in")

    # The sandbox checkout page of the held order.
    oid = await ana.evaluate("() => [...window.__live.view.orders.values()][0].id")
    checkout = await open_page(
        server, f"sandbox/checkout/{oid}", wait_live=False, before=no_favicon
    )
    await expect(checkout.locator("#pay")).to_be_visible()
    results["sandbox checkout"] = await axe_violations(checkout, "sandbox checkout")

    assert_no_blocking(results)


async def test_studio_and_console_have_no_serious_accessibility_finding(
    page_server: PageServerFactory, open_page: PageFactory, clients: ClientsFactory
) -> None:
    server = await page_server()
    mod = await live_room(server, clients)
    await mod.request("mod.filter", room="demo", add=["spam"], action="flag")
    await helpers.chatter(server, clients, "Eve", "cheap spam over here", likes=1)
    results: dict[str, list[dict[str, Any]]] = {}

    studio = await open_studio(open_page, server)
    await expect(studio.locator('#sale-list .sale-item[data-state="open"]')).to_have_count(1)
    await expect(studio.locator("#feed .msg")).to_have_count(3)
    results["studio.html"] = await axe_violations(studio, "studio.html")
    await studio.get_by_role("button", name="Add product").click()
    await expect(studio.locator("#product-form")).to_be_visible()
    results["studio.html (product form)"] = await axe_violations(studio, "studio product form")
    await studio.locator("#product-form").get_by_role("button", name="Cancel").click()
    await studio.get_by_role("button", name="End show").click()
    await expect(studio.get_by_role("dialog", name="End the show?")).to_be_visible()
    results["studio.html (dialog)"] = await axe_violations(studio, "studio dialog")

    console = await open_console(open_page, server)
    await expect(console.locator("#room-demo .flag-item")).to_have_count(1)
    results["console.html"] = await axe_violations(console, "console.html")
    await (
        console.locator("#room-demo .msg", has_text="Lisbon")
        .get_by_role("button", name="Mute or ban Bo")
        .click()
    )
    await expect(console.get_by_role("dialog", name="Moderate Bo")).to_be_visible()
    results["console.html (dialog)"] = await axe_violations(console, "console dialog")

    assert_no_blocking(results)


async def focus_by_tab(page: Page, selector: str, presses: int = 80) -> None:
    """Press Tab until the element is focused (fails if it never is)."""
    target = page.locator(selector)
    for _ in range(presses):
        await page.keyboard.press("Tab")
        if await target.evaluate("el => el === document.activeElement"):
            return
    raise AssertionError(f"Tab never reached {selector}")


@pytest.mark.parametrize("key", ["Enter", "Space"])
async def test_keyboard_reaches_buy_and_chat_and_buys(
    page_server: PageServerFactory, open_page: PageFactory, clients: ClientsFactory, key: str
) -> None:
    server = await page_server()
    await helpers.put_product(server, "mug-01", MUG, 1800, MUG_IMAGE)
    host = await clients(server, HOST)
    await helpers.open_sale(host, stock=5, limit=2, duration_s=120)
    ana = await open_page(server, "watch.html?room=demo&name=Ana")
    await helpers.sign_in(ana, "Ana")
    await expect(ana.locator("#buy")).to_be_enabled()

    await ana.locator("body").focus()
    await focus_by_tab(ana, "#chat-text")
    await ana.keyboard.type("typed with the keyboard")
    await ana.keyboard.press("Enter")
    await expect(ana.locator("#feed .msg-text")).to_have_text(["typed with the keyboard"])

    await focus_by_tab(ana, "#buy")
    await ana.keyboard.press(key)
    await expect(ana.locator("#buy-result")).to_have_text(
        "Reserved 1! Complete payment before the timer runs out."
    )
    await expect(ana.locator("#order-list .order")).to_have_count(1)


async def test_video_pages_have_no_serious_accessibility_finding(
    page_server: PageServerFactory, open_page: PageFactory, clients: ClientsFactory
) -> None:
    """The pages' video states: the studio broadcasting and refused, a viewer page
    playing and waiting, the clips feed with an order."""
    server = await page_server()
    results: dict[str, list[dict[str, Any]]] = {}

    waiting = await open_page(server)
    await expect(waiting.locator("#player")).to_have_attribute("data-state", "waiting")
    results["watch.html (video: not live yet)"] = await axe_violations(waiting, "watch waiting")

    _, studio = await make_clips(server, open_page, clients)  # it broadcasts from here on
    results["studio.html (broadcasting)"] = await axe_violations(studio, "studio broadcasting")
    second = await open_studio(open_page, server)
    await second.get_by_role("button", name="Go live on camera").click()
    await expect(second.locator("#broadcast-state")).to_have_attribute("data-state", "failed")
    results["studio.html (broadcast refused)"] = await axe_violations(
        second, "studio broadcast refused"
    )

    playing = await open_page(server)
    await expect(playing.locator("#player")).to_have_attribute(
        "data-state", "playing", timeout=30_000
    )
    results["watch.html (video playing)"] = await axe_violations(playing, "watch playing")

    feed = await open_page(server, "clips.html", wait_live=False)
    mug = feed.locator(".clip").first
    await expect(mug).to_have_attribute("data-video", "playing")
    await mug.get_by_role("button", name=f"Sign in and buy: {MUG}").click()
    await expect(mug.locator(".order")).to_have_count(1)
    results["clips.html (playing, an order)"] = await axe_violations(feed, "clips")

    assert_no_blocking(results)
