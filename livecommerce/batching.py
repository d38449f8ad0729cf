"""Micro-batching: many requests for one thing, one store call.

Requests with the same key (a sale, a coupon, an auction lot) queue in arrival order;
while one store call for that key is in flight, the next ones gather, and go together
in the next call, at most ``max_batch`` at a time. Under a burst this turns thousands
of requests a second into a few hundred calls (each one Lua script serving the batch
in order); when it is quiet a request goes alone and at once (no timer adds latency).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
Req = TypeVar("Req")
Res = TypeVar("Res")

log = logging.getLogger(__name__)


class KeyedBatcher(Generic[K, Req, Res]):
    """Serves requests through ``call(key, requests)``, which answers one result per
    request, in order.

    Args:
        call: the store call for one key and a batch of its requests.
        max_batch: the most requests in one call (bounds a script's work).
    """

    def __init__(
        self, call: Callable[[K, list[Req]], Awaitable[list[Res]]], *, max_batch: int = 256
    ) -> None:
        self._call = call
        self._max_batch = max_batch
        self._queues: dict[K, deque[tuple[Req, Callable[[Res | Exception], None]]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.calls = 0
        self.requests = 0

    async def ask(self, key: K, request: Req) -> Res:
        """Queue ``request`` and wait for its result. The request is served even if the
        caller stops waiting (what the store did stays done)."""
        future: asyncio.Future[Res] = asyncio.get_running_loop().create_future()

        def done(result: Res | Exception) -> None:
            if future.done():  # the caller stopped waiting
                return
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)

        self.submit(key, request, done)
        return await future  # a cancelled caller cancels only its future; the batch goes on

    def submit(self, key: K, request: Req, done: Callable[[Res | Exception], None]) -> None:
        """Queue ``request``; ``done`` is called with its result (or the store's
        exception) from the batch that serves it: no future, no task for the caller."""
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = deque()
            task = asyncio.create_task(self._drain(key, queue))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        queue.append((request, done))

    async def _drain(
        self, key: K, queue: deque[tuple[Req, Callable[[Res | Exception], None]]]
    ) -> None:
        try:
            while queue:
                batch = [queue.popleft() for _ in range(min(len(queue), self._max_batch))]
                self.calls += 1
                self.requests += len(batch)
                try:
                    results = await self._call(key, [r for r, _ in batch])
                except Exception as exc:
                    for _, done in batch:
                        _tell(done, exc)
                    continue
                for (_, done), result in zip(batch, results, strict=True):
                    _tell(done, result)
        finally:
            del self._queues[key]

    async def close(self) -> None:
        """Wait for the requests already queued to be served."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


def _tell(done: Callable[[Res | Exception], None], result: Res | Exception) -> None:
    try:
        done(result)
    except Exception:  # one caller's failure must not keep the others from their result
        log.exception("a batched result could not be delivered")
