"""Which status changes a policy version may go through, and who may make them.

    candidate ──load ok──▶ canary ──promote──▶ serving ──(another serves)──▶ retired
        │                    │                    ▲                            │
        │ load failed        │ loses / superseded │        rollback            │
        ▼                    ▼                    └────────────────────────────┘
      failed              retired

`rejected` (refused by the trainer's gate) and `failed` are final. An operator may also
promote a candidate straight to serving, and retire a candidate or canary by hand.
The database's `policy_versions.status` is the truth; `PolicyRegistry` keeps the
engine in step with it, and every change is written as a `policy_events` row.
"""

from __future__ import annotations

from enum import StrEnum

from service.errors import Conflict
from store.domain import VersionStatus

S = VersionStatus

LEGAL: dict[VersionStatus, frozenset[VersionStatus]] = {
    S.CANDIDATE: frozenset({S.CANARY, S.SERVING, S.RETIRED, S.FAILED}),
    S.CANARY: frozenset({S.SERVING, S.RETIRED}),
    S.SERVING: frozenset({S.RETIRED}),
    S.RETIRED: frozenset({S.SERVING}),
    S.REJECTED: frozenset(),
    S.FAILED: frozenset(),
}


class EventKind(StrEnum):
    CANARY = "canary"  # a candidate was loaded and takes a share of traffic
    PROMOTE = "promote"  # a candidate or canary became the serving version
    ROLLBACK = "rollback"  # a retired version became the serving version again
    RETIRE = "retire"  # a candidate or canary stopped taking traffic
    FAIL = "fail"  # a candidate could not be loaded; nothing else changed
    SWAP = "swap"  # the engine's full weights were replaced (merged mode)


class Actor(StrEnum):
    TRAINER = "trainer"  # the trainer's notification
    OPERATOR = "operator"  # the operator API or `loopchat policy`
    RULE = "rule"  # the canary's promotion/retirement rule on live votes
    SYSTEM = "system"  # the server itself (polling, start-up, weight consolidation)


class IllegalTransition(Conflict):
    """A status change the lifecycle does not allow (409 for the operator API)."""


def check(name: str, current: VersionStatus, target: VersionStatus) -> None:
    """Raise IllegalTransition unless `current -> target` is allowed."""
    if target not in LEGAL[current]:
        allowed = ", ".join(sorted(s.value for s in LEGAL[current])) or "nothing (final)"
        raise IllegalTransition(
            f"version {name} is {current.value}; it cannot become {target.value} "
            f"(from {current.value} it may become: {allowed})"
        )


def promotion_kind(current: VersionStatus) -> EventKind:
    """Serving a retired version again is a rollback; anything newer is a promotion."""
    return EventKind.ROLLBACK if current is S.RETIRED else EventKind.PROMOTE
