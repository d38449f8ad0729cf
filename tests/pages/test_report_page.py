"""The show's report in the pages (issue 15): the studio's chart and link, and the
report page with its figures, products and minutes, at desktop and phone size."""

from __future__ import annotations

import asyncio
import time

import pytest
from playwright.async_api import expect

from livecommerce.http.keys import SERVICE
from tests.conftest import HOST
from tests.pages import helpers
from tests.pages.conftest import ClientsFactory, PageFactory, PageServerFactory
from tests.pages.helpers import MUG
from tests.pages.test_studio_console import open_studio

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_the_report_page_loads_with_its_chart(
    page_server: PageServerFactory, open_page: PageFactory, clients: ClientsFactory
) -> None:
    server = await page_server()
    await helpers.put_product(server, "mug-01", MUG, 1800)
    host = await clients(server, HOST)
    await host.join("demo")  # the room's channel: its hub keeps the minutes
    await asyncio.sleep(0.3)
    await helpers.chatter(server, clients, "Ana", "hello", 2)
    sale = await helpers.open_sale(host, stock=5, limit=2)
    bo = await helpers.chatter(server, clients, "Bo", "I want one", 1)  # 2 chats in all
    await bo.request("order", room="demo", sale=sale["id"], qty=1, key="k1")
    svc = server.app[SERVICE]
    svc.hub._clock = lambda: time.time() + 61  # a minute ends: the series has a point
    for _ in range(100):
        if await svc.backends.counters.minutes("demo"):
            break
        await asyncio.sleep(0.05)
    assert await svc.backends.counters.minutes("demo")

    studio = await open_studio(open_page, server)
    await expect(studio.locator("#st-chart svg.minute-chart rect")).to_have_count(1)
    async with studio.context.expect_page() as opened:
        await studio.locator("#report-link").click()
    report = await opened.value
    await expect(report.locator("#title")).to_have_text("Demo live show: report")
    await expect(report.locator('[data-figure="Orders"]')).to_have_text("1")
    await expect(report.locator('[data-figure="Chats"]')).to_have_text("2")
    await expect(report.locator("#chart svg.minute-chart polyline")).to_have_count(1)
    await expect(report.locator("#products tr", has_text=MUG)).to_contain_text("$12.00")
    await expect(report.locator("#minutes tr")).to_have_count(1)
    await helpers.screenshot(report, "report-page", full_page=True)
    phone = await open_page(server, "report.html?room=demo", width=390, height=844, wait_live=False)
    await expect(phone.locator("#note")).to_contain_text("Sign in from the studio")
    await phone.get_by_role("button", name="Sign in as the demo host").click()
    await expect(phone.locator('[data-figure="Orders"]')).to_have_text("1")
    await helpers.screenshot(phone, "report-page-phone", full_page=True)
