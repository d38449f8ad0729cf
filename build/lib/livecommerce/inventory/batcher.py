"""Micro-batching of reservations: many ``order`` attempts, one script call.

Attempts for one sale queue up in arrival order; while one store call for that sale is
in flight, the next ones gather, and go together in the next call. Under a burst this
turns thousands of attempts a second into a few hundred script calls; when it is quiet
an attempt goes alone and at once (no timer adds latency).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable

from livecommerce.backends import InventoryStore
from livecommerce.inventory.rules import Attempt, Outcome

Done = Callable[[Outcome | Exception], None]
"""Told an attempt's outcome, or the store's failure, exactly once."""
_Waiting = tuple[Attempt, Done]

log = logging.getLogger(__name__)


class ReservationBatcher:
    """Serves reservations through ``store.reserve`` in batches of at most ``max_batch``.

    Args:
        store: the inventory store.
        hold_ms: the payment window given to every new hold.
        max_batch: the most attempts in one store call (bounds the script's work).
        clock: wall time in seconds.
    """

    def __init__(
        self,
        store: InventoryStore,
        *,
        hold_ms: int,
        max_batch: int = 256,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._hold_ms = hold_ms
        self._max_batch = max_batch
        self._clock = clock
        self._queues: dict[tuple[str, str], deque[_Waiting]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.calls = 0
        self.attempts = 0

    async def reserve(self, room: str, sale_id: str, attempt: Attempt) -> Outcome:
        """Queue ``attempt`` and wait for its outcome.

        The attempt is served even if the caller stops waiting (a hold once placed is
        kept: the buyer finds it in the next snapshot).
        """
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()

        def done(result: Outcome | Exception) -> None:
            if future.done():  # the caller stopped waiting
                return
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)

        self.submit(room, sale_id, attempt, done)
        return await future  # a cancelled caller cancels only its future; the batch goes on

    def submit(self, room: str, sale_id: str, attempt: Attempt, done: Done) -> None:
        """Queue ``attempt``; ``done`` is called with its outcome (or the store's
        exception) from the batch that serves it. The cheap way for a caller that need
        not wait: no future, no task."""
        key = (room, sale_id)
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = deque()
            task = asyncio.create_task(self._drain(key, queue))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        queue.append((attempt, done))

    async def _drain(self, key: tuple[str, str], queue: deque[_Waiting]) -> None:
        room, sale_id = key
        try:
            while queue:
                batch = [queue.popleft() for _ in range(min(len(queue), self._max_batch))]
                self.calls += 1
                self.attempts += len(batch)
                try:
                    outcomes = await self._store.reserve(
                        room,
                        sale_id,
                        [a for a, _ in batch],
                        now_ms=int(self._clock() * 1000),
                        hold_ms=self._hold_ms,
                    )
                except Exception as exc:
                    for _, done in batch:
                        _tell(done, exc)
                    continue
                for (_, done), outcome in zip(batch, outcomes, strict=True):
                    _tell(done, outcome)
        finally:
            del self._queues[key]

    async def close(self) -> None:
        """Wait for the attempts already queued to be served."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


def _tell(done: Done, result: Outcome | Exception) -> None:
    try:
        done(result)
    except Exception:  # one caller's failure must not keep the others from their outcome
        log.exception("an order outcome could not be delivered")
