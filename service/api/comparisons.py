"""A-vs-B: POST /v1/comparisons, POST /v1/comparisons/{id}/vote, GET /v1/comparisons/{id}."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Request

from service.api.cancellation import cancel_on_disconnect
from service.api.deps import ComparisonsDep, RuntimeDep, UserDep, VoterDep
from service.api.openapi import CALLER, errors
from service.chat.service import ChatResult
from service.feedback import comparisons
from service.feedback.comparisons import ComparisonPlan, ComparisonView, SideView
from service.protocol.feedback import (
    ComparisonOut,
    ComparisonRequest,
    ComparisonSideOut,
    VoteRequest,
)
from store.db.session import session_scope

router = APIRouter(tags=["feedback"], responses=CALLER)


def view_out(v: ComparisonView) -> ComparisonOut:
    def side(s: SideView) -> ComparisonSideOut:
        return ComparisonSideOut(
            generation_id=s.generation_id,
            content=s.content,
            finish_reason=s.finish_reason,
            model=s.model,
        )

    return ComparisonOut(
        id=v.id,
        a=side(v.a),
        b=side(v.b),
        choice=v.choice,  # type: ignore[arg-type]
        reason=v.reason,
        created_at=v.created_at,
        voted_at=v.voted_at,
    )


def _fresh(plan: ComparisonPlan, a: ChatResult, b: ChatResult) -> ComparisonOut:
    def side(r: ChatResult) -> ComparisonSideOut:
        c = r.choices[0]
        return ComparisonSideOut(
            generation_id=r.prepared.id, content=c.text, finish_reason=c.finish_reason, model=None
        )

    return ComparisonOut(
        id=plan.id,
        a=side(a),
        b=side(b),
        choice=None,
        reason=None,
        created_at=datetime.fromtimestamp(plan.a.created, UTC),
        voted_at=None,
    )


@router.post(
    "/v1/comparisons", response_model=ComparisonOut, status_code=201, responses=errors(400, 429)
)
async def create(
    body: ComparisonRequest,
    user: UserDep,
    service: ComparisonsDep,
    runtime: RuntimeDep,
    request: Request,
) -> ComparisonOut:
    """Two replies to the same messages, sides shuffled, versions hidden until you vote."""
    lease = runtime.hold_generations(user.user_id, 2)
    try:
        plan = await service.start(body, user.user_id, source="comparison")
        a, b = await cancel_on_disconnect(request, service.complete(plan))
    finally:
        if lease is not None:
            lease.release()
    return _fresh(plan, a, b)


@router.post(
    "/v1/comparisons/{comparison_id}/vote",
    response_model=ComparisonOut,
    responses=errors(403, 404, 409, 422, 429),
)
def vote(
    comparison_id: str, body: VoteRequest, user: VoterDep, runtime: RuntimeDep
) -> ComparisonOut:
    """The one vote of a comparison (409 if it has one); the answer reveals both versions."""
    with session_scope(runtime.sessions) as s:
        view = comparisons.vote(
            s, user.user_id, comparison_id, body.choice, body.reason, runtime.registry.alias
        )
    return view_out(view)


@router.get(
    "/v1/comparisons/{comparison_id}", response_model=ComparisonOut, responses=errors(403, 404)
)
def get(comparison_id: str, user: UserDep, runtime: RuntimeDep) -> ComparisonOut:
    with session_scope(runtime.read_sessions) as s:
        return view_out(comparisons.get(s, user.user_id, comparison_id, runtime.registry.alias))
