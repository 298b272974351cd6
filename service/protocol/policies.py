"""Schemas of the operator API for policy versions: list, promote, retire, roll back,
events and live ratings."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from service.protocol.types import UtcDatetime


class CandidateNotice(BaseModel):
    version: str = Field(min_length=1, max_length=64, description="Policy version name (v3).")


class NoticeOut(BaseModel):
    version: str
    status: str
    accepted: bool = Field(description="True when the version is a candidate the server admits.")


class ChangeIn(BaseModel):
    reason: str | None = Field(None, max_length=500, description="Recorded in the event log.")


class PolicyOut(BaseModel):
    id: int
    name: str
    model: str = Field(description="The model name that pins it (loopchat@v3).")
    kind: str = Field(description="base, lora or merged.")
    status: str = Field(description="candidate, canary, serving, retired, rejected or failed.")
    parent: str | None
    loaded: bool = Field(description="Loaded in the engine: requests may pin it.")
    in_weights: bool = Field(description="Merged into the engine's weights (merged mode).")
    metrics: dict[str, Any] = Field(description="The trainer's evaluation of the version.")
    error: str | None
    created_at: UtcDatetime
    updated_at: UtcDatetime


class PolicyList(BaseModel):
    serving: str
    canary: str | None
    swap_mode: str
    canary_share: float
    data: list[PolicyOut]


class EventOut(BaseModel):
    id: int
    kind: str = Field(description="canary, promote, rollback, retire, fail or swap.")
    version: str
    previous_version: str | None
    actor: str = Field(description="trainer, operator, rule or system.")
    reason: str
    metrics: dict[str, Any]
    created_at: UtcDatetime


class IntervalOut(BaseModel):
    low: float
    high: float


class VersionRatingOut(BaseModel):
    version: str
    status: str
    elo: float = Field(description="Bradley-Terry strength on the Elo scale (v0 = 1000).")
    elo_interval: IntervalOut = Field(description="Bootstrap interval on the Elo scale.")
    comparisons: int
    thumbs_up: int
    thumbs_down: int
    thumbs_rate: float | None
    thumbs_interval: IntervalOut | None = Field(description="Wilson interval.")


class CanaryOut(BaseModel):
    version: str
    verdict: str = Field(description="promote, retire or wait.")
    reason: str
    metrics: dict[str, Any]


class RatingsOut(BaseModel):
    level: float
    ratings: list[VersionRatingOut]
    canary: CanaryOut | None
