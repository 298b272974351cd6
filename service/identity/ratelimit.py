"""Per-user token buckets (in this process). Thread-safe: sync endpoints run in a pool."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

# Float refill can leave a bucket a hair under one token after waiting exactly the time
# `take` asked for; a client that obeys the wait must get through.
EPSILON = 1e-9


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """`burst` requests at once, refilled at `per_minute`; `take` says how long to wait."""

    def __init__(
        self,
        per_minute: float,
        burst: int,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 100_000,
    ):
        self._rate = per_minute / 60.0
        self._burst = float(burst)
        self._clock = clock
        self._max_keys = max_keys
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    def take(self, key: str) -> float:
        """Spend one token for `key`: 0.0 if allowed, else seconds until one is available."""
        now = self._clock()
        with self._lock:
            b = self._buckets.get(key)
            if b is None:
                if len(self._buckets) >= self._max_keys:
                    self._forget_full(now)
                b = self._buckets[key] = _Bucket(self._burst, now)
            b.tokens = min(self._burst, b.tokens + (now - b.updated) * self._rate)
            b.updated = now
            if b.tokens >= 1.0 - EPSILON:
                b.tokens = max(0.0, b.tokens - 1.0)
                return 0.0
            return (1.0 - b.tokens) / self._rate

    def _forget_full(self, now: float) -> None:
        # A bucket that has refilled is the same as no bucket: drop those to bound memory.
        full = [
            k
            for k, b in self._buckets.items()
            if b.tokens + (now - b.updated) * self._rate >= self._burst
        ]
        for k in full:
            del self._buckets[k]


def retry_after_seconds(wait_s: float) -> int:
    """Retry-After is whole seconds; round up so a client that obeys it is let through."""
    return max(1, math.ceil(wait_s))
