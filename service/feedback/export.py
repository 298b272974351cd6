"""Feedback export as JSON Lines, in the dataset shapes TRL reads without conversion.

Formats (`ExportFormat`), one JSON object per line:

- ``pairs``: TRL's conversational preference format (DPO, reward modelling), one row per
  comparison voted ``a`` or ``b`` whose two replies are finished (completed or cut off)::

      {"prompt": [{"role": ..., "content": ...}, ...],
       "chosen": [{"role": "assistant", "content": <winner's text>}],
       "rejected": [{"role": "assistant", "content": <loser's text>}]}

- ``unpaired``: TRL's conversational unpaired preference format (KTO), one row per live
  rating of a finished reply::

      {"prompt": [...], "completion": [{"role": "assistant", "content": <text>}],
       "label": true | false}                        # true: thumbs up

  In both, prompt messages are reduced to their ``role`` and ``content`` so every row has
  the same structure. Ties, both_bad, unvoted comparisons, changed or withdrawn ratings
  and replies still streaming or failed are left out.

- ``raw``: every vote event with its history, for analysis; nothing is left out.
  Ratings (every row, live or superseded)::

      {"kind": "rating", "id": int, "user": str, "generation_id": str,
       "policy_version": "loopchat@v0", "generation_status": str, "prompt": [...],
       "text": str, "value": "up" | "down", "reason": str | null, "comment": str | null,
       "live": bool, "created_at": str, "superseded_at": str | null}

  Voted comparisons (unvoted ones are not vote events)::

      {"kind": "comparison", "id": str, "user": str | null, "prompt": [...],
       "choice": "a" | "b" | "tie" | "both_bad", "reason": str | null,
       "created_at": str, "voted_at": str,
       "generation_a_id": str, "generation_b_id": str,
       "policy_version_a": str, "policy_version_b": str,
       "generation_status_a": str, "generation_status_b": str,
       "text_a": str, "text_b": str,
       "set_aside": null | "session_too_new" | "over_user_cap" | "side_bias" | "against_consensus"}

  ``set_aside`` says why the vote screen (``store.evidence``) leaves a comparison out of
  the canary rule and the trainer; ``pairs`` leaves those comparisons out too.

  ``prompt`` is stored verbatim; ``user`` is ``pseudonym(secret, user id)``, never the id;
  times are ISO 8601 in UTC with an explicit offset (``2026-11-20T10:00:00+00:00``).

Rows come in vote order (rating created_at, comparison voted_at; then id) and are read
from the database in batches, so memory stays flat however large the tables are. The
iterators hold a cursor open: consume or close them before the session ends.
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Select, or_
from sqlalchemy.orm import Session

from service.identity.credentials import pseudonym
from store.db.models import (
    Comparison,
    ComparisonChoice,
    Generation,
    GenerationStatus,
    PolicyVersion,
    Rating,
    utcnow,
)
from store.evidence import EvidenceRules, screen
from store.votes import (
    ComparisonSides,
    as_utc,
    ballots,
    comparisons_with_replies,
    ratings_with_replies,
)

BATCH_ROWS = 500


class ExportFormat(StrEnum):
    PAIRS = "pairs"
    UNPAIRED = "unpaired"
    RAW = "raw"


@dataclass(frozen=True)
class ExportFilter:
    """Which votes to export.

    `since`/`until`: half-open window [since, until) on the vote time (a rating's
    created_at, a comparison's voted_at); naive datetimes are taken as UTC.
    `version`: "v1" or "<alias>@v1"; keeps a vote if any reply it judges is from that version.
    """

    since: datetime | None = None
    until: datetime | None = None
    version: str | None = None


def _iso(dt: datetime | None) -> str | None:
    return None if dt is None else as_utc(dt).isoformat()


def version_name(version: str, alias: str) -> str:
    """The policy version name in "v1" or "<alias>@v1"; ValueError for another alias."""
    if "@" not in version:
        return version
    prefix, name = version.split("@", 1)
    if prefix != alias:
        raise ValueError(f"'{version}' is not a model of this service (expected '{alias}@...')")
    return name


def export_rows(
    session: Session,
    fmt: ExportFormat,
    flt: ExportFilter,
    pseudonym_secret: str,
    alias: str,
    evidence: EvidenceRules | None = None,
) -> Iterator[dict[str, Any]]:
    """The rows of an export, as dicts; see the module docstring for their shapes.

    Arguments are checked at once (ValueError), before any row is read. `evidence`: the
    vote screen (default: its defaults); it reads one small record per voted comparison.
    """
    fmt = ExportFormat(fmt)
    if flt.since is not None and flt.until is not None and as_utc(flt.since) >= as_utc(flt.until):
        raise ValueError("since must be before until")
    name = None if flt.version is None else version_name(flt.version, alias)
    if fmt is ExportFormat.UNPAIRED:
        return _unpaired(session, flt, name)
    aside = screen(ballots(session), evidence or EvidenceRules(), utcnow()).reasons()
    if fmt is ExportFormat.PAIRS:
        return _pairs(session, flt, name, aside)
    return _raw(session, flt, name, pseudonym_secret, alias, aside)


def export_lines(
    session: Session,
    fmt: ExportFormat,
    flt: ExportFilter,
    pseudonym_secret: str,
    alias: str,
    evidence: EvidenceRules | None = None,
) -> Iterator[str]:
    """The export as JSON Lines: one compact object and a newline per row."""
    rows = export_rows(session, fmt, flt, pseudonym_secret, alias, evidence)
    return (json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n" for row in rows)


def _messages(prompt: list[Any]) -> list[dict[str, Any]]:
    return [{"role": m["role"], "content": m["content"]} for m in prompt]


def _reply(text: str) -> list[dict[str, Any]]:
    return [{"role": "assistant", "content": text}]


def _ratings_query(flt: ExportFilter, version: str | None, usable: bool) -> Select[Any]:
    # usable: live ratings of finished replies, the only ones a training row may come from.
    stmt = ratings_with_replies(
        Rating.id,
        Rating.user_id,
        Rating.generation_id,
        Rating.value,
        Rating.reason,
        Rating.comment,
        Rating.live,
        Rating.created_at,
        Rating.superseded_at,
        Generation.prompt,
        Generation.text,
        Generation.status,
        since=flt.since,
        until=flt.until,
        live=usable,
        finished=usable,
    ).order_by(Rating.created_at, Rating.id)
    if version is not None:
        stmt = stmt.where(PolicyVersion.name == version)
    return stmt.execution_options(yield_per=BATCH_ROWS)


def _comparisons_query(flt: ExportFilter, version: str | None, pairs_only: bool) -> Select[Any]:
    sides = ComparisonSides.new()
    stmt = comparisons_with_replies(
        sides,
        Comparison.id,
        Comparison.user_id,
        Comparison.prompt,
        Comparison.choice,
        Comparison.reason,
        Comparison.created_at,
        Comparison.voted_at,
        *sides.replies("id", "text", "status"),
        since=flt.since,
        until=flt.until,
        finished=pairs_only,
    ).order_by(Comparison.voted_at, Comparison.id)
    if version is not None:
        stmt = stmt.where(or_(sides.version_a.name == version, sides.version_b.name == version))
    if pairs_only:
        stmt = stmt.where(Comparison.choice.in_([ComparisonChoice.A, ComparisonChoice.B]))
    return stmt.execution_options(yield_per=BATCH_ROWS)


def _pairs(
    session: Session, flt: ExportFilter, version: str | None, aside: dict[str, str]
) -> Iterator[dict[str, Any]]:
    for row in session.execute(_comparisons_query(flt, version, pairs_only=True)):
        if row.id in aside:
            continue
        a, b = _reply(row.a_text), _reply(row.b_text)
        chosen, rejected = (a, b) if row.choice is ComparisonChoice.A else (b, a)
        yield {"prompt": _messages(row.prompt), "chosen": chosen, "rejected": rejected}


def _unpaired(session: Session, flt: ExportFilter, version: str | None) -> Iterator[dict[str, Any]]:
    for row in session.execute(_ratings_query(flt, version, usable=True)):
        yield {
            "prompt": _messages(row.prompt),
            "completion": _reply(row.text),
            "label": row.value > 0,
        }


def _raw(
    session: Session,
    flt: ExportFilter,
    version: str | None,
    secret: str,
    alias: str,
    aside: dict[str, str],
) -> Iterator[dict[str, Any]]:
    def public(name: str) -> str:
        return f"{alias}@{name}"

    def user(user_id: str | None) -> str | None:
        return None if user_id is None else pseudonym(secret, user_id)

    def ratings() -> Iterator[tuple[datetime, dict[str, Any]]]:
        for r in session.execute(_ratings_query(flt, version, usable=False)):
            yield (
                as_utc(r.created_at),
                {
                    "kind": "rating",
                    "id": r.id,
                    "user": user(r.user_id),
                    "generation_id": r.generation_id,
                    "policy_version": public(r.version),
                    "generation_status": GenerationStatus(r.status).value,
                    "prompt": r.prompt,
                    "text": r.text,
                    "value": "up" if r.value > 0 else "down",
                    "reason": r.reason,
                    "comment": r.comment,
                    "live": bool(r.live),
                    "created_at": _iso(r.created_at),
                    "superseded_at": _iso(r.superseded_at),
                },
            )

    def comparisons() -> Iterator[tuple[datetime, dict[str, Any]]]:
        for c in session.execute(_comparisons_query(flt, version, pairs_only=False)):
            yield (
                as_utc(c.voted_at),
                {
                    "kind": "comparison",
                    "id": c.id,
                    "user": user(c.user_id),
                    "prompt": c.prompt,
                    "choice": ComparisonChoice(c.choice).value,
                    "reason": c.reason,
                    "created_at": _iso(c.created_at),
                    "voted_at": _iso(c.voted_at),
                    "generation_a_id": c.a_id,
                    "generation_b_id": c.b_id,
                    "policy_version_a": public(c.a_version),
                    "policy_version_b": public(c.b_version),
                    "generation_status_a": GenerationStatus(c.a_status).value,
                    "generation_status_b": GenerationStatus(c.b_status).value,
                    "text_a": c.a_text,
                    "text_b": c.b_text,
                    "set_aside": aside.get(c.id),
                },
            )

    # Each stream is in (time, id) order; merging on time keeps that order within each
    # and puts ratings first when a rating and a comparison share a timestamp.
    for _, row in heapq.merge(ratings(), comparisons(), key=lambda item: item[0]):
        yield row
