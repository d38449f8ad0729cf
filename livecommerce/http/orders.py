"""The order bridge's HTTP side: callbacks from the order system, the sandbox shop's
pages, the dead-letter admin, and the bridge workers of this process."""

from __future__ import annotations

import asyncio
import html
import logging
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from livecommerce.errors import Error
from livecommerce.http.keys import BACKENDS, SECRET, SERVICE, SETTINGS
from livecommerce.http.routes import PAGE_HEADERS, json_body, json_response, principal
from livecommerce.inventory.rules import SETTLE_KINDS, SettleKind
from livecommerce.orders.bridge import Bridge, HttpTransport, Transport, make_bridge
from livecommerce.orders.sandbox import SandboxShop
from livecommerce.orders.webhooks import verify, webhook_key
from livecommerce.protocol import loads

log = logging.getLogger(__name__)

ORDER_KEY = web.AppKey("order_key", bytes)
"""The webhook secret's key: signs deliveries, verifies callbacks."""
SANDBOX: web.AppKey[SandboxShop | None] = web.AppKey("sandbox")
BRIDGE: web.AppKey[Bridge | None] = web.AppKey("bridge")


async def apply_callback(app: web.Application, body: bytes, headers: Mapping[str, str]) -> Any:
    """Verify and apply one order-system event; the JSON answer.

    Raises:
        Error: ``unauthorized`` (signature, age), ``bad_request`` (shape), ``not_found``.
    """
    service = app[SERVICE]
    event_id = verify(app[ORDER_KEY], headers, body, now=service.now_ms() / 1000)
    try:
        doc = loads(body)
    except ValueError:
        raise Error("bad_request", "the body must be JSON") from None
    kind = doc.get("type") if isinstance(doc, dict) else None
    data = doc.get("data") if isinstance(doc, dict) else None
    if not isinstance(kind, str) or kind.removeprefix("order.") not in SETTLE_KINDS:
        raise Error("bad_request", "type must be order.paid, order.cancelled or order.refunded")
    oid = data.get("order_id") if isinstance(data, dict) else None
    if not isinstance(oid, str):
        raise Error("bad_request", "data.order_id is required")
    settle: SettleKind = kind.removeprefix("order.")  # type: ignore[assignment]
    done = await service.settle(oid, settle, event_id=event_id)
    assert done.order is not None
    return {
        "order": done.order.public(),
        "applied": done.applied,
        "duplicate": done.duplicate,
        "late": done.late,
    }


async def order_events(request: web.Request) -> web.Response:
    """``POST /api/orders/events``: a signed callback of the order system."""
    body = await request.read()
    return json_response(await apply_callback(request.app, body, request.headers))


def _admin(request: web.Request) -> None:
    who = principal(request)
    if who.role != "admin":
        raise Error("unauthorized" if who.role == "guest" else "forbidden", "admins only")


async def dead_letters(request: web.Request) -> web.Response:
    """``GET /api/admin/dead-letters``: orders the bridge gave up on."""
    _admin(request)
    outbox = request.app[BACKENDS].outbox
    letters = await outbox.dead_letters(limit=500)
    return json_response(
        {
            "dead_letters": [
                {
                    "id": d.id,
                    "room": d.room,
                    "order_id": d.fields.get("id"),
                    "reason": d.reason,
                    "failures": d.failures,
                    "at": d.at_ms,
                    "entry": d.fields,
                }
                for d in letters
            ],
            "backlog": await outbox.backlog(),
        }
    )


async def redrive(request: web.Request) -> web.Response:
    """``POST /api/admin/dead-letters/redrive`` ``{"id"}``: deliver it again."""
    _admin(request)
    body = await json_body(request)
    did = body.get("id")
    if not isinstance(did, str) or len(did) > 200:
        raise Error("bad_request", "id: a dead letter's id")
    if not await request.app[BACKENDS].outbox.redrive(did):
        raise Error("not_found", "no such dead letter")
    return json_response({"redriven": did})


async def sandbox_webhook(request: web.Request) -> web.Response:
    """``POST /sandbox/webhook``: the sandbox shop, for a bridge run apart."""
    shop = request.app[SANDBOX]
    if shop is None:
        raise Error("not_found", "no sandbox: an order system is configured")
    status, answer = await shop.receive(await request.read(), request.headers)
    return web.Response(body=answer, status=status, content_type="application/json")


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sandbox checkout</title><link rel="stylesheet" href="/css/base.css">
<script type="module" src="/js/checkout.js"></script></head>
<body class="sandbox"><main class="checkout" data-order="{oid}">
<p class="note">Sandbox shop: no money moves. A real order system takes this place.</p>
<h1>{title}</h1>
<dl><dt>Order</dt><dd><code>{oid}</code></dd><dt>Quantity</dt><dd>{qty}</dd>
{source}{discount}<dt>Total</dt><dd id="total">{total}</dd>
<dt>Status</dt><dd id="status">{status}</dd>
<dt>Pay before</dt><dd><time datetime="{expires_iso}">{expires_iso}</time></dd></dl>
{actions}
<p id="checkout-note" role="status"></p>
</main></body></html>
"""


_SOURCES = {
    "sale": "A flash sale",
    "giveaway": "A giveaway's prize: free",
    "group": "A group buy that filled: the group price",
    "auction": "An auction you won: the hammer price",
}


async def checkout_page(request: web.Request) -> web.Response:
    """``GET /sandbox/checkout/{order}``: the order with Pay and Cancel buttons.

    The buttons are the page's script (``static/js/checkout.js``): it sends the buyer's
    token with ``Authorization``, which no form of another site can send, and only the
    order's own buyer (or an admin) may pay or cancel (:func:`checkout_action`)."""
    if request.app[SANDBOX] is None:
        raise Error("not_found", "no sandbox: an order system is configured")
    oid = request.match_info["order"]
    order = await request.app[BACKENDS].inventory.order(oid) if len(oid) <= 100 else None
    if order is None:
        raise Error("not_found", "no such order")
    actions = ""
    if order.status == "held":
        actions = (
            '<p class="actions"><button id="pay" type="button" disabled>Pay</button> '
            '<button id="cancel" type="button" class="secondary" disabled>Cancel order'
            "</button></p>"
        )
    expires = datetime.fromtimestamp(order.expires_at / 1000, UTC).isoformat(timespec="seconds")
    cur = request.app[SETTINGS].currency
    page = _PAGE.format(
        title=html.escape(order.title),
        oid=html.escape(order.id),
        qty=order.qty,
        source=(
            f'<dt>From</dt><dd id="source">{_SOURCES[order.source]}</dd>'
            if order.source != "sale"
            else ""
        ),
        discount=(
            f'<dt>Coupon</dt><dd id="discount">−{order.discount / 100:.2f} {cur} '
            f"<code>{html.escape(order.coupon)}</code></dd>"
            if order.coupon
            else ""
        ),
        total=f"{(order.qty * order.price - order.discount) / 100:.2f} {cur}",
        status=html.escape(order.status),
        expires_iso=expires,
        actions=actions,
    )
    return web.Response(text=page, content_type="text/html", headers=PAGE_HEADERS)


async def checkout_action(request: web.Request) -> web.Response:
    """``POST /sandbox/checkout/{order}/pay|cancel``: the shop sends its callback.

    Only with the buyer's (or an admin's) token in ``Authorization``: a guest gets 401,
    anyone else the 404 of an order that does not exist for them.
    """
    shop = request.app[SANDBOX]
    if shop is None:
        raise Error("not_found", "no sandbox: an order system is configured")
    who = principal(request)
    if who.role == "guest":
        raise Error("unauthorized", "sign in as the buyer (Authorization: Bearer <token>)")
    oid = request.match_info["order"]
    order = await request.app[BACKENDS].inventory.order(oid) if len(oid) <= 100 else None
    if order is None or (order.user != who.id and who.role != "admin"):
        raise Error("not_found", "no such order")  # others' orders do not exist
    kind = {"pay": "paid", "cancel": "cancelled"}[request.match_info["action"]]
    status, answer = await shop.report(oid, kind)
    return json_response(answer, status)


def setup(app: web.Application) -> None:
    settings = app[SETTINGS]
    r = app.router
    r.add_post("/api/orders/events", order_events)
    r.add_get("/api/admin/dead-letters", dead_letters)
    r.add_post("/api/admin/dead-letters/redrive", redrive)
    if settings.order_webhook_url is None:
        r.add_post("/sandbox/webhook", sandbox_webhook)
        r.add_get("/sandbox/checkout/{order}", checkout_page)
        r.add_post("/sandbox/checkout/{order}/{action:pay|cancel}", checkout_action)
    app.cleanup_ctx.append(bridge_ctx)


async def _sandbox_callback(app: web.Application, body: bytes, headers: Mapping[str, str]) -> Any:
    try:
        return 200, await apply_callback(app, body, headers)
    except Error as err:
        return err.status, {"error": {"code": err.code, "message": err.message}}


async def bridge_ctx(app: web.Application) -> AsyncIterator[None]:
    """The sandbox shop (with no webhook URL) and this process's bridge worker."""
    settings = app[SETTINGS]
    app[ORDER_KEY] = key = webhook_key(settings.order_webhook_secret, app[SECRET])
    app[SANDBOX] = app[BRIDGE] = None
    http: HttpTransport | None = None
    transport: Transport
    if settings.order_webhook_url is None:
        log.warning(
            "SANDBOX SHOP: orders go to the built-in sandbox, where buyers pay nothing "
            "(%s); a shop's server needs --order-webhook-url",
            "--demo" if settings.demo else "--sandbox-shop",
        )
        shop = app[SANDBOX] = SandboxShop(
            key, lambda body, headers: _sandbox_callback(app, body, headers)
        )
        transport = shop.receive
    else:
        transport = http = HttpTransport(
            settings.order_webhook_url,
            timeout_s=settings.bridge_timeout_s,
            connections=settings.bridge_concurrency,
        )
    if not settings.bridge:
        yield
        return
    service = app[SERVICE]
    bridge = make_bridge(app[BACKENDS].outbox, transport, key, service.delivered, settings)
    app[BRIDGE] = bridge
    task = asyncio.create_task(bridge.run())
    yield
    bridge.stop()
    await asyncio.wait([task], timeout=settings.drain_timeout_s)
    if http is not None:
        await http.close()
