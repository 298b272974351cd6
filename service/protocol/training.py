"""Schemas of the operator API for training rounds and the trainer's notifications."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from service.protocol.types import UtcDatetime


class RunSummary(BaseModel):
    """The round's headline figures (from its metrics); null where the round did not get
    that far (a stopped round has no evaluation) or the figure was not computed."""

    rm_accuracy: float | None = Field(
        description="The reward model's accuracy on held-out preference pairs."
    )
    rm_length_controlled_accuracy: float | None = Field(
        default=None,
        description="The same with length taken out: the accuracy on pairs whose voters "
        "chose the longer reply and on those that chose the shorter one, averaged (0.5 for "
        "a model that only knows length).",
    )
    rm_length_baseline_accuracy: float | None = Field(
        default=None,
        description="What 'the shorter reply wins' scores on the same held-out pairs.",
    )
    votes_longer_won: float | None = Field(
        default=None,
        description="The share of the round's training pairs whose longer reply won.",
    )
    votes_reward_length: bool | None = Field(
        default=None,
        description="Whether that share is more than 0.05 from 0.5 at 95%: the votes reward "
        "length. "
        "When they do not, the gate also requires the RM win rate at equal length.",
    )
    check_rm_accuracy: float | None = Field(
        description="The check reward model's held-out accuracy (trained on half the pairs)."
    )
    win_rate: float | None = Field(
        description="The candidate's win rate over the serving version, judged by the RM."
    )
    length_controlled_win_rate: float | None = Field(
        default=None,
        description="The RM win rate at equal reply length (a logistic fit of wins on the "
        "length difference, read at 0; AlpacaEval's length-controlled win rate).",
    )
    check_win_rate: float | None = Field(description="The same, judged by the check RM.")
    kl_candidate: float | None = Field(
        description="Mean KL of the candidate's replies to the reference (v0), nats."
    )
    kl_serving: float | None = Field(
        description="Mean KL of the serving version's replies to the reference, nats."
    )
    length_ratio: float | None = Field(
        description="Mean reply length, candidate / serving (tokens)."
    )


class RunOut(BaseModel):
    id: int
    status: str = Field(description="queued, running, succeeded, stopped, rejected or failed.")
    trigger: str | None = Field(description="manual, operator, events, interval.")
    reason: str | None = Field(description="Why it stopped, was rejected or failed.")
    created_at: UtcDatetime
    started_at: UtcDatetime | None
    finished_at: UtcDatetime | None
    data_window_start: UtcDatetime | None
    data_window_end: UtcDatetime | None
    counts: dict[str, Any] = Field(description="Votes and pairs the round used.")
    progress: dict[str, Any] = Field(description="phase, step, total, elapsed_s, eta_s.")
    policy_version: str | None = Field(description="The version it produced, if any.")
    reward_model_id: int | None
    summary: RunSummary = Field(description="Headline metrics, for charts over rounds.")


class RunDetail(RunOut):
    metrics: dict[str, Any] = Field(
        description="Config, reward model and evaluation metrics, per-step metrics by phase."
    )
    logs: str
