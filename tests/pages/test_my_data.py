"""Each user's data in the pages (issue 15): a viewer downloads their data from the
watch page, then erases it; their message leaves another viewer's screen, and nothing
of theirs is left in the server's Redis (every key's name and value searched) or in
the files it wrote."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from playwright.async_api import expect

from tests.pages import helpers
from tests.pages.conftest import PageFactory, PageServerFactory
from tests.test_privacy_ws import _everything_in_redis

pytestmark = pytest.mark.asyncio(loop_scope="session")

USER = "demo-viewer-zoeprivate"


def _read(path: Path) -> bytes:
    return path.read_bytes()


def _files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


async def test_a_viewer_exports_then_erases_their_data(
    page_server: PageServerFactory, open_page: PageFactory, redis_url: str, tmp_path: Path
) -> None:
    media = tmp_path / "media"
    server = await page_server(redis_url=redis_url, media_dir=str(media))
    zoe = await open_page(server, "watch.html?room=demo&name=ZoePrivate")
    other = await open_page(server, "watch.html?room=demo", width=390, height=844)
    await helpers.sign_in(zoe, "ZoePrivate")
    await zoe.locator("#chat-text").fill("my secret plans for the weekend")
    await zoe.locator("#chat-send").click()
    said = other.locator("#feed .msg", has_text="my secret plans")
    await expect(said).to_have_count(1)

    await zoe.get_by_role("button", name="Your data").click()
    async with zoe.expect_download() as got:
        await zoe.get_by_role("button", name="Download my data").click()
    doc = json.loads(_read(Path(await (await got.value).path())))
    assert doc["user"]["id"] == USER
    assert [c["text"] for c in doc["rooms"]["demo"]["chats"]] == ["my secret plans for the weekend"]
    await helpers.screenshot(zoe, "watch-my-data")

    await zoe.get_by_role("button", name="Erase my data").click()
    await zoe.get_by_role("button", name="Erase my data").click()  # the confirmation's
    await expect(zoe.locator("#composer-hint")).to_have_text("Your data is erased.")
    await expect(said).to_have_count(0)  # gone from the other viewer's screen
    for name, values in await _everything_in_redis(redis_url):
        assert USER not in name and USER.encode() not in values, name
        assert b"my secret plans" not in values, name
    for path in _files(tmp_path):  # what the server wrote (its media directory)
        assert USER.encode() not in _read(path), path
