"""An asyncio client for the live-room protocol: for apps, tests and load tests.

Example::

    async with Client("ws://127.0.0.1:8080/ws", token=token) as client:
        snapshot = await client.join("demo")
        await client.request("chat", room="demo", text="hello")
        async for event in client.events():
            print(event["type"], event.get("seq"))

The client answers every command through :meth:`Client.request` (a reply or a
:class:`ClientError`), keeps the last ``seq`` and the ``epoch`` of every joined room,
drops repeats, re-joins with ``since`` when it sees a gap, and, when the connection
drops, reconnects with exponential backoff and jitter and resumes every room. After a
resume it puts a ``{"type": "client.resumed", "room", "recovered", "snapshot"}`` event
in the stream, so an app knows whether it must rebuild from the snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from livecommerce.protocol import dumps, split_frame

log = logging.getLogger(__name__)

NO_RECONNECT = frozenset({1009, 4001, 4003})
"""Close codes after which reconnecting cannot help (PROTOCOL.md, close codes)."""


class ClientError(Exception):
    """A command the server refused: ``code`` is the protocol's error code."""

    def __init__(self, code: str, message: str, data: dict[str, Any] | None = None):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.data = data or {}


class ConnectionLost(Exception):
    """The connection dropped before the reply came (the command may have run)."""


@dataclass
class _RoomState:
    seq: int = 0
    epoch: str | None = None
    resyncing: bool = False


@dataclass
class _Pending:
    future: asyncio.Future[dict[str, Any]]
    on_reply: Callable[[dict[str, Any]], None] | None = None


@dataclass
class Client:
    """One connection to ``/ws`` that survives reconnects.

    Args:
        url: the WebSocket URL, ``ws://host:port/ws``.
        token: a JWT; None connects as a guest.
        reconnect: reconnect and resume after an unexpected close.
        max_backoff: the longest wait between reconnect attempts, in seconds.
    """

    url: str
    token: str | None = None
    reconnect: bool = True
    max_backoff: float = 5.0
    user: dict[str, Any] = field(default_factory=dict, init=False)
    close_code: int | None = field(default=None, init=False)
    _ws: ClientConnection | None = field(default=None, init=False)
    _rooms: dict[str, _RoomState] = field(default_factory=dict, init=False)
    _pending: dict[int, _Pending] = field(default_factory=dict, init=False)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1), init=False)
    _queue: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue, init=False)
    _reader: asyncio.Task[None] | None = field(default=None, init=False)
    _connected: asyncio.Event = field(default_factory=asyncio.Event, init=False)
    _closed: bool = field(default=False, init=False)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set, init=False)

    async def __aenter__(self) -> Client:
        await self.connect()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def connect(self) -> dict[str, Any]:
        """Open the socket and send ``connect``; return its reply data."""
        data = await self._open()
        self._reader = asyncio.create_task(self._run())
        return data

    async def close(self) -> None:
        """Close for good: no reconnect."""
        self._closed = True
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        self._fail_pending(ConnectionLost("client closed"))

    async def request(self, op: str, **fields: Any) -> dict[str, Any]:
        """Send a command and wait for its reply.

        Raises:
            ClientError: the server refused it.
            ConnectionLost: the connection dropped first.
        """
        return await self._request(op, fields)

    async def join(self, room: str) -> dict[str, Any]:
        """Join ``room`` (resuming from what this client saw, if anything); return the
        snapshot. Events of the room then arrive through :meth:`events`."""
        state = self._rooms.setdefault(room, _RoomState())
        reply = await self._request("join", self._join_fields(room, state), self._joined(room))
        snapshot: dict[str, Any] = reply["snapshot"]
        return snapshot

    async def leave(self, room: str) -> None:
        self._rooms.pop(room, None)
        await self._request("leave", {"room": room})

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        """Every event, in order, for as long as the client lives."""
        while True:
            yield await self._queue.get()

    async def next_event(
        self, match: Callable[[dict[str, Any]], bool] = lambda e: True, timeout: float = 5.0
    ) -> dict[str, Any]:
        """The next event that ``match`` accepts (others are dropped).

        Raises:
            TimeoutError: none came within ``timeout`` seconds.
        """
        async with asyncio.timeout(timeout):
            while True:
                event = await self._queue.get()
                if match(event):
                    return event

    def last_seq(self, room: str) -> int:
        """The last seq seen in ``room`` (0 before any)."""
        state = self._rooms.get(room)
        return state.seq if state else 0

    # -- internals -------------------------------------------------------------------

    async def _open(self) -> dict[str, Any]:
        self._ws = await connect(self.url, max_size=None, compression=None, open_timeout=10)
        self.close_code = None
        fields = {} if self.token is None else {"token": self.token}
        cid = next(self._ids)
        await self._ws.send(dumps({"op": "connect", "id": cid, **fields}).decode())
        for obj in split_frame(await self._ws.recv()):
            if obj.get("id") == cid:
                if not obj["ok"]:
                    err = obj["error"]
                    raise ClientError(err["code"], err["message"], err)
                data: dict[str, Any] = obj["data"]
                self.user = data["user"]
                self._connected.set()
                return data
        raise ConnectionLost("no reply to connect")

    async def _request(
        self,
        op: str,
        fields: dict[str, Any],
        on_reply: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        await self._connected.wait()
        ws = self._ws
        if ws is None:
            raise ConnectionLost("not connected")
        cid = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[cid] = _Pending(future, on_reply)
        try:
            await ws.send(dumps({"op": op, "id": cid, **fields}).decode())
        except ConnectionClosed:
            self._pending.pop(cid, None)
            raise ConnectionLost("connection closed") from None
        return await future

    @staticmethod
    def _join_fields(room: str, state: _RoomState) -> dict[str, Any]:
        fields: dict[str, Any] = {"room": room}
        if state.epoch is not None:
            fields.update(since=state.seq, epoch=state.epoch)
        return fields

    def _joined(self, room: str, *, resumed: bool = False) -> Callable[[dict[str, Any]], None]:
        """Applied by the reader as the reply arrives, before the replay that follows."""

        def apply(data: dict[str, Any]) -> None:
            state = self._rooms.setdefault(room, _RoomState())
            snapshot = data["snapshot"]
            if not data["recovered"]:
                state.seq = snapshot["seq"]
            state.epoch = snapshot["epoch"]
            state.resyncing = False
            if resumed:
                self._queue.put_nowait(
                    {
                        "type": "client.resumed",
                        "room": room,
                        "recovered": data["recovered"],
                        "snapshot": snapshot,
                    }
                )

        return apply

    async def _run(self) -> None:
        backoff = 0.1
        while True:
            ws = self._ws
            assert ws is not None
            try:
                async for frame in ws:
                    for obj in split_frame(frame):
                        self._dispatch(obj)
            except ConnectionClosed:
                pass
            self._connected.clear()
            self.close_code = ws.close_code
            self._fail_pending(ConnectionLost(f"closed with {ws.close_code}"))
            if self._closed or not self.reconnect or ws.close_code in NO_RECONNECT:
                return
            while True:
                await asyncio.sleep(backoff * (0.5 + random.random()))
                backoff = min(backoff * 2, self.max_backoff)
                try:
                    await self._open()
                    break
                except (OSError, ConnectionClosed, ConnectionLost, TimeoutError) as exc:
                    log.debug("reconnect failed: %s", exc)
                except ClientError:
                    return
            backoff = 0.1
            for room in list(self._rooms):
                self._spawn(self._resume(room))

    async def _resume(self, room: str) -> None:
        state = self._rooms.get(room)
        if state is None:
            return
        try:
            await self._request(
                "join", self._join_fields(room, state), self._joined(room, resumed=True)
            )
        except (ClientError, ConnectionLost) as exc:
            log.warning("resume of %s failed: %s", room, exc)

    def _dispatch(self, obj: dict[str, Any]) -> None:
        if "ok" in obj and "id" in obj:
            pending = self._pending.pop(obj["id"], None)
            if pending is None or pending.future.done():
                return
            if obj["ok"]:
                if pending.on_reply is not None:
                    pending.on_reply(obj["data"])
                pending.future.set_result(obj["data"])
            else:
                err = obj["error"]
                pending.future.set_exception(ClientError(err["code"], err["message"], err))
            return
        seq = obj.get("seq")
        state = self._rooms.get(obj.get("room", ""))
        if seq is not None and state is not None:
            if state.resyncing or seq <= state.seq:
                return
            if seq != state.seq + 1:
                state.resyncing = True
                self._spawn(self._resume(obj["room"]))
                return
            state.seq = seq
        self._queue.put_nowait(obj)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _fail_pending(self, exc: Exception) -> None:
        pending, self._pending = self._pending, {}
        for p in pending.values():
            if not p.future.done():
                p.future.set_exception(exc)
