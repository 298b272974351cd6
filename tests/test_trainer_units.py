"""Trainer parts with no model: config, lock, gate, schedule decision, run rows, publishing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.orm import sessionmaker

from store.db.migrate import upgrade
from store.db.models import PolicyVersion, RunStatus, TrainingRun
from store.db.session import make_engine, make_session_factory, session_scope
from store.domain import VersionKind, VersionStatus
from store.fsutil import atomic_dir
from trainer import publish
from trainer.config import ConfigError, EvalConfig, ScheduleConfig, describe, load_config
from trainer.gate import EvalSummary, gate
from trainer.lock import LockBusy, TrainingLock
from trainer.runs import RunRecorder, claim_queued, reap_orphans
from trainer.scheduler import ScheduleState, decide

# -- config --------------------------------------------------------------------------------


def test_config_file_then_overrides(tmp_path: Path) -> None:
    f = tmp_path / "train.toml"
    f.write_text('threads = 2\n[policy]\nalgorithm = "ppo"\nkl_coef = 0.1\n[reward]\nepochs = 3\n')
    cfg = load_config(f, ["policy.kl_coef=0.2", "reward.warm_start=false", "seed=7"])
    assert cfg.threads == 2
    assert cfg.policy.algorithm == "ppo"
    assert cfg.policy.kl_coef == 0.2  # the command line wins over the file
    assert cfg.reward.epochs == 3
    assert cfg.reward.warm_start is False
    assert cfg.seed == 7


@pytest.mark.parametrize(
    "override, message",
    [
        ("policy.algorithm=sft", "policy.algorithm must be one of"),
        ("policy.nope=1", "unknown setting policy.nope"),
        ("reward.epochs=two", "reward.epochs: expected int"),
        ("reward.warm_start=maybe", "expected true or false"),
        ("data.heldout_fraction=1.5", "heldout_fraction must be between"),
        ("policy.dpo_nll_weight=-1", "dpo_nll_weight must be 0"),
        ("policy.kl_step=-0.5", "kl_step must be 0"),
        ("policy.kl_budget=-1", "kl_budget must be 0"),
        ("policy.kl_step=2 policy.kl_step_max=1", "kl_step_max must not be below"),
        ("evaluation.min_length_ratio=0", "min_length_ratio must be in"),
        ("evaluation.min_length_ratio=1.5", "min_length_ratio must be in"),
        ("evaluation.max_length_ratio=0.5", "max_length_ratio at least 1"),
        ("policy", "expected section.field=value"),
        ("a.b.c=1", "expected section.field=value"),
    ],
)
def test_config_refuses_bad_values(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, override.split())


def test_config_bad_file(tmp_path: Path) -> None:
    f = tmp_path / "bad.toml"
    f.write_text("[policy\n")
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(f)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml")


def test_describe_round_trips_as_toml(tmp_path: Path) -> None:
    cfg = load_config(None, ["policy.algorithm=online_dpo", "evaluation.max_kl=4.5"])
    text = describe(cfg)
    assert "# Gate: KL(candidate || v0)" in text  # help text travels with the value
    f = tmp_path / "dump.toml"
    f.write_text(text)
    assert load_config(f) == cfg


# -- what the reward model trains on -------------------------------------------------------


def test_rm_trains_on_new_votes_only_when_warm_and_replay_is_off() -> None:
    from trainer.records import Pair, RoundData, Unpaired, messages
    from trainer.round import rm_training_data

    since = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
    old, new = since - timedelta(minutes=20), since + timedelta(minutes=5)
    prompt = messages([{"role": "user", "content": "hi"}])
    pairs = tuple(
        Pair(prompt, f"c{i}", f"r{i}", 1.0, "comparison", at)
        for i, at in enumerate([old, new, since])
    )
    singles = tuple(
        Unpaired(prompt, f"u{i}", True, "thumbs", at) for i, at in enumerate([old, new])
    )
    data = RoundData(pairs, (), singles, (), (), (), since, {})

    off = load_config(None, ["reward.replay_pairs=false"])
    got_pairs, got_single = rm_training_data(data, off, warm=True)
    assert [p.chosen for p in got_pairs] == ["c1", "c2"]  # at or after `since`
    assert [u.completion for u in got_single] == ["u1"]
    # a fresh RM has seen nothing: it trains on the whole window
    assert rm_training_data(data, off, warm=False) == (list(pairs), list(singles))
    # replay on (the default): everything, warm or not
    assert rm_training_data(data, load_config(None, []), warm=True) == (list(pairs), list(singles))
    # no previous round: everything is new
    first = RoundData(pairs, (), singles, (), (), (), None, {})
    assert rm_training_data(first, off, warm=True) == (list(pairs), list(singles))


# -- lock ----------------------------------------------------------------------------------


def test_lock_is_exclusive_and_released(tmp_path: Path) -> None:
    with TrainingLock(tmp_path), pytest.raises(LockBusy, match=f"pid {os.getpid()}"):
        TrainingLock(tmp_path).acquire()
    with TrainingLock(tmp_path) as again:
        assert again.stale is None


def test_lock_of_a_killed_process_does_not_block(tmp_path: Path) -> None:
    code = textwrap.dedent(
        f"""
        import time
        from pathlib import Path
        from trainer.lock import TrainingLock
        TrainingLock(Path({str(tmp_path)!r})).acquire()
        print("locked", flush=True)
        time.sleep(60)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
        with pytest.raises(LockBusy):
            TrainingLock(tmp_path).acquire()
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        lock = TrainingLock(tmp_path).acquire()
        assert lock.stale is not None and lock.stale.pid == proc.pid
        lock.release()
    finally:
        proc.kill()
        proc.wait()


# -- gate ----------------------------------------------------------------------------------


def _summary(
    win: float, kl: float, ratio: float, prompts: int = 32, lc: float | None = None
) -> EvalSummary:
    return EvalSummary(win, lc, kl, ratio, prompts)


def _gate(summary: EvalSummary, cfg: EvalConfig, votes_reward_length: bool = True) -> list[str]:
    return gate(summary, cfg, votes_reward_length=votes_reward_length)


def test_gate_passes_a_winner_inside_budget() -> None:
    assert _gate(_summary(0.6, 3.0, 1.1), EvalConfig()) == []
    assert _gate(_summary(0.5, 10.0, 0.25), EvalConfig()) == []  # bounds are inclusive


def test_gate_length_bounds_are_set_apart() -> None:
    # The shrink bound is set on its own: a candidate 0.3x as long passes at 0.25, one
    # 2.5x as long is still refused.
    cfg = EvalConfig(min_length_ratio=0.25)
    assert _gate(_summary(0.9, 4.0, 0.3), cfg) == []
    [reason] = _gate(_summary(0.9, 4.0, 0.2), cfg)
    assert "outside [0.25, 2.00]" in reason
    [reason] = _gate(_summary(0.9, 4.0, 2.5), cfg)
    assert "factor of 2.50" in reason


def test_gate_refuses_a_win_that_comes_from_length_only_when_votes_do_not_reward_it() -> None:
    length_only = _summary(0.8, 2.0, 0.6, lc=0.45)
    [reason] = _gate(length_only, EvalConfig(), votes_reward_length=False)
    assert "at equal length 0.450" in reason and "comes from reply length" in reason
    # Users who reward length asked for it: the same candidate passes.
    assert _gate(length_only, EvalConfig(), votes_reward_length=True) == []
    # A win that holds at equal length passes either way; no figure: the raw rule alone.
    assert _gate(_summary(0.8, 2.0, 0.6, lc=0.7), EvalConfig(), votes_reward_length=False) == []
    assert _gate(_summary(0.8, 2.0, 0.6), EvalConfig(), votes_reward_length=False) == []


@pytest.mark.parametrize(
    "summary, words",
    [
        (_summary(0.49, 1.0, 1.0), ["policy 0.490 is below 0.500"]),
        (_summary(0.9, 10.01, 1.0), ["KL to the reference 10.01 nats"]),
        (_summary(0.9, 1.0, 0.2), ["length changed by a factor of 0.20"]),
        (_summary(0.9, 1.0, 2.5), ["factor of 2.50"]),
        (_summary(0.4, 11.0, 3.0), ["win rate", "KL", "length"]),
        (_summary(float("nan"), float("nan"), 1.0), ["win rate", "KL"]),
        (_summary(1.0, 0.0, 1.0, prompts=0), ["no held-out prompts"]),
    ],
)
def test_gate_rejects_with_reasons(summary: EvalSummary, words: list[str]) -> None:
    reasons = _gate(summary, EvalConfig())
    assert len(reasons) == len(words)
    for reason, word in zip(reasons, words, strict=True):
        assert word in reason


# -- schedule decision ---------------------------------------------------------------------

NOW = datetime(2026, 11, 21, 12, tzinfo=UTC)
SCHED = ScheduleConfig(min_new_events=100, interval_minutes=60, min_events=20)


@pytest.mark.parametrize(
    "state, expected",
    [
        (ScheduleState(7, 0, NOW), "operator"),
        (ScheduleState(None, 100, NOW), "events"),
        (ScheduleState(None, 99, NOW - timedelta(minutes=59)), None),
        (ScheduleState(None, 20, NOW - timedelta(minutes=60)), "interval"),
        (ScheduleState(None, 19, NOW - timedelta(minutes=600)), None),
        (ScheduleState(None, 20, None), "interval"),  # never trained: due at once
        (ScheduleState(None, 0, None), None),
    ],
)
def test_decide(state: ScheduleState, expected: str | None) -> None:
    assert decide(state, NOW, SCHED) == expected


# -- run rows and publishing ---------------------------------------------------------------


@pytest.fixture
def sessions(db_url: str) -> sessionmaker:  # type: ignore[type-arg]
    engine = make_engine(db_url)
    upgrade(engine)
    yield make_session_factory(engine)
    engine.dispose()


def test_recorder_writes_progress_and_finishes(sessions: sessionmaker) -> None:  # type: ignore[type-arg]
    rec = RunRecorder(sessions, flush_seconds=0)
    run_id = rec.start("manual", {"seed": 0})
    rec.phase("reward")
    rec.progress(1, 4, {"loss": 0.7})
    time.sleep(0.01)
    rec.progress(2, 4, {"loss": 0.5, "bad": float("nan")})
    with session_scope(sessions) as s:
        run = s.get_one(TrainingRun, run_id)
        assert run.status is RunStatus.RUNNING
        progress = run.metrics["progress"]
        assert (progress["phase"], progress["step"], progress["total"]) == ("reward", 2, 4)
        assert progress["eta_s"] is not None and progress["eta_s"] >= 0
        assert [p["loss"] for p in run.metrics["steps"]["reward"]] == [0.7, 0.5]
        assert "bad" not in run.metrics["steps"]["reward"][1]  # NaN is not stored as JSON
        assert "reward 2/4" in run.logs
    rec.counts["train_pairs"] = 12
    rec.finish(RunStatus.STOPPED, "too little data")
    with session_scope(sessions) as s:
        run = s.get_one(TrainingRun, run_id)
        assert run.status is RunStatus.STOPPED and run.reason == "too little data"
        assert run.finished_at is not None and run.counts == {"train_pairs": 12}
        assert "reward" in run.metrics["phase_seconds"]


def test_orphaned_running_rows_are_failed_and_queued_claimed(sessions: sessionmaker) -> None:  # type: ignore[type-arg]
    with session_scope(sessions) as s:
        s.add_all(
            [
                TrainingRun(status=RunStatus.RUNNING),
                TrainingRun(status=RunStatus.SUCCEEDED),
                TrainingRun(status=RunStatus.QUEUED),
            ]
        )
    assert reap_orphans(sessions) == [1]
    assert reap_orphans(sessions) == []
    assert claim_queued(sessions) == 3
    with session_scope(sessions) as s:
        assert s.get_one(TrainingRun, 1).status is RunStatus.FAILED
        assert "died" in (s.get_one(TrainingRun, 1).reason or "")
        assert s.get_one(TrainingRun, 2).status is RunStatus.SUCCEEDED


def test_atomic_dir_renames_only_on_success(tmp_path: Path) -> None:
    final = tmp_path / "policies" / "v1-run1"
    with pytest.raises(RuntimeError), atomic_dir(final) as tmp:
        (tmp / "weights").write_text("half")
        raise RuntimeError("killed")
    assert not final.exists()
    assert list((tmp_path / "policies").iterdir()) == []
    with atomic_dir(final) as tmp:
        (tmp / "weights").write_text("whole")
    assert (final / "weights").read_text() == "whole"
    with pytest.raises(FileExistsError), atomic_dir(final):
        pass


def test_sweep_and_version_names(sessions: sessionmaker, tmp_path: Path) -> None:  # type: ignore[type-arg]
    art = tmp_path / "artifacts"
    kept = art / publish.POLICIES / "v1-run1"
    orphan = art / publish.POLICIES / "v2-run2"  # renamed, then killed before its row
    staging = art / publish.REWARD_MODELS / ".staging-run3-abcd"
    for d in (kept, orphan, staging):
        d.mkdir(parents=True)
    with session_scope(sessions) as s:
        assert publish.next_version_name(s) == "v1"
        for name, uri in (("v0", tmp_path), ("v1", kept), ("custom", tmp_path)):
            s.add(
                PolicyVersion(
                    name=name,
                    base_model=str(tmp_path),
                    kind=VersionKind.LORA,
                    artifact_uri=str(uri),
                    status=VersionStatus.RETIRED,
                    metrics={},
                )
            )
        s.flush()
        assert publish.next_version_name(s) == "v2"
        removed = publish.sweep(s, art)
    assert sorted(removed) == sorted([orphan, staging])
    assert kept.is_dir() and not orphan.exists() and not staging.exists()


def test_notify_server_reports_failure_without_raising() -> None:
    assert publish.notify_server("", "t", "v1") is not None
    err = publish.notify_server("http://127.0.0.1:9", "t", "v1", timeout=2)
    assert err is not None and "could not reach" in err


def test_train_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    from loopchat.cli import main

    assert main(["train", "--show-config", "--set", "policy.algorithm=ppo"]) == 0
    out = capsys.readouterr().out
    assert 'algorithm = "ppo"' in out and "[evaluation]" in out
    assert main(["train", "--once", "--set", "policy.algorithm=sft"]) == 2
    assert "policy.algorithm must be one of" in capsys.readouterr().err
    assert main(["train"]) == 2
    assert "--once or --schedule" in capsys.readouterr().err
