"""Database side of the policy lifecycle: version rows, their status changes and events,
and the live votes that rate versions. Plain functions over a Session."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, aliased

from service.errors import NotFound
from service.policies import lifecycle
from service.policies.lifecycle import Actor, EventKind
from service.policies.ratings import Match
from store.db.models import Comparison, ComparisonChoice, PolicyEvent, PolicyVersion, utcnow
from store.domain import VersionKind, VersionStatus
from store.evidence import EvidenceRules, Screening, ThumbScreening, screen, screen_thumbs
from store.votes import (
    ComparisonSides,
    ballots,
    comparisons_with_replies,
    thumb_ballots,
    thumbs_per_version,
)


@dataclass(frozen=True)
class VersionRow:
    id: int
    name: str
    kind: VersionKind
    status: VersionStatus
    artifact_uri: str
    parent_id: int | None
    metrics: dict[str, Any]
    error: str | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class EventRow:
    id: int
    kind: str
    version: str
    previous_version: str | None
    actor: str
    reason: str
    metrics: dict[str, Any]
    created_at: datetime


def _row(v: PolicyVersion) -> VersionRow:
    return VersionRow(
        v.id,
        v.name,
        v.kind,
        v.status,
        v.artifact_uri,
        v.parent_id,
        dict(v.metrics or {}),
        v.error,
        v.created_at,
        v.updated_at,
    )


def versions(session: Session, statuses: Sequence[VersionStatus] = ()) -> list[VersionRow]:
    stmt = select(PolicyVersion).order_by(PolicyVersion.id)
    if statuses:
        stmt = stmt.where(PolicyVersion.status.in_(statuses))
    return [_row(v) for v in session.scalars(stmt)]


def find(session: Session, ref: str) -> VersionRow:
    """A version by name (`v3`, `loopchat@v3`) or numeric id; NotFound otherwise."""
    name = ref.rsplit("@", 1)[-1].strip()
    stmt = select(PolicyVersion).where(PolicyVersion.name == name)
    v = session.scalars(stmt).first()
    if v is None and name.isdigit():
        v = session.get(PolicyVersion, int(name))
    if v is None:
        raise NotFound(f"no policy version '{ref[:80]}'")
    return _row(v)


def transition(
    session: Session,
    name: str,
    target: VersionStatus,
    *,
    error: str | None = None,
    lock: bool = True,
) -> VersionRow:
    """Change one version's status after checking the lifecycle allows it."""
    stmt = select(PolicyVersion).where(PolicyVersion.name == name)
    v = session.scalars(stmt.with_for_update() if lock else stmt).one()
    lifecycle.check(name, v.status, target)
    v.status = target
    if error is not None:
        v.error = error[:4000]
    session.flush()
    return _row(v)


def record_event(
    session: Session,
    kind: EventKind,
    version_id: int,
    actor: Actor,
    reason: str,
    *,
    previous_version_id: int | None = None,
    metrics: Mapping[str, Any] | None = None,
) -> None:
    session.add(
        PolicyEvent(
            kind=kind.value,
            version_id=version_id,
            previous_version_id=previous_version_id,
            actor=actor.value,
            reason=reason,
            metrics=dict(metrics or {}),
        )
    )
    session.flush()


def events(
    session: Session, *, limit: int = 100, version: str | None = None, kind: str | None = None
) -> list[EventRow]:
    cur, prev = aliased(PolicyVersion), aliased(PolicyVersion)
    stmt = (
        select(PolicyEvent, cur.name, prev.name)
        .join(cur, cur.id == PolicyEvent.version_id)
        .outerjoin(prev, prev.id == PolicyEvent.previous_version_id)
        .order_by(PolicyEvent.id.desc())
        .limit(limit)
    )
    if version is not None:
        stmt = stmt.where(cur.name == version)
    if kind is not None:
        stmt = stmt.where(PolicyEvent.kind == kind)
    return [
        EventRow(e.id, e.kind, name, prev_name, e.actor, e.reason, dict(e.metrics), e.created_at)
        for e, name, prev_name in session.execute(stmt)
    ]


def previous_serving(session: Session, current: str) -> str | None:
    """The version `current` replaced when it was last promoted (for `rollback`).

    Only promotions count: after rolling back from v2 to v1, the next rollback goes to
    what v1 replaced, never forward to v2 again."""
    cur, prev = aliased(PolicyVersion), aliased(PolicyVersion)
    stmt = (
        select(prev.name)
        .select_from(PolicyEvent)
        .join(cur, cur.id == PolicyEvent.version_id)
        .join(prev, prev.id == PolicyEvent.previous_version_id)
        .where(
            cur.name == current,
            PolicyEvent.kind == EventKind.PROMOTE.value,
        )
        .order_by(PolicyEvent.id.desc())
    )
    return session.scalars(stmt).first()


SCORE = {ComparisonChoice.A: 1.0, ComparisonChoice.B: 0.0, ComparisonChoice.TIE: 0.5}


def matches(session: Session, since: datetime | None = None) -> list[Match]:
    """Comparison votes between two different versions (both_bad says nothing about order)."""
    sides = ComparisonSides.new()
    va, vb = sides.version_a, sides.version_b
    # A choice in SCORE is what makes a match; the vote time is not required as well.
    stmt = comparisons_with_replies(
        sides, va.name, vb.name, Comparison.choice, since=since, voted=False
    ).where(Comparison.choice.in_(list(SCORE)), va.id != vb.id)
    return [
        Match(a, b, SCORE[choice]) for a, b, choice in session.execute(stmt) if choice is not None
    ]


def screened_matches(
    session: Session, rules: EvidenceRules, now: datetime | None = None
) -> tuple[list[Match], Screening]:
    """The comparison votes that count as evidence (`store.evidence`), as matches between
    two different versions, and the screening that chose them."""
    screening = screen(ballots(session), rules, now or utcnow())
    score = {c.value: v for c, v in SCORE.items()}
    kept = [
        Match(b.version_a, b.version_b, score[b.choice])
        for b in screening.kept
        if b.choice in score and b.version_a != b.version_b
    ]
    return kept, screening


def thumbs(session: Session) -> dict[str, tuple[int, int]]:
    """(up, down) live ratings per version name."""
    return {t.version: (t.up, t.down) for t in thumbs_per_version(session)}


def screened_thumbs(
    session: Session, rules: EvidenceRules, now: datetime | None = None
) -> ThumbScreening:
    """The live thumbs that count as evidence (`store.evidence.screen_thumbs`)."""
    return screen_thumbs(thumb_ballots(session), rules, now or utcnow())
