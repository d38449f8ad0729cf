"""The HTTP API of PROTOCOL.md, the demo sign-in, health, metrics and static pages.

Errors always have the shape ``{"error": {"code", "message"}}`` with a fitting status.
"""

from __future__ import annotations

import csv
import hmac
import io
import logging
import os
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from aiohttp import web

from livecommerce import analytics
from livecommerce.auth import Principal, Role, guest, issue_token
from livecommerce.auth.tokens import DEMO_CLAIM
from livecommerce.errors import Error
from livecommerce.http import openapi
from livecommerce.http.keys import (
    CLIPS,
    CONNECTIONS,
    DEMO_SECRET,
    HUB,
    METRICS,
    READY,
    SERVICE,
    SETTINGS,
    VERIFY,
)
from livecommerce.http.ws import ws_handler
from livecommerce.inventory.rules import Product
from livecommerce.protocol import ROOM_ID, dumps, loads
from livecommerce.protocol.codec import MAX_PRICE
from livecommerce.rooms.state import STATUSES, Status, clean_text

log = logging.getLogger(__name__)

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "bad_request",
    413: "too_large",
    429: "rate_limited",
}


PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' https: data: blob:; media-src 'self' blob:; "
        "connect-src 'self'; style-src 'self'; script-src 'self'; object-src 'none'; "
        "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
}
"""Headers of a page that must never be framed (studio, console, checkout)."""
UNFRAMED = frozenset({"studio.html", "console.html", "report.html"})


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=dumps(data), status=status, content_type="application/json")


def error_response(err: Error) -> web.Response:
    return json_response({"error": {"code": err.code, "message": err.message}}, err.status)


SERVER = "livecommerce"
"""The ``Server`` header: no version to look up known holes by."""


async def common_headers(request: web.Request, response: web.StreamResponse) -> None:
    """On every answer (``on_response_prepare``): no version in ``Server``, and no
    content sniffing (a JSON answer or an uploaded image is never run as a page)."""
    response.headers["Server"] = SERVER
    response.headers.setdefault("X-Content-Type-Options", "nosniff")


@web.middleware
async def error_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Turn every refusal, including aiohttp's own (404, 405, 413), into our shape."""
    try:
        return await handler(request)
    except Error as err:
        return error_response(err)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _HTTP_CODES.get(exc.status, "bad_request")
        resp = error_response(Error(code, exc.reason))  # type: ignore[arg-type]
        resp.set_status(exc.status)
        return resp
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        return error_response(Error("internal", "internal error"))


def principal(request: web.Request) -> Principal:
    """The caller: from ``Authorization: Bearer <token>``, or a guest."""
    header = request.headers.get("Authorization")
    if header is None:
        return guest("http")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Error("unauthorized", "use Authorization: Bearer <token>")
    return request.app[VERIFY](token.strip(), request.app[SERVICE].now_ms() / 1000)


async def json_body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    try:
        body = loads(raw)
    except ValueError:
        raise Error("bad_request", "the body must be JSON") from None
    if not isinstance(body, dict):
        raise Error("bad_request", "the body must be a JSON object")
    return body


def field_str(body: dict[str, Any], name: str, *, max_len: int, required: bool) -> str | None:
    value = body.get(name)
    if value is None:
        if required:
            raise Error("bad_request", f"{name} is required")
        return None
    if not isinstance(value, str) or len(value) > max_len:
        raise Error("bad_request", f"{name} must be a string of at most {max_len} characters")
    return value


def query_int(request: web.Request, name: str, *, default: int, lo: int, hi: int) -> int:
    """The query parameter ``name``: ASCII digits from ``lo`` to ``hi``, or ``default``
    when absent. The one place query numbers are read (``str.isdigit`` also takes
    Unicode digits such as "²", which ``int`` then refuses: a 500 with a traceback).

    Raises:
        Error: ``bad_request`` for anything else.
    """
    raw = request.query.get(name)
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 18) or not lo <= int(raw) <= hi:
        raise Error("bad_request", f"{name}: an integer from {lo} to {hi}")
    return int(raw)


def query_str(
    request: web.Request, name: str, *, pattern: re.Pattern[str], what: str
) -> str | None:
    """The query parameter ``name`` if it matches ``pattern`` in full, None when absent.

    Raises:
        Error: ``bad_request`` (``what`` says what is expected) for anything else.
    """
    raw = request.query.get(name)
    if raw is not None and not pattern.fullmatch(raw):
        raise Error("bad_request", f"{name}: {what}")
    return raw


def room_id(request: web.Request) -> str:
    value = request.match_info["room"]
    if not ROOM_ID.fullmatch(value):
        raise Error("not_found", f"no room {value[:64]!r}")
    return value


async def create_room(request: web.Request) -> web.Response:
    who = principal(request)
    body = await json_body(request)
    title = field_str(body, "title", max_len=200, required=True)
    rid = field_str(body, "id", max_len=64, required=False)
    if rid is not None and not ROOM_ID.fullmatch(rid):
        raise Error("bad_request", "id: lowercase letters, digits, '_' and '-', at most 64")
    if who.role == "guest":
        raise Error("unauthorized", "sign in as a host")
    assert title is not None
    room = await request.app[SERVICE].create_room(who, title=title, room_id=rid)
    return json_response(room.to_dict(), 201)


ROOMS_PAGE = 100
"""Rooms in a page of ``GET /api/rooms`` unless ``limit`` says otherwise (at most 500)."""
_STATUS = re.compile("|".join(STATUSES))
_CURSOR = re.compile(r"[0-9]{1,9}")


async def list_rooms(request: web.Request) -> web.Response:
    """``GET /api/rooms?status=&limit=&cursor=``: newest first, a page at a time
    (``next`` is the cursor of the next page, or null); scheduled rooms only for those
    who run them (their host, the room's staff, admins)."""
    who = principal(request)
    status = query_str(request, "status", pattern=_STATUS, what=" or ".join(STATUSES))
    limit = query_int(request, "limit", default=ROOMS_PAGE, lo=1, hi=500)
    start = int(query_str(request, "cursor", pattern=_CURSOR, what="the 'next' of a page") or 0)
    rooms = await request.app[SERVICE].list_rooms(who, cast(Status | None, status))
    page = rooms[start : start + limit]
    after = str(start + limit) if start + limit < len(rooms) else None
    return json_response({"rooms": [r.to_dict() for r in page], "next": after})


async def get_room(request: web.Request) -> web.Response:
    return json_response(await request.app[SERVICE].describe(room_id(request)))


def field_int(body: dict[str, Any], name: str, *, lo: int, hi: int) -> int:
    value = body.get(name)
    if type(value) is not int or not lo <= value <= hi:
        raise Error("bad_request", f"{name} must be an integer from {lo} to {hi}")
    return value


async def put_product(request: web.Request) -> web.Response:
    who = principal(request)
    sku = request.match_info["sku"]
    if not 0 < len(sku) <= 64:
        raise Error("bad_request", "sku: 1 to 64 characters")
    body = await json_body(request)
    title = clean_text(field_str(body, "title", max_len=200, required=True) or "", 200)
    price = field_int(body, "price", lo=0, hi=MAX_PRICE)
    image = field_str(body, "image", max_len=2048, required=False)
    product = Product(sku=sku, title=title, price=price, image=image)
    if who.role == "guest":
        raise Error("unauthorized", "sign in as the room's host")
    saved = await request.app[SERVICE].put_product(who, room_id(request), product)
    return json_response(saved.to_dict())


async def list_products(request: web.Request) -> web.Response:
    products = await request.app[SERVICE].products(room_id(request))
    return json_response({"products": [p.to_dict() for p in products]})


async def get_order(request: web.Request) -> web.Response:
    who = principal(request)
    if who.role == "guest":
        raise Error("unauthorized", "sign in as the buyer")
    order = await request.app[SERVICE].get_order(who, request.match_info["order"])
    return json_response(
        {
            **order.public(),
            "room": order.room,
            "title": order.title,
            "user": order.user,
            "created_at": order.created_at,
        }
    )


async def giveaway_proof(request: web.Request) -> web.Response:
    """A drawn giveaway's proof (public: anyone may check the draw)."""
    proof = await request.app[SERVICE].giveaway_proof(request.match_info["giveaway"])
    return json_response(proof)


async def auction_bids(request: web.Request) -> web.Response:
    """A lot and its append-only bid log (public: anyone may check the bids)."""
    return json_response(await request.app[SERVICE].auction_bids(request.match_info["auction"]))


_FORMAT = re.compile(r"json|csv")


async def chat_export(request: web.Request) -> web.Response:
    """The room's chat with its moderation, as JSON or CSV (``format``), for its staff."""
    who = principal(request)  # who asks, before anything they sent is read
    if who.role == "guest":
        raise Error("unauthorized", "sign in as staff of the room")
    fmt = query_str(request, "format", pattern=_FORMAT, what="json or csv") or "json"
    export = await request.app[SERVICE].export_chat(who, room_id(request))
    if fmt == "json":
        return json_response(export)
    name = f'attachment; filename="{export["room"]}-chat.csv"'
    return web.Response(
        text=chat_csv(export), content_type="text/csv", headers={"Content-Disposition": name}
    )


async def show_report(request: web.Request) -> web.Response:
    """The show's figures, for its staff: JSON, or CSV (``format``); each product with
    its latest explanation clip."""
    who = principal(request)  # who asks, before anything they sent is read
    if who.role == "guest":
        raise Error("unauthorized", "sign in as staff of the room")
    fmt = query_str(request, "format", pattern=_FORMAT, what="json or csv") or "json"
    rep = await request.app[SERVICE].show_report(who, room_id(request))
    for product in rep["products"]:
        clips = await request.app[CLIPS].room_clips(rep["room"], sku=product["sku"])
        product["clip"] = clips[0].playlist if clips else None
    if fmt == "json":
        return json_response(rep)
    name = f'attachment; filename="{rep["room"]}-report.csv"'
    return web.Response(
        text=analytics.report_csv(rep),
        content_type="text/csv",
        headers={"Content-Disposition": name},
    )


def chat_csv(export: dict[str, Any]) -> str:
    """A chat export as CSV: one row per message and per moderation action, by time
    (``time`` in UTC, ISO 8601). Cells that a spreadsheet would run as a formula are
    quoted with a leading apostrophe."""
    rows: list[tuple[int, list[str]]] = []
    for m in export["messages"]:
        gone = m.get("deleted")
        moderation = f"deleted by {gone['by']['id']}" if gone else ""
        cells = ["chat", m["user"]["id"], m["user"]["name"], m["text"], m["msg_id"], moderation]
        rows.append((m["ts"], cells))
    for a in export["actions"]:
        by = a.get("by") or {}
        cells = ["action", by.get("id", ""), by.get("name", ""), "", a.get("target") or "",
                 a["action"]]  # fmt: skip
        rows.append((a["at"], cells))
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["time", "kind", "user_id", "user_name", "text", "target", "moderation"])
    for at, cells in sorted(rows, key=lambda r: r[0]):
        when = datetime.fromtimestamp(at / 1000, UTC).isoformat(timespec="milliseconds")
        writer.writerow([when, *(_cell(c) for c in cells)])
    return out.getvalue()


def _cell(text: str) -> str:
    """A CSV cell no spreadsheet runs as a formula (CSV injection)."""
    return f"'{text}" if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


async def my_data(request: web.Request) -> web.Response:
    """``GET /api/me/data``: everything the server holds about the signed-in user."""
    return json_response(await request.app[SERVICE].my_data(principal(request)))


async def erase_my_data(request: web.Request) -> web.Response:
    """``DELETE /api/me/data``: erase it (chats removed, the rest under a pseudonym)."""
    return json_response(await request.app[SERVICE].erase_my_data(principal(request)))


async def modlog(request: web.Request) -> web.Response:
    """The room's moderation log, oldest first (host, moderators, admins)."""
    who = principal(request)  # who asks, before anything they sent is read
    if who.role == "guest":
        raise Error("unauthorized", "sign in as staff of the room")
    limit = query_int(request, "limit", default=200, lo=1, hi=10_000)
    entries = await request.app[SERVICE].modlog(who, room_id(request), limit)
    return json_response({"entries": entries})


async def healthz(request: web.Request) -> web.Response:
    if not request.app[READY][0]:
        return json_response({"status": "starting"}, 503)
    return json_response({"status": "ok", "pid": os.getpid()})  # which worker answered


async def openapi_json(request: web.Request) -> web.Response:
    return json_response(openapi.document(demo=request.app[SETTINGS].demo))


_DEMO_ROLES: dict[str, tuple[str, str]] = {
    "viewer": ("demo-viewer", "Demo Viewer"),
    "host": ("demo-host", "Demo Host"),
    "moderator": ("demo-mod", "Demo Moderator"),
    "admin": ("demo-admin", "Demo Admin"),
}


async def demo_token(request: web.Request) -> web.Response:
    """Demo sign-in: a token for any role (only with ``--demo``)."""
    body = await json_body(request)
    role = field_str(body, "role", max_len=16, required=True)
    if role not in _DEMO_ROLES:
        raise Error("bad_request", f"role must be one of {', '.join(_DEMO_ROLES)}")
    sub, name = _DEMO_ROLES[role]
    custom = field_str(body, "name", max_len=64, required=False)
    if custom:
        name = custom.strip() or name
        if role == "viewer":  # every named demo viewer is their own user
            handle = "".join(c for c in name.lower() if c.isalnum())[:32]
            sub = f"demo-viewer-{handle}" if handle else sub
    rooms = None if role in ("viewer", "admin") else ["demo"]
    settings = request.app[SETTINGS]
    extra: dict[str, Any] = {DEMO_CLAIM: True}  # production servers refuse it
    if settings.token_audience:
        extra["aud"] = settings.token_audience
    if settings.token_issuer:
        extra["iss"] = settings.token_issuer
    token = issue_token(
        request.app[DEMO_SECRET],
        sub=sub,
        name=name,
        role=cast(Role, role),
        rooms=rooms,
        now=request.app[SERVICE].now_ms() / 1000,
        ttl_s=settings.token_ttl_s,
        extra=extra,
    )
    return json_response({"token": token, "user": {"id": sub, "name": name, "role": role}})


def _metrics_allowed(request: web.Request) -> None:
    """``/metrics`` tells how busy the server is and which rooms it serves: with
    ``--metrics-token`` only to that bearer token; without, to admins (a demo: to all).

    Raises:
        Error: ``unauthorized`` or ``forbidden``.
    """
    settings = request.app[SETTINGS]
    if settings.metrics_token:
        header = request.headers.get("Authorization", "")
        if not hmac.compare_digest(header.encode(), f"Bearer {settings.metrics_token}".encode()):
            raise Error("unauthorized", "metrics: Authorization: Bearer <the metrics token>")
        return
    if settings.demo:
        return
    who = principal(request)
    if who.role != "admin":
        raise Error("unauthorized" if who.role == "guest" else "forbidden", "admins only")


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text format: counters of this process."""
    _metrics_allowed(request)
    app = request.app
    lines = [f"livecommerce_{k} {v}" for k, v in sorted(app[METRICS].items())]
    lines.append(f"livecommerce_connections {len(app[CONNECTIONS])}")
    lines.append(f"livecommerce_frames_sent {app[HUB].frames_sent}")
    for room, tick_s in sorted(app[HUB].ticks().items()):
        lines.append(f'livecommerce_room_tick_ms{{room="{room}"}} {tick_s * 1000:.1f}')
    batcher = app[SERVICE].batcher
    lines.append(f"livecommerce_reserve_calls {batcher.calls}")
    lines.append(f"livecommerce_reserve_attempts {batcher.attempts}")
    return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")


def setup(app: web.Application, static_dir: Path) -> None:
    app.on_response_prepare.append(common_headers)
    r = app.router
    r.add_get("/ws", ws_handler)
    r.add_get("/healthz", healthz)
    r.add_get("/metrics", metrics)
    r.add_get("/api/openapi.json", openapi_json)
    r.add_post("/api/rooms", create_room)
    r.add_get("/api/rooms", list_rooms)
    r.add_get("/api/rooms/{room}", get_room)
    r.add_put("/api/rooms/{room}/products/{sku}", put_product)
    r.add_get("/api/rooms/{room}/products", list_products)
    r.add_get("/api/rooms/{room}/modlog", modlog)
    r.add_get("/api/rooms/{room}/chat", chat_export)
    r.add_get("/api/rooms/{room}/report", show_report)
    r.add_get("/api/me/data", my_data)
    r.add_delete("/api/me/data", erase_my_data)
    r.add_get("/api/orders/{order}", get_order)
    r.add_get("/api/giveaways/{giveaway}/proof", giveaway_proof)
    r.add_get("/api/auctions/{auction}/bids", auction_bids)
    if app[SETTINGS].demo:
        r.add_post("/api/demo/token", demo_token)
    if static_dir.is_dir():
        # Pages at the root, assets under their folders; nothing catches every path,
        # so an unknown /api/... path still gets the JSON 404.
        async def page(request: web.Request) -> web.FileResponse:
            name = request.match_info.get("name", "index.html")
            path = static_dir / name
            if not path.is_file():
                raise Error("not_found", "no such page")
            # the staff's pages act for them: never inside another site's frame
            return web.FileResponse(path, headers=PAGE_HEADERS if name in UNFRAMED else None)

        r.add_get("/", page)
        r.add_get(r"/{name:[a-z0-9_-]+\.html}", page)
        for folder in sorted(p for p in static_dir.iterdir() if p.is_dir()):
            r.add_static(f"/{folder.name}", folder, show_index=False)
