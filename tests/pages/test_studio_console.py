"""The host studio (studio.html) and the moderator console (console.html) in Debian's
headless Chromium, with real viewer pages (watch.html) on the other side.

The host and the moderator act only through their pages' controls (forms, buttons,
dialogs); what viewers see is checked on their pages, and what the server did is
checked through its HTTP API or a Python client. Every assertion waits for what a
person would see (Playwright's ``expect`` retries until the page shows it).
"""

from __future__ import annotations

import re
from typing import Any

import aiohttp
import pytest
from playwright.async_api import Page, expect

from livecommerce.client import ClientError
from livecommerce.http.keys import SERVICE
from tests.conftest import HOST, LiveServer, token
from tests.pages import helpers
from tests.pages.conftest import ClientsFactory, PageFactory, PageServerFactory
from tests.pages.helpers import MUG, MUG_IMAGE

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def api(server: LiveServer, path: str, tok: str | None = None) -> Any:
    headers = {"Authorization": f"Bearer {tok}"} if tok else {}
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{server.port}{path}", headers=headers) as resp,
    ):
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def open_studio(
    open_page: PageFactory, server: LiveServer, query: str = "room=demo", **kw: Any
) -> Page:
    """The studio, signed in with the demo sign-in ("Sign in as host")."""
    page = await open_page(server, f"studio.html?{query}", wait_live=False, **kw)
    await page.get_by_role("button", name="Sign in as host").click()
    await expect(page.locator("#me")).to_have_text("Signed in as Demo Host")
    if "room=demo" in query:
        await helpers.wait_live_page(page)
        await expect(page.locator("#product-list .product-item")).not_to_have_count(0)
    return page


async def open_console(
    open_page: PageFactory, server: LiveServer, *, admin: bool = False, **kw: Any
) -> Page:
    """The console, signed in with the demo sign-in; it opens the room "demo"."""
    page = await open_page(server, "console.html", wait_live=False, **kw)
    name = "Sign in as admin" if admin else "Sign in as moderator"
    await page.get_by_role("button", name=name).click()
    await expect(page.locator("#me")).to_contain_text("Signed in as Demo")
    if not admin:  # the demo moderator's token covers "demo": it opens by itself
        await helpers.wait_live_page(page)
    return page


async def page_chat(page: Page, text: str, shown: str | None = None) -> None:
    """A viewer page sends a chat message through its message box; it comes back as
    ``shown`` (by default the same text)."""
    await page.locator("#chat-text").fill(text)
    await page.locator("#chat-text").press("Enter")
    await expect(page.locator("#feed .msg-text", has_text=shown or text)).not_to_have_count(0)


async def test_studio_creates_a_show_edits_the_lineup_goes_live_and_ends(
    page_server: PageServerFactory, open_page: PageFactory
) -> None:
    server = await page_server()
    studio = await open_studio(open_page, server, query="")

    # No ?room=: the list of shows the host runs, and a form to create one.
    shows = studio.locator("#show-list .show-item")
    await expect(shows).to_have_count(1)
    await expect(shows).to_contain_text("Demo live show")
    create = studio.locator("#create-form")
    await create.get_by_label("Title").fill("Spring sneaker drop")
    await create.get_by_role("button", name="Create show").click()
    await expect(studio.locator("#title")).to_have_text("Spring sneaker drop")
    await expect(studio.locator("#show-status")).to_have_text("Not live yet")
    found = re.search(r"room=(r-[0-9a-f]+)", studio.url)
    assert found, studio.url
    rid = found[1]
    await expect(studio.locator("#no-products")).to_be_visible()

    # The lineup editor: add a product (price typed in dollars, stored in cents) ...
    form = studio.locator("#product-form")
    await studio.get_by_role("button", name="Add product").click()
    await form.get_by_label("SKU").fill("sneaker-01")
    await form.get_by_label("List price (USD)").fill("129.90")
    await form.get_by_label("Title").fill("Court sneaker")
    await form.get_by_role("button", name="Save product").click()
    item = studio.locator('#product-list [data-sku="sneaker-01"]')
    await expect(item).to_contain_text("Court sneaker")
    await expect(item).to_contain_text("sneaker-01 · $129.90")
    # ... and edit it: new title and an image.
    await item.get_by_role("button", name="Edit Court sneaker").click()
    await expect(form.get_by_label("SKU")).to_have_js_property("readOnly", True)
    await form.get_by_label("Title").fill("Court sneaker, white")
    await form.get_by_label("Image URL (optional)").fill(MUG_IMAGE)
    await form.get_by_role("button", name="Save product").click()
    await expect(item).to_contain_text("Court sneaker, white")
    await expect(item.locator("img")).to_have_attribute("src", MUG_IMAGE)
    products = await api(server, f"/api/rooms/{rid}/products")
    assert products["products"] == [
        {"sku": "sneaker-01", "title": "Court sneaker, white", "price": 12990, "image": MUG_IMAGE}
    ]
    # A malformed price is refused on the page, nothing is sent.
    await studio.get_by_role("button", name="Add product").click()
    await form.get_by_label("SKU").fill("sock-02")
    await form.get_by_label("Title").fill("Socks")
    await form.get_by_label("List price (USD)").fill("4.999")
    await form.get_by_role("button", name="Save product").click()
    await expect(studio.locator("#product-note")).to_have_text(
        "Enter the price in USD, like 18.00."
    )
    await form.get_by_role("button", name="Cancel").click()
    await expect(form).to_be_hidden()
    assert len((await api(server, f"/api/rooms/{rid}/products"))["products"]) == 1

    # Pinning works before the show; a viewer page sees the pinned product.
    viewer = await open_page(server, f"watch.html?room={rid}", wait_live=False)
    await item.get_by_role("button", name="Pin Court sneaker, white").click()
    await expect(item).to_have_attribute("data-pinned", "true")
    await expect(viewer.locator("#product-title")).to_have_text("Court sneaker, white")
    await expect(viewer.locator("#product-price")).to_have_text("$129.90")

    # The camera preview (Chromium's fake camera).
    camera = studio.locator("#camera-toggle")
    await expect(studio.locator("#camera-state")).to_have_text("Camera off")
    await camera.click()
    await expect(studio.locator("#camera-state")).to_have_text(re.compile(r"^Camera on"))
    await expect(camera).to_have_attribute("aria-pressed", "true")
    await helpers.until_true(studio, "document.querySelector('#preview').videoWidth > 0")
    await camera.click()
    await expect(studio.locator("#camera-state")).to_have_text("Camera off")
    assert await studio.evaluate("document.querySelector('#preview').srcObject") is None

    # Going live asks first; cancelling changes nothing.
    await studio.get_by_role("button", name="Go live", exact=True).click()
    dialog = studio.get_by_role("dialog", name="Go live now?")
    await expect(dialog).to_be_visible()
    await dialog.get_by_role("button", name="Cancel").click()
    await expect(dialog).to_have_count(0)
    assert (await api(server, f"/api/rooms/{rid}"))["status"] == "scheduled"
    await studio.get_by_role("button", name="Go live", exact=True).click()
    await studio.get_by_role("dialog").get_by_role("button", name="Go live").click()
    await expect(studio.locator("#show-status")).to_have_text("LIVE")
    await expect(viewer.locator("#show-status")).to_have_text("LIVE")
    assert (await api(server, f"/api/rooms/{rid}"))["status"] == "live"

    await studio.get_by_role("button", name="End show").click()
    await (
        studio.get_by_role("dialog", name="End the show?")
        .get_by_role("button", name="End show")
        .click()
    )
    await expect(studio.locator("#show-status")).to_have_text("Ended")
    await expect(viewer.locator("#show-status")).to_have_text("Ended")
    await expect(studio.locator("#end-show")).to_be_disabled()
    assert (await api(server, f"/api/rooms/{rid}"))["status"] == "ended"


async def test_host_sale_from_the_studio_viewers_buy_and_figures_follow(
    page_server: PageServerFactory, open_page: PageFactory, clients: ClientsFactory
) -> None:
    server = await page_server()
    await helpers.put_product(server, "mug-01", MUG, 1800, MUG_IMAGE)
    studio = await open_studio(open_page, server)
    ana = await open_page(server, "watch.html?room=demo&name=Ana")
    other = await open_page(server, width=390, height=844)
    await helpers.sign_in(ana, "Ana")

    mug = studio.locator('#product-list [data-sku="mug-01"]')
    await mug.get_by_role("button", name=f"Pin {MUG}").click()
    await expect(ana.locator("#product-title")).to_have_text(MUG)

    # The flash-sale form: price in dollars, stock, limit per person, minutes.
    form = studio.locator("#sale-form")
    await form.get_by_label("Product").select_option("mug-01")
    await expect(form.get_by_label("Sale price (USD)")).to_have_value("18.00")
    await form.get_by_label("Sale price (USD)").fill("12")
    await form.get_by_label("Stock (units)").fill("5")
    await form.get_by_label("Limit per person").fill("2")
    await form.get_by_label("Duration (minutes)").fill("2")
    await form.get_by_role("button", name="Start sale").click()
    await expect(studio.locator("#sale-note")).to_have_text(f"Sale started: 5 × {MUG} at $12.00.")
    sale = studio.locator('#sale-list .sale-item[data-state="open"]')
    await expect(sale).to_have_count(1)
    await expect(sale.locator(".stock-text")).to_have_text("5 of 5 left")
    countdown = sale.locator(".countdown")
    await expect(countdown).to_have_text(re.compile(r"^(2:00|1:5\d)$"))
    shown = await countdown.text_content()
    await expect(countdown).not_to_have_text(shown or "")  # it counts down by itself
    [opened] = (await api(server, "/api/rooms/demo"))["sales"]
    assert (opened["price"], opened["stock"], opened["limit_per_user"]) == (1200, 5, 2)
    assert opened["ends_at"] - opened["starts_at"] == 120_000

    # Viewers see it; Ana buys and sees the hold; the other viewer and the studio
    # see the stock fall.
    await expect(other.locator("#stock-text")).to_have_text("5 of 5 left")
    await expect(ana.locator("#sale-price")).to_have_text("$12.00")
    await ana.locator("#buy").click()
    await expect(ana.locator("#buy-result")).to_have_text(
        "Reserved 1! Complete payment before the timer runs out."
    )
    order = ana.locator("#order-list .order")
    await expect(order).to_have_attribute("data-status", "held")
    await expect(other.locator("#stock-text")).to_have_text("4 of 5 left")
    await expect(sale.locator(".stock-text")).to_have_text("4 of 5 left")
    await expect(sale.locator(".stock-bar")).to_have_attribute("aria-valuenow", "4")

    # Live figures from `stats`: an order placed, nothing paid yet.
    await expect(studio.locator("#st-orders")).to_have_text("1")
    await expect(studio.locator("#st-units")).to_have_text("0")
    await expect(studio.locator("#st-revenue")).to_have_text("$0.00")
    await expect(studio.locator("#st-viewers")).to_have_text("3")  # studio and two pages
    # (Ana's sign-in reconnected her page: for a moment she may have counted twice.)
    await expect(studio.locator("#st-peak")).to_have_text(re.compile(r"^[34]$"))

    # Bo buys two and the shop confirms both payments.
    bo = await clients(server, token("demo-viewer-bo", name="Bo"))
    bo_order = await bo.request("order", room="demo", sale=opened["id"], qty=2, key="bo-1")
    await expect(other.locator("#stock-text")).to_have_text("2 of 5 left")
    order_id = await order.get_attribute("data-order-id")
    assert order_id
    await server.app[SERVICE].confirm_payment(order_id)
    await server.app[SERVICE].confirm_payment(bo_order["order"]["id"])
    await expect(order).to_have_attribute("data-status", "paid")
    await expect(studio.locator("#st-orders")).to_have_text("2")
    await expect(studio.locator("#st-units")).to_have_text("3")
    await expect(studio.locator("#st-revenue")).to_have_text("$36.00")
    row = studio.locator('#st-products tr[data-sku="mug-01"]')
    await expect(row.locator("th")).to_have_text(MUG)
    for i, text in ((3, "2"), (4, "3"), (5, "$36.00")):  # after peak viewers, likes, chats
        await expect(row.locator("td").nth(i)).to_have_text(text)
    await expect(studio.locator('#st-products tr[data-sku="tee-02"] td')).to_have_text(
        ["0", "0", "0", "0", "0", "$0.00"]  # never pinned, nothing sold
    )
    # Chats and likes are counted too.
    await page_chat(ana, "Paid, thanks!")
    await ana.locator("#like").click()
    await expect(studio.locator("#st-chats")).to_have_text("1")
    await expect(studio.locator("#st-likes")).to_have_text("1")
    await expect(studio.locator("#feed .msg-text")).to_have_text(["Paid, thanks!"])

    # Stop asks first, then the sale ends for everyone.
    await sale.get_by_role("button", name=f"Stop the sale of {MUG}").click()
    await (
        studio.get_by_role("dialog", name="Stop this sale?")
        .get_by_role("button", name="Stop sale")
        .click()
    )
    ended = studio.locator('#sale-list .sale-item[data-state="ended"]')
    await expect(ended.locator(".countdown")).to_have_text("Stopped")
    await expect(studio.locator('#sale-list .sale-item[data-state="open"]')).to_have_count(0)
    for page in (ana, other):
        await expect(page.locator("#sale-countdown")).to_have_text("Sale over")
    assert (await api(server, "/api/rooms/demo"))["sales"] == []


async def test_console_deletes_mutes_and_bans_and_viewers_see_it(
    page_server: PageServerFactory, open_page: PageFactory, clients: ClientsFactory
) -> None:
    server = await page_server()
    console = await open_console(open_page, server)
    room = console.locator("#room-demo")
    bo = await open_page(server, "watch.html?room=demo&name=Bo")
    cy = await open_page(server, "watch.html?room=demo&name=Cy", width=390, height=844)
    await helpers.sign_in(bo, "Bo")
    await helpers.sign_in(cy, "Cy")

    await page_chat(bo, "Is the blue one in stock?")
    await page_chat(bo, "buy followers at example.test")
    await page_chat(cy, "Hello from Cy")
    spam = room.locator(".msg", has_text="buy followers at example.test")
    await expect(room.locator(".msg-text")).to_have_text(
        ["Is the blue one in stock?", "buy followers at example.test", "Hello from Cy"]
    )
    for page in (bo, cy):
        await expect(page.locator("#feed .msg-text", has_text="buy followers")).to_have_count(1)

    # Delete, from the message's own button: gone from both viewer pages.
    await spam.get_by_role("button", name="Delete message from Bo").click()
    await expect(spam).to_have_count(0)
    for page in (bo, cy):
        await expect(page.locator("#feed .msg-text")).to_have_text(
            ["Is the blue one in stock?", "Hello from Cy"]
        )

    # Mute Cy for 10 minutes, from the author's dialog.
    await (
        room.locator(".msg", has_text="Hello from Cy")
        .get_by_role("button", name="Mute or ban Cy")
        .click()
    )
    dialog = console.get_by_role("dialog", name="Moderate Cy")
    await expect(dialog).to_contain_text("demo-viewer-cy")
    await dialog.get_by_role("button", name="10 min", exact=True).click()
    await expect(dialog).to_be_hidden()
    await expect(room.locator("[data-role=note]")).to_have_text("Cy is muted for 10 min.")
    await expect(cy.locator("#composer-hint")).to_contain_text("A moderator muted you until")
    await cy.locator("#chat-text").fill("can I still talk?")
    await cy.locator("#chat-text").press("Enter")
    await expect(cy.locator("#composer-hint")).to_contain_text("You are muted until")
    assert await cy.locator("#feed .msg-text", has_text="can I still talk").count() == 0

    # Ban Bo: Bo's page is told and stops getting the room.
    await (
        room.locator(".msg", has_text="Is the blue one")
        .get_by_role("button", name="Mute or ban Bo")
        .click()
    )
    await (
        console.get_by_role("dialog", name="Moderate Bo")
        .get_by_role("button", name="Ban from the room")
        .click()
    )
    await expect(bo.locator("#composer-hint")).to_have_text(
        "A moderator removed you from this room."
    )
    bo_client = await clients(server, token("demo-viewer-bo", name="Bo"))
    with pytest.raises(ClientError) as refused:
        await bo_client.join("demo")
    assert refused.value.code == "banned"

    # The log says who did what to whom; the ban's entry offers Unban.
    log = room.locator(".log-list .log-entry")
    await expect(log.first).to_contain_text("Demo Moderator banned Bo")
    await expect(log.nth(1)).to_contain_text("Demo Moderator muted Cy for 10 min")
    await expect(log.nth(2)).to_contain_text(
        "Demo Moderator deleted a message by Bo: “buy followers at example.test”"
    )
    await log.first.get_by_role("button", name="Unban Bo").click()
    await expect(log.first).to_contain_text("Demo Moderator unbanned Bo")
    await expect(room.locator(".log-list button", has_text="Unban")).to_have_count(0)
    snapshot = await bo_client.join("demo")
    assert snapshot["room"] == "demo"


async def test_console_filter_flags_approve_slow_mode_and_log(
    page_server: PageServerFactory, open_page: PageFactory, clients: ClientsFactory
) -> None:
    server = await page_server()
    console = await open_console(open_page, server)
    room = console.locator("#room-demo")
    viewer = await open_page(server, "watch.html?room=demo&name=Dee")
    await helpers.sign_in(viewer, "Dee")

    # The word filter: add a term per action.
    for term, action in (("spam", "flag"), ("darn", "mask"), ("scam", "block")):
        await room.get_by_label("Term", exact=True).fill(term)
        await room.get_by_label("Action").select_option(action)
        await room.get_by_role("button", name="Add", exact=True).click()
        await expect(room.locator(f'.term[data-term="{term}"] .term-action')).to_have_attribute(
            "data-action", action
        )
    await expect(room.locator(".term .term-text")).to_have_text(["darn", "scam", "spam"])

    eve = await clients(server, token("demo-viewer-eve", name="Eve"))
    fay = await clients(server, token("demo-viewer-fay", name="Fay"))
    # block: refused; mask: starred for everyone; flag: published and queued.
    with pytest.raises(ClientError) as refused:
        await eve.request("chat", room="demo", text="great S.C.A.M deal")
    assert refused.value.code == "blocked_content"
    await page_chat(viewer, "darn, missed it", shown="****, missed it")
    await expect(viewer.locator("#feed .msg-text")).to_have_text(["****, missed it"])
    first = await eve.request("chat", room="demo", text="cheap spam here")
    second = await fay.request("chat", room="demo", text="more SPAM please")
    queue = room.locator(".flag-list .flag-item")
    await expect(queue).to_have_count(2)
    await expect(queue.first).to_contain_text("Eve")
    await expect(queue.first.locator(".flag-text")).to_have_text("cheap spam here")
    await expect(queue.first.locator(".term-action")).to_have_text("spam")
    await expect(console.locator("#tab-demo .tab-badge")).to_have_text("2")
    await expect(room.locator(f'.msg.flagged[data-msg-id="{first["msg_id"]}"]')).to_have_count(1)
    await expect(viewer.locator("#feed .msg-text", has_text="spam")).to_have_count(2)

    # Approve keeps the message; Delete from the queue removes it for the viewers.
    await queue.first.get_by_role("button", name="Approve the message from Eve").click()
    await expect(queue).to_have_count(1)
    await expect(room.locator(f'[data-msg-id="{first["msg_id"]}"]')).not_to_have_class(
        re.compile(r"flagged")
    )
    await queue.first.get_by_role("button", name="Delete the message from Fay").click()
    await expect(queue).to_have_count(0)
    await expect(room.locator("[data-role=no-flags]")).to_be_visible()
    await expect(console.locator("#tab-demo .tab-badge")).to_be_hidden()
    await expect(viewer.locator(f'[data-msg-id="{second["msg_id"]}"]')).to_have_count(0)
    await expect(viewer.locator("#feed .msg-text")).to_have_text(
        ["****, missed it", "cheap spam here"]
    )

    # Slow mode: the console shows what the server says; a second chat is refused.
    await room.get_by_role("button", name="30 s", exact=True).click()
    await expect(room.get_by_role("button", name="30 s", exact=True)).to_have_attribute(
        "aria-pressed", "true"
    )
    await expect(room.locator("[data-role=slow-text]")).to_have_text(
        "One message per 30 s per person"
    )
    gus = await clients(server, token("demo-viewer-gus", name="Gus"))
    await gus.request("chat", room="demo", text="first")
    with pytest.raises(ClientError) as slowed:
        await gus.request("chat", room="demo", text="second")
    assert slowed.value.code == "slow_mode"
    # Remove a term; the pinned announcement reaches viewers.
    await room.get_by_role("button", name="Remove “darn” from the filter").click()
    await expect(room.locator(".term .term-text")).to_have_text(["scam", "spam"])
    await room.get_by_label("New announcement").fill("Be kind in the chat, please")
    await room.get_by_role("button", name="Pin", exact=True).click()
    await expect(viewer.locator("#announcement")).to_have_text("Be kind in the chat, please")

    # The log, as a console opened now loads it (GET .../modlog), newest first.
    expected = [
        "Demo Moderator announced “Be kind in the chat, please”",
        "Demo Moderator removed “darn” in the word filter",
        "Demo Moderator set slow mode to 30 s",
        "Demo Moderator deleted a message by Fay: “more SPAM please”",
        "Demo Moderator approved a message by Eve: “cheap spam here”",
        "Demo Moderator added “scam” (Block) in the word filter",
        "Demo Moderator added “darn” (Mask) in the word filter",
        "Demo Moderator added “spam” (Flag) in the word filter",
    ]
    time_prefix = re.compile(r"^\d\d:\d\d:\d\d\s*(?:[AP]M)?\s*")
    entries = console.locator("#room-demo .log-entry")
    await expect(entries).to_have_count(len(expected))
    assert [time_prefix.sub("", t) for t in await entries.all_inner_texts()] == expected
    # A console opened later loads the same log. It has never seen Fay's deleted
    # message, and the log entry names only the message id (see the report).
    later = await open_console(open_page, server)
    entries = later.locator("#room-demo .log-entry")
    await expect(entries).to_have_count(len(expected))
    expected[3] = f"Demo Moderator deleted message {second['msg_id']}"
    assert [time_prefix.sub("", t) for t in await entries.all_inner_texts()] == expected
    modlog = await api(server, "/api/rooms/demo/modlog", HOST)
    assert [e["action"] for e in modlog["entries"]] == [
        "filter",
        "filter",
        "filter",
        "approve",
        "delete",
        "slow",
        "filter",
        "announce",
    ]


async def test_console_moderates_several_rooms_on_one_connection(
    page_server: PageServerFactory, open_page: PageFactory, clients: ClientsFactory
) -> None:
    server = await page_server()
    night_host = token("demo-host", "host", rooms=["demo", "night"], name="Demo Host")
    host = await clients(server, night_host)
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"http://127.0.0.1:{server.port}/api/rooms",
            json={"title": "Night market", "id": "night"},
            headers={"Authorization": f"Bearer {night_host}"},
        ) as resp,
    ):
        assert resp.status == 201
    await host.request("room.start", room="night")

    sockets: list[str] = []

    async def count_sockets(page: Page) -> None:
        page.on("websocket", lambda ws: sockets.append(ws.url))

    console = await open_console(open_page, server, admin=True, before=count_sockets)
    await console.get_by_role("button", name="Open Demo live show").click()
    await console.get_by_role("button", name="Open Night market").click()
    tabs = console.get_by_role("tab")
    await expect(tabs).to_have_text(["Demo live show", "Night market"])
    await expect(tabs.nth(1)).to_have_attribute("aria-selected", "true")
    assert "rooms=demo%2Cnight" in console.url or "rooms=demo,night" in console.url
    await helpers.until_true(
        console, "['demo', 'night'].every(r => window.__live.client.roomState(r)?.joined)"
    )
    assert len(sockets) == 1, sockets  # both rooms on the one connection

    ana = await clients(server, token("demo-viewer-ana", name="Ana"))
    await ana.request("chat", room="demo", text="hello demo")
    await ana.request("chat", room="night", text="hello night")
    await expect(console.locator("#room-night .msg-text")).to_have_text(["hello night"])
    await expect(console.locator("#room-night")).to_be_visible()
    await expect(console.locator("#room-demo")).to_be_hidden()
    # Keyboard: arrow keys move between the tabs.
    await tabs.nth(1).focus()
    await console.keyboard.press("ArrowLeft")
    await expect(tabs.nth(0)).to_have_attribute("aria-selected", "true")
    await expect(console.locator("#room-demo .msg-text")).to_have_text(["hello demo"])

    # Acting in one room leaves the other alone.
    await (
        console.locator("#room-demo .msg", has_text="hello demo")
        .get_by_role("button", name="Delete message from Ana")
        .click()
    )
    await expect(console.locator("#room-demo .msg")).to_have_count(0)
    await tabs.nth(1).click()
    await expect(console.locator("#room-night .msg-text")).to_have_text(["hello night"])
    await console.locator("#room-night").get_by_role("button", name="10 s", exact=True).click()
    await expect(console.locator("#room-night [data-role=slow-tag]")).to_have_text("Slow mode 10 s")
    await expect(console.locator("#room-demo [data-role=slow-tag]")).to_be_hidden()
    assert (await api(server, "/api/rooms/night/modlog", HOST))["entries"][0]["action"] == "slow"
    assert [
        e["action"] for e in (await api(server, "/api/rooms/demo/modlog", HOST))["entries"]
    ] == ["delete"]

    # Leaving a room closes its tab and stops its events.
    await console.locator("#room-night").get_by_role("button", name="Leave room").click()
    await expect(tabs).to_have_text(["Demo live show"])
    assert await console.evaluate("window.__live.client.roomState('night')") is None


async def test_studio_and_console_show_reconnecting_and_resume(
    page_server: PageServerFactory, open_page: PageFactory, clients: ClientsFactory
) -> None:
    server = await page_server()
    links = {"studio": helpers.Link(), "console": helpers.Link()}
    studio = await open_studio(open_page, server, before=links["studio"].install)
    console = await open_console(open_page, server, before=links["console"].install)
    bo = await clients(server, token("demo-viewer-bo", name="Bo"))
    cy = await clients(server, token("demo-viewer-cy", name="Cy"))
    await bo.request("chat", room="demo", text="before the drop")
    said = ["before the drop"]
    await expect(studio.locator("#feed .msg-text")).to_have_text(said)
    await expect(console.locator("#room-demo .msg-text")).to_have_text(said)

    for link in links.values():
        await link.cut()
    for page in (studio, console):
        await expect(page.locator("#conn")).to_have_text("Reconnecting…")
        await expect(page.locator("#conn")).to_be_visible()
        await expect(page.locator("#conn")).to_have_attribute("data-state", "reconnecting")
    await expect(studio.locator("#figures-age")).to_have_text("Paused while reconnecting")
    for who, text in ((cy, "while away 1"), (bo, "while away 2"), (cy, "while away 3")):
        await who.request("chat", room="demo", text=text)
        said.append(text)
    await helpers.screenshot(studio, "studio-reconnecting")
    await helpers.screenshot(console, "console-reconnecting")

    for link in links.values():
        link.up = True
    for page in (studio, console):
        await expect(page.locator("#conn")).to_be_hidden(timeout=15_000)
        await helpers.wait_live_page(page)
    # Resumed with since/epoch: every message once, in order, on both pages.
    await bo.request("chat", room="demo", text="after the resume")
    said.append("after the resume")
    await expect(studio.locator("#feed .msg-text")).to_have_text(said)
    await expect(console.locator("#room-demo .msg-text")).to_have_text(said)
    # The staff state survived too: the console still moderates.
    await console.locator("#room-demo").get_by_role("button", name="5 s", exact=True).click()
    await expect(console.locator("#room-demo [data-role=slow-tag]")).to_have_text("Slow mode 5 s")
    await expect(studio.locator("#slow-state")).to_have_text("Slow mode: 5 s")


async def test_screenshots_studio_and_console_desktop_and_phone(
    page_server: PageServerFactory, open_page: PageFactory, clients: ClientsFactory
) -> None:
    server = await page_server()
    sale = await helpers.dress_room(server, clients)
    mod = await clients(server, token("mod-1", "moderator", rooms=["demo"], name="Mo"))
    await mod.request("mod.filter", room="demo", add=["spam"], action="flag")
    await mod.request("mod.filter", room="demo", add=["darn"], action="mask")
    lines = [
        ("Bo", "Hi from Lisbon!"),
        ("Cy", "Is the mug dishwasher safe?"),
        ("Dee", "Just ordered two, can't wait"),
        ("Eve", "cheap spam over here"),
        ("Fay", "darn, the blue one sold out"),
        ("Gus", "What size is it? 350 ml?"),
    ]
    for name, text in lines:
        client = await helpers.chatter(server, clients, name, text, likes=9)
        if name in ("Bo", "Dee", "Gus"):
            reply = await client.request(
                "order", room="demo", sale=sale["id"], qty=2, key=f"{name}-1"
            )
            if name != "Gus":
                await server.app[SERVICE].confirm_payment(reply["order"]["id"])
    await mod.request("mod.mute", room="demo", user="demo-viewer-cy", seconds=600)

    studio = await open_studio(open_page, server)
    await studio.locator("#camera-toggle").click()
    await expect(studio.locator("#camera-state")).to_have_text(re.compile(r"^Camera on"))
    await expect(studio.locator("#st-units")).to_have_text("4")
    await expect(studio.locator("#st-revenue")).to_have_text("$48.00")
    await expect(studio.locator("#feed .msg")).to_have_count(len(lines))
    await helpers.until_true(studio, "document.querySelector('#preview').videoWidth > 0")
    await helpers.screenshot(studio, "studio-desktop")

    phone = await open_studio(open_page, server, width=390, height=844, scale=2)
    await expect(phone.locator("#st-units")).to_have_text("4")
    await helpers.screenshot(phone, "studio-phone")
    await helpers.screenshot(phone, "studio-phone-full", full_page=True)
    # Phone layout: one column, nothing wider than the screen.
    assert await phone.evaluate("document.documentElement.scrollWidth") <= 390
    boxes = {}
    for name in ("#camera-card", "#figures-card", "#products-card", "#sales-card", "#chat-card"):
        box = await phone.locator(name).bounding_box()
        assert box is not None, name
        assert box["width"] == pytest.approx(390, abs=1), name
        boxes[name] = box
    ys = [b["y"] for b in boxes.values()]
    assert ys == sorted(ys)

    console = await open_console(open_page, server)
    await expect(console.locator("#room-demo .flag-item")).to_have_count(1)
    # filter twice, the host's announcement, the mute
    await expect(console.locator("#room-demo .log-entry")).to_have_count(4)
    await console.locator("#room-demo").get_by_role("button", name="10 s", exact=True).click()
    await expect(console.locator("#room-demo .log-entry")).to_have_count(5)
    await helpers.screenshot(console, "console-desktop")
    await (
        console.locator("#room-demo .msg", has_text="Lisbon")
        .get_by_role("button", name="Mute or ban Bo")
        .click()
    )
    await expect(console.get_by_role("dialog", name="Moderate Bo")).to_be_visible()
    await helpers.screenshot(console, "console-desktop-dialog")
    await console.keyboard.press("Escape")

    phone_console = await open_console(open_page, server, width=390, height=844, scale=2)
    await expect(phone_console.locator("#room-demo .flag-item")).to_have_count(1)
    await helpers.screenshot(phone_console, "console-phone")
    await helpers.screenshot(phone_console, "console-phone-full", full_page=True)
    assert await phone_console.evaluate("document.documentElement.scrollWidth") <= 390
