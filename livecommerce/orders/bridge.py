"""The order bridge: every outbox entry reaches the order system, exactly once in effect.

A :class:`Bridge` is one worker of the consumer group (any number run, in ``serve``
processes or in ``livecommerce bridge``). It reads new entries, posts each as a signed
``order.held`` webhook, and acknowledges it only after a 2xx answer (the acknowledgements
of one reading loop go together). A failed delivery
is retried with exponential backoff and full jitter; after ``max_failures`` it is buried
in the dead letters, without holding up the others. Entries of a worker that died are
taken over once idle for ``claim_idle_s``; a worker keeps touching its own so that they
are not taken while it is still retrying them.

Delivery is at least once: a worker may die after the order system answered and before
the acknowledgement. The ``webhook-id`` is the order id, the same on every attempt, so
the receiver applies each order once (Standard Webhooks' idempotency rule).
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from livecommerce.backends import OutboxEntry, OutboxStore
from livecommerce.config import Settings
from livecommerce.orders.http11 import WebhookClient
from livecommerce.orders.webhooks import envelope, sign
from livecommerce.protocol import loads

log = logging.getLogger(__name__)

Transport = Callable[[bytes, Mapping[str, str]], Awaitable[tuple[int, bytes]]]
"""Sends one signed payload; returns the HTTP status and body, or raises (no answer)."""
OnDelivered = Callable[[str, str | None], Awaitable[None]]
"""Called with the order id and the payment URL the order system gave, if any."""

_INTS = ("qty", "price", "created_at", "expires_at")


def order_held(fields: Mapping[str, str], currency: str) -> dict[str, Any]:
    """The ``data`` of an ``order.held`` webhook, from an outbox entry.

    Raises:
        ValueError: the entry lacks a field or has a bad number (a poison entry).
    """
    try:
        nums = {name: int(fields[name]) for name in _INTS}
        data: dict[str, Any] = {
            "id": fields["id"],
            "room": fields["room"],
            "sale": fields["sale"],
            "sku": fields["sku"],
            "title": fields["title"],
            "qty": nums["qty"],
            "unit_price": nums["price"],
            "currency": currency,
            "buyer_id": fields["user"],
            "created_at": nums["created_at"],
            "expires_at": nums["expires_at"],
        }
        if fields.get("coupon"):  # a live coupon took this off the total: charge the rest
            discount = int(fields.get("discount") or 0)
            data["coupon"] = fields["coupon"]
            data["discount"] = discount
            data["total"] = nums["qty"] * nums["price"] - discount
        if fields.get("source", "sale") != "sale":  # a promotion's: the prize, group, win
            data["source"] = fields["source"]
        return data
    except (KeyError, ValueError) as exc:
        raise ValueError(f"malformed outbox entry: {exc!r}") from exc


def payment_url_of(body: bytes) -> str | None:
    """The ``payment_url`` of a delivery's answer, if it gave a usable one."""
    try:
        doc = loads(body) if body else None
    except ValueError:
        return None
    url = doc.get("payment_url") if isinstance(doc, dict) else None
    if not isinstance(url, str) or len(url) > 2048 or not url.isascii():
        return None
    if url.startswith(("https://", "http://", "/")) and not url.startswith("//"):
        return url
    return None


@dataclass(frozen=True, slots=True)
class BridgeSettings:
    concurrency: int = 64
    """Deliveries in flight per worker."""
    max_failures: int = 10
    """Failed deliveries of one entry before it is buried in the dead letters."""
    backoff_base_s: float = 1.0
    backoff_max_s: float = 300.0
    claim_idle_s: float = 60.0
    """An entry pending this long untouched belongs to a dead worker: taken over."""
    read_block_ms: int = 1000
    """Longest wait for new entries (also the longest delay of an acknowledgement)."""
    stop_grace_s: float = 5.0
    """On stop, how long deliveries under way may take to finish."""
    currency: str = "USD"


class Bridge:
    """One bridge worker; :meth:`run` until cancelled.

    Args:
        outbox: the shared outbox.
        transport: sends a signed payload to the order system.
        key: the webhook secret's key.
        consumer: this worker's name in the group (unique per worker).
        on_delivered: told of each delivered order, before its acknowledgement.
    """

    def __init__(
        self,
        outbox: OutboxStore,
        transport: Transport,
        key: bytes,
        *,
        consumer: str,
        on_delivered: OnDelivered,
        settings: BridgeSettings | None = None,
        clock: Callable[[], float] = time.time,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self._outbox = outbox
        self._transport = transport
        self._key = key
        self.consumer = consumer
        self._on_delivered = on_delivered
        self._s = settings or BridgeSettings()
        self._clock = clock
        self._rng = rng
        self._inflight: dict[str, tuple[OutboxEntry, asyncio.Task[None]]] = {}
        self._stopping = asyncio.Event()
        self._acked: list[OutboxEntry] = []
        self._acking: asyncio.Task[None] | None = None
        self.delivered = 0
        self.failures = 0
        self.buried = 0

    def backoff(self, failures: int) -> float:
        """Seconds before the next try after ``failures`` failures (full jitter)."""
        cap: float = min(self._s.backoff_max_s, self._s.backoff_base_s * 2.0 ** (failures - 1))
        return self._rng() * cap

    def stop(self) -> None:
        """Make :meth:`run` stop reading. Deliveries under way get ``stop_grace_s`` to
        finish; the rest stay pending, and another worker takes them over."""
        self._stopping.set()

    async def run(self) -> None:
        """Deliver until :meth:`stop` (a flag, not a cancel: a cancel landing inside a
        Redis call can be lost)."""
        claim_every = self._s.claim_idle_s / 3
        next_claim = 0.0
        try:
            while not self._stopping.is_set():
                now = time.monotonic()
                if now >= next_claim:
                    await self._claim()
                    next_claim = now + claim_every
                free = self._s.concurrency - len(self._inflight)
                if free <= 0:
                    tasks = [t for _, t in self._inflight.values()]
                    await asyncio.wait(tasks, timeout=1.0, return_when=asyncio.FIRST_COMPLETED)
                    continue
                try:
                    entries = await self._outbox.read(
                        self.consumer, free, block_ms=self._s.read_block_ms
                    )
                except Exception:
                    log.exception("reading the outbox failed; trying again in 1 s")
                    await asyncio.sleep(1.0)
                    continue
                for entry in entries:
                    self._start(entry)
        finally:
            if self._inflight:
                tasks = [t for _, t in self._inflight.values()]
                await asyncio.wait(tasks, timeout=self._s.stop_grace_s)
            for _, task in self._inflight.values():
                task.cancel()
            if self._inflight:
                await asyncio.wait([t for _, t in self._inflight.values()], timeout=1.0)
            if self._acking is not None:
                await asyncio.wait([self._acking], timeout=self._s.stop_grace_s)
            if self._acked:
                await self._flush_acks()

    def _ack(self, entry: OutboxEntry) -> None:
        """Acknowledge soon: the deliveries that finish in the same loop iteration go
        in one store call (one per entry was 43 % of a bridge's CPU)."""
        self._acked.append(entry)
        if self._acking is None or self._acking.done():
            self._acking = asyncio.get_running_loop().create_task(self._flush_acks())

    async def _flush_acks(self) -> None:
        await asyncio.sleep(0)  # let the other deliveries of this iteration join
        while self._acked:
            batch, self._acked = self._acked, []
            try:
                await self._outbox.ack(batch)
            except Exception:  # delivered, not acknowledged: the next delivery retries
                self._acked[:0] = batch
                log.exception("acknowledging %d entries failed", len(batch))
                return

    async def _claim(self) -> None:
        """Touch this worker's entries, then take over those of dead workers."""
        try:
            if self._inflight:
                await self._outbox.touch(self.consumer, [e for e, _ in self._inflight.values()])
            free = self._s.concurrency - len(self._inflight)
            if free > 0:
                idle_ms = int(self._s.claim_idle_s * 1000)
                taken = await self._outbox.reclaim(self.consumer, min_idle_ms=idle_ms, count=free)
                for entry in taken:
                    if entry.id not in self._inflight:
                        log.info("took over %s after %d failures", entry.id, entry.failures)
                        self._start(entry)
        except Exception:
            log.exception("claiming outbox entries failed")

    def _start(self, entry: OutboxEntry) -> None:
        task = asyncio.get_running_loop().create_task(self._deliver(entry))
        self._inflight[entry.id] = (entry, task)
        task.add_done_callback(lambda _: self._inflight.pop(entry.id, None))

    async def _deliver(self, entry: OutboxEntry) -> None:
        try:
            await self._deliver_until_done(entry)
        except asyncio.CancelledError:
            raise
        except Exception:  # the store failed: the entry stays pending, taken over later
            log.exception("delivering %s failed", entry.id)

    async def _deliver_until_done(self, entry: OutboxEntry) -> None:
        try:
            data = order_held(entry.fields, self._s.currency)
        except ValueError as exc:
            log.warning("burying %s: %s", entry.id, exc)
            await self._outbox.bury(entry, "malformed", int(self._clock() * 1000))
            self.buried += 1
            return
        while True:
            now = self._clock()
            body = envelope("order.held", data, now)
            headers = sign(self._key, data["id"], int(now), body)
            try:
                status, answer = await self._transport(body, headers)
                reason = f"HTTP {status}"
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                status, answer, reason = 0, b"", type(exc).__name__
            if 200 <= status < 300:
                await self._on_delivered(data["id"], payment_url_of(answer))
                self._ack(entry)
                self.delivered += 1
                return
            self.failures += 1
            failures = await self._outbox.failed(entry)
            entry = replace(entry, failures=failures)  # the count to clear on success
            if failures >= self._s.max_failures:
                log.warning("burying %s after %d failures (%s)", entry.id, failures, reason)
                await self._outbox.bury(entry, reason, int(self._clock() * 1000))
                self.buried += 1
                return
            await asyncio.sleep(self.backoff(failures))


class HttpTransport:
    """Posts payloads to the order system's webhook URL (kept-alive connections; see
    :mod:`livecommerce.orders.http11` for why not aiohttp's client)."""

    def __init__(self, url: str, *, timeout_s: float = 10.0, connections: int = 64) -> None:
        self.url = url
        self._client = WebhookClient(url, timeout_s=timeout_s, connections=connections)

    async def __call__(self, body: bytes, headers: Mapping[str, str]) -> tuple[int, bytes]:
        return await self._client.post(body, headers)

    async def close(self) -> None:
        await self._client.close()


def make_bridge(
    outbox: OutboxStore,
    transport: Transport,
    key: bytes,
    on_delivered: OnDelivered,
    settings: Settings,
) -> Bridge:
    """A bridge worker as ``settings`` say, named after this host and process."""
    return Bridge(
        outbox,
        transport,
        key,
        consumer=f"{socket.gethostname()}-{os.getpid()}",
        on_delivered=on_delivered,
        settings=BridgeSettings(
            concurrency=settings.bridge_concurrency,
            max_failures=settings.bridge_max_failures,
            claim_idle_s=settings.bridge_claim_idle_s,
            stop_grace_s=settings.drain_timeout_s,
            currency=settings.currency,
        ),
    )
