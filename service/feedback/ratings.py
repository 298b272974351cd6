"""Thumbs up/down on a reply: one live rating per (user, generation), history kept.

Changing a rating marks the live row superseded and inserts the new one; withdrawing
marks it superseded and inserts nothing. Sending the same rating again changes nothing
(a client retry never adds a row). Every function runs in the caller's transaction;
the generation row is locked first, so two requests for the same reply take turns.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.errors import Conflict, Forbidden, InvalidValue, NotFound
from service.feedback.reasons import check_rating_reason
from store.db.models import Generation, GenerationStatus, Rating, utcnow

GENERATION_ID = re.compile(r"^chatcmpl-[0-9a-f]{32}$")
VALUES = {"up": 1, "down": -1}


@dataclass(frozen=True)
class RatingView:
    generation_id: str
    rating: str | None  # "up" | "down" | None (none, or withdrawn)
    reason: str | None
    comment: str | None
    updated_at: datetime | None
    changed: bool

    @classmethod
    def of(cls, r: Rating, changed: bool) -> RatingView:
        return cls(
            r.generation_id,
            "up" if r.value > 0 else "down",
            r.reason,
            r.comment,
            r.created_at,
            changed,
        )


def served_generation(
    session: Session, generation_id: str, user_id: str, for_vote: bool = True
) -> Generation:
    """The generation if it exists and was served to `user_id`.

    `for_vote`: lock the row (votes on one reply take turns) and refuse failed replies.
    """
    if not GENERATION_ID.match(generation_id):
        raise NotFound(f"no reply with id '{generation_id[:80]}'", param="generation_id")
    stmt = select(Generation).where(Generation.id == generation_id)
    if for_vote:
        stmt = stmt.with_for_update()
    gen = session.scalars(stmt).first()
    if gen is None:
        raise NotFound(f"no reply with id '{generation_id}'", param="generation_id")
    if gen.user_id != user_id:
        raise Forbidden(
            "you can only vote on replies that were served to you",
            code="not_your_reply",
            param="generation_id",
        )
    if for_vote and gen.status is GenerationStatus.ERROR:
        raise Conflict(
            "this reply failed to generate; there is nothing to rate", code="failed_reply"
        )
    return gen


def _live(session: Session, user_id: str, generation_id: str) -> Rating | None:
    stmt = select(Rating).where(
        Rating.user_id == user_id, Rating.generation_id == generation_id, Rating.live.is_(True)
    )
    return session.scalars(stmt).first()


def rate(
    session: Session,
    user_id: str,
    generation_id: str,
    rating: str,
    reason: str | None,
    comment: str | None,
    max_comment_chars: int,
) -> RatingView:
    if rating not in VALUES:
        raise InvalidValue("rating must be 'up' or 'down'", param="rating")
    check_rating_reason(rating, reason)
    comment = (comment or "").strip() or None
    if comment is not None and len(comment) > max_comment_chars:
        raise InvalidValue(
            f"the comment is {len(comment)} characters; the limit is {max_comment_chars}",
            param="comment",
            code="comment_too_long",
        )
    served_generation(session, generation_id, user_id)
    value = VALUES[rating]
    current = _live(session, user_id, generation_id)
    if current is not None:
        if (current.value, current.reason, current.comment) == (value, reason, comment):
            return RatingView.of(current, changed=False)
        current.live = False
        current.superseded_at = utcnow()
        session.flush()  # the partial unique index allows one live row: retire it first
    new = Rating(
        generation_id=generation_id,
        user_id=user_id,
        value=value,
        reason=reason,
        comment=comment,
        live=True,
    )
    session.add(new)
    session.flush()
    return RatingView.of(new, changed=True)


def withdraw(session: Session, user_id: str, generation_id: str) -> RatingView:
    served_generation(session, generation_id, user_id)
    current = _live(session, user_id, generation_id)
    if current is not None:
        current.live = False
        current.superseded_at = utcnow()
        session.flush()
    return RatingView(generation_id, None, None, None, None, changed=current is not None)


def current(session: Session, user_id: str, generation_id: str) -> RatingView:
    """The caller's live rating of a reply served to them (rating None if there is none)."""
    served_generation(session, generation_id, user_id, for_vote=False)
    live = _live(session, user_id, generation_id)
    if live is None:
        return RatingView(generation_id, None, None, None, None, changed=False)
    return RatingView.of(live, changed=False)
