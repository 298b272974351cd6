"""Operator API for training rounds: list, inspect (metrics, logs), queue one; and the
trainer's notification that a candidate policy is ready."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response
from fastapi import Path as FastPath
from sqlalchemy import select

from service.api.deps import RuntimeDep, operator
from service.api.openapi import OPERATOR, errors
from service.errors import NotFound
from service.protocol.training import RunDetail, RunOut, RunSummary
from store.db.models import PolicyVersion, RunStatus, TrainingRun
from store.db.session import session_scope
from store.runs import EvaluationFigures, PairFigures, RewardFigures, RunMetrics

router = APIRouter(
    prefix="/v1/admin", tags=["admin"], dependencies=[Depends(operator)], responses=OPERATOR
)


def summary_of(metrics: RunMetrics) -> RunSummary:
    """A round's headline figures: null for a section the round did not reach (a stopped
    round has no evaluation) or a figure that is missing or not a number."""
    reward = metrics.reward or RewardFigures()
    check = metrics.check_reward or PairFigures()
    evaluation = metrics.evaluation or EvaluationFigures()
    return RunSummary(
        rm_accuracy=reward.accuracy,
        rm_length_controlled_accuracy=reward.length_controlled_accuracy,
        rm_length_baseline_accuracy=reward.length_baseline_accuracy,
        votes_longer_won=reward.votes_longer_won,
        votes_reward_length=reward.votes_reward_length,
        check_rm_accuracy=check.accuracy,
        win_rate=evaluation.win_rate,
        length_controlled_win_rate=evaluation.length_controlled_win_rate,
        check_win_rate=evaluation.check_win_rate,
        kl_candidate=evaluation.kl_candidate,
        kl_serving=evaluation.kl_serving,
        length_ratio=evaluation.length_ratio,
    )


def _out(run: TrainingRun, version: str | None, detail: bool = False) -> RunOut:
    metrics = RunMetrics.from_json(run.metrics)
    fields: dict[str, Any] = dict(
        id=run.id,
        status=run.status.value,
        trigger=metrics.trigger,
        reason=run.reason,
        created_at=run.created_at,
        started_at=run.started_at,
        finished_at=run.finished_at,
        data_window_start=run.data_window_start,
        data_window_end=run.data_window_end,
        counts=run.counts or {},
        progress=metrics.progress.to_json() if metrics.progress else {},
        policy_version=version,
        reward_model_id=run.reward_model_id,
        summary=summary_of(metrics),
    )
    if detail:
        return RunDetail(**fields, metrics=metrics.to_json(), logs=run.logs or "")
    return RunOut(**fields)


@router.get("/training-runs", response_model=list[RunOut])
def list_runs(runtime: RuntimeDep, limit: Annotated[int, Query(ge=1, le=500)] = 50) -> list[RunOut]:
    """Newest first."""
    with session_scope(runtime.read_sessions) as s:
        rows = s.execute(
            select(TrainingRun, PolicyVersion.name)
            .outerjoin(PolicyVersion, TrainingRun.policy_version_id == PolicyVersion.id)
            .order_by(TrainingRun.id.desc())
            .limit(limit)
        ).all()
        return [_out(run, name) for run, name in rows]


@router.get("/training-runs/{run_id}", response_model=RunDetail, responses=errors(404))
def get_run(
    run_id: Annotated[int, FastPath(ge=1, le=2**63 - 1, description="A run's id.")],
    runtime: RuntimeDep,
) -> RunOut:
    with session_scope(runtime.read_sessions) as s:
        run = s.get(TrainingRun, run_id)
        if run is None:
            raise NotFound(f"no training run {run_id}")
        version = s.get(PolicyVersion, run.policy_version_id) if run.policy_version_id else None
        return _out(run, version.name if version else None, detail=True)


@router.post(
    "/training-runs",
    response_model=RunOut,
    status_code=201,
    responses={
        200: {"model": RunOut, "description": "A round was already queued: that one."},
        201: {"description": "A round is queued."},
    },
)
def queue_run(runtime: RuntimeDep, response: Response) -> RunOut:
    """Ask the trainer for a round now; it starts at the schedule's next check.

    If a round is already queued, that one is returned (200) instead of a second.
    """
    with session_scope(runtime.sessions) as s:
        queued = s.scalars(
            select(TrainingRun).where(TrainingRun.status == RunStatus.QUEUED)
        ).first()
        if queued is not None:
            response.status_code = 200
            return _out(queued, None)
        queued_metrics = RunMetrics(trigger="operator")
        run = TrainingRun(status=RunStatus.QUEUED, metrics=queued_metrics.to_json())
        s.add(run)
        s.flush()
        return _out(run, None)
