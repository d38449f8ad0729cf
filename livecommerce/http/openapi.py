"""The OpenAPI 3.1 description of the HTTP API (served at ``/api/openapi.json``)."""

from __future__ import annotations

from typing import Any

from livecommerce import __version__

_ROOM_ID = "^[a-z0-9][a-z0-9_-]{0,63}$"


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _staff_export(summary: str, what: str) -> dict[str, Any]:
    """A staff-only GET of a room that answers JSON, or CSV with ``?format=csv``."""
    return {
        "get": {
            "summary": summary,
            "security": [{"bearer": []}],
            "parameters": [
                {"name": "room", "in": "path", "required": True, "schema": {"type": "string"}},
                {
                    "name": "format",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "string", "enum": ["json", "csv"]},
                },
            ],
            "responses": {
                "200": {
                    "description": what,
                    "content": {
                        "application/json": {"schema": {"type": "object"}},
                        "text/csv": {"schema": {"type": "string"}},
                    },
                },
                **_errors(400, 401, 403, 404),
            },
        }
    }


def _errors(*statuses: int) -> dict[str, Any]:
    text = {
        400: "Invalid request",
        401: "Missing or invalid token",
        403: "Not allowed",
        404: "Not found",
        409: "Conflict",
        413: "Body too large",
        429: "Too many requests: slow down",
    }
    return {str(s): _json(_ref("Error"), text[s]) for s in statuses}


_SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
            }
        },
    },
    "Room": {
        "type": "object",
        "required": ["id", "title", "host", "status", "created_at"],
        "properties": {
            "id": {"type": "string", "pattern": _ROOM_ID},
            "title": {"type": "string"},
            "host": {"type": "string", "description": "user id of the room's host"},
            "status": {"type": "string", "enum": ["scheduled", "live", "ended"]},
            "created_at": {"type": "integer", "description": "unix ms"},
        },
    },
    "RoomDetail": {
        "allOf": [
            {"$ref": "#/components/schemas/Room"},
            {
                "type": "object",
                "required": ["viewers", "likes", "pinned", "sales", "media"],
                "properties": {
                    "viewers": {"type": "integer", "minimum": 0},
                    "likes": {"type": "integer", "minimum": 0},
                    "pinned": {"type": ["object", "null"]},
                    "sales": {"type": "array", "items": {"type": "object"}},
                    "media": {"$ref": "#/components/schemas/Media"},
                },
            },
        ]
    },
    "Media": {
        "type": "object",
        "description": "The room's video: whether the host publishes, and how to watch",
        "required": ["live", "whep", "hls"],
        "properties": {
            "live": {"type": "boolean", "description": "the host's camera is live"},
            "whep": {"type": "boolean", "description": "POST .../whep may play it"},
            "hls": {"type": "boolean", "description": "/hls/{room}/live.m3u8 plays it"},
        },
    },
    "Product": {
        "type": "object",
        "required": ["sku", "title", "price", "image"],
        "properties": {
            "sku": {"type": "string"},
            "title": {"type": "string"},
            "price": {"type": "integer", "minimum": 0, "description": "smallest currency unit"},
            "image": {"type": ["string", "null"]},
        },
    },
    "NewProduct": {
        "type": "object",
        "required": ["title", "price"],
        "properties": {
            "title": {"type": "string", "minLength": 1, "maxLength": 200},
            "price": {"type": "integer", "minimum": 0, "maximum": 10_000_000_000},
            "image": {"type": "string", "maxLength": 2048},
        },
    },
    "Order": {
        "type": "object",
        "required": [
            "id",
            "sale",
            "sku",
            "qty",
            "price",
            "status",
            "expires_at",
            "room",
            "title",
            "user",
            "created_at",
        ],
        "properties": {
            "id": {"type": "string"},
            "room": {"type": "string"},
            "sale": {"type": "string"},
            "sku": {"type": "string"},
            "title": {"type": "string"},
            "user": {"type": "string"},
            "qty": {"type": "integer", "minimum": 1},
            "price": {"type": "integer", "minimum": 0},
            "status": {
                "type": "string",
                "enum": ["held", "paid", "expired", "cancelled", "refunded"],
            },
            "payment_url": {"type": "string"},
            "created_at": {"type": "integer"},
            "expires_at": {"type": "integer"},
            "coupon": {"type": "string"},
            "discount": {"type": "integer", "minimum": 0},
            "source": {
                "type": "string",
                "enum": ["giveaway", "group", "auction"],
                "description": "A promotion's order (absent: a flash sale's)",
            },
        },
    },
    "DrawProof": {
        "type": "object",
        "description": "A giveaway's draw, checkable by anyone (docs/giveaways.md)",
        "required": [
            "giveaway",
            "room",
            "commitment",
            "seed",
            "entrants",
            "entrants_digest",
            "count",
            "winners",
            "version",
        ],
        "properties": {
            "giveaway": {"type": "string"},
            "room": {"type": "string"},
            "commitment": {"type": "string", "description": "SHA-256 of the seed, hex"},
            "seed": {"type": "string", "description": "The revealed seed, hex"},
            "entrants": {"type": "array", "items": {"type": "string"}},
            "entrants_digest": {"type": "string"},
            "count": {"type": "integer", "minimum": 1},
            "winners": {"type": "array", "items": {"type": "string"}},
            "version": {"type": "integer"},
        },
    },
    "BidLog": {
        "type": "object",
        "required": ["auction", "bids"],
        "properties": {
            "auction": {"type": "object", "description": "The lot, as the protocol's auction"},
            "bids": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["seq", "user", "name", "amount", "at", "price", "leader", "max"],
                    "properties": {
                        "seq": {"type": "integer"},
                        "user": {"type": "string"},
                        "name": {"type": "string"},
                        "amount": {"type": "integer"},
                        "max": {"type": ["integer", "null"]},
                        "at": {"type": "integer"},
                        "price": {"type": "integer"},
                        "leader": {"type": "string"},
                    },
                },
            },
        },
    },
    "Clip": {
        "type": "object",
        "description": "A product's clip: the stream while it was pinned (docs/media.md)",
        "required": [
            "id",
            "room",
            "sku",
            "title",
            "price",
            "currency",
            "image",
            "started_at",
            "ended_at",
            "duration_s",
            "playlist",
            "poster",
            "sale",
        ],
        "properties": {
            "id": {"type": "string"},
            "room": {"type": "string", "pattern": _ROOM_ID},
            "sku": {"type": "string"},
            "title": {"type": "string"},
            "price": {"type": "integer", "minimum": 0, "description": "smallest currency unit"},
            "currency": {"type": "string", "description": "ISO 4217"},
            "image": {"type": ["string", "null"]},
            "started_at": {"type": "integer", "description": "unix ms"},
            "ended_at": {"type": "integer", "description": "unix ms"},
            "duration_s": {"type": "number", "minimum": 0},
            "playlist": {"type": "string", "description": "path of its HLS VOD playlist"},
            "poster": {"type": ["string", "null"], "description": "path of its JPEG poster"},
            "sale": {
                "description": "the sku's open flash sale in the room now, if any",
                "oneOf": [
                    {"type": "null"},
                    {
                        "type": "object",
                        "required": ["id", "price", "remaining", "ends_at"],
                        "properties": {
                            "id": {"type": "string"},
                            "price": {"type": "integer", "minimum": 0},
                            "remaining": {"type": "integer", "minimum": 0},
                            "ends_at": {"type": "integer", "description": "unix ms"},
                        },
                    },
                ],
            },
        },
    },
    "NewRoom": {
        "type": "object",
        "required": ["title"],
        "properties": {
            "title": {"type": "string", "minLength": 1, "maxLength": 200},
            "id": {"type": "string", "pattern": _ROOM_ID},
        },
    },
}


def _clips(*, next_: bool) -> dict[str, Any]:
    properties: dict[str, Any] = {"clips": {"type": "array", "items": _ref("Clip")}}
    if next_:
        properties["next"] = {
            "type": ["string", "null"],
            "description": "the cursor of the next page; null on the last",
        }
    return {"type": "object", "required": list(properties), "properties": properties}


def document(*, demo: bool) -> dict[str, Any]:
    """The OpenAPI document; the demo sign-in appears only when it exists."""
    room_param = {
        "name": "room",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "pattern": _ROOM_ID},
    }
    paths: dict[str, Any] = {
        "/healthz": {
            "get": {
                "summary": "Readiness",
                "responses": {
                    "200": _json({"type": "object"}, "Ready to take connections"),
                    "503": _json({"type": "object"}, "Starting or draining"),
                },
            }
        },
        "/api/openapi.json": {
            "get": {
                "summary": "This document",
                "responses": {"200": _json({"type": "object"}, "OpenAPI 3.1")},
            }
        },
        "/api/rooms": {
            "get": {
                "summary": "List rooms",
                "description": (
                    "Newest first, a page at a time. Scheduled rooms are listed only to "
                    "those who run them (the host, the room's staff, admins)."
                ),
                "parameters": [
                    {
                        "name": "status",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "string", "enum": ["scheduled", "live", "ended"]},
                    },
                    {
                        "name": "limit",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "integer", "minimum": 1, "maximum": 500},
                    },
                    {
                        "name": "cursor",
                        "in": "query",
                        "required": False,
                        "description": "the next of the previous page",
                        "schema": {"type": "string", "pattern": "^[0-9]{1,9}$"},
                    },
                ],
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["rooms", "next"],
                            "properties": {
                                "rooms": {"type": "array", "items": _ref("Room")},
                                "next": {"type": ["string", "null"]},
                            },
                        },
                        "Rooms, newest first",
                    ),
                    **_errors(400, 401),
                },
            },
            "post": {
                "summary": "Create a room (host or admin); it is scheduled until room.start",
                "security": [{"bearer": []}],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("NewRoom")}},
                },
                "responses": {
                    "201": _json(_ref("Room"), "Created"),
                    **_errors(400, 401, 403, 409, 413, 429),
                },
            },
        },
        "/api/rooms/{room}": {
            "get": {
                "summary": "A room with its live figures",
                "parameters": [room_param],
                "responses": {"200": _json(_ref("RoomDetail"), "The room"), **_errors(404)},
            }
        },
        "/api/rooms/{room}/products": {
            "get": {
                "summary": "The room's lineup",
                "parameters": [room_param],
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["products"],
                            "properties": {"products": {"type": "array", "items": _ref("Product")}},
                        },
                        "Products by sku",
                    ),
                    **_errors(404),
                },
            }
        },
        "/api/rooms/{room}/products/{sku}": {
            "put": {
                "summary": "Add or replace a product of the lineup (the room's host)",
                "security": [{"bearer": []}],
                "parameters": [
                    room_param,
                    {
                        "name": "sku",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "minLength": 1, "maxLength": 64},
                    },
                ],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("NewProduct")}},
                },
                "responses": {
                    "200": _json(_ref("Product"), "The product as stored"),
                    **_errors(400, 401, 403, 404, 413, 429),
                },
            }
        },
        "/api/rooms/{room}/clips": {
            "get": {
                "summary": "The room's product clips, newest first",
                "parameters": [
                    room_param,
                    {
                        "name": "sku",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "string", "minLength": 1, "maxLength": 64},
                    },
                ],
                "responses": {
                    "200": _json(_clips(next_=False), "Clips (of the sku, if given)"),
                    **_errors(400, 404),
                },
            }
        },
        "/api/clips": {
            "get": {
                "summary": "The shoppable feed: every room's clips, newest first",
                "parameters": [
                    {
                        "name": "limit",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "integer", "minimum": 1, "maximum": 100},
                    },
                    {
                        "name": "cursor",
                        "in": "query",
                        "required": False,
                        "description": "the next of the previous page",
                        "schema": {"type": "string"},
                    },
                ],
                "responses": {
                    "200": _json(_clips(next_=True), "A page of clips"),
                    **_errors(400),
                },
            }
        },
        "/hls/{room}/live.m3u8": {
            "get": {
                "summary": "The room's live HLS playlist (its current or last stream)",
                "description": "Cache-Control: no-cache; see docs/media.md for a CDN.",
                "parameters": [room_param],
                "responses": {
                    "200": {
                        "description": "An HLS media playlist (fragmented MP4)",
                        "content": {
                            "application/vnd.apple.mpegurl": {"schema": {"type": "string"}}
                        },
                    },
                    **_errors(404),
                },
            }
        },
        "/hls/{room}/{stream}/{file}": {
            "get": {
                "summary": "A stream's init or media segment, or a clip's playlist or poster",
                "description": "Never changes: Cache-Control: public, max-age=31536000, immutable",
                "parameters": [
                    room_param,
                    {
                        "name": "stream",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "pattern": "^[a-z0-9]{1,40}$"},
                    },
                    {
                        "name": "file",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                        "description": "init.mp4, init-N.mp4, N.m4s, clip-ID.m3u8, clip-ID.jpg",
                    },
                ],
                "responses": {
                    "200": {
                        "description": "The file",
                        "content": {
                            t: {"schema": {"type": "string", "format": "binary"}}
                            for t in (
                                "video/mp4",
                                "video/iso.segment",
                                "application/vnd.apple.mpegurl",
                                "image/jpeg",
                            )
                        },
                    },
                    **_errors(404),
                },
            }
        },
        "/api/orders/{order}": {
            "get": {
                "summary": "One of your orders (or any, for an admin)",
                "security": [{"bearer": []}],
                "parameters": [
                    {"name": "order", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                "responses": {"200": _json(_ref("Order"), "The order"), **_errors(401, 404)},
            }
        },
        "/api/giveaways/{giveaway}/proof": {
            "get": {
                "summary": "A drawn giveaway's proof: seed, entrants and winners (public)",
                "parameters": [
                    {
                        "name": "giveaway",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                    }
                ],
                "responses": {"200": _json(_ref("DrawProof"), "The proof"), **_errors(404)},
            }
        },
        "/api/auctions/{auction}/bids": {
            "get": {
                "summary": "A lot and its append-only bid log (public; maxima once ended)",
                "parameters": [
                    {
                        "name": "auction",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                    }
                ],
                "responses": {"200": _json(_ref("BidLog"), "The lot and its bids"), **_errors(404)},
            }
        },
        "/api/me/data": {
            "get": {
                "summary": "Everything the server holds about you, by room",
                "security": [{"bearer": []}],
                "responses": {"200": _json({"type": "object"}, "Your data"), **_errors(401)},
            },
            "delete": {
                "summary": "Erase your data: chats removed, a pseudonym everywhere else",
                "security": [{"bearer": []}],
                "responses": {"200": _json({"type": "object"}, "What was erased"), **_errors(401)},
            },
        },
        "/api/rooms/{room}/report": _staff_export(
            "The show's figures, live or after it (staff): JSON or CSV",
            "Totals, rates, products (with their clips), minutes, A/B tests",
        ),
        "/api/rooms/{room}/chat": _staff_export(
            "The room's chat and its moderation, as JSON or CSV (staff)", "The export"
        ),
        "/api/rooms/{room}/modlog": {
            "get": {
                "summary": "The room's moderation log, oldest first (host, moderators)",
                "security": [{"bearer": []}],
                "parameters": [
                    {"name": "room", "in": "path", "required": True, "schema": {"type": "string"}},
                    {
                        "name": "limit",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "integer", "minimum": 1, "maximum": 10000},
                    },
                ],
                "responses": {
                    "200": _json({"type": "object"}, "The entries"),
                    **_errors(400, 401, 403, 404),
                },
            }
        },
        "/api/orders/events": {
            "post": {
                "summary": "A signed callback of the order system (Standard Webhooks)",
                "description": "See docs/orders.md for the signature and the state table.",
                "parameters": [
                    {"name": h, "in": "header", "required": True, "schema": {"type": "string"}}
                    for h in ("webhook-id", "webhook-timestamp", "webhook-signature")
                ],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["type", "data"],
                                "properties": {
                                    "type": {
                                        "type": "string",
                                        "enum": [
                                            "order.paid",
                                            "order.cancelled",
                                            "order.refunded",
                                        ],
                                    },
                                    "timestamp": {"type": "string"},
                                    "data": {
                                        "type": "object",
                                        "required": ["order_id"],
                                        "properties": {"order_id": {"type": "string"}},
                                    },
                                },
                            }
                        }
                    },
                },
                "responses": {
                    "200": _json({"type": "object"}, "Applied, or a repeated event id"),
                    **_errors(400, 401, 404),
                },
            }
        },
        "/api/admin/dead-letters": {
            "get": {
                "summary": "Orders the bridge gave up on, and its backlog (admins)",
                "security": [{"bearer": []}],
                "responses": {
                    "200": _json({"type": "object"}, "Dead letters"),
                    **_errors(401, 403),
                },
            }
        },
        "/api/admin/dead-letters/redrive": {
            "post": {
                "summary": "Deliver a dead letter again (admins)",
                "security": [{"bearer": []}],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["id"],
                                "properties": {"id": {"type": "string"}},
                            }
                        }
                    },
                },
                "responses": {
                    "200": _json({"type": "object"}, "Back in the outbox"),
                    **_errors(400, 401, 403, 404),
                },
            }
        },
    }
    if demo:
        paths["/api/demo/token"] = {
            "post": {
                "summary": "Demo sign-in (only with --demo): a token for a role",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["role"],
                                "properties": {
                                    "role": {
                                        "type": "string",
                                        "enum": ["viewer", "host", "moderator", "admin"],
                                    },
                                    "name": {"type": "string", "maxLength": 64},
                                },
                            }
                        }
                    },
                },
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["token", "user"],
                            "properties": {"token": {"type": "string"}, "user": {"type": "object"}},
                        },
                        "A signed token",
                    ),
                    **_errors(400, 413),
                },
            }
        }
    return {
        "openapi": "3.1.0",
        "info": {"title": "livecommerce", "version": __version__},
        "paths": paths,
        "components": {
            "schemas": _SCHEMAS,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            },
        },
    }
