"""Schemas of the operator API for training rounds and the trainer's notifications."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field


class RunOut(BaseModel):
    id: int
    status: str = Field(description="queued, running, succeeded, stopped, rejected or failed.")
    trigger: str | None = Field(description="manual, operator, events, interval.")
    reason: str | None = Field(description="Why it stopped, was rejected or failed.")
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    data_window_start: datetime | None
    data_window_end: datetime | None
    counts: dict[str, Any] = Field(description="Votes and pairs the round used.")
    progress: dict[str, Any] = Field(description="phase, step, total, elapsed_s, eta_s.")
    policy_version: str | None = Field(description="The version it produced, if any.")
    reward_model_id: int | None


class RunDetail(RunOut):
    metrics: dict[str, Any] = Field(
        description="Config, reward model and evaluation metrics, per-step metrics by phase."
    )
    logs: str
