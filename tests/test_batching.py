"""The micro-batcher behind orders, coupon claims and bids (no network)."""

from __future__ import annotations

import asyncio

import pytest

from livecommerce.batching import KeyedBatcher


async def test_requests_that_arrive_together_go_together_in_order() -> None:
    calls: list[tuple[str, list[int]]] = []

    async def call(key: str, reqs: list[int]) -> list[int]:
        calls.append((key, reqs))
        await asyncio.sleep(0.01)
        return [r * 10 for r in reqs]

    batcher: KeyedBatcher[str, int, int] = KeyedBatcher(call, max_batch=3)
    got = await asyncio.gather(*(batcher.ask("a" if i % 2 else "b", i) for i in range(10)))
    assert got == [i * 10 for i in range(10)]
    assert calls[0] == ("b", [0, 2, 4]) and calls[1] == ("a", [1, 3, 5])  # all asked at once
    assert all(len(reqs) <= 3 for _, reqs in calls)
    served = {k: [r for key, reqs in calls if key == k for r in reqs] for k in "ab"}
    assert served == {"a": [1, 3, 5, 7, 9], "b": [0, 2, 4, 6, 8]}  # arrival order per key
    assert (batcher.calls, batcher.requests) == (len(calls), 10)
    assert await batcher.ask("a", 7) == 70 and calls[-1] == ("a", [7])  # alone when quiet


async def test_a_failed_call_fails_its_batch_only() -> None:
    async def call(key: str, reqs: list[int]) -> list[int]:
        await asyncio.sleep(0)
        if 2 in reqs:
            raise RuntimeError("store down")
        return reqs

    batcher: KeyedBatcher[str, int, int] = KeyedBatcher(call, max_batch=1)
    got = await asyncio.gather(*(batcher.ask("k", i) for i in range(4)), return_exceptions=True)
    assert got[:2] == [0, 1] and isinstance(got[2], RuntimeError) and got[3] == 3


async def test_a_caller_who_stops_waiting_does_not_stop_the_batch() -> None:
    served: list[int] = []

    async def call(key: str, reqs: list[int]) -> list[int]:
        await asyncio.sleep(0.02)
        served.extend(reqs)
        return reqs

    batcher: KeyedBatcher[str, int, int] = KeyedBatcher(call)
    waiting = asyncio.create_task(batcher.ask("k", 1))
    await asyncio.sleep(0.005)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await batcher.close()
    assert served == [1]
