"""What a training round records in its `training_runs.metrics` JSON, as one typed record.

The trainer writes it (`trainer.runs.RunRecorder`, with the sections `trainer.round`
fills) and the server reads it back (`service.api.training`); both go through
`RunMetrics`, so each key is spelled here and nowhere else.

Reading is tolerant, because the column holds rows of every trainer that ever ran: a
missing section or figure reads as None, a figure that is not a finite number reads as
None, and a section that does not fit its type reads as missing instead of failing the
whole row (the dashboard shows what there is).

`to_json` writes back exactly the keys that were read or set, and keeps keys this schema
does not name (a section's further figures, sections of a newer trainer). So a row read
and written again keeps its shape: a `progress` written without an ETA stays without one,
and a round stopped before its reward model has no `reward` key rather than a null one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
)


def _number(value: object) -> float | None:
    # bool is an int to Python, but a flag is not a figure.
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _whole(value: object) -> int | None:
    number = _number(value)
    return None if number is None or not number.is_integer() else int(number)


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _or_missing(value: object, handler: ValidatorFunctionWrapHandler) -> object:
    try:
        return handler(value)
    except ValidationError:
        return None


Figure = Annotated[float | None, BeforeValidator(_number)]
Count = Annotated[int | None, BeforeValidator(_whole)]
Text = Annotated[str | None, BeforeValidator(_text)]
Tolerant = WrapValidator(_or_missing)


class Section(BaseModel):
    """A group of figures: the ones named are typed, any others are kept as written."""

    model_config = ConfigDict(extra="allow")

    def extras(self) -> dict[str, Any]:
        """The figures this schema does not name, as written."""
        return dict(self.model_extra or {})

    def to_json(self) -> dict[str, Any]:
        """The section as stored: the keys read or set, nothing filled in by defaults."""
        return self.model_dump(exclude_unset=True)


class PairFigures(Section):
    """A reward model measured on held-out preference pairs (`trainer.reward.pair_metrics`;
    its further figures, such as ece, brier and length_corr, are kept as extras)."""

    n: Figure = None
    accuracy: Figure = None
    new_pair_accuracy: Figure = None
    length_baseline_accuracy: Figure = None
    # accuracy on pairs the voters chose the longer reply in and on those they chose the
    # shorter one, averaged (`store.lengthcontrol`): 0.5 for a length-only model
    length_controlled_accuracy: Figure = None
    # the share of training pairs the longer reply won, and whether it is far from 0.5
    votes_longer_won: Figure = None
    votes_reward_length: Annotated[bool | None, Tolerant] = None


class RewardFigures(PairFigures):
    """The round's reward model: its held-out figures and how it was fit (the fit's own
    figures are kept as extras named `train_<figure>`)."""

    train_pairs: Count = None
    start: Text = None  # how it started: fresh, or warm-started from which model

    @classmethod
    def of(
        cls, heldout: Mapping[str, float], fit: Mapping[str, float], train_pairs: int, start: str
    ) -> RewardFigures:
        """`heldout` from `pair_metrics`, `fit` from `train_reward_model`; `train_pairs`, the
        pairs it trained on, replaces the fit's own count of them."""
        record = cls.model_validate({**heldout, **{f"train_{k}": v for k, v in fit.items()}})
        record.train_pairs = train_pairs
        record.start = start
        return record


class PolicyFigures(Section):
    """What the policy update did."""

    steps: Count = None
    rollouts: Count = None
    kl_moved: Figure = None
    stopped: Text = None  # why it stopped before its last batch
    rollout_engine: Text = None  # vllm or transformers (`trainer.rollouts`)
    rollout_dtype: Text = None  # the rollout engine's dtype (vllm)
    draw_s: Figure = None  # seconds drawing rollouts (the sampler alone)
    learn_s: Figure = None  # seconds in the learner's steps
    engine_start_s: Figure = None  # seconds the rollout engine took to start (vllm)
    sync_s: Figure = None  # seconds syncing the adapter into it, all draws together


class EvaluationFigures(Section):
    """The candidate against the serving version on held-out prompts (`trainer.evaluate`;
    rewards, lengths and counts are kept as extras)."""

    win_rate: Figure = None
    length_controlled_win_rate: Figure = None  # at equal length (`store.lengthcontrol`)
    check_win_rate: Figure = None
    kl_candidate: Figure = None
    kl_serving: Figure = None
    length_ratio: Figure = None


class RunProgress(Section):
    """Where a round is: its phase ("done" once finished) and step of that phase."""

    phase: Text = None
    step: Count = None
    total: Count = None
    elapsed_s: Figure = None
    eta_s: Figure = None


class RunMetrics(BaseModel):
    """The `training_runs.metrics` of one round; every part optional (see the module)."""

    model_config = ConfigDict(extra="allow")

    trigger: Annotated[Text, Tolerant] = None  # manual, operator, events, interval, bench
    config: Annotated[dict[str, Any] | None, Tolerant] = None  # the round's TrainConfig
    reward: Annotated[RewardFigures | None, Tolerant] = None
    check_reward: Annotated[PairFigures | None, Tolerant] = None
    policy: Annotated[PolicyFigures | None, Tolerant] = None
    evaluation: Annotated[EvaluationFigures | None, Tolerant] = None
    examples: Annotated[list[dict[str, Any]] | None, Tolerant] = None  # replies side by side
    progress: Annotated[RunProgress | None, Tolerant] = None
    phase_seconds: Annotated[dict[str, float] | None, Tolerant] = None
    steps: Annotated[dict[str, list[dict[str, float]]] | None, Tolerant] = None  # by phase

    @classmethod
    def from_json(cls, raw: Mapping[str, Any] | None) -> RunMetrics:
        """The record of a stored row: any JSON the column holds, None or not an object
        included, reads without raising."""
        return cls.model_validate(dict(raw) if isinstance(raw, Mapping) else {})

    def to_json(self) -> dict[str, Any]:
        """The JSON to store: the keys read or set, nothing filled in by defaults."""
        return self.model_dump(exclude_unset=True)
