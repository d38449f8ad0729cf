"""Rate limits and moderation decisions. Pure: every method takes ``now`` (seconds)."""

from __future__ import annotations

from livecommerce.errors import Error


class TokenBucket:
    """A token bucket: ``rate`` tokens a second, at most ``burst`` saved up."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: int, now: float):
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.stamp = now

    def take(self, now: float, n: float = 1.0) -> bool:
        """Take ``n`` tokens if there are that many; return whether it could."""
        elapsed = now - self.stamp
        if elapsed > 0:
            self.tokens = min(self.burst, self.tokens + elapsed * self.rate)
            self.stamp = now
        if self.tokens >= n:
            self.tokens -= n
            return True
        return False

    def full(self, now: float) -> bool:
        """Whether the bucket would be full at ``now`` (so it can be forgotten)."""
        return self.tokens + (now - self.stamp) * self.rate >= self.burst


class RateLimiter:
    """Per-key token buckets of one kind (say, chat per user) that forget idle keys."""

    def __init__(self, rate: float, burst: int):
        self.rate = rate
        self.burst = burst
        self._buckets: dict[str, TokenBucket] = {}

    def check(self, key: str, now: float) -> None:
        """Take one token for ``key``.

        Raises:
            Error: ``rate_limited`` when the key's bucket is empty.
        """
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(self.rate, self.burst, now)
        if not bucket.take(now):
            raise Error("rate_limited", "too many commands of this kind; slow down")

    def prune(self, now: float) -> int:
        """Forget keys whose bucket has refilled; return how many were forgotten."""
        idle = [k for k, b in self._buckets.items() if b.full(now)]
        for k in idle:
            del self._buckets[k]
        return len(idle)

    def __len__(self) -> int:
        return len(self._buckets)


def refusal(code: str, until_ms: int) -> Error:
    """The error for a chat the moderation store refused (see ``ModerationStore``)."""
    if code == "banned":
        return Error("banned", "you are banned from this room")
    if code == "muted":
        return Error("muted", "you are muted in this room", data={"until": until_ms})
    if code == "slow_mode":
        return Error(
            "slow_mode", "slow mode is on; wait before chatting again", data={"until": until_ms}
        )
    raise ValueError(f"unknown refusal {code!r}")
