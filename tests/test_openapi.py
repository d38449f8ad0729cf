"""The HTTP API against its own OpenAPI description, with schemathesis.

A real server (demo mode, so ``/api/demo/token`` exists) runs in a background thread with
its own event loop on a free port. Schemathesis loads ``/api/openapi.json`` from it and
checks every generated request: no 5xx, a documented status code, a documented content
type and a body that matches the documented schema.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import schemathesis
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st
from schemathesis import Case
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.specs.openapi.schemas import OpenApiSchema

from livecommerce.config import Limits, Settings
from livecommerce.http import create_app
from livecommerce.http.openapi import document

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
MAX_EXAMPLES = 50
START_TIMEOUT_S = 10.0


class LiveServer:
    """The whole application on a free port, served by its own loop in its own thread."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(128)
        self.port: int = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="livecommerce-server", daemon=True)

    def __enter__(self) -> LiveServer:
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT_S):
            raise RuntimeError("the server did not start in time")
        if self._failure is not None:
            raise RuntimeError("the server failed to start") from self._failure
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(START_TIMEOUT_S)
        assert not self._thread.is_alive(), "the server did not stop"
        self._sock.close()
        if self._failure is not None:
            raise RuntimeError("the server failed") from self._failure

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:
            self._failure = exc
        finally:
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        runner = web.AppRunner(create_app(self._settings))
        await runner.setup()
        try:
            await web.SockSite(runner, self._sock).start()
            self._ready.set()
            await self._stop.wait()
        finally:
            await runner.cleanup()


@pytest.fixture(scope="module")
def server() -> Iterator[LiveServer]:
    # the conformance walk creates rooms and products faster than a host may (429)
    limits = Limits(create_burst=10_000, product_burst=10_000)
    with LiveServer(Settings(secret="x" * 32, demo=True, tick_ms=10, limits=limits)) as live:
        yield live


def config() -> schemathesis.Config:
    return schemathesis.Config.from_dict(
        {
            "generation": {
                "mode": "all",
                "max-examples": MAX_EXAMPLES,
                "database": "none",
                # any Unicode text in strings (a "²" in a number once gave a 500), NULs too
                "codec": "utf-8",
                "allow-x00": True,
            },
            "phases": {"stateful": {"enabled": False}},
        }
    )


# The document is a pure function of the settings, so the schema is built at import time
# (schemathesis parametrizes at collection); ``test_the_document_is_the_one_served`` checks
# that the running server serves exactly this document.
SCHEMA = schemathesis.openapi.from_dict(document(demo=True), config=config())
HOST_SCHEMA = SCHEMA.include(method="POST", path="/api/rooms")


@pytest.fixture(scope="module")
def api_schema(server: LiveServer) -> OpenApiSchema:
    """The document as the live server serves it."""
    return schemathesis.openapi.from_url(f"{server.url}/api/openapi.json", config=config())


def demo_token(server: LiveServer, role: str) -> str:
    case = SCHEMA["/api/demo/token"]["POST"].Case(body={"role": role})
    response = case.call_and_validate(base_url=server.url, checks=CHECKS)
    assert response.status_code == 200, response.text
    token: str = response.json()["token"]
    return token


@pytest.fixture(scope="module")
def host_token(server: LiveServer) -> str:
    return demo_token(server, "host")


@SCHEMA.parametrize()
def test_every_operation_conforms(case: Case[Any], server: LiveServer) -> None:
    """No 5xx and no answer outside the description, for any request the schema allows
    (and for requests it does not: negative mode is on)."""
    case.call_and_validate(base_url=server.url, checks=CHECKS)


@HOST_SCHEMA.parametrize()
def test_create_room_as_host_conforms(case: Case[Any], server: LiveServer, host_token: str) -> None:
    """The secured operation, reached with a valid token rather than stopped at 401."""
    response = case.call_and_validate(
        base_url=server.url,
        headers={"Authorization": f"Bearer {host_token}"},
        checks=CHECKS,
    )
    sent = response.request.headers.get("Authorization")
    if sent is None:
        # schemathesis' own coverage scenario "missing Authorization": refused, with 401
        assert case.meta is not None and case.meta.phase.data.parameter == "Authorization"
        assert response.status_code == 401, response.text
    else:
        assert sent == f"Bearer {host_token}"
        assert response.status_code != 401, response.text


def test_the_document_is_the_one_served(api_schema: OpenApiSchema) -> None:
    assert api_schema.raw_schema == SCHEMA.raw_schema
    assert {(op.method.upper(), op.path) for op in _operations(SCHEMA)} == {
        ("GET", "/healthz"),
        ("GET", "/api/openapi.json"),
        ("GET", "/api/rooms"),
        ("POST", "/api/rooms"),
        ("GET", "/api/rooms/{room}"),
        ("GET", "/api/rooms/{room}/products"),
        ("PUT", "/api/rooms/{room}/products/{sku}"),
        ("GET", "/api/orders/{order}"),
        ("GET", "/api/giveaways/{giveaway}/proof"),
        ("GET", "/api/auctions/{auction}/bids"),
        ("POST", "/api/demo/token"),
        ("POST", "/api/orders/events"),
        ("GET", "/api/rooms/{room}/modlog"),
        ("GET", "/api/rooms/{room}/chat"),
        ("GET", "/api/rooms/{room}/report"),
        ("GET", "/api/me/data"),
        ("DELETE", "/api/me/data"),
        ("GET", "/api/admin/dead-letters"),
        ("POST", "/api/admin/dead-letters/redrive"),
        ("GET", "/api/rooms/{room}/clips"),
        ("GET", "/api/clips"),
        ("GET", "/hls/{room}/live.m3u8"),
        ("GET", "/hls/{room}/{stream}/{file}"),
    }


def _operations(schema: OpenApiSchema) -> list[Any]:
    operations = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result
        operations.append(result.ok())
    return operations


def test_host_creates_a_room(api_schema: OpenApiSchema, host_token: str) -> None:
    """A deterministic walk through the authenticated path, validated the same way."""
    bearer = {"Authorization": f"Bearer {host_token}"}
    create = api_schema["/api/rooms"]["POST"]
    made = create.Case(body={"title": "  Spring drop  "}, headers=bearer).call_and_validate(
        checks=CHECKS
    )
    assert made.status_code == 201, made.text
    room = made.json()
    assert (room["title"], room["host"], room["status"]) == (
        "Spring drop",
        "demo-host",
        "scheduled",
    )

    listed = api_schema["/api/rooms"]["GET"].Case(query={"status": "scheduled"}, headers=bearer)
    rooms = listed.call_and_validate(checks=CHECKS).json()["rooms"]
    assert room["id"] in {r["id"] for r in rooms}
    # a scheduled room is its host's business until it goes live
    public = api_schema["/api/rooms"]["GET"].Case(query={"status": "scheduled"})
    assert room["id"] not in {r["id"] for r in public.call(timeout=10).json()["rooms"]}

    detail = api_schema["/api/rooms/{room}"]["GET"].Case(path_parameters={"room": room["id"]})
    got = detail.call_and_validate(checks=CHECKS)
    assert got.status_code == 200
    no_media = {"live": False, "whep": False, "hls": False}
    assert got.json() | {} == {
        **room,
        "viewers": 0,
        "likes": 0,
        "pinned": None,
        "sales": [],
        "media": no_media,
    }

    # the token covers only "demo": another explicit id is forbidden, "demo" itself is taken
    other = create.Case(body={"title": "x", "id": "not-mine"}, headers=bearer)
    assert other.call_and_validate(checks=CHECKS).status_code == 403
    taken = create.Case(body={"title": "x", "id": "demo"}, headers=bearer)
    assert taken.call_and_validate(checks=CHECKS).status_code == 409


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"Authorization": "Bearer not-a-token"}, 401),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, 401),
    ],
)
def test_create_room_without_a_valid_token(
    api_schema: OpenApiSchema, headers: dict[str, str], status: int
) -> None:
    case = api_schema["/api/rooms"]["POST"].Case(body={"title": "x"}, headers=headers)
    response = case.call_and_validate(checks=CHECKS)
    assert response.status_code == status
    assert response.json()["error"]["code"] == "unauthorized"


def test_viewer_may_not_create_a_room(server: LiveServer, api_schema: OpenApiSchema) -> None:
    token = demo_token(server, "viewer")
    case = api_schema["/api/rooms"]["POST"].Case(
        body={"title": "x"}, headers={"Authorization": f"Bearer {token}"}
    )
    response = case.call_and_validate(checks=CHECKS)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "forbidden"


@pytest.mark.parametrize("raw", [b"Bearer \xff\xfe", b"Bearer \xed\xa0\x80", b"Bearer a.b.\xc3"])
def test_non_utf8_authorization_header_is_a_401(api_schema: OpenApiSchema, raw: bytes) -> None:
    """Header bytes that are not UTF-8 are a bad token (401), not a server error."""
    case = api_schema["/api/rooms"]["POST"].Case(body={"title": "x"})
    response = case.call_and_validate(headers={"Authorization": raw}, checks=CHECKS)
    assert response.request.headers["Authorization"] == raw
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"


QUERIES = {
    "/api/clips": ("limit", "cursor"),
    "/api/rooms": ("status", "limit", "cursor"),
    "/api/rooms/demo/modlog": ("limit",),
    "/api/rooms/demo/clips": ("sku",),
    "/api/rooms/demo": ("x",),
}
DIGITS = st.sampled_from(
    ["\u00b2", "\u0663", "\uff11", "\U0001d7ce", "1\u0301", "\u2155", "\u00bd"]
)
"""Characters that are digits, numbers or look like them to Unicode, and not to int()."""


@settings(max_examples=300, deadline=None, database=None)
@given(
    path=st.sampled_from(sorted(QUERIES)),
    values=st.lists(st.one_of(st.text(), DIGITS, st.from_regex(r"[0-9]{1,30}")), min_size=1),
    signed_in=st.booleans(),
)
def test_query_parameters_in_any_unicode_get_a_clear_answer(
    server: LiveServer, host_token: str, path: str, values: list[str], signed_in: bool
) -> None:
    """Hypothesis on every query parameter with any Unicode text: never a 5xx; a 400
    with the error shape for what is not understood (``?limit=%C2%B2`` was a 500 with a
    traceback on /api/clips and on the modlog, where it was read before the token)."""
    names = QUERIES[path]
    query = [(names[i % len(names)], v) for i, v in enumerate(values)]
    headers = {"Authorization": f"Bearer {host_token}"} if signed_in else {}
    resp = requests.get(server.url + path, params=query, headers=headers, timeout=10)
    assert resp.status_code < 500, (query, resp.text)
    if resp.status_code >= 400:
        assert resp.json()["error"]["code"] in ("bad_request", "unauthorized", "forbidden")
    if path.endswith("/modlog") and not signed_in:
        assert resp.status_code == 401  # who asks is known before anything is parsed
