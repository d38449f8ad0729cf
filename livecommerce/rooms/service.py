"""What each command does, independent of the transport.

The WebSocket endpoint and the HTTP routes call in here; this module checks rights,
rate limits and content (in PROTOCOL.md's order: the shape was checked by the decoder),
talks to the stores and the hub, and raises :class:`~livecommerce.errors.Error`.
"""

from __future__ import annotations

import itertools
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from livecommerce.auth import Principal, Role
from livecommerce.backends import Backends
from livecommerce.config import Settings
from livecommerce.errors import Error
from livecommerce.moderation.rules import RateLimiter, refusal
from livecommerce.protocol import encode_event, fragment
from livecommerce.rooms.hub import Hub, Membership, Subscriber
from livecommerce.rooms.state import Room, Status, clean_text

CHATTERS: frozenset[Role] = frozenset({"viewer", "moderator", "host", "admin"})
MODERATORS: frozenset[Role] = frozenset({"moderator", "host", "admin"})
HOSTS: frozenset[Role] = frozenset({"host", "admin"})


@dataclass(frozen=True, slots=True)
class Joined:
    """The outcome of a join: the reply's data, the lines to replay after it, and the
    membership to :meth:`~Membership.go_live` once both are written."""

    data: dict[str, Any]
    replay: list[bytes]
    membership: Membership
    floor: int


class RoomService:
    """The live-room commands of one process."""

    def __init__(
        self,
        settings: Settings,
        backends: Backends,
        hub: Hub,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.backends = backends
        self.hub = hub
        self._clock = clock
        lim = settings.limits
        self._chat_limit = RateLimiter(lim.chat_rate, lim.chat_burst)
        self._like_limit = RateLimiter(lim.like_rate, lim.like_burst)
        self._ids = itertools.count(1)
        self._id_prefix = os.urandom(3).hex()

    def now_ms(self) -> int:
        return int(self._clock() * 1000)

    def new_id(self) -> str:
        """An id unique across processes: a random per-process prefix and a counter."""
        return f"{self._id_prefix}{next(self._ids):x}"

    def prune(self) -> None:
        """Forget idle rate-limit buckets (called now and then)."""
        now = self._clock()
        self._chat_limit.prune(now)
        self._like_limit.prune(now)

    # -- rooms -----------------------------------------------------------------------

    async def room(self, room_id: str) -> Room:
        room = await self.backends.rooms.get(room_id)
        if room is None:
            raise Error("not_found", f"no room {room_id!r}")
        return room

    async def _room_as(self, who: Principal, room_id: str, allowed: frozenset[Role]) -> Room:
        """The room, if ``who`` holds one of ``allowed`` in it (rights before limits)."""
        room = await self.room(room_id)
        role = who.role_in(room.id, room.host)
        if role not in allowed:
            if role == "guest":
                raise Error("unauthorized", "sign in first")
            raise Error("forbidden", f"a {role} may not do this in room {room.id!r}")
        return room

    async def create_room(self, who: Principal, *, title: str, room_id: str | None) -> Room:
        if who.role not in HOSTS:
            raise Error("forbidden", "only hosts and admins create rooms")
        if (
            room_id is not None
            and who.role == "host"
            and who.rooms is not None
            and (room_id not in who.rooms)
        ):
            raise Error("forbidden", f"your token does not cover room {room_id!r}")
        title = clean_text(title, 200)
        room = Room(
            id=room_id or f"r-{secrets.token_hex(5)}",
            title=title,
            host=who.id,
            status="scheduled",
            created_at=self.now_ms(),
        )
        if not await self.backends.rooms.create(room):
            raise Error("conflict", f"room {room.id!r} already exists")
        return room

    async def list_rooms(self, status: Status | None) -> list[Room]:
        return await self.backends.rooms.list(status)

    async def describe(self, room_id: str) -> dict[str, Any]:
        """The room with its live figures (``GET /api/rooms/{room}``)."""
        room = await self.room(room_id)
        likes = await self.backends.counters.add_likes(room.id, 0)
        return {
            **room.to_dict(),
            "viewers": self.hub.viewers(room.id),
            "likes": likes,
            "pinned": None,
            "sales": [],
        }

    async def start(self, who: Principal, room_id: str) -> None:
        """Go live. Starting a live room again is a no-op; an ended room cannot."""
        room = await self._room_as(who, room_id, HOSTS)
        if await self.backends.rooms.set_status(room.id, "scheduled", "live"):
            await self._publish(room.id, "room.started", {})
        elif (await self.room(room.id)).status == "ended":
            raise Error("bad_request", "the room has ended")

    async def end(self, who: Principal, room_id: str) -> None:
        """End the show, live or still scheduled; ending it again is a no-op.

        Exactly one caller, on any process, wins the change and publishes ``room.ended``.
        """
        room = await self._room_as(who, room_id, HOSTS)
        rooms = self.backends.rooms
        if await rooms.set_status(room.id, "live", "ended") or await rooms.set_status(
            room.id, "scheduled", "ended"
        ):
            await self._publish(room.id, "room.ended", {})

    # -- membership ------------------------------------------------------------------

    async def join(
        self,
        who: Principal,
        conn: Subscriber,
        room_id: str,
        *,
        since: int | None,
        epoch: str | None,
    ) -> Joined:
        room = await self.room(room_id)
        if await self.backends.moderation.is_banned(room.id, who.id):
            raise Error("banned", "you are banned from this room")
        membership = await self.hub.attach(room.id, conn)
        try:
            snap = await self.backends.log.snapshot(room.id)
            replay: list[bytes] = []
            recovered = False
            floor = snap.seq
            if since is not None and epoch == snap.epoch and since <= snap.seq:
                lines = await self.backends.log.history(room.id, since, snap.epoch)
                if lines is not None:
                    replay, recovered = lines, True
                    floor = max(floor, since + len(lines))
            likes = await self.backends.counters.add_likes(room.id, 0)
        except BaseException:
            self.hub.detach(room.id, conn)
            raise
        snapshot = {
            "room": room.id,
            "title": room.title,
            "host": room.host,
            "status": room.status,
            "seq": snap.seq,
            "epoch": snap.epoch,
            "viewers": self.hub.viewers(room.id),
            "likes": likes,
            "pinned": None,
            "sales": [],
            "recent": [fragment(line) for line in snap.recent],
            "announcement": None if snap.announcement is None else fragment(snap.announcement),
            "orders": [],
        }
        return Joined({"snapshot": snapshot, "recovered": recovered}, replay, membership, floor)

    def leave(self, room_id: str, conn: Subscriber) -> None:
        self.hub.detach(room_id, conn)

    # -- talking ---------------------------------------------------------------------

    async def _publish(self, room: str, type_: str, fields: dict[str, Any], **kw: Any) -> int:
        body = encode_event(type_, room, self.now_ms(), fields)
        return await self.backends.log.publish(room, body, **kw)

    async def chat(self, who: Principal, room_id: str, text: str) -> dict[str, Any]:
        room = await self._room_as(who, room_id, CHATTERS)
        self._chat_limit.check(who.id, self._clock())
        text = clean_text(text, self.settings.limits.chat_max_chars)
        room.require_live()
        staff = who.role_in(room.id, room.host) in MODERATORS
        refused = await self.backends.moderation.admit_chat(
            room.id, who.id, self.now_ms(), slow_exempt=staff
        )
        if refused is not None:
            raise refusal(*refused)
        msg_id = self.new_id()
        user = {"id": who.id, "name": who.name}
        seq = await self._publish(
            room.id, "chat", {"msg_id": msg_id, "user": user, "text": text}, kind="chat", ref=msg_id
        )
        return {"msg_id": msg_id, "seq": seq}

    async def like(self, who: Principal, room_id: str, count: int) -> None:
        room = await self._room_as(who, room_id, CHATTERS)
        self._like_limit.check(who.id, self._clock())
        room.require_live()
        if not self.hub.add_likes(room.id, count):
            await self.backends.counters.add_likes(room.id, count)

    async def announce(self, who: Principal, room_id: str, text: str) -> int:
        room = await self._room_as(who, room_id, MODERATORS)
        text = clean_text(text, self.settings.limits.chat_max_chars)
        return await self._publish(
            room.id, "announcement", {"text": text, "by": who.id}, kind="announcement"
        )

    # -- moderation ------------------------------------------------------------------

    async def delete(self, who: Principal, room_id: str, msg_id: str) -> None:
        room = await self._room_as(who, room_id, MODERATORS)
        seq = await self._publish(
            room.id, "chat.deleted", {"msg_id": msg_id}, kind="chat.deleted", ref=msg_id
        )
        if not seq:
            raise Error("not_found", f"no message {msg_id!r} in the room's history")

    async def _tell(self, room: str, user: str, fields: dict[str, Any]) -> None:
        line = encode_event("moderation", room, self.now_ms(), fields)
        await self.backends.log.send_private(room, user, line)

    async def mute(self, who: Principal, room_id: str, user: str, seconds: int) -> None:
        room = await self._room_as(who, room_id, MODERATORS)
        if user == room.host:
            raise Error("forbidden", "the room's host cannot be muted")
        until = self.now_ms() + seconds * 1000
        await self.backends.moderation.mute(room.id, user, until)
        await self._tell(room.id, user, {"action": "muted", "until": until})

    async def ban(self, who: Principal, room_id: str, user: str, banned: bool) -> None:
        room = await self._room_as(who, room_id, MODERATORS)
        if banned and user == room.host:
            raise Error("forbidden", "the room's host cannot be banned from it")
        changed = await self.backends.moderation.set_banned(room.id, user, banned)
        if changed and banned:
            await self._tell(room.id, user, {"action": "banned", "until": None})

    async def slow(self, who: Principal, room_id: str, seconds: int) -> None:
        room = await self._room_as(who, room_id, MODERATORS)
        await self.backends.moderation.set_slow(room.id, seconds)
