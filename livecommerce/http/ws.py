"""``GET /ws``: the only place that drives a client socket.

Each connection reads commands one at a time and answers each command that carries
an id exactly once. ``order`` commands are the exception to "one at a time": each joins
the next reservation batch and is answered when its batch is served (a callback, or a
task when the room must be read first), while the connection goes on reading, so a
client's pipelined orders go in the same batch instead of waiting for each other.

Room events reach a connection from the hub as ready-made frames, written straight to
the transport. Replies are corked: those made in one turn of the event loop go out in
one write (one system call) at its end, or before the next event frame, whichever
comes first, so the order of what a client receives is the order it was produced in.
A connection whose unsent bytes pass the outbound limit (or stay high for too long), or
whose client stopped reading (:mod:`~livecommerce.http.stalls`), is closed with 4009,
never waited for.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from aiohttp import WSMsgType, web

from livecommerce.auth import Principal, guest
from livecommerce.errors import Error
from livecommerce.http.keys import (
    CONNECTIONS,
    METRICS,
    SERVICE,
    SETTINGS,
    USER_CONNECTIONS,
    VERIFY,
)
from livecommerce.http.stalls import ReadWatch, read_progress
from livecommerce.inventory.rules import Order
from livecommerce.moderation.rules import TokenBucket
from livecommerce.protocol import (
    Command,
    close_frame,
    decode,
    encode_error,
    encode_reply,
    loads,
    text_frame,
)
from livecommerce.rooms.service import RoomService

log = logging.getLogger(__name__)

CLOSE_GOING_AWAY = 1001
CLOSE_TOO_LARGE = 1009
CLOSE_UNAUTHORIZED = 4001
CLOSE_BANNED = 4003
CLOSE_ABUSE = 4008
CLOSE_SLOW = 4009

_LOW_WATER = 64 * 1024


class _ClientIds:
    """Unguessable connection ids (64 random bits as hex), drawn from the OS 4 KiB at a
    time: one ``getrandom`` per 512 connects instead of one per connect."""

    def __init__(self) -> None:
        self._hex = ""
        self._at = 0

    def reset(self) -> None:
        self._hex = ""

    def __next__(self) -> str:
        if self._at >= len(self._hex):
            self._hex, self._at = os.urandom(4096).hex(), 0
        self._at += 16
        return self._hex[self._at - 16 : self._at]


_client_ids = _ClientIds()
os.register_at_fork(after_in_child=_client_ids.reset)  # a child never reuses our ids


class Connection:
    """One client's socket, as the hub and the handler see it."""

    def __init__(self, request: web.Request, ws: web.WebSocketResponse) -> None:
        app = request.app
        settings = app[SETTINGS]
        self.ws = ws
        self.transport: Any = request.transport
        sock = self.transport.get_extra_info("socket") if self.transport else None
        if settings.socket_sndbuf and sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, settings.socket_sndbuf)
        self._sock = sock
        self._reading = ReadWatch()
        self.client_id = next(_client_ids)
        self.principal: Principal = guest(self.client_id)
        self.rooms: set[str] = set()
        self.joined_at: dict[str, float] = {}
        """When this connection joined each room (loop time): how long it has watched."""
        self.closing = False
        self.closer: asyncio.Task[None] | None = None
        self._service = app[SERVICE]
        self.verify = app[VERIFY]
        self._metrics = app[METRICS]
        self._limit = settings.outbound_limit
        self._max_lag = settings.max_lag_s
        self._grace = settings.drain_timeout_s
        self._behind_since = 0.0
        self._loop = asyncio.get_running_loop()
        lim = settings.limits
        self._abuse = TokenBucket(lim.abuse_rate, lim.abuse_burst, self._loop.time())
        self._corked: list[bytes] | None = None
        self._expiry: asyncio.TimerHandle | None = None
        self.serving: set[asyncio.Task[None]] = set()
        """Commands being served on their own (``order``)."""

    @property
    def user_id(self) -> str:
        return self.principal.id

    def write(self, frame: bytes) -> None:
        """Send ``frame`` now, after any corked replies."""
        if self._corked is not None:
            self._corked.append(frame)
            self._uncork()
        else:
            self._write(frame)

    def _send(self, frame: bytes) -> None:
        """Send ``frame`` at the end of this turn of the loop, with the other replies."""
        if self._corked is None:
            self._corked = [frame]
            self._loop.call_soon(self._uncork)
        else:
            self._corked.append(frame)

    def _uncork(self) -> None:
        corked, self._corked = self._corked, None
        if corked:
            self._write(corked[0] if len(corked) == 1 else b"".join(corked))

    def _write(self, data: bytes) -> None:
        if self.closing:
            return
        transport = self.transport
        transport.write(data)
        queued = transport.get_write_buffer_size()
        if queued <= _LOW_WATER:
            self._behind_since = 0.0
            return
        now = self._loop.time()
        if not self._behind_since:
            self._behind_since = now
        if queued > self._limit or now - self._behind_since > self._max_lag:
            self._metrics["slow_closes"] += 1
            log.warning("closing slow consumer %s: %d bytes queued", self.client_id, queued)
            self.close(CLOSE_SLOW, "slow consumer")

    def check_reading(self) -> None:
        """Sample the client's read progress; close with 4009 if it stopped reading."""
        progress = None if self.closing else read_progress(self._sock)
        if progress is not None and self._reading.stalled(*progress):
            self._metrics["slow_closes"] += 1
            sent, taken = self._reading.span
            log.warning(
                "closing slow consumer %s: stopped reading (took %d of %d bytes sent)",
                self.client_id,
                taken,
                sent,
            )
            self.close(CLOSE_SLOW, "slow consumer")

    def removed(self, room: str, code: int) -> None:
        self.rooms.discard(room)
        if code:
            self.close(code, "resync")

    def reply(self, cid: int | None, data: dict[str, Any]) -> None:
        if cid is not None:
            self._send(text_frame(encode_reply(cid, data)))

    def refuse(self, cid: int | None, err: Error) -> None:
        """Answer a refused or invalid command; close 4008 on sustained abuse."""
        self._metrics["refused"] += 1
        if cid is not None:
            self._send(text_frame(encode_error(cid, err)))
        if not self._abuse.take(self._loop.time()):
            self._metrics["abuse_closes"] += 1
            self.close(CLOSE_ABUSE, "too many refused commands")

    def signed_in(self, who: Principal, now: float) -> None:
        """Act for ``who`` from now on, until their token expires: then the connection
        is closed with 4001 (the client gets a new token and reconnects), unless a
        ``refresh`` brings a later one first."""
        self.principal = who
        if self._expiry is not None:
            self._expiry.cancel()
        if who.exp is not None:
            self._expiry = self.close_later(max(0.0, who.exp - now), CLOSE_UNAUTHORIZED, "expired")

    def loop_time(self) -> float:
        return self._loop.time()

    def close_later(self, delay: float, code: int, reason: str) -> asyncio.TimerHandle:
        """Close with ``code`` in ``delay`` seconds, unless the handle is cancelled."""
        return self._loop.call_later(delay, self.close, code, reason)

    def close(self, code: int, reason: str) -> asyncio.Task[None] | None:
        """Leave every room now and close the socket without waiting on the client.

        Returns:
            The task that completes the close, or None if it was already closing.
        """
        if self.closing:
            return None
        self._uncork()
        self.closing = True
        if self._expiry is not None:
            self._expiry.cancel()
        for room in list(self.rooms):
            self._service.leave(room, self, watched_s=_watched(self, room))
        self.rooms.clear()
        self.closer = self._loop.create_task(self._close(code, reason))
        return self.closer

    async def _close(self, code: int, reason: str) -> None:
        """Send the close frame after what is queued; give the client the grace time to
        read it, then drop the socket whatever it did. A slow consumer's answer is not
        waited for: the socket is closed once what is queued is in the kernel's hands."""
        deadline = self._loop.time() + self._grace
        if code == CLOSE_SLOW:
            self.transport.write(close_frame(code, reason))
            self.transport.close()  # after the queue drains, or aborted below
        else:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(
                    self.ws.close(code=code, message=reason.encode(), drain=False), self._grace
                )
        while self.transport.get_write_buffer_size() and self._loop.time() < deadline:
            await asyncio.sleep(0.05)
        if self.transport.get_write_buffer_size():
            self.transport.abort()


async def watch_readers(app: web.Application) -> None:
    """Sample every connection's read progress once (a slice, then the loop's turn)."""
    conns: list[Connection] = [*app[CONNECTIONS]]
    for i, conn in enumerate(conns, 1):
        conn.check_reading()
        if i % 500 == 0:
            await asyncio.sleep(0)


Handler = Callable[[RoomService, Connection, Command], Awaitable[dict[str, Any] | None]]


async def _join(svc: RoomService, conn: Connection, cmd: Command) -> None:
    room = cmd.room
    if room in conn.rooms:
        svc.leave(room, conn)
        conn.rooms.discard(room)
    joined = await svc.join(
        conn.principal, conn, room, since=cmd.args.get("since"), epoch=cmd.args.get("epoch")
    )
    conn.rooms.add(room)
    conn.joined_at.setdefault(room, conn.loop_time())
    conn.reply(cmd.id, joined.data)
    if joined.replay:
        conn.write(text_frame(b"\n".join(joined.replay)))
    joined.membership.go_live(joined.floor)
    return None


async def _refresh(svc: RoomService, conn: Connection, cmd: Command) -> dict[str, Any]:
    """A new token for the same user and role, before the old one expires."""
    now = svc.now_ms() / 1000
    who = conn.verify(cmd.args["token"], now)
    if (who.id, who.role) != (conn.principal.id, conn.principal.role):
        raise Error("forbidden", "refresh with a token of the same user and role")
    conn.signed_in(who, now)
    return {"user": who.as_user(), "exp": who.exp}


async def _leave(svc: RoomService, conn: Connection, cmd: Command) -> dict[str, Any]:
    svc.leave(cmd.room, conn, watched_s=_watched(conn, cmd.room))
    conn.rooms.discard(cmd.room)
    conn.joined_at.pop(cmd.room, None)
    return {}


async def _chat(svc: RoomService, conn: Connection, cmd: Command) -> dict[str, Any]:
    watched = _watched(conn, cmd.room)
    return await svc.chat(conn.principal, cmd.room, cmd.args["text"], watched_s=watched)


async def _like(svc: RoomService, conn: Connection, cmd: Command) -> dict[str, Any]:
    await svc.like(conn.principal, cmd.room, cmd.args["count"])
    return {}


async def _ping(svc: RoomService, conn: Connection, cmd: Command) -> dict[str, Any]:
    return {}


async def _announce(svc: RoomService, conn: Connection, cmd: Command) -> dict[str, Any]:
    return {"seq": await svc.announce(conn.principal, cmd.room, cmd.args["text"])}


async def _start(svc: RoomService, conn: Connection, cmd: Command) -> dict[str, Any]:
    await svc.start(conn.principal, cmd.room)
    return {}


async def _end(svc: RoomService, conn: Connection, cmd: Command) -> dict[str, Any]:
    await svc.end(conn.principal, cmd.room)
    return {}


async def _delete(svc: RoomService, conn: Connection, cmd: Command) -> dict[str, Any]:
    await svc.delete(conn.principal, cmd.room, cmd.args["msg_id"])
    return {}


async def _mute(svc: RoomService, conn: Connection, cmd: Command) -> dict[str, Any]:
    await svc.mute(conn.principal, cmd.room, cmd.args["user"], cmd.args["seconds"])
    return {}


async def _ban(svc: RoomService, conn: Connection, cmd: Command) -> dict[str, Any]:
    await svc.ban(conn.principal, cmd.room, cmd.args["user"], cmd.op == "mod.ban")
    return {}


async def _slow(svc: RoomService, conn: Connection, cmd: Command) -> dict[str, Any]:
    await svc.slow(conn.principal, cmd.room, cmd.args["seconds"])
    return {}


async def _filter(svc: RoomService, conn: Connection, cmd: Command) -> dict[str, Any]:
    a = cmd.args
    terms = await svc.change_filter(
        conn.principal,
        cmd.room,
        add=list(a.get("add") or []),
        remove=list(a.get("remove") or []),
        action=a.get("action"),
        leet=a.get("leet"),
    )
    return {"terms": terms}


async def _approve(svc: RoomService, conn: Connection, cmd: Command) -> dict[str, Any]:
    await svc.approve(conn.principal, cmd.room, cmd.args["msg_id"])
    return {}


async def _pin(svc: RoomService, conn: Connection, cmd: Command) -> dict[str, Any]:
    if cmd.op == "pin":
        await svc.pin(conn.principal, cmd.room, cmd.args["sku"])
    else:
        await svc.unpin(conn.principal, cmd.room, cmd.args["sku"])
    return {}


async def _sale_start(svc: RoomService, conn: Connection, cmd: Command) -> dict[str, Any]:
    a = cmd.args
    sale = await svc.start_sale(
        conn.principal,
        cmd.room,
        sku=a["sku"],
        price=a["price"],
        stock=a["stock"],
        limit_per_user=a["limit_per_user"],
        duration_s=a["duration_s"],
        price_b=a.get("price_b"),
    )
    return {"sale": sale.public()}


async def _sale_stop(svc: RoomService, conn: Connection, cmd: Command) -> dict[str, Any]:
    await svc.stop_sale(conn.principal, cmd.room, cmd.args["sale"])
    return {}


async def _coupon_drop(svc: RoomService, conn: Connection, cmd: Command) -> dict[str, Any]:
    coupon = await svc.drop_coupon(conn.principal, cmd.room, cmd.args)
    return {"coupon": coupon.public()}


async def _coupon_stop(svc: RoomService, conn: Connection, cmd: Command) -> dict[str, Any]:
    await svc.stop_coupon(conn.principal, cmd.room, cmd.args["coupon"])
    return {}


async def _coupon_claim(svc: RoomService, conn: Connection, cmd: Command) -> dict[str, Any]:
    watched = _watched(conn, cmd.room)
    return await svc.claim_coupon(conn.principal, cmd.room, cmd.args["coupon"], watched_s=watched)


def _watched(conn: Connection, room: str) -> float:
    """How long this connection has watched ``room`` (seconds; 0 if not joined)."""
    joined = conn.joined_at.get(room)
    return 0.0 if joined is None else conn.loop_time() - joined


async def _giveaway_start(svc: RoomService, conn: Connection, cmd: Command) -> dict[str, Any]:
    giveaway = await svc.start_giveaway(conn.principal, cmd.room, cmd.args)
    return {"giveaway": giveaway.public()}


async def _giveaway_enter(svc: RoomService, conn: Connection, cmd: Command) -> dict[str, Any]:
    gid, watched = cmd.args["giveaway"], _watched(conn, cmd.room)
    return await svc.enter_giveaway(conn.principal, cmd.room, gid, watched_s=watched)


async def _giveaway_draw(svc: RoomService, conn: Connection, cmd: Command) -> dict[str, Any]:
    drawn = await svc.draw_giveaway(conn.principal, cmd.room, cmd.args["giveaway"])
    return {"giveaway": drawn.public()}


async def _giveaway_cancel(svc: RoomService, conn: Connection, cmd: Command) -> dict[str, Any]:
    await svc.cancel_giveaway(conn.principal, cmd.room, cmd.args["giveaway"])
    return {}


async def _deal_start(svc: RoomService, conn: Connection, cmd: Command) -> dict[str, Any]:
    deal = await svc.start_deal(conn.principal, cmd.room, cmd.args)
    return {"deal": deal.public()}


async def _deal_stop(svc: RoomService, conn: Connection, cmd: Command) -> dict[str, Any]:
    await svc.stop_deal(conn.principal, cmd.room, cmd.args["deal"])
    return {}


async def _group_open(svc: RoomService, conn: Connection, cmd: Command) -> dict[str, Any]:
    return await svc.open_group(conn.principal, cmd.room, cmd.args["deal"])


async def _group_join(svc: RoomService, conn: Connection, cmd: Command) -> dict[str, Any]:
    return await svc.join_group(conn.principal, cmd.room, cmd.args["group"])


async def _auction_start(svc: RoomService, conn: Connection, cmd: Command) -> dict[str, Any]:
    lot = await svc.start_auction(conn.principal, cmd.room, cmd.args)
    return {"auction": lot.public()}


async def _bid(svc: RoomService, conn: Connection, cmd: Command) -> dict[str, Any]:
    a = cmd.args
    return await svc.bid(conn.principal, cmd.room, a["auction"], a["amount"], a.get("max"))


async def _product_open(svc: RoomService, conn: Connection, cmd: Command) -> dict[str, Any]:
    await svc.product_open(conn.principal, cmd.room, cmd.args["sku"])
    return {}


async def _report(svc: RoomService, conn: Connection, cmd: Command) -> dict[str, Any]:
    a = cmd.args
    return await svc.report(conn.principal, cmd.room, a["reason"], a.get("msg_id"), a.get("note"))


async def _order(svc: RoomService, conn: Connection, cmd: Command) -> dict[str, Any]:
    a = cmd.args
    order = await svc.order(
        conn.principal,
        cmd.room,
        sale_id=a["sale"],
        qty=a["qty"],
        key=a["key"],
        coupon=a.get("coupon"),
    )
    return {"order": order.public()}


HANDLERS: dict[str, Handler] = {
    "join": _join,
    "leave": _leave,
    "refresh": _refresh,
    "chat": _chat,
    "like": _like,
    "ping": _ping,
    "announce": _announce,
    "room.start": _start,
    "room.end": _end,
    "mod.delete": _delete,
    "mod.mute": _mute,
    "mod.ban": _ban,
    "mod.unban": _ban,
    "mod.slow": _slow,
    "mod.filter": _filter,
    "mod.approve": _approve,
    "pin": _pin,
    "unpin": _pin,
    "sale.start": _sale_start,
    "sale.stop": _sale_stop,
    "order": _order,
    "coupon.drop": _coupon_drop,
    "coupon.stop": _coupon_stop,
    "coupon.claim": _coupon_claim,
    "giveaway.start": _giveaway_start,
    "giveaway.enter": _giveaway_enter,
    "giveaway.draw": _giveaway_draw,
    "giveaway.cancel": _giveaway_cancel,
    "deal.start": _deal_start,
    "deal.stop": _deal_stop,
    "group.open": _group_open,
    "group.join": _group_join,
    "auction.start": _auction_start,
    "bid": _bid,
    "report": _report,
    "product.open": _product_open,
}


def _frame_id(data: bytes) -> int | None:
    """The id of an oversized frame, if it is a JSON object with one (to reply to it)."""
    try:
        obj = loads(data)
    except ValueError:
        return None
    cid = obj.get("id") if isinstance(obj, dict) else None
    return cid if type(cid) is int else None


def origin_allowed(request: web.Request, allowed: tuple[str, ...]) -> bool:
    """Whether a WebSocket may open from the page that asks: no ``Origin`` (an app, not a
    browser), the server's own origin, or one of ``allowed`` (``*``: any). A page of
    another site would otherwise act with its visitor's sign-in (Centrifugo's rule)."""
    origin = request.headers.get("Origin")
    if origin is None or "*" in allowed or origin in allowed:
        return True
    parts = urlsplit(origin)
    return parts.scheme in ("http", "https") and parts.netloc == request.host


async def ws_handler(request: web.Request) -> web.StreamResponse:
    app = request.app
    settings = app[SETTINGS]
    lim = settings.limits
    if not origin_allowed(request, settings.allowed_origins):
        app[METRICS]["origin_refusals"] += 1
        raise Error("forbidden", "this page's origin may not open the live connection")
    ws = web.WebSocketResponse(
        compress=False,
        max_msg_size=lim.hard_max_frame,
        heartbeat=30.0,
        decode_text=False,
        timeout=settings.drain_timeout_s,
    )
    await ws.prepare(request)
    conn = Connection(request, ws)
    connections = app[CONNECTIONS]
    connections.add(conn)
    app[METRICS]["connections_total"] += 1
    per_user = app[USER_CONNECTIONS]
    try:
        if await _handshake(app, ws, conn):
            await _serve(app[SERVICE], ws, conn, lim.max_frame)
    finally:
        connections.discard(conn)
        if conn.principal.role != "guest":
            per_user[conn.user_id] -= 1
            if per_user[conn.user_id] <= 0:
                del per_user[conn.user_id]
        if conn.closer is None:
            conn.close(1000, "")
        if conn.closer is not None:
            await asyncio.shield(conn.closer)
    return ws


async def _handshake(app: web.Application, ws: web.WebSocketResponse, conn: Connection) -> bool:
    """Read the ``connect`` command; False (and the socket closing) if it fails."""
    settings = app[SETTINGS]
    # a timer, not a timeout scope around the read: half the cost, on every connect
    late = conn.close_later(settings.limits.connect_timeout_s, CLOSE_UNAUTHORIZED, "connect first")
    try:
        msg = await ws.receive()
    finally:
        late.cancel()
    if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY) or conn.closing:
        return False
    try:
        cmd = decode(msg.data)
    except Error:
        cmd = None
    if cmd is None or cmd.op != "connect":
        conn.close(CLOSE_UNAUTHORIZED, "the first command must be connect")
        return False
    token = cmd.args.get("token")
    if token is not None:
        now = app[SERVICE].now_ms() / 1000
        try:
            conn.signed_in(app[VERIFY](token, now), now)
        except Error as err:
            conn.refuse(cmd.id, err)
            conn.close(CLOSE_UNAUTHORIZED, "bad token")
            return False
        per_user = app[USER_CONNECTIONS]
        if per_user[conn.user_id] >= settings.limits.connections_per_user:
            conn.refuse(cmd.id, Error("rate_limited", "too many connections of this user"))
            conn.close(CLOSE_ABUSE, "too many connections")
            conn.principal = guest(conn.client_id)  # not counted: it never was
            return False
        per_user[conn.user_id] += 1
    conn.reply(cmd.id, {"client_id": conn.client_id, "user": conn.principal.as_user()})
    return True


def _order_soon(svc: RoomService, conn: Connection, cmd: Command, handler: Handler) -> None:
    """Serve an ``order`` without holding up the connection's next command."""
    a = cmd.args
    try:
        served = svc.order_nowait(
            conn.principal,
            cmd.room,
            sale_id=a["sale"],
            qty=a["qty"],
            key=a["key"],
            done=functools.partial(_ordered, conn, cmd.id),
            coupon=a.get("coupon"),
        )
    except Error as err:
        conn.refuse(cmd.id, err)
        return
    if not served:  # the room must be read first
        task = asyncio.create_task(_dispatch(svc, conn, cmd, handler))
        conn.serving.add(task)
        task.add_done_callback(conn.serving.discard)


def _ordered(conn: Connection, cid: int | None, result: Order | Error) -> None:
    if isinstance(result, Error):
        conn.refuse(cid, result)
    else:
        conn.reply(cid, {"order": result.public()})


async def _dispatch(svc: RoomService, conn: Connection, cmd: Command, handler: Handler) -> None:
    """Run one command and answer it (once, if it has an id)."""
    try:
        data_out = await handler(svc, conn, cmd)
    except Error as err:
        conn.refuse(cmd.id, err)
        return
    except Exception:
        log.exception("command %s failed", cmd.op)
        conn.refuse(cmd.id, Error("internal", "internal error"))
        return
    if data_out is not None:
        conn.reply(cmd.id, data_out)


async def _serve(
    svc: RoomService, ws: web.WebSocketResponse, conn: Connection, max_frame: int
) -> None:
    async for msg in ws:
        if conn.closing:
            break
        if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
            continue
        data: bytes = msg.data
        if len(data) > max_frame:
            conn.refuse(_frame_id(data), Error("too_large", f"frame over {max_frame} bytes"))
            continue
        try:
            cmd = decode(data)
        except Error as err:
            cid = err.data.get("id") if err.data else None
            conn.refuse(cid if type(cid) is int else None, err)
            continue
        handler = HANDLERS.get(cmd.op)
        if handler is None:  # connect again
            conn.refuse(cmd.id, Error("bad_request", "already connected"))
        elif cmd.op == "order":
            _order_soon(svc, conn, cmd, handler)
        else:
            await _dispatch(svc, conn, cmd, handler)
    if ws.close_code == CLOSE_TOO_LARGE:
        log.info("client %s sent a frame over the hard limit", conn.client_id)
