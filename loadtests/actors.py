"""The live load: users who chat and tap likes, at a total rate, from the main process.

The server lets one user chat once a second (bursts of 3) and send 5 ``like`` commands a
second (bursts of 5), each of up to 50 taps (PROTOCOL.md, limits). So a rate of chats or
taps needs enough users: :func:`users_for` gives how many, each keeping under
:data:`CHAT_USER_RATE` chats or :data:`LIKE_USER_RATE` like commands a second. Every
actor is its own user (its own token), on its own connection from its own source
address; actors do not join the room, they only send and count the answers (``ok`` or
the error code, per kind). An actor whose connection drops comes back after a second
(the reconnect storm kills server processes under them too); what it would have sent
meanwhile is counted as ``unsent``.

The pacing runs every :data:`TICK_S`: each pass sends the commands due since the start
(``rate × elapsed`` minus those sent), round-robin over the users, so the rate holds
even when the loop wakes up late.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from livecommerce.protocol import dumps, loads
from loadtests.wsclient import CLOSE_ABNORMAL, WsClient, open_connection, source_address

CHAT_USER_RATE: Final = 0.5
"""Chats a second one actor sends at most: half what the server allows (1, bursts of
3), so that a server that falls behind and then serves a user's queued commands in one
go still finds tokens in the bucket (at 0.9 a second an overloaded server answered a
few percent ``rate_limited``)."""
LIKE_USER_RATE: Final = 2.5
"""``like`` commands a second one actor sends at most (the server allows 5, bursts of
5): half, for the same reason."""
MAX_TAPS: Final = 50
"""Taps one ``like`` command carries at most (PROTOCOL.md)."""
TICK_S: Final = 0.01
CHAT: Final = 0
LIKE: Final = 1
_KINDS: Final = ("chat", "like")
ACTOR_BLOCK: Final = 2
"""Source addresses of the actors: 127.2.x.y."""


def users_for(rate: float, per_user: float) -> int:
    """Users needed so that none sends more than ``per_user`` a second."""
    return math.ceil(rate / per_user) if rate > 0 else 0


class Actor(WsClient):
    """One user's connection: sends what the load gives it, counts the answers."""

    __slots__ = ("closing", "index", "load", "next_id", "returning", "token")

    def __init__(self, load: Load, index: int, token: str) -> None:
        super().__init__(f"{load.host}:{load.port}")
        self.load = load
        self.index = index
        self.token = token
        self.next_id = 10
        self.closing = False
        self.returning = False
        """A :meth:`come_back` runs (a failed try must not start another)."""

    def on_text(self, data: bytes | bytearray, start: int, end: int) -> None:
        counts = self.load.answers
        for line in bytes(data[start:end]).split(b"\n"):
            if not line.startswith(b'{"id":'):
                continue
            cid = int(line[6 : line.index(b",", 6)])
            kind = cid & 1
            if b'"ok":true' in line:
                counts[kind]["ok"] += 1
            else:
                obj = loads(line)
                counts[kind][str(obj.get("error", {}).get("code", "?"))] += 1

    def on_lost(self, code: int) -> None:
        self.control = True  # no command on the next socket before its connect
        if not self.closing and self.load.reconnect and not self.returning:
            self.load.spawn(self.come_back())

    def command(self, kind: int, body: dict[str, Any]) -> bool:
        """Send one command of ``kind``; False if the connection is down."""
        if self.transport is None or self.control:
            return False
        self.next_id += 2  # even: the kind is the id's lowest bit
        cid = self.next_id + kind
        self.send_text(dumps({**body, "id": cid}))
        return True

    async def sign_in(self) -> None:
        """Connect and send ``connect``.

        Raises:
            OSError, ConnectionError, TimeoutError: it did not work.
        """
        load = self.load
        async with asyncio.timeout(20.0):
            await open_connection(
                lambda: self, load.host, load.port, source=source_address(ACTOR_BLOCK, self.index)
            )
            self.control = True
            reply = await self.request(1, dumps({"op": "connect", "id": 1, "token": self.token}))
            if not reply["ok"]:
                self.abort(CLOSE_ABNORMAL)
                raise ConnectionError(f"connect refused: {reply['error']['code']}")
            self.control = False

    async def come_back(self) -> None:
        self.returning = True
        try:
            for _ in range(30):
                await asyncio.sleep(1.0)
                if self.closing:
                    return
                try:
                    await self.sign_in()
                    return
                except (OSError, ConnectionError, TimeoutError):
                    continue
        finally:
            self.returning = False


@dataclass(slots=True)
class Sent:
    """What one pacing run sent, in all and inside the measured window."""

    chats: int = 0
    likes: int = 0
    taps: int = 0
    chats_in_window: int = 0
    taps_in_window: int = 0
    unsent: int = 0


@dataclass(slots=True)
class Load:
    """The actors and their pacing."""

    host: str
    port: int
    room: str
    chatters: list[Actor] = field(default_factory=list)
    likers: list[Actor] = field(default_factory=list)
    answers: tuple[Counter[str], Counter[str]] = field(
        default_factory=lambda: (Counter(), Counter())
    )
    reconnect: bool = False
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def connect(self, chat_tokens: Sequence[str], like_tokens: Sequence[str]) -> None:
        """Open one actor per token (chatters first), 100 at a time.

        Raises:
            ConnectionError: an actor could not connect.
        """
        actors = [Actor(self, i, tok) for i, tok in enumerate([*chat_tokens, *like_tokens])]
        self.chatters = actors[: len(chat_tokens)]
        self.likers = actors[len(chat_tokens) :]
        for lo in range(0, len(actors), 100):
            group = actors[lo : lo + 100]
            outcomes = await asyncio.gather(*(a.sign_in() for a in group), return_exceptions=True)
            failed = [o for o in outcomes if isinstance(o, BaseException)]
            if failed:
                raise ConnectionError(
                    f"{len(failed)} of {len(group)} chat/like users could not connect: "
                    f"{type(failed[0]).__name__}: {failed[0]}"
                )

    async def run(
        self,
        *,
        chats_per_s: float,
        taps_per_s: float,
        taps_per_like: int,
        start: float,
        t0: float,
        t1: float,
    ) -> Sent:
        """Send ``chats_per_s`` chats and ``taps_per_s`` taps a second (in commands of
        ``taps_per_like``) from wall time ``start`` to ``t1``; count what was sent
        inside ``[t0, t1)``."""
        sent = Sent()
        likes_per_s = taps_per_s / taps_per_like if taps_per_like else 0.0
        chat_body = {"op": "chat", "room": self.room, "text": ""}
        like_body = {"op": "like", "room": self.room, "count": taps_per_like}
        delay = start - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        while True:
            now = time.time()
            if now >= t1:
                return sent
            elapsed = now - start
            inside = now >= t0
            if self.chatters:
                for _ in range(int(elapsed * chats_per_s) - sent.chats):
                    actor = self.chatters[sent.chats % len(self.chatters)]
                    chat_body["text"] = f"load {sent.chats}"
                    sent.chats += 1
                    if not actor.command(CHAT, chat_body):
                        sent.unsent += 1
                    elif inside:
                        sent.chats_in_window += 1
            if self.likers:
                for _ in range(int(elapsed * likes_per_s) - sent.likes):
                    actor = self.likers[sent.likes % len(self.likers)]
                    sent.likes += 1
                    if not actor.command(LIKE, like_body):
                        sent.unsent += 1
                        continue
                    sent.taps += taps_per_like
                    if inside:
                        sent.taps_in_window += taps_per_like
            await asyncio.sleep(TICK_S)

    def answers_by_kind(self) -> dict[str, dict[str, int]]:
        return {name: dict(self.answers[k]) for k, name in enumerate(_KINDS)}

    async def close(self) -> None:
        self.reconnect = False
        actors = [*self.chatters, *self.likers]
        for a in actors:
            a.closing = True
            a.close()
        for task in list(self.tasks):
            task.cancel()
        deadline = time.monotonic() + 3.0
        while any(a.transport is not None for a in actors) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for a in actors:
            with contextlib.suppress(Exception):
                a.abort(CLOSE_ABNORMAL)
