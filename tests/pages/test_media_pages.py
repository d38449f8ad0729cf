"""The pages' live video in Debian's headless Chromium (its fake camera and microphone:
``--use-fake-device-for-media-stream``, see ``conftest.py``): the studio publishes over
WHIP, viewer pages play over WebRTC (WHEP) or HLS, and the clips feed plays and sells.

What the pages show is checked on the pages; what the server did through its relay
(``app[MEDIA]``) or its HTTP API; that video really plays from the page itself (frames
presented, counted with ``requestVideoFrameCallback``, and the decoder's own counts).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from playwright.async_api import Page, Route, expect

from livecommerce.http.media import MEDIA
from livecommerce.media import MediaRelay
from livecommerce.media.relay import Session, SessionKind
from tests.conftest import HOST, ROOT, LiveServer, until
from tests.pages import helpers
from tests.pages.conftest import MEDIA_URL, ClientsFactory, PageFactory, PageServerFactory
from tests.pages.helpers import MUG, MUG_IMAGE
from tests.pages.test_studio_console import open_studio

pytestmark = pytest.mark.asyncio(loop_scope="session")

# The codec the studio should end up sending: H.264 when this Chromium can encode it
# (Debian's can: OpenH264), else VP8.
EXPECTED_CODEC = (
    "() => (RTCRtpSender.getCapabilities('video')?.codecs ?? [])"
    ".some((c) => c.mimeType === 'video/H264') ? 'H.264' : 'VP8'"
)
# A browser without an H.264 encoder (its sender capabilities lack H.264).
NO_H264_ENCODER = """{
    const capabilities = RTCRtpSender.getCapabilities.bind(RTCRtpSender);
    RTCRtpSender.getCapabilities = (kind) => {
        const caps = capabilities(kind);
        if (kind === "video") caps.codecs = caps.codecs.filter((c) => c.mimeType !== "video/H264");
        return caps;
    };
}"""


VIDEO = "document.querySelector('#video')"
HLS_JS = ROOT / "static" / "vendor" / "hls.min.js"


def need_hls_js() -> None:
    """hls.js is installed (from the npm registry, by scripts/test), or a clear failure."""
    if not HLS_JS.is_file():
        pytest.fail(f"{HLS_JS} is missing: run scripts/test (it installs hls.js with npm)")


def relay(server: LiveServer) -> MediaRelay:
    return server.app[MEDIA]


def refusal(status: int, body: str) -> Callable[[Route], Awaitable[None]]:
    """A route handler answering ``status`` with the JSON ``body``."""

    async def refuse(route: Route) -> None:
        await route.fulfill(status=status, content_type="application/json", body=body)

    return refuse


async def go_live_on_camera(studio: Page) -> str:
    """Press "Go live on camera"; return the state line once live."""
    await studio.get_by_role("button", name="Go live on camera").click()
    state = studio.locator("#broadcast-state")
    await expect(state).to_have_attribute("data-state", "live", timeout=20_000)
    return await state.inner_text()


async def frames(page: Page) -> int:
    """Frames the viewer page's video presented so far."""
    n: int = await page.evaluate("() => window.__live.player.stats.frames")
    return n


async def assert_video_plays(page: Page, via: str) -> None:
    """The viewer page's video shows moving pictures, ``via`` WebRTC or HLS."""
    player = page.locator("#player")
    await expect(player).to_have_attribute("data-state", "playing", timeout=30_000)
    await expect(player).to_have_attribute("data-via", via)
    await expect(page.locator("#player-placeholder")).to_be_hidden()
    before = await frames(page)
    await page.wait_for_function(f"() => window.__live.player.stats.frames > {before + 15}")
    size = await page.evaluate(f"() => [{VIDEO}.videoWidth, {VIDEO}.videoHeight]")
    assert size == [640, 360]
    if via == "webrtc":
        decoded = await page.evaluate(
            """async () => {
                const stats = await window.__live.player._pc.getStats();
                const inbound = [...stats.values()].find(
                    (s) => s.type === "inbound-rtp" && s.kind === "video");
                return inbound?.framesDecoded ?? 0;
            }"""
        )
        assert decoded > 15
    else:
        decoded = await page.evaluate(f"() => {VIDEO}.getVideoPlaybackQuality().totalVideoFrames")
        assert decoded > 15


async def test_studio_goes_live_on_camera_and_stops(
    page_server: PageServerFactory, open_page: PageFactory
) -> None:
    server = await page_server()
    studio = await open_studio(open_page, server)
    state = studio.locator("#broadcast-state")
    await expect(state).to_have_text("Not broadcasting")
    await expect(studio.locator("#broadcast-stop")).to_be_hidden()

    text = await go_live_on_camera(studio)
    codec = await studio.evaluate(EXPECTED_CODEC)
    assert text == f"Live on camera: viewers see you ({codec} + Opus)"
    await expect(studio.locator("#camera-state")).to_have_text("Camera on · mic on")
    await expect(studio.get_by_role("button", name="Go live on camera")).to_be_hidden()
    # The server has the room's publisher, sending the codec the page says.
    publisher = relay(server).publisher("demo")
    assert publisher is not None
    await until(lambda: publisher.state == "connected", "the publisher's connection")
    names = {kind: c.name for kind, c in publisher.codecs.items()}
    assert names == {"video": "H264" if codec == "H.264" else "VP8", "audio": "opus"}
    await helpers.screenshot(studio, "studio-broadcasting")

    await studio.get_by_role("button", name="Stop the camera broadcast").click()
    await expect(state).to_have_text("Broadcast stopped")
    await until(lambda: relay(server).publisher("demo") is None, "the stream's end")
    # The preview stays on; going live again works at once.
    await expect(studio.locator("#camera-state")).to_have_text("Camera on · mic on")
    await go_live_on_camera(studio)
    await until(lambda: relay(server).publisher("demo") is not None, "a new publisher")

    # Turning the camera off ends the broadcast too.
    await studio.locator("#camera-toggle").click()
    await expect(state).to_have_text("Broadcast stopped")
    await until(lambda: relay(server).publisher("demo") is None, "the stream's end")


def offered_video(sdp: str) -> list[str]:
    """The video codecs of an SDP offer, in the order of its ``m=video`` line, with
    their H.264 profile and packetization mode (``H264/42e01f/1``)."""
    section = sdp.split("m=video ", 1)[1].split("\r\nm=", 1)[0]
    payloads = section.split("\r\n", 1)[0].split(" ")[2:]  # after port and protocol
    names = dict(re.findall(r"a=rtpmap:(\d+) ([^/]+)/", section))
    fmtp = dict(re.findall(r"a=fmtp:(\d+) (.*)", section))
    out = []
    for pt in payloads:
        name = names[pt]
        if name == "H264":
            profile = re.search(r"profile-level-id=(\w+)", fmtp[pt])
            mode = re.search(r"packetization-mode=(\d)", fmtp[pt])
            name += f"/{profile and profile[1]}/{mode and mode[1]}"
        out.append(name)
    return out


@pytest.mark.parametrize("encoder", ["h264", "none"])
async def test_studio_prefers_h264_and_falls_back_to_vp8(
    page_server: PageServerFactory, open_page: PageFactory, encoder: str
) -> None:
    server = await page_server()
    studio = await open_studio(
        open_page, server, init_script=NO_H264_ENCODER if encoder == "none" else None
    )
    offers: list[str] = []
    studio.on(
        "request",
        lambda r: offers.append(r.post_data or "") if r.url.endswith("/whip") else None,
    )
    text = await go_live_on_camera(studio)
    (offer,) = offers
    video = [c for c in offered_video(offer) if c != "rtx"]  # each codec's RTX follows it
    if encoder == "h264":  # Debian's Chromium has one (OpenH264)
        # The relay's H.264 profiles first (constrained baseline, then baseline), then
        # VP8: nothing else.
        assert video == ["H264/42e01f/1", "H264/42001f/1", "VP8"]
        assert text == "Live on camera: viewers see you (H.264 + Opus)"
    else:
        assert video == ["VP8"]
        assert text == "Live on camera: viewers see you (VP8 + Opus)"
    publisher = relay(server).publisher("demo")
    assert publisher is not None
    assert publisher.codecs["video"].name == ("H264" if encoder == "h264" else "VP8")


async def test_studio_says_why_it_cannot_go_live(
    page_server: PageServerFactory, open_page: PageFactory
) -> None:
    server = await page_server()
    first = await open_studio(open_page, server)
    await go_live_on_camera(first)

    # A second studio of the same show: 409, the other publisher.
    second = await open_studio(open_page, server)
    await second.get_by_role("button", name="Go live on camera").click()
    state = second.locator("#broadcast-state")
    await expect(state).to_have_attribute("data-state", "failed")
    await expect(state).to_contain_text("another device or tab is already broadcasting")
    await expect(second.get_by_role("button", name="Try again")).to_be_visible()
    await helpers.screenshot(second, "studio-broadcast-conflict")
    first_publisher = relay(server).publisher("demo")
    assert first_publisher is not None and not first_publisher.closed

    # Refusals of the sign-in: the server's answers, as the page shows them.
    for status, code, shown in (
        (401, "unauthorized", "the server did not accept your sign-in"),
        (403, "forbidden", "only the host of this show may broadcast"),
        (404, "not_found", "Broadcast failed: no such room"),
    ):
        body = json.dumps({"error": {"code": code, "message": "no such room"}})
        await second.route("**/api/rooms/demo/whip", refusal(status, body))
        await second.get_by_role("button", name="Try again").click()
        await expect(state).to_contain_text(shown)
        await second.unroute("**/api/rooms/demo/whip")

    # The camera refused: said so; nothing reaches the server.
    blocked = await open_studio(
        open_page,
        server,
        init_script="""navigator.mediaDevices.getUserMedia = async () => {
            throw new DOMException("Permission denied", "NotAllowedError");
        };""",
    )
    whip: list[str] = []
    blocked.on("request", lambda r: whip.append(r.url) if "/whip" in r.url else None)
    await blocked.get_by_role("button", name="Go live on camera").click()
    await expect(blocked.locator("#broadcast-state")).to_have_text(
        "Camera blocked: allow the camera (and microphone) for this site in the browser, "
        "then try again."
    )
    await expect(blocked.locator("#camera-state")).to_have_text(
        "Camera blocked: allow it in the browser"
    )
    assert whip == []


async def test_watch_page_plays_over_webrtc_and_waits_while_the_host_is_off(
    page_server: PageServerFactory, open_page: PageFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = await page_server()
    viewer = await open_page(server)
    phone = await open_page(server, width=390, height=844, scale=2)
    asked: list[str] = []
    for page in (viewer, phone):
        page.on("request", lambda r: asked.append(r.url) if MEDIA_URL.search(r.url) else None)
    # Nobody publishes: the placeholder, and the page asks for no stream (the room's
    # snapshot says there is none; open_page fails the test on any console error).
    for page in (viewer, phone):
        await expect(page.locator("#player")).to_have_attribute("data-state", "waiting")
        await expect(page.locator("#player-message")).to_have_text("The host is not live yet")
        await expect(page.locator("#video-state")).to_have_text("The host is not live yet")
    await asyncio.sleep(2.5)  # the old page had tried twice by now
    assert asked == []
    assert await viewer.evaluate("() => window.__live.player.stats.attempts") == 0
    await helpers.screenshot(viewer, "watch-video-waiting")
    await helpers.screenshot(phone, "watch-video-waiting-phone")

    # The host goes live: media.started reaches the pages, which play without a reload.
    studio = await open_studio(open_page, server)
    await go_live_on_camera(studio)
    codec = await studio.evaluate(EXPECTED_CODEC)
    await assert_video_plays(viewer, "webrtc")
    await assert_video_plays(phone, "webrtc")
    assert not [u for u in asked if "/hls/" in u]  # WebRTC played: HLS never asked
    await phone.close()
    assert await viewer.evaluate("() => window.__live.player.stats.codec") == codec
    await expect(viewer.locator("#video-state")).to_have_text("The live video is playing, muted.")
    assert len([s for s in relay(server).sessions() if s.kind == "whep"]) == 1
    # Muted autoplay; "Unmute" turns the sound on.
    assert await viewer.evaluate(f"() => {VIDEO}.muted") is True
    await viewer.get_by_role("button", name="Unmute").click()
    assert await viewer.evaluate(f"() => {VIDEO}.muted") is False
    await expect(viewer.get_by_role("button", name="Mute")).to_be_visible()
    await helpers.screenshot(viewer, "watch-video-webrtc")

    # The host stops: the viewer's connection ends, the placeholder is back.
    await studio.get_by_role("button", name="Stop the camera broadcast").click()
    await expect(viewer.locator("#player")).to_have_attribute("data-state", "waiting")
    await expect(viewer.locator("#player-placeholder")).to_be_visible()
    await expect(viewer.locator("#player-detail")).to_have_text(
        "The video stopped. It comes back as soon as the host is live again."
    )
    await expect(viewer.locator("#video-state")).to_have_text("The live video stopped.")
    await until(lambda: not relay(server).sessions(), "every session's end")
    await helpers.screenshot(viewer, "watch-video-stopped")

    # ... and it plays again by itself when the host is back.
    await go_live_on_camera(studio)
    await assert_video_plays(viewer, "webrtc")

    # Leaving the page ends its WebRTC session at once: the page sends a keepalive
    # DELETE (the relay looks the session up; the browser closing the connection may
    # end the session first, then the DELETE finds nothing and gets 404).
    (session,) = [s for s in relay(server).sessions() if s.kind == "whep"]
    looked_up: list[tuple[str, str, str]] = []
    lookup = relay(server).session

    def spy(kind: SessionKind, room: str, session_id: str) -> Session | None:
        looked_up.append((kind, room, session_id))
        return lookup(kind, room, session_id)

    monkeypatch.setattr(relay(server), "session", spy)
    await viewer.goto("about:blank")
    await until(lambda: session.closed, "the viewer's session to end")
    await until(lambda: looked_up == [("whep", "demo", session.id)], "the page's DELETE")


async def test_watch_page_falls_back_to_hls_past_the_webrtc_cap(
    page_server: PageServerFactory, open_page: PageFactory
) -> None:
    need_hls_js()
    server = await page_server(media_max_viewers=0)  # --media-max-viewers 0
    studio = await open_studio(open_page, server)
    await go_live_on_camera(studio)

    viewer = await open_page(server)
    await assert_video_plays(viewer, "hls")
    stats = await viewer.evaluate("() => window.__live.player.stats")
    assert stats["engine"] == "hls.js"  # Chromium has Media Source Extensions
    assert stats["lastError"].startswith("over_capacity: ")
    assert not [s for s in relay(server).sessions() if s.kind == "whep"]
    await expect(viewer.locator("#video-state")).to_have_text(
        "The live video is playing (HLS), muted."
    )
    await helpers.screenshot(viewer, "watch-video-hls")

    # The host stops: the playlist ends, the page waits for the next stream.
    await studio.get_by_role("button", name="Stop the camera broadcast").click()
    await expect(viewer.locator("#player")).to_have_attribute(
        "data-state", "waiting", timeout=30_000
    )
    await expect(viewer.locator("#player-placeholder")).to_be_visible()


async def hls_segments(server: LiveServer, at_least: int) -> None:
    """Until the demo room's live HLS playlist lists ``at_least`` segments."""
    url = f"http://127.0.0.1:{server.port}/hls/demo/live.m3u8"
    async with aiohttp.ClientSession() as session:
        for _ in range(300):
            async with session.get(url) as resp:
                if resp.status == 200 and (await resp.text()).count("#EXTINF") >= at_least:
                    return
            await asyncio.sleep(0.1)
    raise AssertionError(f"the live playlist never had {at_least} segments")


async def clips_of(server: LiveServer) -> list[dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{server.port}/api/clips") as resp,
    ):
        assert resp.status == 200, await resp.text()
        clips: list[dict[str, Any]] = (await resp.json())["clips"]
        return clips


async def make_clips(
    server: LiveServer, open_page: PageFactory, clients: ClientsFactory
) -> tuple[dict[str, Any], Page]:
    """Two clips of the demo room, from a studio broadcasting: the lamp's, then the
    mug's (with a flash sale of 3 at $12.00, 1 per person, opened while the mug is
    pinned, still open). Returns the sale and the studio (still broadcasting)."""
    await helpers.put_product(server, "mug-01", MUG, 1800, MUG_IMAGE)
    studio = await open_studio(open_page, server)
    await go_live_on_camera(studio)
    host = await clients(server, HOST)
    sale: dict[str, Any] = {}
    for sku in ("lamp-03", "mug-01"):
        await host.request("pin", room="demo", sku=sku)
        await hls_segments(server, await hls_segments_count(server) + 2)
        if sku == "mug-01":
            sale = await helpers.open_sale(host, pin=False, stock=3, limit=1, duration_s=600)
        await host.request("unpin", room="demo", sku=sku)
    for _ in range(300):
        if len(await clips_of(server)) == 2:
            return sale, studio
        await asyncio.sleep(0.1)
    raise AssertionError("the clips were never listed")


async def hls_segments_count(server: LiveServer) -> int:
    url = f"http://127.0.0.1:{server.port}/hls/demo/live.m3u8"
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        return (await resp.text()).count("#EXTINF") if resp.status == 200 else 0


async def test_clips_feed_plays_clips_and_buys_from_them(
    page_server: PageServerFactory, open_page: PageFactory, clients: ClientsFactory
) -> None:
    need_hls_js()
    server = await page_server()
    sale, _ = await make_clips(server, open_page, clients)

    # One clip a page: the newest (the mug's) first; the next page (the lamp's) loads
    # by itself as the end of the feed is near ("More clips" does the same by hand).
    feed = await open_page(server, "clips.html?limit=1&name=Ana", wait_live=False)
    clips = feed.locator(".clip")
    await expect(clips).to_have_count(2)
    mug = clips.nth(0)
    await expect(mug.locator("h2")).to_have_text(MUG)
    await expect(mug.locator(".clip-price")).to_have_text("Sale price: $12.00 list price $18.00")
    await expect(mug.locator(".clip-room")).to_have_text(
        "From “Demo live show” · Watch the show live (Demo live show)"
    )
    await expect(
        mug.get_by_role("link", name="Watch the show live (Demo live show)")
    ).to_have_attribute("href", "/watch.html?room=demo")
    await expect(mug.locator(".clip-sale")).to_contain_text("Flash sale: 3 left · ends in ")
    # The clip in view plays (muted, looping), from its VOD playlist.
    await expect(mug).to_have_attribute("data-video", "playing")
    await feed.wait_for_function(
        "() => document.querySelector('.clip video')"
        ".getVideoPlaybackQuality().totalVideoFrames > 10"
    )
    assert await mug.locator("video").evaluate("v => [v.muted, v.loop, v.videoWidth]") == [
        True,
        True,
        640,
    ]
    lamp = clips.nth(1)
    await expect(lamp.locator("h2")).to_have_text("Brass desk lamp")
    await expect(lamp.locator(".clip-sale")).to_have_text("No flash sale on now.")
    await expect(lamp.get_by_role("button", name="Buy: Brass desk lamp")).to_be_disabled()
    await expect(feed.locator("#feed-state")).to_have_text("2 clips: that's all for now.")
    await expect(feed.get_by_role("button", name="More clips")).to_be_hidden()

    # Buy: the demo sign-in, then a hold with its pay link.
    await mug.get_by_role("button", name=f"Sign in and buy: {MUG}").click()
    result = mug.locator(".buy-result")
    await expect(result).to_have_text("Reserved 1! Pay before the timer runs out.")
    await expect(feed.locator("#me")).to_have_text("Signed in as Ana")
    order = mug.locator(".order")
    await expect(order).to_have_attribute("data-status", "held")
    await expect(order.get_by_role("link", name=f"Pay for {MUG}")).to_have_attribute(
        "href", re.compile(r"/sandbox/checkout/")
    )
    await expect(mug.locator(".clip-sale")).to_contain_text("Flash sale: 2 left")
    listed = [c for c in await clips_of(server) if c["sku"] == "mug-01"]
    assert listed[0]["sale"]["id"] == sale["id"] and listed[0]["sale"]["remaining"] == 2
    await helpers.screenshot(feed, "clips-desktop")

    # A second one: past the limit of 1 per person.
    await mug.get_by_role("button", name=f"Buy: {MUG}").click()
    await expect(result).to_have_text(
        "Limit reached: you have as many as one person may buy in this sale."
    )

    phone = await open_page(server, "clips.html", width=390, height=844, scale=2, wait_live=False)
    await expect(phone.locator(".clip")).to_have_count(2)
    await expect(phone.locator(".clip").nth(0)).to_have_attribute("data-video", "playing")
    assert await phone.evaluate("document.documentElement.scrollWidth") <= 390
    await helpers.screenshot(phone, "clips-phone")
