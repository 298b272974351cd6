"""Feedback statistics for the admin view: votes per day, per-version rates, reasons.

The window is `days` whole UTC days ending with today: [00:00 UTC `days`-1 days ago, now).
What each number counts:

- `votes_per_day`: vote events by UTC day, every day of the window (zeros included).
  `ratings` counts every rating row created that day, including ones later changed or
  withdrawn (each was a vote when cast; a withdrawal adds no row and is not counted).
  `comparisons` counts comparisons voted that day.
- `versions`: thumbs from live ratings created in the window; comparisons voted in the
  window. Wins, losses, ties and both_bad count only comparisons of two different
  versions; a comparison of a version against itself counts in `self_comparisons`.
- `reasons`: reason tags of live ratings and voted comparisons in the window.
- `totals`: all time, not the window (window sums are in `votes_per_day`).

Counting is done with SQL GROUP BY on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal

from sqlalchemy import ColumnElement, Date, cast, func, literal_column, select
from sqlalchemy.orm import Session

from service.identity.credentials import pseudonym
from service.protocol.admin import (
    DayVotes,
    EvidenceOut,
    FlaggedVoter,
    ReasonCount,
    StatsOut,
    StatsTotals,
    VersionStats,
)
from store.db.models import Comparison, ComparisonChoice, Rating
from store.evidence import EvidenceRules, screen, screen_thumbs
from store.intervals import wilson_interval
from store.votes import (
    ComparisonSides,
    as_utc,
    ballots,
    comparisons_with_replies,
    thumb_ballots,
    thumb_sums,
    thumbs_per_version,
)


def utc_day(column: Any, dialect: str) -> Any:
    """A SQL expression for the UTC calendar day of a timestamp column."""
    if dialect == "postgresql":
        # A literal, not a parameter: GROUP BY must repeat the select expression exactly.
        return cast(func.timezone(literal_column("'UTC'"), column), Date)
    if dialect == "sqlite":
        return func.date(column)  # stored as the UTC wall clock, "YYYY-MM-DD HH:MM:SS..."
    return cast(column, Date)


def _as_date(value: date | str) -> date:
    if isinstance(value, datetime):
        return value.date()
    return value if isinstance(value, date) else date.fromisoformat(value)


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


def feedback_stats(
    session: Session,
    days: int,
    alias: str,
    now: datetime | None = None,
    evidence: EvidenceRules | None = None,
    pseudonym_secret: str = "",
) -> StatsOut:
    """Statistics over the last `days` UTC days; see the module docstring for the counting.
    `evidence`: also what the vote screen keeps and sets aside (over all votes)."""
    if days < 1:
        raise ValueError("days must be at least 1")
    until = as_utc(now) if now is not None else datetime.now(UTC)
    since = datetime.combine(until.date() - timedelta(days=days - 1), time(), UTC)
    w = _Window(since, until)
    return StatsOut(
        window_days=days,
        since=since,
        until=until,
        votes_per_day=_votes_per_day(session, w, days),
        versions=_versions(session, w, alias),
        reasons=_reasons(session, w),
        totals=_totals(session),
        evidence=None
        if evidence is None
        else _evidence(session, evidence, until, pseudonym_secret),
    )


def _evidence(session: Session, rules: EvidenceRules, now: datetime, secret: str) -> EvidenceOut:
    screening = screen(ballots(session), rules, now)
    thumbs = screen_thumbs(thumb_ballots(session), rules, now)
    return EvidenceOut(
        enabled=rules.enabled,
        kept=len(screening.kept),
        set_aside=len(screening.dropped),
        by_reason=screening.counts(),
        flagged_voters=[
            FlaggedVoter(user_id=pseudonym(secret, user) if secret else user, reason=why)
            for user, why in sorted(screening.flagged.items())
        ],
        thumbs_kept=len(thumbs.kept),
        thumbs_set_aside=len(thumbs.dropped),
        thumbs_by_reason=thumbs.counts(),
    )


@dataclass(frozen=True)
class _Window:
    since: datetime
    until: datetime

    def rated(self) -> tuple[ColumnElement[bool], ...]:
        return (Rating.created_at >= self.since, Rating.created_at < self.until)

    def voted(self) -> tuple[ColumnElement[bool], ...]:
        return (
            Comparison.choice.is_not(None),
            Comparison.voted_at >= self.since,
            Comparison.voted_at < self.until,
        )


def _votes_per_day(session: Session, w: _Window, days: int) -> list[DayVotes]:
    dialect = session.get_bind().dialect.name
    first = w.since.date()
    counts = {first + timedelta(days=i): [0, 0, 0, 0] for i in range(days)}
    rday = utc_day(Rating.created_at, dialect)
    up, down = thumb_sums()
    stmt = select(rday, func.count(), up, down).where(*w.rated()).group_by(rday)
    for day, n, n_up, n_down in session.execute(stmt):
        counts[_as_date(day)][:3] = [int(n), int(n_up), int(n_down)]
    cday = utc_day(Comparison.voted_at, dialect)
    for day, n in session.execute(select(cday, func.count()).where(*w.voted()).group_by(cday)):
        counts[_as_date(day)][3] = int(n)
    return [
        DayVotes(day=d, ratings=r, thumbs_up=u, thumbs_down=dn, comparisons=c)
        for d, (r, u, dn, c) in sorted(counts.items())
    ]


def _versions(session: Session, w: _Window, alias: str) -> list[VersionStats]:
    rated = thumbs_per_version(session, w.since, w.until)
    thumbs = {t.version_id: (t.up, t.down) for t in rated}
    outcomes, names = _outcomes(session, w)
    names.update((t.version_id, t.version) for t in rated)
    return [
        _version_stats(f"{alias}@{names[vid]}", thumbs.get(vid, (0, 0)), outcomes.get(vid, {}))
        for vid in sorted(names)
    ]


def _outcomes(session: Session, w: _Window) -> tuple[dict[int, dict[str, int]], dict[int, str]]:
    """Comparison outcomes per version id, and the names of the versions compared."""
    sides = ComparisonSides.new()
    va, vb = sides.version_a, sides.version_b
    keys = (va.id, va.name, vb.id, vb.name, Comparison.choice)
    stmt = comparisons_with_replies(
        sides, *keys, func.count(), since=w.since, until=w.until
    ).group_by(*keys)
    outcomes: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    names: dict[int, str] = {}
    for a, a_name, b, b_name, choice, n in session.execute(stmt):
        names[a], names[b] = a_name, b_name
        _tally(outcomes, a, b, choice, n)
    return outcomes, names


def _tally(outcomes: dict[int, dict[str, int]], va: int, vb: int, choice: Any, n: int) -> None:
    if va == vb:
        outcomes[va]["comparisons"] += n
        outcomes[va]["self_comparisons"] += n
        return
    for mine, side in ((va, ComparisonChoice.A), (vb, ComparisonChoice.B)):
        outcomes[mine]["comparisons"] += n
        if choice in (ComparisonChoice.A, ComparisonChoice.B):
            outcomes[mine]["wins" if choice == side else "losses"] += n
        else:
            outcomes[mine]["ties" if choice == ComparisonChoice.TIE else "both_bad"] += n


def _version_stats(version: str, thumbs: tuple[int, int], o: dict[str, int]) -> VersionStats:
    n_up, n_down = thumbs
    ci = wilson_interval(n_up, n_up + n_down) if n_up + n_down else None
    wins, losses = o.get("wins", 0), o.get("losses", 0)
    return VersionStats(
        version=version,
        thumbs_up=n_up,
        thumbs_down=n_down,
        up_rate=_ratio(n_up, n_up + n_down),
        up_rate_low=None if ci is None else ci.low,
        up_rate_high=None if ci is None else ci.high,
        comparisons=o.get("comparisons", 0),
        wins=wins,
        losses=losses,
        ties=o.get("ties", 0),
        both_bad=o.get("both_bad", 0),
        win_rate=_ratio(wins, wins + losses),
        self_comparisons=o.get("self_comparisons", 0),
    )


def _reasons(session: Session, w: _Window) -> list[ReasonCount]:
    reasons: list[ReasonCount] = []
    for value, reason, n in session.execute(
        select(Rating.value, Rating.reason, func.count())
        .where(Rating.live.is_(True), Rating.reason.is_not(None), *w.rated())
        .group_by(Rating.value, Rating.reason)
    ):
        kind: Literal["up", "down"] = "up" if value > 0 else "down"
        reasons.append(ReasonCount(kind=kind, reason=str(reason), count=n))
    for reason, n in session.execute(
        select(Comparison.reason, func.count())
        .where(Comparison.reason.is_not(None), *w.voted())
        .group_by(Comparison.reason)
    ):
        reasons.append(ReasonCount(kind="comparison", reason=str(reason), count=n))
    reasons.sort(key=lambda r: (-r.count, r.kind, r.reason))
    return reasons


def _totals(session: Session) -> StatsTotals:
    def count(table: Any, *where: ColumnElement[bool]) -> int:
        return session.scalar(select(func.count()).select_from(table).where(*where)) or 0

    return StatsTotals(
        ratings=count(Rating, Rating.live.is_(True)),
        comparisons_voted=count(Comparison, Comparison.choice.is_not(None)),
        comparisons_open=count(Comparison, Comparison.choice.is_(None)),
    )
