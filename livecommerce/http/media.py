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
past this process's cap on WebRTC viewers. See docs/media.md.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from livecommerce.errors import Error
from livecommerce.http.keys import BACKENDS, SERVICE
from livecommerce.http.routes import error_response, json_response, principal, room_id
from livecommerce.media import DEFAULT_MAX_VIEWERS, MediaRelay, OverCapacity, check_aiortc
from livecommerce.media.relay import Session, SessionKind
from livecommerce.rooms.service import HOSTS
from livecommerce.rooms.state import Room

SDP = "application/sdp"
MEDIA = web.AppKey("media", MediaRelay)
"""This process's WebRTC sessions."""
MAX_VIEWERS = web.AppKey("media_max_viewers", int)
"""Optional: the cap on WebRTC viewers of this process, if set before start-up
(default :data:`~livecommerce.media.DEFAULT_MAX_VIEWERS`; a CLI flag comes next)."""


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


async def whep_post(request: web.Request) -> web.Response:
    """``POST /api/rooms/{room}/whep``: watch the room's video over WebRTC."""
    who = principal(request)
    room = await request.app[SERVICE].room(room_id(request))
    if who.role != "guest" and await request.app[BACKENDS].moderation.is_banned(room.id, who.id):
        raise Error("banned", "you are banned from this room")
    offer = await _offer(request)
    try:
        session = await request.app[MEDIA].watch(room.id, offer)
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


async def media_ctx(app: web.Application) -> AsyncIterator[None]:
    """The relay; on shutdown every peer connection is closed (publishers first)."""
    relay = app[MEDIA] = MediaRelay(max_viewers=app.get(MAX_VIEWERS, DEFAULT_MAX_VIEWERS))
    yield
    await relay.close()


def setup(app: web.Application) -> None:
    """Add the WHIP and WHEP routes and the relay's context.

    Raises:
        AdapterError: the installed aiortc lacks an internal the relay relies on.
    """
    check_aiortc()
    r = app.router
    for kind, post, delete in (("whip", whip_post, whip_delete), ("whep", whep_post, whep_delete)):
        r.add_post(f"/api/rooms/{{room}}/{kind}", post)
        r.add_delete(f"/api/rooms/{{room}}/{kind}/{{id}}", delete)
        r.add_patch(f"/api/rooms/{{room}}/{kind}/{{id}}", no_patch)
    app.cleanup_ctx.append(media_ctx)
