"""The hub: one per process; fans each room's events out to its local members.

A room's lines arrive from the event log (every process's publishes, in seq order).
Once a tick the hub takes what arrived, adds the coalesced figures (one ``likes`` total,
at most one ``presence`` a second) and writes what each member has not had yet as one
newline-delimited frame, the very same bytes to every member at the same point.
Members never wait for each other: a member's ``write`` must not block (the connection
closes itself when it falls behind).

A large room's tick is a rotation: its members are written to in slices of
:data:`PASS_SLICE`, one slice every ``tick / slices``, each with every line that arrived
until then. Each member still gets one frame a tick, but no member waits for a whole
pass over the others (a pass over 5,000 members is 60-90 ms of writes here): a line
reaches a member after half a tick on average, not half a tick plus half a pass.

The tick adapts to the room's size. Writing a frame to a socket costs about 10 µs of
CPU whatever the frame, so one pass over 5,000 members takes about 50 ms: at a fixed
50 ms tick that is a whole core for one room. Each channel measures its passes and
lengthens its tick so that its passes take at most ``fanout_share`` of a core
(:func:`adapt_tick`), between the configured tick and ``max_tick_s``: a small room
keeps the short tick (low latency), a huge one trades a little latency for CPU, and
events of the longer tick still go out together in one frame.

Joining is race-free without per-member filtering on the hot path: a new member is
added *buffering* before the snapshot is read, so every line the hub delivers after
that is kept; :meth:`Membership.go_live` then drops what the snapshot (or the replay)
already covered and sends the rest.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable
from typing import Any, Protocol

from livecommerce.backends import STAFF, Backends, LogHead
from livecommerce.errors import Error
from livecommerce.promotions.groups import FORMING_SHOWN
from livecommerce.protocol import dumps, encode_event, line_seq, loads, text_frame

log = logging.getLogger(__name__)

_SALE_STARTED = b'"type":"sale.started"'
_COUPON_DROPPED = b'"type":"coupon.dropped"'
_PINNED = b'"type":"product.pinned"'
_UNPINNED = b'"type":"product.unpinned"'
_CHANGES = re.compile(
    rb'"type":"(?:sale\.started|coupon\.dropped|deal\.started|product\.(?:un)?pinned)"'
)
_DEAL_STARTED = b'"type":"deal.started"'
_OPENS = re.compile(rb'"type":"(giveaway|auction)\.(started|drawn|cancelled|ended)"')
"""A giveaway or a lot that opens or closes: the channel learns it as the line arrives."""


def _pinned_sku(line: bytes) -> str | None:
    sku = loads(line).get("product", {}).get("sku")
    return sku if isinstance(sku, str) else None


_BID_FIELDS = ("price", "min_bid", "leader", "bids", "ends_at")
"""What ``auction.bid`` says of the lot."""

DEFAULT_FANOUT_SHARE = 0.30
"""The share of a core one room's fan-out passes may take in one process."""
DEFAULT_MAX_TICK_S = 0.25
"""The longest a room's tick grows (latency bound for the largest rooms)."""
PASS_SLICE = 500
"""Members of a slice of a tick: written to at once (5-8 ms here)."""
_PASS_WEIGHT = 0.2
"""Weight of the newest pass in the moving average of a channel's pass time."""


def adapt_tick(base_s: float, max_s: float, pass_s: float, share: float) -> float:
    """The tick that keeps passes of ``pass_s`` seconds within ``share`` of a core.

    ``pass_s / tick <= share``, so ``tick = pass_s / share``, never below the configured
    ``base_s`` nor above ``max_s`` (past ``max_s`` the share is exceeded: latency wins).
    """
    return min(max(base_s, pass_s / share), max(base_s, max_s))


FIGURES = ("orders", "units_sold", "revenue")
PRODUCT_FIGURES = ("peak_viewers", "likes", "chats", *FIGURES)
"""Per product: the first three count while the product is pinned."""


def stats_fields(figures: dict[str, int], *, viewers: int, peak: int, likes: int) -> dict[str, Any]:
    """The ``stats`` event's fields from the room's counted figures."""
    products: dict[str, dict[str, int]] = {}
    for name, n in figures.items():
        figure, _, sku = name.partition(":")
        if sku and figure in PRODUCT_FIGURES:
            products.setdefault(sku, dict.fromkeys(PRODUCT_FIGURES, 0))[figure] = n
    return {
        "viewers": viewers,
        "peak_viewers": max(peak, viewers),
        "likes": likes,
        "chats": figures.get("chats", 0),
        **{f: figures.get(f, 0) for f in FIGURES},
        "products": dict(sorted(products.items())),
    }


class Subscriber(Protocol):
    """What the hub needs of a connection."""

    @property
    def user_id(self) -> str: ...

    def write(self, frame: bytes) -> None:
        """Queue one complete WebSocket frame; never blocks."""

    def removed(self, room: str, code: int) -> None:
        """The hub dropped this subscriber from ``room`` (banned: 0; resync: 1001)."""


class Membership:
    """One subscriber in one room."""

    __slots__ = ("buffer", "conn", "counted", "floor", "sent", "staff")

    def __init__(
        self, conn: Subscriber, *, staff: bool = False, counted: bool = True, sent: int = 0
    ) -> None:
        self.conn = conn
        self.buffer: list[bytes] | None = []
        self.floor = 0
        self.sent = sent
        """The position in its channel's line log up to which this member has had the
        lines (written, buffered, or covered by its snapshot)."""
        self.staff = staff
        """Host, moderator or admin of the room: gets the staff's private events."""
        self.counted = counted
        """A viewer in presence; not the server's own listeners (the media recorder)."""

    def push(self, frame: bytes, lines: list[bytes], last_seq: int) -> None:
        if self.buffer is not None:
            self.buffer.extend(lines)
        elif self.floor and last_seq:
            self._send_above(lines, self.floor)
            if last_seq >= self.floor:
                self.floor = 0
        else:
            self.conn.write(frame)

    def go_live(self, floor: int) -> None:
        """Start live delivery; lines with seq <= ``floor`` are already known."""
        buffered, self.buffer = self.buffer or [], None
        self.floor = floor
        self._send_above(buffered, floor)

    def _send_above(self, lines: list[bytes], floor: int) -> None:
        kept = [ln for ln in lines if (s := line_seq(ln)) is None or s > floor]
        if kept:
            self.conn.write(text_frame(b"\n".join(kept)))


class Channel:
    """A room as this process sees it."""

    def __init__(self, room: str) -> None:
        self.room = room
        self.members: dict[Subscriber, Membership] = {}
        self.joined: list[Membership] = []
        """Members that came since this tick's slices were cut (the last slice's)."""
        self.users: dict[str, int] = {}
        """Viewers: the counted members' connections by user (see
        :attr:`Membership.counted`); presence is the number of users, not of tabs."""
        self.inbox: list[tuple[bytes, str | None]] = []
        self.lines: list[bytes] = []
        """The room's lines that some member has not had yet, from position ``base``."""
        self.base = 0
        self.head = LogHead(0, "")
        self.likes_pending = 0
        self.figures_pending: dict[str, int] = {}
        """Figures counted here since the last tick (watch time, clicks): added at once."""
        self.minute = 0
        """The unix minute whose figures this process keeps at its end."""
        self.minute_peak = 0
        self.likes_sent = -1
        self.viewers = 0
        self.viewers_sent = -1
        self.sales_open = False
        self.coupons_open = False
        self.coupons_sent: dict[str, int] = {}
        """The ``remaining`` of each live coupon last sent (``coupon.stock``)."""
        self.groups_open = False
        """Whether the room has deals (groups may be forming): looked at each tick."""
        self.forming_sent: bytes | None = None
        self.auction: dict[str, Any] | None = None
        """The open lot (its ``auction`` object), as the room's lines said."""
        self.bid_sent: tuple[int, str, int, int] | None = None
        """(price, leader, bids, ends_at) of the last ``auction.bid`` sent."""
        self.giveaway: dict[str, Any] | None = None
        """The open giveaway (its ``giveaway`` object), as the room's lines said."""
        self.entries_sent = -1
        self.stock_sent: dict[str, int] = {}
        self.stats_sent: bytes | None = None
        self.pinned: str | None = None
        """The sku pinned now, as the room's lines said (likes and chats count for it)."""
        self.changes: list[bytes] = []
        """Lines that pin, unpin or start a sale, taken since the tick began: applied
        at the next tick, after its likes were counted for the product pinned."""
        self.next_presence = 0.0
        self.tick_s = 0.0
        """This channel's tick now (see :func:`adapt_tick`); set by the hub."""
        self.pass_s = 0.0
        """Moving average of the time a pass over the members takes."""
        self.ready = asyncio.Event()
        self.closing = False
        self.closed = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    def sink(self, line: bytes, user: str | None) -> None:
        self.inbox.append((line, user))

    @property
    def end(self) -> int:
        """The position after the last line of the channel's log."""
        return self.base + len(self.lines)

    def trim(self) -> None:
        """Forget the lines every member has had."""
        if not self.lines:  # every member has had them all
            return
        low = min((m.sent for m in self.members.values()), default=self.end)
        del self.lines[: low - self.base]
        self.base = low


class Hub:
    """Fan-out for every room that has members in this process.

    Args:
        backends: the stores (the event log and the counters are used).
        node: this process's name, unique among the processes of a deployment.
        tick_s: the fan-out tick of a small room (the shortest).
        presence_s: how often presence is reported and sent; also how often a room
            with no likes of this process in a tick looks up the other processes'.
        fanout_share: the share of a core a room's passes may take before its tick
            grows (see :func:`adapt_tick`).
        max_tick_s: the longest a room's tick grows.
        clock: wall time in seconds (injected for tests).
    """

    def __init__(
        self,
        backends: Backends,
        *,
        node: str,
        tick_s: float,
        presence_s: float,
        fanout_share: float = DEFAULT_FANOUT_SHARE,
        max_tick_s: float = DEFAULT_MAX_TICK_S,
        clock: Callable[[], float] = time.time,
        analytics: bool = True,
    ) -> None:
        self._log = backends.log
        self._counters = backends.counters
        self._inventory = backends.inventory
        self._coupons = backends.coupons
        self._giveaways = backends.giveaways
        self._groups = backends.groups
        self._auctions = backends.auctions
        self.node = node
        self.analytics = analytics
        self.tick_s = tick_s
        self.presence_s = presence_s
        self.fanout_share = fanout_share
        self.max_tick_s = max_tick_s
        self._clock = clock
        self._channels: dict[str, Channel] = {}
        self._loose: set[asyncio.Task[None]] = set()
        self.frames_sent = 0

    def channel(self, room: str) -> Channel | None:
        return self._channels.get(room)

    async def attach(
        self, room: str, conn: Subscriber, *, staff: bool = False, counted: bool = True
    ) -> Membership:
        """Add ``conn`` to ``room``, buffering until :meth:`Membership.go_live`;
        ``staff`` members also get the events private to the room's staff; members
        not ``counted`` are not viewers in presence.

        Raises:
            Error: ``internal`` when the room's subscription cannot be made.
        """
        while True:
            ch = self._channels.get(room)
            if ch is None:
                ch = self._channels[room] = Channel(room)
                ch.task = asyncio.create_task(self._run(ch), name=f"hub:{room}")
            if ch.closing:  # a channel on its way out: wait, then start afresh
                await ch.closed.wait()
                continue
            await ch.ready.wait()
            if ch.closing:
                if ch.task is not None and ch.task.done() and ch.task.exception():
                    raise Error("internal", f"room {room!r} is unavailable")
                continue
            membership = ch.members[conn] = Membership(
                conn, staff=staff, counted=counted, sent=ch.end
            )
            ch.joined.append(membership)
            if counted:
                uid = conn.user_id
                ch.users[uid] = ch.users.get(uid, 0) + 1
            if staff:
                ch.stats_sent = None  # the newcomer gets the figures at the next second
            return membership

    def detach(self, room: str, conn: Subscriber) -> None:
        ch = self._channels.get(room)
        if ch is not None and (m := ch.members.pop(conn, None)) is not None:
            _uncount(ch, m)

    def add_likes(self, room: str, n: int) -> bool:
        """Count ``n`` likes into the room's next tick; False if no local channel."""
        ch = self._channels.get(room)
        if ch is None:
            return False
        ch.likes_pending += n
        return True

    def add_figures(self, room: str, figures: dict[str, int]) -> None:
        """Count ``figures`` into the room's next tick (at once if no local channel)."""
        ch = self._channels.get(room)
        if ch is None:
            task = asyncio.get_running_loop().create_task(self._counters.count(room, figures))
            self._loose.add(task)
            task.add_done_callback(self._loose.discard)
            return
        for name, n in figures.items():
            ch.figures_pending[name] = ch.figures_pending.get(name, 0) + n

    def pinned(self, room: str) -> str | None:
        """The sku pinned in ``room`` as this process last saw it (None if no channel)."""
        ch = self._channels.get(room)
        return None if ch is None else ch.pinned

    def viewers(self, room: str) -> int:
        ch = self._channels.get(room)
        return 0 if ch is None else max(ch.viewers, len(ch.users))

    def giveaway(self, room: str) -> dict[str, Any] | None:
        """The room's open giveaway as this process last saw it (its protocol object)."""
        ch = self._channels.get(room)
        return None if ch is None else ch.giveaway

    def giveaways(self) -> list[tuple[str, dict[str, Any]]]:
        """This process's rooms with a giveaway open (or drawing), and each one."""
        return [(room, ch.giveaway) for room, ch in self._channels.items() if ch.giveaway]

    def auctions(self) -> list[tuple[str, dict[str, Any]]]:
        """This process's rooms with an open lot, and each lot (its clock as last read)."""
        return [(room, ch.auction) for room, ch in self._channels.items() if ch.auction]

    def here(self, room: str, user: str) -> bool:
        """Whether ``user`` has a counted connection in ``room`` on this process."""
        ch = self._channels.get(room)
        return ch is not None and user in ch.users

    def rooms_with_groups(self) -> list[str]:
        """This process's rooms with group-buy deals."""
        return [room for room, ch in self._channels.items() if ch.groups_open]

    def rooms_with_coupons(self) -> list[str]:
        """This process's rooms that had live coupons at their last look."""
        return [room for room, ch in self._channels.items() if ch.coupons_open]

    def ticks(self) -> dict[str, float]:
        """Each local room's tick now, in seconds (see :func:`adapt_tick`)."""
        return {room: ch.tick_s for room, ch in self._channels.items()}

    async def close(self) -> None:
        tasks = [ch.task for ch in self._channels.values() if ch.task]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _run(self, ch: Channel) -> None:
        try:
            ch.head = await self._log.subscribe(ch.room, ch.sink)
            pin = (await self._log.snapshot(ch.room)).pinned
            ch.pinned = _pinned_sku(pin) if pin else None
            ch.sales_open = bool(await self._inventory.stock(ch.room))
            ch.coupons_open = bool(await self._coupons.live(ch.room))
            ch.groups_open = bool(await self._groups.deals(ch.room))
            lot = await self._auctions.current(ch.room)
            ch.auction = lot.public() if lot is not None else None
            g = await self._giveaways.current(ch.room)
            ch.giveaway = g.public() if g is not None and g.status == "open" else None
            ch.tick_s = self.tick_s
            ch.ready.set()
            await self._rotate(ch)
        finally:
            ch.closing = True
            ch.ready.set()
            try:
                await self._log.unsubscribe(ch.room)
            except Exception:
                log.exception("unsubscribe of room %s failed", ch.room)
            if self._channels.get(ch.room) is ch:
                del self._channels[ch.room]
            ch.closed.set()
            if ch.members:  # cancelled with members left: tell them to come back
                for conn in list(ch.members):
                    conn.removed(ch.room, 1001)

    async def _rotate(self, ch: Channel) -> None:
        """Tick after tick until the room has no member left: each tick writes to the
        members in slices spread over the tick (one slice for a room of up to
        :data:`PASS_SLICE`), each slice with the lines that arrived until its turn;
        members that came since the slices were cut go with the last slice. The cut
        is made when a slice first has lines to write (a quiet tick makes none)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time()
        while True:
            members: list[Membership] | None = None
            ch.joined = []
            slices = max(1, -(-len(ch.members) // PASS_SLICE))
            took, start = 0.0, ch.end
            for i in range(slices):
                # A fixed cadence: the slices' own time is not added to the tick.
                deadline = max(deadline + ch.tick_s / slices, loop.time())
                await asyncio.sleep(deadline - loop.time())
                if i == 0 and not ch.members and not ch.inbox:
                    ch.closing = True  # from here on, attach waits for a new channel
                    return
                try:
                    await (self._tick(ch) if i == 0 else self._take_lines(ch))
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("tick of room %s failed", ch.room)
                if members is None:
                    if not ch.lines:  # a quiet turn: every member is at the end
                        continue
                    members, ch.joined = list(ch.members.values()), []
                if i < slices - 1:
                    took += self._write(ch, members[i * PASS_SLICE : (i + 1) * PASS_SLICE])
                else:  # the rest, and who came since the cut
                    took += self._write(ch, members[i * PASS_SLICE :] + ch.joined)
            self.frames_sent += ch.end > start  # ticks that had lines to send
            ch.pass_s += (took - ch.pass_s) * _PASS_WEIGHT
            ch.tick_s = adapt_tick(self.tick_s, self.max_tick_s, ch.pass_s, self.fanout_share)
            ch.trim()

    async def _tick(self, ch: Channel) -> None:
        """A tick's first slice: the lines that arrived, and the figures of the tick."""
        now = self._clock()
        await self._take_lines(ch)
        likes, ch.likes_pending = ch.likes_pending, 0
        if likes and ch.pinned:  # this process's likes: the sum over processes is right
            await self._counters.count(ch.room, {f"likes:{ch.pinned}": likes})
        if ch.figures_pending:
            pending, ch.figures_pending = ch.figures_pending, {}
            await self._counters.count(ch.room, pending)
        changes, ch.changes = ch.changes, []
        for line in changes:  # a pin changes what the next tick's likes count for
            head = line[:64]
            if _SALE_STARTED in head:
                ch.sales_open = True
            elif _COUPON_DROPPED in head:
                ch.coupons_open = True
            elif _DEAL_STARTED in head:
                ch.groups_open = True
            elif _PINNED in head:
                ch.pinned = _pinned_sku(line)
            elif _UNPINNED in head:
                ch.pinned = None
        figures: list[bytes] = []
        looking = now >= ch.next_presence
        if likes or looking:  # other processes' likes: seen at least once a presence_s
            total = await self._counters.add_likes(ch.room, likes)
            if total != ch.likes_sent:
                ch.likes_sent = total
                figures.append(encode_event("likes", ch.room, int(now * 1000), {"total": total}))
        if ch.sales_open:
            await self._stock(ch, now, figures)
        if ch.coupons_open:
            await self._coupon_stock(ch, now, figures)
        if ch.giveaway is not None:
            await self._entries(ch, now, figures)
        if ch.groups_open:
            await self._forming(ch, now, figures)
        if ch.auction is not None:
            await self._bids(ch, now, figures)
        if looking:
            if self.analytics:
                await self._minute(ch, now)
            ch.next_presence = now + self.presence_s
            ch.sales_open = True  # look again once in a while, whatever we missed
            ch.coupons_open = True
            await self._presence(ch, now, figures)
            if any(m.staff for m in ch.members.values()):
                await self._stats(ch, now)
        ch.lines += figures

    async def _take_lines(self, ch: Channel) -> None:
        """Move the room lines that arrived into the channel's log."""
        lines = await self._take_inbox(ch)
        ch.changes += (ln for ln in lines if _CHANGES.search(ln, 0, 64))
        for line in lines:  # at once: a keyword commented right after the start enters
            if (m := _OPENS.search(line, 0, 64)) is None:
                continue
            opened = loads(line)[m[1].decode()] if m[2] == b"started" else None
            if m[1] == b"giveaway":
                ch.giveaway, ch.entries_sent = opened, 0
            else:
                ch.auction, ch.bid_sent = opened, None
        ch.lines += lines

    def _write(self, ch: Channel, batch: list[Membership]) -> float:
        """Write to each member of ``batch`` still in the room the lines it has not had;
        return the CPU time it took (this thread's, so time the process spent
        descheduled on a busy machine does not count as the cost).

        Members written to together share one frame: those at the same position (all
        of a slice but a newcomer or two) get the very same bytes. One that is still
        buffering keeps the lines for :meth:`Membership.go_live`.
        """
        began = time.thread_time()
        end, base, lines = ch.end, ch.base, ch.lines
        last_seq = ch.head.seq
        current = ch.members
        frames: dict[int, tuple[bytes, list[bytes]]] = {}
        for membership in batch:
            sent = membership.sent
            if sent == end or current.get(membership.conn) is not membership:
                continue
            got = frames.get(sent)
            if got is None:
                news = lines[sent - base :]
                got = frames[sent] = (text_frame(b"\n".join(news)), news)
            membership.push(got[0], got[1], last_seq)
            membership.sent = end
        return time.thread_time() - began

    async def _take_inbox(self, ch: Channel) -> list[bytes]:
        """The room lines that arrived since the last tick, gap-free and in order;
        private lines are delivered straight away."""
        inbox, ch.inbox = ch.inbox, []
        lines: list[bytes] = []
        for line, user in inbox:
            if user is not None:
                self._deliver_private(ch, line, user)
                continue
            seq = line_seq(line)
            if seq is None:
                lines.append(line)
            elif seq == ch.head.seq + 1:
                lines.append(line)
                ch.head = LogHead(seq, ch.head.epoch)
            elif seq > ch.head.seq + 1:
                lines.extend(await self._repair(ch, seq))
                lines.append(line)
                ch.head = LogHead(seq, ch.head.epoch)
        return lines

    async def _repair(self, ch: Channel, upto: int) -> list[bytes]:
        """Lines between the channel's head and ``upto`` (exclusive), from history."""
        missing = await self._log.history(ch.room, ch.head.seq, ch.head.epoch)
        if missing is None:
            log.warning("room %s: history lost past seq %d; members resync", ch.room, ch.head.seq)
            self._resync(ch)
            return []
        return [ln for ln in missing if (s := line_seq(ln)) is not None and s < upto]

    async def _stock(self, ch: Channel, now: float, lines: list[bytes]) -> None:
        """One ``stock`` per open sale whose remaining changed since the last one sent."""
        stock = await self._inventory.stock(ch.room)
        if not stock:
            ch.sales_open = False
        ts = int(now * 1000)
        for sale_id, remaining in stock.items():
            if ch.stock_sent.get(sale_id) != remaining:
                ch.stock_sent[sale_id] = remaining
                fields = {"sale_id": sale_id, "remaining": remaining}
                lines.append(encode_event("stock", ch.room, ts, fields))
        for gone in ch.stock_sent.keys() - stock.keys():
            del ch.stock_sent[gone]

    async def _coupon_stock(self, ch: Channel, now: float, lines: list[bytes]) -> None:
        """One ``coupon.stock`` per live coupon whose remaining changed since the last
        one sent (coalesced like ``stock``: at most one per coupon per tick)."""
        coupons = await self._coupons.live(ch.room)
        if not coupons:
            ch.coupons_open = False
        ts = int(now * 1000)
        live = set()
        for coupon in coupons:
            live.add(coupon.id)
            if ch.coupons_sent.get(coupon.id) != coupon.remaining:
                ch.coupons_sent[coupon.id] = coupon.remaining
                fields = {"coupon_id": coupon.id, "remaining": coupon.remaining}
                lines.append(encode_event("coupon.stock", ch.room, ts, fields))
        for gone in ch.coupons_sent.keys() - live:
            del ch.coupons_sent[gone]

    async def _entries(self, ch: Channel, now: float, lines: list[bytes]) -> None:
        """``giveaway.entries`` when the open giveaway's count changed (at most one per
        tick, like ``stock``)."""
        assert ch.giveaway is not None
        g = await self._giveaways.get(ch.room, ch.giveaway["id"])
        if g is None or g.entries == ch.entries_sent:
            return
        ch.entries_sent = g.entries
        fields = {"giveaway_id": g.id, "entries": g.entries}
        lines.append(encode_event("giveaway.entries", ch.room, int(now * 1000), fields))

    async def _forming(self, ch: Channel, now: float, lines: list[bytes]) -> None:
        """``group.forming`` when the groups forming changed: those closest to filling
        (at most one per tick, like ``stock``)."""
        groups, total = await self._groups.forming(ch.room, FORMING_SHOWN)
        fields = {"groups": [g.public() for g in groups], "forming": total}
        body = dumps(fields)
        if body == ch.forming_sent:
            return
        ch.forming_sent = body
        lines.append(encode_event("group.forming", ch.room, int(now * 1000), fields))

    async def _bids(self, ch: Channel, now: float, lines: list[bytes]) -> None:
        """``auction.bid`` when the open lot's price, leader or bids changed: the latest
        of the tick only; ``auction.extended`` when its clock was set back."""
        assert ch.auction is not None
        lot = await self._auctions.get(ch.room, ch.auction["id"])
        if lot is None or lot.status != "open":
            return
        state = (lot.price, lot.leader, lot.bids, lot.ends_at)
        if state == ch.bid_sent:
            return
        ts = int(now * 1000)
        if ch.bid_sent is not None and lot.ends_at != ch.bid_sent[3]:
            fields = {"auction_id": lot.id, "ends_at": lot.ends_at, "extensions": lot.extensions}
            lines.append(encode_event("auction.extended", ch.room, ts, fields))
        ch.bid_sent = state
        ch.auction["ends_at"] = lot.ends_at
        public = lot.public()
        fields = {"auction_id": lot.id, **{k: public[k] for k in _BID_FIELDS}}
        lines.append(encode_event("auction.bid", ch.room, ts, fields))

    async def _minute(self, ch: Channel, now: float) -> None:
        """At a minute's end, keep the room's figures as they were (the first process
        to get there does), with the most viewers seen in that minute: the report's
        minute-by-minute series."""
        minute = int(now // 60)
        if ch.minute and minute > ch.minute:
            figures = await self._counters.figures(ch.room)
            figures["viewers"] = ch.minute_peak
            figures["likes"] = max(ch.likes_sent, 0)
            await self._counters.record_minute(ch.room, ch.minute, figures)
            ch.minute_peak = 0
        ch.minute = minute
        ch.minute_peak = max(ch.minute_peak, ch.viewers)

    async def _presence(self, ch: Channel, now: float, lines: list[bytes]) -> None:
        ch.viewers = await self._counters.report_presence(
            ch.room, self.node, len(ch.users), int(now * 1000)
        )
        if ch.pinned:
            await self._counters.note_viewers(ch.room, ch.viewers, sku=ch.pinned)
        if ch.viewers != ch.viewers_sent:
            ch.viewers_sent = ch.viewers
            lines.append(
                encode_event("presence", ch.room, int(now * 1000), {"viewers": ch.viewers})
            )
        # A lost pub/sub message shows as a gap only when the next one arrives; a lost
        # epoch (the store was flushed) shows only here.
        head = await self._log.head(ch.room)
        if head.epoch != ch.head.epoch and ch.head.epoch:
            log.warning("room %s: epoch changed; members resync", ch.room)
            ch.head = head
            self._resync(ch)
        elif head.seq > ch.head.seq and not ch.inbox:
            await asyncio.sleep(0)  # let a pub/sub message in flight arrive first
            if not ch.inbox:
                lines.extend(await self._repair(ch, head.seq + 1))
                ch.head = LogHead(max(ch.head.seq, head.seq), ch.head.epoch)

    async def _stats(self, ch: Channel, now: float) -> None:
        """The room's figures to its staff, when they changed (at most once a second)."""
        peak = await self._counters.note_viewers(ch.room, ch.viewers)
        figures = await self._counters.figures(ch.room)
        likes = ch.likes_sent if ch.likes_sent >= 0 else 0
        body = stats_fields(figures, viewers=ch.viewers, peak=peak, likes=likes)
        encoded = dumps(body)
        if encoded == ch.stats_sent:
            return
        ch.stats_sent = encoded
        frame = text_frame(encode_event("stats", ch.room, int(now * 1000), body))
        for conn, membership in list(ch.members.items()):
            if membership.staff:
                conn.write(frame)

    def _deliver_private(self, ch: Channel, line: bytes, user: str) -> None:
        if user == STAFF:
            frame = text_frame(line)
            for conn, membership in list(ch.members.items()):
                if membership.staff:
                    conn.write(frame)
            return
        targets = [c for c in ch.members if c.user_id == user]
        if not targets:
            return
        frame = text_frame(line)
        for conn in targets:
            conn.write(frame)
        event = loads(line)
        if event.get("type") == "moderation" and event.get("action") == "banned":
            for conn in targets:
                if (m := ch.members.pop(conn, None)) is not None:
                    _uncount(ch, m)
                conn.removed(ch.room, 0)

    def _resync(self, ch: Channel) -> None:
        members, ch.members = list(ch.members), {}
        ch.users = {}
        for conn in members:
            conn.removed(ch.room, 1001)


def _uncount(ch: Channel, m: Membership) -> None:
    """A member left ``ch``: one connection less for its user's presence."""
    if not m.counted:
        return
    uid = m.conn.user_id
    left = ch.users.get(uid, 0) - 1
    if left > 0:
        ch.users[uid] = left
    else:
        ch.users.pop(uid, None)
