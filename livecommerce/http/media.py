"""Live video over HTTP: WHIP ingest (RFC 9725) and WHEP playback.

- ``POST /api/rooms/{room}/whip``: the room's host (or an admin) sends an SDP offer
  (``Content-Type: application/sdp``); 201 with the SDP answer and ``Location:
  /api/rooms/{room}/whip/{session}``. ``DELETE`` that URL (same rights) stops the stream.
- ``POST /api/rooms/{room}/whep``: anyone (guests included) sends an SDP offer; 201 with
  the answer and ``Location: /api/rooms/{room}/whep/{session}``; ``DELETE`` it to stop
  (the URL, unguessable, is the right to).

No trickle ICE and no ICE restart: every candidate is in the offer and the answer, and
``PATCH`` on a session URL gets 405. Errors have the usual JSON shape: 400
``bad_request`` for an offer that cannot be served, 409 ``conflict`` for a second
publisher, 404 ``not_found`` for a viewer of a room nobody publishes in, 415 for a body
that is not ``application/sdp``, and 503 ``over_capacity`` (with ``"fallback": "hls"``)
past this process's cap on WebRTC viewers (``--media-max-viewers``).

HLS, outside ``/api`` so that a CDN can front it by path prefix, served from the media
directory (so by any process of the host, whichever records the stream):

- ``GET /hls/{room}/live.m3u8``: the room's live playlist (its current stream, or its
  last one, ended), ``Cache-Control: no-cache``, an ``ETag`` of its content.
- ``GET /hls/{room}/{stream}/{file}``: ``init.mp4`` (``init-N.mp4``), ``{seq}.m4s``,
  and clips' ``clip-{id}.m3u8`` and ``clip-{id}.jpg``: never change once written,
  ``Cache-Control: public, max-age=31536000, immutable``.

Every answer under ``/hls`` has ``Access-Control-Allow-Origin: *``; a missing file is a
404 with the JSON error shape (and ``no-cache``). Names are matched against fixed
patterns before they touch the disk: no path leaves the media directory. See
docs/media.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import shutil
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from livecommerce.auth import Principal
from livecommerce.errors import Error
from livecommerce.http.keys import BACKENDS, CLIPS, HUB, SERVICE, SETTINGS
from livecommerce.http.routes import error_response, json_response, principal, room_id
from livecommerce.media import MediaRelay, OverCapacity, check_aiortc
from livecommerce.media.recorder import Recorder
from livecommerce.media.relay import Session, SessionKind
from livecommerce.moderation.rules import RateLimiter
from livecommerce.protocol import ROOM_ID
from livecommerce.rooms.service import HOSTS, RoomService
from livecommerce.rooms.state import Room

log = logging.getLogger(__name__)

SDP = "application/sdp"
MEDIA = web.AppKey("media", MediaRelay)
"""This process's WebRTC sessions."""
MAX_VIEWERS = web.AppKey("media_max_viewers", int)
"""Optional: the cap on WebRTC viewers of this process, if set before start-up
(default: the setting ``media_max_viewers``, ``--media-max-viewers``)."""
RECORDER = web.AppKey("recorder", Recorder)
"""This process's recordings (HLS, clips) and the retention sweep."""
MEDIA_DIR = web.AppKey("media_dir", Path)
"""The media directory in force (the configured one, or this process's temporary one)."""

SWEEP_INTERVAL_S = 600.0
"""How often the retention sweep runs (at most; a tenth of the retention if shorter)."""
PLAYLIST = "application/vnd.apple.mpegurl"
IMMUTABLE = "public, max-age=31536000, immutable"
LIVE = "no-cache"
CORS = {"Access-Control-Allow-Origin": "*"}
STREAM_ID = re.compile(r"[a-z0-9]{1,40}")
FILE = re.compile(r"init(?:-[0-9]{1,6})?\.mp4|[0-9]{1,9}\.m4s|clip-[a-z0-9]{1,32}\.(?:m3u8|jpg)")
TYPES = {
    ".mp4": "video/mp4",
    ".m4s": "video/iso.segment",
    ".m3u8": PLAYLIST,
    ".jpg": "image/jpeg",
}


async def _host_room(request: web.Request) -> Room:
    """The room, if the caller holds the host's rights in it."""
    return await request.app[SERVICE].room_as(principal(request), room_id(request), HOSTS)


async def _offer(request: web.Request) -> str:
    if request.content_type != SDP:
        raise web.HTTPUnsupportedMediaType(
            reason=f"the body must be an SDP offer (Content-Type: {SDP})"
        )
    try:
        offer = (await request.read()).decode()
    except UnicodeDecodeError:
        raise Error("bad_request", "the offer is not UTF-8 text") from None
    if not offer.strip():
        raise Error("bad_request", "the body is empty: send the SDP offer")
    return offer


def _created(kind: SessionKind, session: Session) -> web.Response:
    return web.Response(
        status=201,
        body=session.answer.encode(),
        content_type=SDP,
        headers={"Location": f"/api/rooms/{session.room}/{kind}/{session.id}"},
    )


def _session(request: web.Request, kind: SessionKind) -> Session:
    session = request.app[MEDIA].session(kind, request.match_info["room"], request.match_info["id"])
    if session is None:
        raise Error("not_found", "no such session (it may have ended)")
    return session


async def whip_post(request: web.Request) -> web.Response:
    """``POST /api/rooms/{room}/whip``: start publishing the room's video."""
    room = await _host_room(request)
    if room.status == "ended":
        raise Error("room_not_live", f"room {room.id!r} has ended")
    offer = await _offer(request)
    return _created("whip", await request.app[MEDIA].publish(room.id, offer))


async def whip_delete(request: web.Request) -> web.Response:
    """``DELETE /api/rooms/{room}/whip/{id}``: stop publishing; viewers' streams end."""
    await _host_room(request)
    session = _session(request, "whip")
    await session.close("stopped by the host")
    return json_response({"session": session.id, "state": "closed"})


WHEP_RATE = web.AppKey("whep_rate", RateLimiter)
"""WHEP offers per user (or guest address): 5 at once, then one a second."""


def owner(request: web.Request, who: Principal) -> str:
    """Who a media session belongs to: the user, or a guest's address."""
    return who.id if who.role != "guest" else f"ip:{request.remote or '?'}"


async def whep_post(request: web.Request) -> web.Response:
    """``POST /api/rooms/{room}/whep``: watch the room's video over WebRTC (a few
    sessions per user or guest address, ``MediaRelay.max_per_owner``)."""
    who = principal(request)
    key = owner(request, who)
    request.app[WHEP_RATE].check(key, time.monotonic())
    room = await request.app[SERVICE].room(room_id(request))
    if who.role != "guest" and who.id in await request.app[BACKENDS].moderation.banned(
        room.id, [who.id]
    ):
        raise Error("banned", "you are banned from this room")
    offer = await _offer(request)
    try:
        session = await request.app[MEDIA].watch(room.id, offer, owner=key)
    except OverCapacity:
        return over_capacity(room.id)
    return _created("whep", session)


def over_capacity(room: str) -> web.Response:
    """503: this process has its most WebRTC viewers; the client should use HLS."""
    return json_response(
        {
            "error": {
                "code": "over_capacity",
                "message": (
                    "this server has as many WebRTC viewers as it can take: "
                    "watch the stream over HLS instead"
                ),
                "fallback": "hls",
                "room": room,
            }
        },
        503,
    )


async def whep_delete(request: web.Request) -> web.Response:
    """``DELETE /api/rooms/{room}/whep/{id}``: stop watching."""
    session = _session(request, "whep")
    await session.close("stopped by the viewer")
    return json_response({"session": session.id, "state": "closed"})


async def no_patch(request: web.Request) -> web.Response:
    """``PATCH`` on a session: neither trickle ICE nor ICE restarts are supported."""
    resp = error_response(
        Error("bad_request", "no trickle ICE or ICE restart: send every candidate in the offer")
    )
    resp.set_status(405)
    resp.headers["Allow"] = "DELETE"
    return resp


def _hls_error(status: int, message: str) -> web.Response:
    resp = error_response(Error("not_found", message))
    resp.set_status(status)
    resp.headers.update(CORS)
    resp.headers["Cache-Control"] = LIVE
    return resp


def _inside(request: web.Request, path: Path) -> bool:
    """Whether ``path`` is a file whose real place (every link followed) is inside the
    media directory: a link planted in it must not serve what lies outside."""
    try:
        real = path.resolve(strict=True)
    except (OSError, RuntimeError):  # missing, or a loop of links
        return False
    return real.is_file() and real.is_relative_to(request.app[MEDIA_DIR].resolve())


def _file(request: web.Request, path: Path, cache: str) -> web.StreamResponse:
    if not _inside(request, path):
        return _hls_error(404, "no such file (it may have expired)")
    headers = {**CORS, "Cache-Control": cache, "Content-Type": TYPES[path.suffix]}
    return web.FileResponse(path, headers=headers)


async def hls_live(request: web.Request) -> web.StreamResponse:
    """``GET /hls/{room}/live.m3u8``: the room's live playlist."""
    room = request.match_info["room"]
    if not ROOM_ID.fullmatch(room):
        return _hls_error(404, "no such room")
    path = request.app[MEDIA_DIR] / room / "live.m3u8"
    try:
        if not _inside(request, path):
            raise FileNotFoundError(path)
        text = path.read_bytes()
    except OSError:
        return _hls_error(404, f"room {room!r} has no stream")
    # Validated by content, not by time: it may change twice within a second, and
    # Last-Modified counts whole seconds.
    etag = f'"{hashlib.blake2b(text, digest_size=8).hexdigest()}"'
    headers = {**CORS, "Cache-Control": LIVE, "ETag": etag}
    if etag in request.headers.get("If-None-Match", ""):
        return web.Response(status=304, headers=headers)
    return web.Response(body=text, headers={**headers, "Content-Type": PLAYLIST})


async def hls_file(request: web.Request) -> web.StreamResponse:
    """``GET /hls/{room}/{stream}/{file}``: a stream's init, segment, or a clip's
    playlist or poster."""
    room, stream, name = (request.match_info[k] for k in ("room", "stream", "file"))
    if not (ROOM_ID.fullmatch(room) and STREAM_ID.fullmatch(stream) and FILE.fullmatch(name)):
        return _hls_error(404, "no such file")
    return _file(request, request.app[MEDIA_DIR] / room / stream / name, IMMUTABLE)


async def hls_missing(request: web.Request) -> web.Response:
    """Any other path under ``/hls``: 404 (with CORS, like the rest)."""
    return _hls_error(404, "no such file")


async def hls_options(request: web.Request) -> web.Response:
    """CORS preflight for anything under ``/hls`` (a player sending ``Range``)."""
    return web.Response(
        status=204,
        headers={
            **CORS,
            "Access-Control-Allow-Methods": "GET, HEAD, OPTIONS",
            "Access-Control-Allow-Headers": "Range",
            "Access-Control-Max-Age": "86400",
        },
    )


class MediaNews:
    """Tells each room when its video starts, becomes playable over HLS and stops
    (:meth:`RoomService.media_changed`), one change after the other, in the order they
    happened here."""

    def __init__(self, service: RoomService) -> None:
        self._service = service
        self._last: dict[str, asyncio.Task[None]] = {}
        self.relay: MediaRelay | None = None

    def live(self, room: str, live: bool) -> None:
        self._tell(room, live=live, hls=False)

    def playable(self, room: str) -> None:
        if self.relay is not None and self.relay.publisher(room) is not None:
            self._tell(room, live=True, hls=True)

    def _tell(self, room: str, *, live: bool, hls: bool) -> None:
        task = asyncio.ensure_future(self._send(self._last.get(room), room, live, hls))
        self._last[room] = task
        task.add_done_callback(lambda t: self._last.get(room) is t and self._last.pop(room))

    async def _send(
        self, before: asyncio.Task[None] | None, room: str, live: bool, hls: bool
    ) -> None:
        if before is not None:
            await asyncio.wait([before])
        try:
            await self._service.media_changed(room, live=live, hls=hls)
        except Exception:
            log.exception("room %s: telling the room of its video failed", room)

    async def close(self, timeout_s: float) -> None:
        """Wait for the news being sent."""
        if self._last:
            await asyncio.wait(list(self._last.values()), timeout=timeout_s)


async def media_ctx(app: web.Application) -> AsyncIterator[None]:
    """The media directory, the recorder and its retention sweep, and the relay; on
    shutdown every peer connection is closed (publishers first), then the recordings
    finish (every stream's playlist gets ``EXT-X-ENDLIST``, clips are saved)."""
    settings = app[SETTINGS]
    temporary = settings.media_dir is None
    media_dir = Path(
        tempfile.mkdtemp(prefix="livecommerce-media-") if temporary else str(settings.media_dir)
    )
    app[MEDIA_DIR] = media_dir
    app[WHEP_RATE] = RateLimiter(1.0, 5)
    news = MediaNews(app[SERVICE])
    recorder = app[RECORDER] = Recorder(
        media_dir,
        hub=app[HUB],
        backends=app[BACKENDS],
        clips=app.get(CLIPS),
        retention_s=settings.media_retention_s,
        on_playable=news.playable,
    )
    relay = news.relay = app[MEDIA] = MediaRelay(
        max_viewers=app.get(MAX_VIEWERS, settings.media_max_viewers),
        recorder=recorder,
        on_live=news.live,
        allow_private=settings.ice_private,
    )
    stop = asyncio.Event()
    sweeper = asyncio.create_task(
        _sweep_every(
            recorder,
            app[WHEP_RATE],
            min(SWEEP_INTERVAL_S, settings.media_retention_s / 10),
            stop,
        )
    )
    yield
    stop.set()
    await relay.close()
    await recorder.close()
    await news.close(settings.drain_timeout_s)
    await sweeper
    if temporary:
        shutil.rmtree(media_dir, ignore_errors=True)


async def _sweep_every(
    recorder: Recorder, whep_rate: RateLimiter, interval: float, stop: asyncio.Event
) -> None:
    """Run the retention sweep now and every ``interval`` seconds until ``stop``, and
    forget the WHEP rate buckets of users and addresses gone quiet."""
    while not stop.is_set():
        whep_rate.prune(time.monotonic())
        try:
            await recorder.sweep()
        except Exception:
            log.exception("the media retention sweep failed; trying again")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)


def setup(app: web.Application) -> None:
    """Add the WHIP, WHEP and HLS routes and the media context (after the clip
    store's: see :func:`livecommerce.http.clips.setup`).

    Raises:
        AdapterError: the installed aiortc lacks an internal the relay relies on.
    """
    check_aiortc()
    r = app.router
    for kind, post, delete in (("whip", whip_post, whip_delete), ("whep", whep_post, whep_delete)):
        r.add_post(f"/api/rooms/{{room}}/{kind}", post)
        r.add_delete(f"/api/rooms/{{room}}/{kind}/{{id}}", delete)
        r.add_patch(f"/api/rooms/{{room}}/{kind}/{{id}}", no_patch)
    r.add_get("/hls/{room}/live.m3u8", hls_live)
    r.add_get("/hls/{room}/{stream}/{file}", hls_file)
    r.add_get("/hls/{tail:.*}", hls_missing)
    r.add_route("OPTIONS", "/hls/{tail:.*}", hls_options)
    app.cleanup_ctx.append(media_ctx)
