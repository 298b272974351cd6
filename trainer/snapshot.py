"""Read a round's votes and prompts from storage into a `records.Snapshot`.

The round reads once, at its start, with a handful of joined queries (no query per vote),
so everything after works on plain records. The window is [since - replay_days, now): votes
since the last round plus older ones replayed, on the vote time (a rating's created_at, a
comparison's voted_at). Only live ratings and voted comparisons count, and only replies
that are final (completed or cut off); replies still streaming or failed are left out.

`count_events` and `last_vote_at` are the cheap reads the scheduler polls.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from store.db.models import Comparison, ComparisonChoice, Generation, GenerationStatus, Rating
from store.evidence import EvidenceRules, screen, screen_thumbs
from store.votes import (
    FINISHED,
    ComparisonSides,
    as_utc,
    ballots,
    comparisons_with_replies,
    in_window,
    ratings_with_replies,
    thumb_ballots,
)
from trainer.records import ComparisonVote, Messages, RatingVote, Reply, Snapshot, messages

BATCH_ROWS = 500


def _finished(status: Any, finish_reason: str | None) -> bool:
    return GenerationStatus(status) is GenerationStatus.COMPLETED and finish_reason == "stop"


class _Replies:
    """One `Reply` per generation id, shared by every vote on it."""

    def __init__(self) -> None:
        self._by_id: dict[str, Reply] = {}
        self._prompts: dict[Messages, Messages] = {}

    def get(
        self, gid: str, prompt: Any, text: str, version: str, status: Any, reason: str | None
    ) -> Reply:
        reply = self._by_id.get(gid)
        if reply is None:
            msgs = messages(prompt)
            # Equal prompts share one tuple: less memory, and dict lookups hit identity first.
            msgs = self._prompts.setdefault(msgs, msgs)
            reply = Reply(gid, msgs, text, version, _finished(status, reason))
            self._by_id[gid] = reply
        return reply


def _ratings(
    session: Session, replies: _Replies, start: datetime | None, end: datetime
) -> list[RatingVote]:
    stmt = (
        ratings_with_replies(
            Rating.id,
            Rating.user_id,
            Rating.value,
            Rating.created_at,
            Generation.id.label("gid"),
            Generation.prompt,
            Generation.text,
            Generation.status,
            Generation.finish_reason,
            since=start,
            until=end,
            live=True,
            finished=True,
        )
        .order_by(Rating.created_at, Rating.id)
        .execution_options(yield_per=BATCH_ROWS)
    )
    return [
        RatingVote(
            id=r.id,
            user=str(r.user_id),
            reply=replies.get(r.gid, r.prompt, r.text, r.version, r.status, r.finish_reason),
            value=int(r.value),
            at=as_utc(r.created_at),
        )
        for r in session.execute(stmt)
    ]


def _comparisons(
    session: Session, replies: _Replies, start: datetime | None, end: datetime
) -> list[ComparisonVote]:
    sides = ComparisonSides.new()
    stmt = (
        comparisons_with_replies(
            sides,
            Comparison.id,
            Comparison.user_id,
            Comparison.choice,
            Comparison.voted_at,
            *sides.replies("id", "prompt", "text", "status", "finish_reason"),
            since=start,
            until=end,
            finished=True,
        )
        .order_by(Comparison.voted_at, Comparison.id)
        .execution_options(yield_per=BATCH_ROWS)
    )
    out: list[ComparisonVote] = []
    for c in session.execute(stmt):
        a = replies.get(c.a_id, c.a_prompt, c.a_text, c.a_version, c.a_status, c.a_finish_reason)
        b = replies.get(c.b_id, c.b_prompt, c.b_text, c.b_version, c.b_status, c.b_finish_reason)
        out.append(
            ComparisonVote(
                id=c.id,
                user=None if c.user_id is None else str(c.user_id),
                a=a,
                b=b,
                choice=ComparisonChoice(c.choice).value,
                at=as_utc(c.voted_at),
            )
        )
    return out


def _prompts(session: Session, start: datetime | None, end: datetime, limit: int) -> list[Messages]:
    # JSON has no equality in PostgreSQL (no DISTINCT), so distinct prompts are picked here,
    # reading newest first and stopping at `limit`.
    if limit <= 0:
        return []
    stmt = (
        select(Generation.prompt)
        .where(Generation.status.in_(FINISHED))
        .where(*in_window(Generation.created_at, start, end))
        .order_by(Generation.created_at.desc(), Generation.id.desc())
        .execution_options(yield_per=BATCH_ROWS)
    )
    out: list[Messages] = []
    seen: set[Messages] = set()
    result = session.execute(stmt)
    try:
        for (raw,) in result:
            msgs = messages(raw)
            if msgs not in seen:
                seen.add(msgs)
                out.append(msgs)
                if len(out) >= limit:
                    break
    finally:
        result.close()
    return out


def take_snapshot(
    session: Session,
    *,
    since: datetime | None,
    replay_days: float,
    now: datetime,
    max_prompts: int,
    evidence: EvidenceRules | None = None,
) -> Snapshot:
    """The votes and prompts of the window [since - replay_days, now), read once.

    `evidence`: comparison votes and thumbs the screen sets aside (`store.evidence`) are
    left out, counted by reason in `set_aside` (thumbs as `thumbs_<reason>`), as the
    server's canary rule leaves them out.

    `since` None reads everything before `now` (the first round). Ratings: live ones, in
    vote order. Comparisons: voted ones whose two replies are final, in vote order.
    Prompts: distinct prompts of final replies created in the window, newest first, at
    most `max_prompts`. All times in the snapshot are aware UTC.
    """
    end = as_utc(now)
    since_utc = None if since is None else as_utc(since)
    start = None if since_utc is None else since_utc - timedelta(days=replay_days)
    replies = _Replies()
    comparisons = _comparisons(session, replies, start, end)
    ratings = _ratings(session, replies, start, end)
    set_aside: dict[str, int] = {}
    if evidence is not None and evidence.enabled:
        screening = screen(ballots(session, start, end), evidence, end)
        aside = screening.reasons()
        comparisons = [c for c in comparisons if c.id not in aside]
        set_aside = {r: n for r, n in screening.counts().items() if n}
        thumbs = screen_thumbs(thumb_ballots(session, start, end), evidence, end)
        thumbs_aside = thumbs.reasons()
        ratings = [r for r in ratings if str(r.id) not in thumbs_aside]
        set_aside |= {f"thumbs_{r}": n for r, n in thumbs.counts().items() if n}
    return Snapshot(
        ratings=tuple(ratings),
        comparisons=tuple(comparisons),
        prompts=tuple(_prompts(session, start, end, max_prompts)),
        window_start=start,
        window_end=end,
        since=since_utc,
        set_aside=set_aside,
    )


def count_events(session: Session, since: datetime | None) -> int:
    """Vote events at or after `since` (all when None).

    Every rating row created (a changed vote is a new row; the superseded one still counts
    as the event it was) plus every comparison voted.
    """
    ratings = select(func.count()).select_from(Rating)
    comparisons = (
        select(func.count())
        .select_from(Comparison)
        .where(Comparison.choice.is_not(None), Comparison.voted_at.is_not(None))
    )
    if since is not None:
        ratings = ratings.where(Rating.created_at >= as_utc(since))
        comparisons = comparisons.where(Comparison.voted_at >= as_utc(since))
    return int(session.scalar(ratings) or 0) + int(session.scalar(comparisons) or 0)


def last_vote_at(session: Session) -> datetime | None:
    """The time of the latest vote event (a rating created or a comparison voted), UTC."""
    times = [
        session.scalar(select(func.max(Rating.created_at))),
        session.scalar(select(func.max(Comparison.voted_at))),
    ]
    found = [as_utc(t) for t in times if t is not None]
    return max(found) if found else None
