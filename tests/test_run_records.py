"""`store.runs.RunMetrics`, the record of a round's metrics the trainer writes and the
server reads: it round-trips, and rows of older trainers read with defaults."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from store.db.migrate import upgrade
from store.db.models import TrainingRun
from store.db.session import make_engine, make_session_factory, session_scope
from store.runs import (
    EvaluationFigures,
    PairFigures,
    PolicyFigures,
    RewardFigures,
    RunMetrics,
    RunProgress,
)
from trainer.runs import RunRecorder


def full_record() -> RunMetrics:
    """A record as a finished round leaves it, every section filled."""
    heldout = {"n": 40.0, "accuracy": 0.75, "new_n": 40.0, "ece": 0.08, "length_corr": -0.1}
    fit = {"steps": 24.0, "loss_first": 0.69, "pairs": 96.0, "unpaired": 12.0}
    record = RunMetrics(trigger="manual", config={"seed": 0, "policy": {"algorithm": "rloo"}})
    record.reward = RewardFigures.of(heldout, fit, 48, "fresh (no previous reward model)")
    record.check_reward = PairFigures.model_validate({"n": 40.0, "accuracy": 0.7})
    record.policy = PolicyFigures(steps=12, rollouts=96, kl_moved=0.2, stopped=None)
    record.evaluation = EvaluationFigures.model_validate(
        {"win_rate": 0.625, "kl_candidate": 1.25, "kl_serving": 0.0, "replies": 16.0}
    )
    record.examples = [{"prompt": [["user", "hi"]], "candidate": "hello", "serving": "hey"}]
    record.progress = RunProgress(phase="done", step=0, total=0)
    record.phase_seconds = {"data": 0.1, "reward": 3.5}
    record.steps = {"reward": [{"step": 1.0, "loss": 0.7}]}
    return record


def test_a_record_round_trips_through_json() -> None:
    record = full_record()
    stored = json.loads(json.dumps(record.to_json()))  # what the JSON column gives back
    again = RunMetrics.from_json(stored)
    assert again == record
    assert again.to_json() == stored
    assert again.reward is not None and again.evaluation is not None
    assert (again.reward.accuracy, again.reward.n, again.reward.start) == (
        0.75,
        40.0,
        "fresh (no previous reward model)",
    )
    assert again.evaluation.win_rate == 0.625 and again.evaluation.check_win_rate is None
    assert again.policy == PolicyFigures(steps=12, rollouts=96, kl_moved=0.2, stopped=None)


def test_reward_figures_keep_the_fit_under_train_names() -> None:
    reward = full_record().reward
    assert reward is not None
    # the pairs it trained on replace the fit's own count of them
    assert reward.train_pairs == 48
    assert reward.extras() == {
        "new_n": 40.0,
        "ece": 0.08,
        "length_corr": -0.1,
        "train_steps": 24.0,
        "train_loss_first": 0.69,
        "train_unpaired": 12.0,
    }


@pytest.mark.parametrize("raw", [None, {}, [1, 2], "text"])
def test_an_empty_or_odd_row_reads_as_an_empty_record(raw: Any) -> None:
    record = RunMetrics.from_json(raw)
    assert record == RunMetrics()
    assert record.to_json() == {}


def test_an_old_partial_row_reads_with_defaults_and_writes_back_unchanged() -> None:
    # a round that stopped after its reward model, written before `policy`, the check
    # model and ETAs existed; with a section and a key this schema does not know
    raw: dict[str, Any] = {
        "trigger": "interval",
        "reward": {"accuracy": 0.55, "n": 20},
        "progress": {"phase": "done", "step": 0, "total": 0},
        "phase_seconds": {"data": 0.5},
        "legacy": {"kept": True},
    }
    record = RunMetrics.from_json(raw)
    assert record.trigger == "interval" and record.config is None
    assert record.reward is not None and record.reward.accuracy == 0.55
    assert record.reward.train_pairs is None and record.reward.start is None
    assert record.check_reward is None and record.policy is None and record.evaluation is None
    assert record.examples is None and record.steps is None
    assert record.progress == RunProgress(phase="done", step=0, total=0)
    assert record.progress.eta_s is None and record.progress.elapsed_s is None
    assert record.to_json() == raw  # nothing filled in, nothing lost


def test_figures_that_are_not_finite_numbers_read_as_none() -> None:
    record = RunMetrics.from_json(
        {
            "reward": {"accuracy": "n/a", "n": True},
            "check_reward": {"accuracy": math.nan},
            "evaluation": 3,  # not a section at all
            "policy": {"steps": 2.5, "stopped": 7},
            "progress": "starting",
            "trigger": 5,
        }
    )
    assert record.reward == RewardFigures(accuracy=None, n=None)
    assert record.check_reward is not None and record.check_reward.accuracy is None
    assert record.evaluation is None and record.progress is None and record.trigger is None
    assert record.policy is not None
    assert record.policy.steps is None and record.policy.stopped is None


@pytest.fixture
def sessions(db_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(db_url)
    upgrade(engine)
    yield make_session_factory(engine)
    engine.dispose()


def test_what_the_recorder_writes_reads_back_as_the_record(
    sessions: sessionmaker[Session],
) -> None:
    rec = RunRecorder(sessions, flush_seconds=0)
    run_id = rec.start("manual", {"seed": 0})
    with session_scope(sessions) as s:
        started = RunMetrics.from_json(s.get_one(TrainingRun, run_id).metrics)
    assert started == RunMetrics(trigger="manual", config={"seed": 0})
    assert started.progress is None  # a round not yet in a phase has no progress

    rec.phase("reward")
    rec.metrics.reward = RewardFigures.of({"n": 10.0, "accuracy": 0.8}, {}, 30, "fresh")
    rec.progress(1, 2, {"loss": 0.5})
    with session_scope(sessions) as s:
        stored = RunMetrics.from_json(s.get_one(TrainingRun, run_id).metrics)
    assert stored.reward == rec.metrics.reward
    assert stored.progress is not None
    assert (stored.progress.phase, stored.progress.step, stored.progress.total) == (
        "reward",
        1,
        2,
    )
    assert stored.steps == {"reward": [{"step": 1.0, "loss": 0.5}]}
