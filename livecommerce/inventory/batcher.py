"""Micro-batching of reservations: many ``order`` attempts, one script call per batch
(``livecommerce.batching`` has the scheme)."""

from __future__ import annotations

import time
from collections.abc import Callable

from livecommerce.backends import InventoryStore
from livecommerce.batching import KeyedBatcher
from livecommerce.inventory.rules import Attempt, Outcome

Done = Callable[[Outcome | Exception], None]
"""Told an attempt's outcome, or the store's failure, exactly once."""


class ReservationBatcher(KeyedBatcher[tuple[str, str], Attempt, Outcome]):
    """Serves reservations through ``store.reserve`` in batches of at most ``max_batch``,
    keyed by (room, sale).

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
        async def reserve(key: tuple[str, str], attempts: list[Attempt]) -> list[Outcome]:
            room, sale_id = key
            now_ms = int(clock() * 1000)
            return await store.reserve(room, sale_id, attempts, now_ms=now_ms, hold_ms=hold_ms)

        super().__init__(reserve, max_batch=max_batch)

    @property
    def attempts(self) -> int:
        return self.requests

    async def reserve(self, room: str, sale_id: str, attempt: Attempt) -> Outcome:
        """Queue ``attempt`` and wait for its outcome (served even if the caller stops
        waiting: a hold once placed is kept; the buyer finds it in the next snapshot)."""
        return await self.ask((room, sale_id), attempt)
