"""Request limits on the `limits` library, shared by every server process when the store is.

A rule is one or more windows, e.g. `"20/hour;200/day"`: a request passes only when every
window has room. Windows move (`MovingWindowRateLimiter`), so a client cannot spend two
windows' worth across a boundary. Where the counts live is a storage URI: `memory://`
(the embedded default) counts in this process; `redis://127.0.0.1:6379` counts in Redis,
so several replicas enforce one limit between them, not one each.

A store that cannot be reached refuses the request (503) rather than letting it through
uncounted: these limits are what keeps a script from minting users without end.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import lru_cache

from limits import RateLimitItem, parse_many, storage, strategies
from limits.errors import ConfigurationError


class LimitsStoreError(RuntimeError):
    """The limit store could not be reached or answered nonsense."""


@dataclass(frozen=True)
class Rule:
    """A named limit: its windows and the text they came from (for messages)."""

    name: str
    text: str
    windows: tuple[RateLimitItem, ...]


@lru_cache(maxsize=64)
def parse_rule(name: str, text: str) -> Rule:
    """`"20/hour;200/day"` -> a Rule; ValueError with the offending text otherwise."""
    try:
        windows = tuple(parse_many(text))
    except ValueError:
        raise ValueError(
            f"{name}: {text!r} is not a limit such as '20/hour' or '20/hour;200/day'"
        ) from None
    if not windows:
        raise ValueError(f"{name}: empty limit")
    return Rule(name, text, windows)


def validate_storage_uri(uri: str) -> str:
    """The URI when the `limits` library knows its scheme (memory://, redis://, ...)."""
    try:
        storage.storage_from_string(uri)
    except ConfigurationError as e:
        raise ValueError(f"rate limit storage {uri!r}: {e}") from None
    return uri


class RateLimits:
    """Counts hits per (rule, key) in one store; `hit` says how long to wait, 0 when allowed."""

    def __init__(self, storage_uri: str = "memory://", namespace: str = "loopchat"):
        self._store = storage.storage_from_string(storage_uri)
        self._strategy = strategies.MovingWindowRateLimiter(self._store)
        self._namespace = namespace

    def hit(self, rule: Rule, key: str, cost: int = 1) -> float:
        """Count `cost` against every window of `rule` for `key` if all have room, and
        return 0.0; otherwise count nothing and return the seconds until the fullest
        window has room again. Blocking (it may ask Redis): call in a thread."""
        ident = (self._namespace, rule.name, key)
        try:
            full = [w for w in rule.windows if not self._strategy.test(w, *ident, cost=cost)]
            if not full:
                # Two callers may both pass `test` and then both hit: a limit may be
                # exceeded by the few requests in flight at one moment, never by more.
                for w in rule.windows:
                    self._strategy.hit(w, *ident, cost=cost)
                return 0.0
            resets = [self._strategy.get_window_stats(w, *ident).reset_time for w in full]
        except Exception as e:  # the library raises the storage client's own errors
            raise LimitsStoreError(f"{type(e).__name__}: {e}") from e
        return max(0.0, max(resets) - time.time())

    def clear(self, rule: Rule, key: str) -> None:
        """Forget `key`'s counts under `rule` (an operator lifting a limit, tests)."""
        for w in rule.windows:
            self._strategy.clear(w, self._namespace, rule.name, key)
