"""Giveaways in the pages (issue 14): the studio starts one, viewers enter by button
and by keyword, the host draws, a viewer checks the draw in the browser, the winner's
prize is in their orders, the console's log says so."""

from __future__ import annotations

import pytest
from playwright.async_api import expect

from tests.pages import helpers
from tests.pages.conftest import PageFactory, PageServerFactory
from tests.pages.helpers import MUG
from tests.pages.test_studio_console import open_console, open_studio

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_a_giveaway_is_run_and_its_draw_checked_in_the_browser(
    page_server: PageServerFactory, open_page: PageFactory
) -> None:
    server = await page_server()
    await helpers.put_product(server, "mug-01", MUG, 1800)
    studio = await open_studio(open_page, server)
    console = await open_console(open_page, server)
    await studio.locator("#gf-product").select_option("mug-01")
    await studio.locator("#gf-winners").fill("2")
    await studio.get_by_role("button", name="Start giveaway").click()
    await expect(studio.locator("#gw-live")).to_be_visible()
    await expect(studio.locator("#gw-prize")).to_have_text(MUG)

    ana = await open_page(server, "watch.html?room=demo&name=Ana")
    phone = await open_page(server, "watch.html?room=demo&name=Bo", width=390, height=844)
    card = ana.locator("#giveaway")
    await expect(card).to_be_visible()
    await expect(card.locator("#gw-prize")).to_have_text(MUG)
    await expect(card.get_by_role("button", name="Enter")).to_be_disabled()  # a guest
    await expect(card.locator("#gw-rule")).to_contain_text("still watching at the draw")
    await helpers.sign_in(ana, "Ana")
    await card.get_by_role("button", name="Enter").click()
    await expect(card.locator("#gw-result")).to_have_text("You're in. Good luck!")
    await expect(card.get_by_role("button", name="Entered")).to_be_disabled()
    await helpers.sign_in(phone, "Bo")
    await phone.locator("#giveaway").get_by_role("button", name="Enter").click()
    await expect(studio.locator("#gw-entries")).to_have_text("2 entries")
    await expect(phone.locator("#gw-entries")).to_have_text("2 entries")
    await helpers.screenshot(ana, "watch-giveaway-entered")
    await helpers.screenshot(phone, "watch-giveaway-phone")
    await helpers.screenshot(studio, "studio-giveaway")

    await studio.get_by_role("button", name="Draw now").click()
    await expect(studio.locator("#gw-winners")).to_contain_text("demo-viewer-ana")
    await expect(studio.locator("#gw-winners")).to_contain_text("demo-viewer-bo")
    await expect(card.locator("#gw-result")).to_have_text("You won! Your prize is in your orders.")
    await expect(ana.locator("#order-list .order .order-what")).to_have_text(f"Prize: {MUG} · free")
    await card.get_by_role("button", name="Check the draw").click()
    await expect(card.locator("#gw-verdict")).to_have_text(
        "The draw checks out: 2 of 2 entrants won, as the seed announced at the start decides."
    )
    await helpers.screenshot(ana, "watch-giveaway-checked")
    await phone.locator("#gw-check").click()
    await expect(phone.locator("#gw-verdict")).to_contain_text("The draw checks out")
    await helpers.screenshot(phone, "watch-giveaway-checked-phone")
    log = console.locator(".log-list").first
    await expect(log).to_contain_text(f"started a giveaway of {MUG} for 2 (press Enter)")
    await expect(log).to_contain_text("drew the giveaway")


async def test_a_keyword_giveaway_is_entered_from_the_chat(
    page_server: PageServerFactory, open_page: PageFactory
) -> None:
    server = await page_server()
    studio = await open_studio(open_page, server)
    await studio.locator("#gf-prize").fill("A signed poster")
    await studio.locator("#gf-entry").select_option("keyword")
    await studio.locator("#gf-keyword").fill("Poster")
    await studio.get_by_role("button", name="Start giveaway").click()
    await expect(studio.locator("#gw-how")).to_have_text("Viewers comment “poster” to enter.")
    ana = await open_page(server, "watch.html?room=demo&name=Ana")
    await helpers.sign_in(ana, "Ana")
    card = ana.locator("#giveaway")
    await expect(card.locator("#gw-how")).to_have_text("Comment “poster” to enter.")
    await expect(card.get_by_role("button", name="Enter")).to_be_hidden()
    await ana.locator("#chat-text").fill("poster please!")
    await ana.locator("#chat-send").click()
    await expect(card.locator("#gw-how")).to_have_text("You're in! Stay to the draw to win.")
    await expect(studio.locator("#gw-entries")).to_have_text("1 entry")
    await studio.get_by_role("button", name="Cancel").click()
    await studio.get_by_role("button", name="Cancel giveaway").click()
    await expect(card.locator("#gw-result")).to_have_text("The host cancelled this giveaway.")
    await expect(studio.locator("#giveaway-form")).to_be_visible()
