"""Group buys in the pages (issue 14): the studio sells a product by group, a viewer
opens a group, a second joins from its share link, a third from the list: the group
fills and each of the three has an order at the group price."""

from __future__ import annotations

import pytest
from playwright.async_api import expect

from tests.pages import helpers
from tests.pages.conftest import PageFactory, PageServerFactory
from tests.pages.helpers import MUG
from tests.pages.test_studio_console import open_console, open_studio

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_a_group_of_three_fills_from_three_viewers(
    page_server: PageServerFactory, open_page: PageFactory
) -> None:
    server = await page_server()
    await helpers.put_product(server, "mug-01", MUG, 1800)
    studio = await open_studio(open_page, server)
    console = await open_console(open_page, server)
    await studio.locator("#gd-product").select_option("mug-01")
    await studio.locator("#gd-price").fill("12.00")
    await studio.get_by_role("button", name="Start group buy").click()
    deal = studio.locator("#deal-list .deal-item")
    await expect(deal).to_have_count(1)
    await expect(deal.locator(".deal-figures")).to_have_text("0 forming · 0 filled · 0 failed")

    ana = await open_page(server, "watch.html?room=demo&name=Ana")
    await helpers.sign_in(ana, "Ana")
    card = ana.locator("#groupbuy")
    await expect(card.locator(".deal-what")).to_have_text(f"{MUG}: $12.00 in a group of 3")
    await card.get_by_role("button", name="Start a group").click()
    await expect(card.locator(".group-need")).to_have_text("Your group: 2 more needed")
    await expect(card.locator(".group-left")).to_contain_text("left")
    link = await card.locator("a.share-link").get_attribute("href")
    assert link is not None and "group=" in link
    await expect(deal.locator(".deal-figures")).to_have_text("1 forming · 0 filled · 0 failed")

    invited = link.replace("name=Ana", "name=Bo").split("/", 3)[3]
    bo = await open_page(server, invited, width=390, height=844)  # Bo opens the link
    await helpers.sign_in(bo, "Bo")
    await bo.get_by_role("button", name="Join this group").click()
    await expect(bo.locator("#group-result")).to_have_text("You joined: 1 more needed.")
    await expect(bo.locator("#groupbuy .group-need")).to_have_text("Your group: 1 more needed")
    await helpers.screenshot(bo, "watch-group-joined-phone")
    await helpers.screenshot(ana, "watch-group-forming")

    cy = await open_page(server, "watch.html?room=demo&name=Cy")
    await helpers.sign_in(cy, "Cy")
    other = cy.locator("#groupbuy .group")
    await expect(other.locator(".group-need")).to_have_text(
        "demo-viewer-ana's group: 1 more needed"
    )
    await other.get_by_role("button", name="Join").click()
    done = "Your group is complete! Your order is reserved at the group price."
    for page in (ana, bo, cy):
        await expect(page.locator("#group-result")).to_have_text(done)
        await expect(page.locator("#order-list .order .order-what")).to_have_text(
            f"Group buy: {MUG} · $12.00"
        )
    await expect(deal.locator(".deal-figures")).to_have_text("0 forming · 1 filled · 0 failed")
    await helpers.screenshot(cy, "watch-group-filled")
    await helpers.screenshot(bo, "watch-group-filled-phone")
    await helpers.screenshot(studio, "studio-group-buy")
    async with cy.context.expect_page() as opened:
        await cy.locator("#order-list .order a.pay").click()
    checkout = await opened.value
    await expect(checkout.locator("#source")).to_have_text(
        "A group buy that filled: the group price"
    )
    await expect(checkout.locator("#total")).to_have_text("12.00 USD")
    await helpers.screenshot(checkout, "sandbox-checkout-group")
    log = console.locator(".log-list").first
    await expect(log).to_contain_text(f"started a group buy of {MUG}: 12.00 in groups of 3")
