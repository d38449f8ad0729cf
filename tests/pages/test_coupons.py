"""Live coupons in the pages (issue 14): the studio drops one, a viewer claims it, the
console's log says so."""

from __future__ import annotations

import pytest
from playwright.async_api import expect

from tests.conftest import HOST
from tests.pages import helpers
from tests.pages.conftest import ClientsFactory, PageFactory, PageServerFactory
from tests.pages.helpers import MUG
from tests.pages.test_studio_console import open_console, open_studio

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_a_host_drops_a_coupon_and_a_viewer_claims_it_and_buys_with_it(
    page_server: PageServerFactory, open_page: PageFactory, clients: ClientsFactory
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

    # A flash sale of the mug at $12.00: Ana's Buy spends her coupon (the server's pick).
    await helpers.put_product(server, "mug-01", MUG, 1800)
    await helpers.open_sale(await clients(server, HOST), stock=5, limit=2)
    await ana.locator("#buy").click()
    await expect(ana.locator("#buy-result")).to_have_text(
        "Reserved 1! Complete payment before the timer runs out. Your coupon took $3.00 off."
    )
    order = ana.locator("#order-list .order .order-what")
    await expect(order).to_have_text(f"1 × {MUG} · $9.00 (coupon −$3.00)")
    await helpers.screenshot(ana, "watch-coupon-order")
    async with ana.context.expect_page() as opened:
        await ana.locator("#order-list .order a.pay").click()
    checkout = await opened.value
    await expect(checkout.locator("#discount")).to_contain_text("−3.00 USD")
    await expect(checkout.locator("#total")).to_have_text("9.00 USD")
    await helpers.screenshot(checkout, "sandbox-checkout-coupon")

    await studio.get_by_role("button", name="Stop the coupon $3.00 off").click()
    await expect(card).to_have_count(0)
    await expect(studio.locator("#no-coupons")).to_be_visible()
