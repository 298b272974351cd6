"""The questions both sides ask of the votes, written once.

The service's export, statistics and canary rule and the trainer's snapshot all read
votes through here, so "a comparison with its two replies and their versions" and
"thumbs per version" mean the same thing everywhere.

The select builders return plain `Select`s: callers pick the columns they need and add
their own order, extra filters and execution options.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypedDict

from sqlalchemy import ColumnElement, Select, case, func, select
from sqlalchemy.orm import Session, aliased

from store.db.models import (
    Comparison,
    ComparisonChoice,
    Generation,
    GenerationStatus,
    PolicyVersion,
    Rating,
    User,
    UserKind,
)
from store.evidence import Ballot, Thumb

# Replies that count for training and statistics: finished, or cut off by the client
# (the text the user saw). Failed and still-streaming replies do not.
FINISHED = (GenerationStatus.COMPLETED, GenerationStatus.CUT_OFF)


def as_utc(dt: datetime) -> datetime:
    """`dt` as an aware UTC datetime; naive values (SQLite returns them) are taken as UTC."""
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def in_window(
    column: Any, since: datetime | None, until: datetime | None
) -> list[ColumnElement[bool]]:
    """Conditions for `column` in [since, until); an end that is None is open."""
    # Bound as UTC: SQLite stores the UTC wall clock and ignores offsets in parameters.
    conds: list[ColumnElement[bool]] = []
    if since is not None:
        conds.append(column >= as_utc(since))
    if until is not None:
        conds.append(column < as_utc(until))
    return conds


def thumb_sums() -> tuple[ColumnElement[Any], ColumnElement[Any]]:
    """Aggregates counting thumbs up and thumbs down among the grouped ratings."""
    up = func.sum(case((Rating.value > 0, 1), else_=0))
    down = func.sum(case((Rating.value < 0, 1), else_=0))
    return up, down


def ratings_with_replies(
    *columns: Any,
    since: datetime | None = None,
    until: datetime | None = None,
    live: bool = False,
    finished: bool = False,
) -> Select[Any]:
    """`columns` and the version name (labelled "version") of ratings joined to their reply.

    `since`/`until`: window on the rating's created_at. `live`: only live ratings.
    `finished`: only ratings of replies in FINISHED.
    """
    stmt = (
        select(*columns, PolicyVersion.name.label("version"))
        .select_from(Rating)
        .join(Generation, Generation.id == Rating.generation_id)
        .join(PolicyVersion, PolicyVersion.id == Generation.policy_version_id)
        .where(*in_window(Rating.created_at, since, until))
    )
    if live:
        stmt = stmt.where(Rating.live.is_(True))
    if finished:
        stmt = stmt.where(Generation.status.in_(FINISHED))
    return stmt


@dataclass(frozen=True)
class ComparisonSides:
    """A comparison's two replies (`a`, `b`) and their policy versions, as aliases.

    Make one per query with `new()`, select from it, and let `comparisons_with_replies` join.
    """

    a: type[Generation]
    b: type[Generation]
    version_a: type[PolicyVersion]
    version_b: type[PolicyVersion]

    @classmethod
    def new(cls) -> ComparisonSides:
        return cls(
            aliased(Generation), aliased(Generation), aliased(PolicyVersion), aliased(PolicyVersion)
        )

    def replies(self, *fields: str) -> list[Any]:
        """Each reply's Generation `fields` labelled "a_<field>" / "b_<field>", and its
        version name labelled "a_version" / "b_version"."""
        columns: list[Any] = []
        for side, reply, version in (("a", self.a, self.version_a), ("b", self.b, self.version_b)):
            columns += [getattr(reply, field).label(f"{side}_{field}") for field in fields]
            columns.append(version.name.label(f"{side}_version"))
        return columns


def comparisons_with_replies(
    sides: ComparisonSides,
    *columns: Any,
    since: datetime | None = None,
    until: datetime | None = None,
    voted: bool = True,
    finished: bool = False,
) -> Select[Any]:
    """`columns` of comparisons joined to their two replies and those replies' versions.

    `since`/`until`: window on voted_at. `voted`: only voted comparisons (a choice and a
    vote time). `finished`: only comparisons whose two replies are both in FINISHED.
    """
    stmt = (
        select(*columns)
        .select_from(Comparison)
        .join(sides.a, sides.a.id == Comparison.generation_a_id)
        .join(sides.version_a, sides.version_a.id == sides.a.policy_version_id)
        .join(sides.b, sides.b.id == Comparison.generation_b_id)
        .join(sides.version_b, sides.version_b.id == sides.b.policy_version_id)
        .where(*in_window(Comparison.voted_at, since, until))
    )
    if voted:
        stmt = stmt.where(Comparison.choice.is_not(None), Comparison.voted_at.is_not(None))
    if finished:
        stmt = stmt.where(sides.a.status.in_(FINISHED), sides.b.status.in_(FINISHED))
    return stmt


@dataclass(frozen=True)
class VersionThumbs:
    version_id: int
    version: str
    up: int
    down: int


def thumbs_per_version(
    session: Session, since: datetime | None = None, until: datetime | None = None
) -> list[VersionThumbs]:
    """Thumbs up and down of live ratings per policy version, in version id order.

    `since`/`until`: window on the rating's created_at. Versions without live ratings in
    the window are left out.
    """
    up, down = thumb_sums()
    stmt = (
        ratings_with_replies(PolicyVersion.id, up, down, since=since, until=until, live=True)
        .group_by(PolicyVersion.id, PolicyVersion.name)
        .order_by(PolicyVersion.id)
    )
    return [
        VersionThumbs(int(vid), str(name), int(n_up), int(n_down))
        for vid, n_up, n_down, name in session.execute(stmt)
    ]


class _Voter(TypedDict):
    user: str
    user_since: datetime | None
    origin: str | None


def _voter(
    user_id: object, kind: object, created: datetime | None, origin: object, *, none_key: str
) -> _Voter:
    """Who cast a vote, as the screen weighs them: an anonymous session is trusted with
    age (its start), accounts and API keys from the start; a row with no user (imported
    or synthetic) is its own trusted voter."""
    anonymous = kind == UserKind.ANONYMOUS and created is not None
    return _Voter(
        user=str(user_id) if user_id is not None else none_key,
        user_since=as_utc(created) if anonymous and created is not None else None,
        origin=None if origin is None else str(origin),
    )


def ballots(
    session: Session, since: datetime | None = None, until: datetime | None = None
) -> list[Ballot]:
    """Voted comparisons as `store.evidence` screens them: voter (see `_voter`), versions,
    choice and time."""
    sides = ComparisonSides.new()
    stmt = (
        comparisons_with_replies(
            sides,
            Comparison.id,
            Comparison.user_id,
            User.kind,
            User.created_at,
            User.origin,
            sides.version_a.name,
            sides.version_b.name,
            Comparison.choice,
            Comparison.voted_at,
            Comparison.created_at,
            since=since,
            until=until,
            voted=False,  # a choice makes a vote; rows written without a vote time count too
        )
        .outerjoin(User, User.id == Comparison.user_id)
        .where(Comparison.choice.is_not(None))
    )
    out = []
    for cid, user_id, kind, created, origin, va, vb, choice, voted, asked in session.execute(stmt):
        out.append(
            Ballot(
                id=str(cid),
                version_a=str(va),
                version_b=str(vb),
                choice=ComparisonChoice(choice).value,
                at=as_utc(voted or asked),
                **_voter(user_id, kind, created, origin, none_key=f"none:{cid}"),
            )
        )
    return out


def thumb_ballots(
    session: Session, since: datetime | None = None, until: datetime | None = None
) -> list[Thumb]:
    """Live thumbs as `store.evidence.screen_thumbs` sees them (trust as in `ballots`)."""
    stmt = ratings_with_replies(
        Rating.id,
        Rating.user_id,
        User.kind,
        User.created_at,
        User.origin,
        Rating.value,
        Rating.created_at,
        since=since,
        until=until,
        live=True,
    ).outerjoin(User, User.id == Rating.user_id)
    out = []
    for rid, user_id, kind, created, origin, value, at, version in session.execute(stmt):
        out.append(
            Thumb(
                id=str(rid),
                version=str(version),
                value=int(value),
                at=as_utc(at),
                **_voter(user_id, kind, created, origin, none_key=f"none:r{rid}"),
            )
        )
    return out
