"""Reports in the pages (issue 15): a viewer reports a message from the watch page and
the console's review queue shows it, with its reason and its neighbours."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.async_api import expect

from tests.pages import helpers
from tests.pages.conftest import ClientsFactory, PageFactory, PageServerFactory
from tests.pages.test_studio_console import open_console

pytestmark = pytest.mark.asyncio(loop_scope="session")


def _read(path: Path) -> str:
    return path.read_text()


async def test_a_viewer_reports_a_message_and_the_console_shows_it(
    page_server: PageServerFactory, open_page: PageFactory, clients: ClientsFactory
) -> None:
    server = await page_server()
    console = await open_console(open_page, server)
    bo = await helpers.chatter(server, clients, "Bo", "hello all", 1)
    for text in ("BUY FOLLOWERS at scam.example", "nice"):
        await bo.request("chat", room="demo", text=text)
    ana = await open_page(server, "watch.html?room=demo&name=Ana", width=390, height=844)
    await helpers.sign_in(ana, "Ana")
    bad = ana.locator("#feed .msg", has_text="BUY FOLLOWERS")
    await bad.get_by_role("button", name="Report the message from").click()
    dialog = ana.locator("#report-dialog")
    await expect(dialog).to_be_visible()
    await dialog.locator("#report-reason").select_option("fraud")
    await dialog.locator("#report-note").fill("a scam link")
    await helpers.screenshot(ana, "watch-report-dialog-phone")
    await dialog.get_by_role("button", name="Send report").click()
    await expect(ana.locator("#composer-hint")).to_have_text(
        "Thank you: the moderators will look at it."
    )
    item = console.locator(".flag-item", has_text="BUY FOLLOWERS")
    await expect(item).to_be_visible()
    await expect(item.locator(".report-count")).to_have_text("Reported ×1")
    await expect(item.locator(".report-reason")).to_have_text("Fraud")
    await expect(item.locator(".flag-note")).to_have_text("Reporter's note: a scam link")
    await expect(item.locator(".flag-context li")).to_have_count(3)
    await helpers.screenshot(console, "console-report")
    await item.get_by_role("button", name="Delete the message from").click()
    await expect(item).to_have_count(0)
    await expect(ana.locator("#feed .msg", has_text="BUY FOLLOWERS")).to_have_count(0)
    async with console.expect_download() as got:  # the chat, with what was done to it
        await console.get_by_role("button", name="Export the chat (CSV)").click()
    exported = _read(Path(await (await got.value).path()))
    assert "BUY FOLLOWERS at scam.example" in exported and "deleted by" in exported
