"""Thumbs on replies: POST /v1/feedback, GET/DELETE /v1/feedback/{generation_id}, reasons."""

from __future__ import annotations

from fastapi import APIRouter, Response

from service.api.deps import RuntimeDep, UserDep, VoterDep
from service.api.openapi import CALLER, errors
from service.feedback import ratings, reasons
from service.feedback.ratings import RatingView
from service.protocol.feedback import FeedbackRequest, RatingOut, ReasonsOut
from store.db.session import session_scope

router = APIRouter(tags=["feedback"])


def _out(v: RatingView) -> RatingOut:
    return RatingOut(
        generation_id=v.generation_id,
        rating=v.rating,  # type: ignore[arg-type]
        reason=v.reason,
        comment=v.comment,
        updated_at=v.updated_at,
        changed=v.changed,
    )


@router.get("/v1/feedback/reasons", response_model=ReasonsOut, responses=errors(500))
async def list_reasons() -> ReasonsOut:
    return ReasonsOut(
        up=list(reasons.POSITIVE), down=list(reasons.NEGATIVE), comparison=list(reasons.COMPARISON)
    )


@router.post(
    "/v1/feedback",
    response_model=RatingOut,
    status_code=201,
    responses={
        200: {
            "model": RatingOut,
            "description": "The same vote was already stored; nothing changed (changed: false).",
        },
        201: {"description": "The vote was stored (changed: true)."},
        **CALLER,
        **errors(403, 404, 409, 422, 429),
    },
)
def rate(
    body: FeedbackRequest, user: VoterDep, runtime: RuntimeDep, response: Response
) -> RatingOut:
    """Rate a reply served to you. Changing the rating keeps the old one as history."""
    with session_scope(runtime.sessions) as s:
        view = ratings.rate(
            s,
            user.user_id,
            body.generation_id,
            body.rating,
            body.reason,
            body.comment,
            runtime.settings.max_comment_chars,
        )
    response.status_code = 201 if view.changed else 200
    return _out(view)


@router.get(
    "/v1/feedback/{generation_id}",
    response_model=RatingOut,
    responses={**CALLER, **errors(403, 404)},
)
def get_rating(generation_id: str, user: UserDep, runtime: RuntimeDep) -> RatingOut:
    """Your current rating of a reply (rating null if none): lets a page show stored votes."""
    with session_scope(runtime.read_sessions) as s:
        return _out(ratings.current(s, user.user_id, generation_id))


@router.delete(
    "/v1/feedback/{generation_id}",
    response_model=RatingOut,
    responses={**CALLER, **errors(403, 404, 409, 429)},
)
def withdraw(generation_id: str, user: VoterDep, runtime: RuntimeDep) -> RatingOut:
    """Withdraw your rating; it stays in the history as superseded."""
    with session_scope(runtime.sessions) as s:
        return _out(ratings.withdraw(s, user.user_id, generation_id))
