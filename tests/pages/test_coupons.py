"""Live coupons in the pages (issue 14): the studio drops one, a viewer claims it, the
console's log says so."""

from __future__ import annotations

import pytest
from playwright.async_api import expect

from tests.pages import helpers
from tests.pages.conftest import PageFactory, PageServerFactory
from tests.pages.test_studio_console import open_console, open_studio

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_a_host_drops_a_coupon_and_a_viewer_claims_it(
    page_server: PageServerFactory, open_page: PageFactory
) -> None:
    server = await page_server()
    studio = await open_studio(open_page, server)
    console = await open_console(open_page, server)
    await studio.locator("#cf-value").fill("3.00")
    await studio.locator("#cf-quantity").fill("2")
    await studio.locator("#cf-min").fill("10.00")
    await studio.get_by_role("button", name="Drop coupon").click()
    dropped = studio.locator("#coupon-list .coupon-item")
    await expect(dropped).to_have_count(1)
    await expect(dropped.locator(".coupon-left")).to_have_text("0 of 2 claimed")

    ana = await open_page(server, "watch.html?room=demo&name=Ana")
    phone = await open_page(server, "watch.html?room=demo&name=Bo", width=390, height=844)
    card = ana.locator("#coupon-list .coupon")
    await expect(card).to_have_count(1)
    await expect(card.locator(".coupon-what")).to_have_text("$3.00 off orders of $10.00 or more")
    await expect(card.get_by_role("button", name="Claim")).to_be_disabled()  # a guest
    await helpers.sign_in(ana, "Ana")
    await card.get_by_role("button", name="Claim").click()
    await expect(ana.locator("#coupon-result")).to_have_text(
        "Coupon claimed! It is yours for this show."
    )
    await expect(card.get_by_role("button", name="Claimed")).to_be_disabled()
    await expect(dropped.locator(".coupon-left")).to_have_text("1 of 2 claimed")
    await expect(phone.locator("#coupon-list .coupon-left")).to_have_text("1 left")
    await helpers.screenshot(ana, "watch-coupon-claimed")
    await helpers.screenshot(phone, "watch-coupon-phone")
    await helpers.screenshot(studio, "studio-coupons")
    log = console.locator(".log-list").first
    await expect(log).to_contain_text("dropped a coupon: 3.00 off, 2 of them")

    await studio.get_by_role("button", name="Stop the coupon $3.00 off").click()
    await expect(card).to_have_count(0)
    await expect(studio.locator("#no-coupons")).to_be_visible()
