"""Operator API for policy versions: list, promote (roll back), retire, events, ratings,
and the trainer's notification. Thin: the registry and `service.policies.store` act."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from service.api.deps import RuntimeDep, operator
from service.api.openapi import OPERATOR, errors
from service.policies import store
from service.policies.lifecycle import Actor
from service.policies.ratings import Interval, rate_versions
from service.policies.registry import PolicyRegistry
from service.protocol.policies import (
    CanaryOut,
    CandidateNotice,
    ChangeIn,
    EventOut,
    IntervalOut,
    NoticeOut,
    PolicyList,
    PolicyOut,
    RatingsOut,
    VersionRatingOut,
)
from service.runtime import Runtime
from store.db.session import in_session
from store.domain import VersionStatus

router = APIRouter(
    prefix="/v1/admin/policies",
    tags=["policies"],
    dependencies=[Depends(operator)],
    responses=OPERATOR,
)


def _read(runtime: Runtime, fn: Any) -> Any:
    return in_session(runtime.read_sessions, fn)


def _policy_out(reg: PolicyRegistry, row: store.VersionRow, names: dict[int, str]) -> PolicyOut:
    loaded = {v.name for v in reg.loaded()}
    return PolicyOut(
        id=row.id,
        name=row.name,
        model=f"{reg.alias}@{row.name}",
        kind=row.kind.value,
        status=row.status.value,
        parent=names.get(row.parent_id) if row.parent_id is not None else None,
        loaded=row.name in loaded,
        in_weights=reg.weights_version() == row.name,
        metrics=row.metrics,
        error=row.error,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


@router.get("", response_model=PolicyList)
async def list_policies(runtime: RuntimeDep) -> PolicyList:
    """Every version, oldest first, with its status and whether the engine holds it."""
    reg = runtime.registry
    rows: list[store.VersionRow] = await _read(runtime, store.versions)
    names = {r.id: r.name for r in rows}
    canary = reg.canary
    return PolicyList(
        serving=reg.serving.name,
        canary=canary.name if canary else None,
        swap_mode=reg.config.swap_mode.value,
        canary_share=reg.config.canary_share,
        data=[_policy_out(reg, r, names) for r in rows],
    )


@router.get("/events", response_model=list[EventOut])
async def list_events(
    runtime: RuntimeDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    version: Annotated[str | None, Query(max_length=64)] = None,
    kind: Annotated[str | None, Query(max_length=16)] = None,
) -> list[EventOut]:
    """Swaps, promotions, rollbacks, retirements and failed loads, newest first."""
    rows: list[store.EventRow] = await _read(
        runtime, lambda s: store.events(s, limit=limit, version=version, kind=kind)
    )
    return [EventOut(**r.__dict__) for r in rows]


def _interval(i: Interval | None) -> IntervalOut | None:
    return None if i is None else IntervalOut(low=i.low, high=i.high)


@router.get("/ratings", response_model=RatingsOut)
async def ratings(
    runtime: RuntimeDep, samples: Annotated[int, Query(ge=10, le=2000)] = 200
) -> RatingsOut:
    """Bradley-Terry ratings over versions from comparison votes (Elo scale, bootstrap
    intervals) and thumbs-up rates (Wilson intervals); the canary rule's last verdict."""
    reg = runtime.registry
    level = reg.config.rule.level

    def read(s: Any) -> tuple[Any, ...]:
        return store.versions(s), store.matches(s), store.thumbs(s)

    rows, matches, thumbs = await _read(runtime, read)
    shown = [r for r in rows if r.status not in (VersionStatus.REJECTED, VersionStatus.FAILED)]
    status = {r.name: r.status.value for r in rows}
    rated = await asyncio.to_thread(
        rate_versions, matches, thumbs, [r.name for r in shown], samples=samples, level=level
    )
    decision = reg.last_decision
    canary = reg.canary
    return RatingsOut(
        level=level,
        ratings=[
            VersionRatingOut(
                version=v.name,
                status=status.get(v.name, "unknown"),
                elo=v.elo,
                elo_interval=IntervalOut(low=v.interval.low, high=v.interval.high),
                comparisons=v.comparisons,
                thumbs_up=v.thumbs_up,
                thumbs_down=v.thumbs_down,
                thumbs_rate=v.thumbs_rate,
                thumbs_interval=_interval(v.thumbs_interval),
            )
            for v in rated
        ],
        canary=None
        if canary is None or decision is None
        else CanaryOut(
            version=canary.name,
            verdict=decision.verdict.value,
            reason=decision.reason,
            metrics=decision.metrics,
        ),
    )


@router.post("/notify", response_model=NoticeOut, status_code=202, responses=errors(404))
async def candidate_ready(body: CandidateNotice, runtime: RuntimeDep) -> NoticeOut:
    """The trainer published a version. A candidate is loaded and canaried in the
    background; polling the database catches any notice that never arrives."""
    row: store.VersionRow = await _read(runtime, lambda s: store.find(s, body.version))
    accepted = row.status is VersionStatus.CANDIDATE
    if accepted and runtime.chat is not None:  # still starting: start-up admits it
        runtime.registry.candidate_ready(row.name)
    return NoticeOut(version=row.name, status=row.status.value, accepted=accepted)


async def _out(runtime: Runtime, name: str) -> PolicyOut:
    rows: list[store.VersionRow] = await _read(runtime, store.versions)
    names = {r.id: r.name for r in rows}
    return _policy_out(runtime.registry, next(r for r in rows if r.name == name), names)


@router.post("/rollback", response_model=PolicyOut, responses=errors(409))
async def rollback(runtime: RuntimeDep, body: ChangeIn | None = None) -> PolicyOut:
    """Serve again the version that served before the current one."""
    reason = body.reason if body else None
    live = await runtime.registry.rollback(Actor.OPERATOR, reason or "")
    return await _out(runtime, live.name)


@router.post("/{ref}/promote", response_model=PolicyOut, responses=errors(404, 409))
async def promote(ref: str, runtime: RuntimeDep, body: ChangeIn | None = None) -> PolicyOut:
    """Make a candidate, the canary or a retained version serve (the latter is a rollback).
    `ref` is a name (v3) or an id."""
    reason = body.reason if body else None
    live = await runtime.registry.promote(ref, Actor.OPERATOR, reason or "")
    return await _out(runtime, live.name)


@router.post("/{ref}/retire", response_model=PolicyOut, responses=errors(404, 409))
async def retire(ref: str, runtime: RuntimeDep, body: ChangeIn | None = None) -> PolicyOut:
    """Stop a candidate or the canary from taking traffic."""
    reason = body.reason if body else None
    live = await runtime.registry.retire(ref, Actor.OPERATOR, reason or "")
    return await _out(runtime, live.name)
