"""Live auctions in the pages (issue 14): the studio puts a lot under the hammer, two
viewers bid (a late bid sets the clock back), the winner's order is reserved at the
hammer price, the console's log says so."""

from __future__ import annotations

import time

import pytest
from playwright.async_api import expect

from livecommerce.http.keys import SERVICE
from tests.pages import helpers
from tests.pages.conftest import PageFactory, PageServerFactory
from tests.pages.helpers import MUG
from tests.pages.test_studio_console import open_console, open_studio

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_an_auction_with_two_bidders_and_an_extension(
    page_server: PageServerFactory, open_page: PageFactory
) -> None:
    server = await page_server()
    await helpers.put_product(server, "mug-01", MUG, 1800)
    studio = await open_studio(open_page, server)
    console = await open_console(open_page, server)
    ana = await open_page(server, "watch.html?room=demo&name=Ana")
    bo = await open_page(server, "watch.html?room=demo&name=Bo", width=390, height=844)
    await helpers.sign_in(ana, "Ana")
    await helpers.sign_in(bo, "Bo")

    await studio.locator("#af-product").select_option("mug-01")
    await studio.locator("#af-start").fill("10.00")
    await studio.locator("#af-duration").fill("10")  # every bid is a late one
    await studio.get_by_role("button", name="Start auction").click()
    await expect(studio.locator("#au-live")).to_be_visible()

    card = ana.locator("#auction")
    await expect(card.locator("#au-title")).to_have_text(MUG)
    await expect(card.locator("#au-price")).to_have_text("Starting bid $10.00")
    await expect(card.locator("#au-amount")).to_have_value("10.00")
    await card.get_by_role("button", name="Bid").click()
    await expect(card.locator("#au-result")).to_have_text("You're the highest bidder.")
    await expect(studio.locator("#au-leader")).to_have_text("Ana leads")
    await expect(studio.locator("#au-ext")).to_have_text("(1 late-bid extension)")

    phone = bo.locator("#auction")
    await expect(phone.locator("#au-price")).to_have_text("$10.00")
    await expect(phone.locator("#au-amount")).to_have_value("11.00")
    await phone.get_by_role("button", name="Bid").click()
    await expect(phone.locator("#au-leader")).to_have_text("You're the highest bidder")
    await expect(card.locator("#au-leader")).to_have_text("Bo leads")
    await expect(studio.locator("#au-ext")).to_have_text("(2 late-bid extensions)")
    await expect(card.locator("#au-clock")).to_contain_text("a late bid added time")
    await expect(studio.locator("#au-bids")).to_have_text("2 bids")
    await helpers.screenshot(ana, "watch-auction-outbid")
    await helpers.screenshot(bo, "watch-auction-leading-phone")
    await helpers.screenshot(studio, "studio-auction")

    # the extended clock runs out, 11 s early: the server's sweeper ends the lot
    server.app[SERVICE]._clock = lambda: time.time() + 11
    won = "You won at $11.00! Your order is reserved."
    await expect(phone.locator("#au-result")).to_have_text(won, timeout=20_000)
    await expect(card.locator("#au-result")).to_have_text("Sold to Bo for $11.00.")
    await expect(bo.locator("#order-list .order .order-what")).to_have_text(
        f"Won at auction: {MUG} · $11.00"
    )
    await expect(studio.locator("#au-last")).to_have_text(f"{MUG}: sold to Bo for $11.00.")
    await helpers.screenshot(bo, "watch-auction-won-phone")
    await helpers.screenshot(ana, "watch-auction-sold")
    log = console.locator(".log-list").first
    await expect(log).to_contain_text(
        f"started an auction of {MUG} from 10.00 for 10 s (late bids add 10 s)"
    )
