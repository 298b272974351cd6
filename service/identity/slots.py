"""Things a caller may have at once (generations in flight, open sockets), as leases.

A window limiter (`service.identity.limits`) bounds how much a caller does per minute;
this bounds how much they hold at one moment. Each held slot is a lease with an expiry,
so a slot whose release never ran (a process killed mid-stream, a response whose body
was never iterated) frees itself after `ttl_s` instead of shrinking the caller's budget
for good.

Where the leases live follows the rate-limit storage URI: `memory://` keeps them in this
process; `redis://...` keeps them in one sorted set per key (score: expiry), taken and
counted in one Lua script, so several replicas enforce one limit between them.
"""

from __future__ import annotations

import secrets
import threading
import time
from typing import Any, Protocol

from service.identity.limits import LimitsStoreError

# Drop expired leases, count the live ones, add `cost` leases if they fit; 1 if taken.
_TAKE = """
local key, now, limit, ttl, cost, token = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]),
  tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
if redis.call('ZCARD', key) + cost > limit then return 0 end
for i = 1, cost do redis.call('ZADD', key, now + ttl, token .. ':' .. i) end
redis.call('PEXPIRE', key, math.ceil(ttl * 1000))
return 1
"""


class Slots(Protocol):
    def take(self, key: str, limit: int, cost: int, ttl_s: float) -> str | None:
        """A lease token for `cost` slots of `key` if they fit under `limit`, else None."""
        ...

    def give_back(self, key: str, token: str, cost: int) -> None:
        """Free a lease (idempotent)."""
        ...

    def renew(self, key: str, token: str, cost: int, ttl_s: float) -> None:
        """Push a live lease's expiry to `ttl_s` from now (long-held slots: sockets)."""
        ...

    def held(self, key: str) -> int:
        """Live slots of `key` (tests, stats)."""
        ...


class MemorySlots:
    def __init__(self) -> None:
        self._leases: dict[str, dict[str, float]] = {}
        self._lock = threading.Lock()  # taken from the event loop and from threads

    def _live(self, key: str, now: float) -> dict[str, float]:
        leases = self._leases.setdefault(key, {})
        for t in [t for t, until in leases.items() if until <= now]:
            del leases[t]
        return leases

    def take(self, key: str, limit: int, cost: int, ttl_s: float) -> str | None:
        now = time.monotonic()
        with self._lock:
            leases = self._live(key, now)
            if len(leases) + cost > limit:
                return None
            token = secrets.token_hex(8)
            for i in range(cost):
                leases[f"{token}:{i + 1}"] = now + ttl_s
            return token

    def give_back(self, key: str, token: str, cost: int) -> None:
        with self._lock:
            leases = self._leases.get(key, {})
            for i in range(cost):
                leases.pop(f"{token}:{i + 1}", None)
            if not leases:
                self._leases.pop(key, None)

    def renew(self, key: str, token: str, cost: int, ttl_s: float) -> None:
        until = time.monotonic() + ttl_s
        with self._lock:
            leases = self._leases.get(key, {})
            for i in range(cost):
                if f"{token}:{i + 1}" in leases:
                    leases[f"{token}:{i + 1}"] = until

    def held(self, key: str) -> int:
        with self._lock:
            return len(self._live(key, time.monotonic()))


class RedisSlots:
    def __init__(self, url: str, namespace: str = "loopchat:slots"):
        import redis  # only where a Redis store is configured

        # Typed as Any: redis-py's stubs describe its sync and async clients in one
        # union, which turns every result into "Awaitable | value".
        self._redis: Any = redis.Redis.from_url(url, socket_timeout=2.0)
        self._take = self._redis.register_script(_TAKE)
        self._ns = namespace

    def _key(self, key: str) -> str:
        return f"{self._ns}:{key}"

    def _now(self) -> float:
        # Redis' clock, not ours: every replica then ages leases alike.
        sec, usec = self._redis.time()
        return float(sec) + float(usec) / 1e6

    def take(self, key: str, limit: int, cost: int, ttl_s: float) -> str | None:
        token = secrets.token_hex(8)
        try:
            now = self._now()
            ok = self._take(keys=[self._key(key)], args=[now, limit, ttl_s, cost, token])
        except Exception as e:  # the client's own connection and timeout errors
            raise LimitsStoreError(f"{type(e).__name__}: {e}") from e
        return token if int(ok) == 1 else None

    def give_back(self, key: str, token: str, cost: int) -> None:
        members = [f"{token}:{i + 1}" for i in range(cost)]
        try:
            self._redis.zrem(self._key(key), *members)
        except Exception as e:
            raise LimitsStoreError(f"{type(e).__name__}: {e}") from e

    def renew(self, key: str, token: str, cost: int, ttl_s: float) -> None:
        try:
            until = self._now() + ttl_s
            members = {f"{token}:{i + 1}": until for i in range(cost)}
            self._redis.zadd(self._key(key), members, xx=True)
            self._redis.pexpire(self._key(key), int(ttl_s * 1000) + 1000)
        except Exception as e:
            raise LimitsStoreError(f"{type(e).__name__}: {e}") from e

    def held(self, key: str) -> int:
        return int(self._redis.zcount(self._key(key), self._now(), "+inf"))


def slots_for(storage_uri: str) -> Slots:
    """Leases in the same place as the rate-limit counts."""
    if storage_uri.startswith(("redis://", "rediss://", "unix://")):
        return RedisSlots(storage_uri)
    return MemorySlots()
