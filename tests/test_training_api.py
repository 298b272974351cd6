"""Operator API for training rounds and the trainer's notification, with a real server app
and the real schedule tick (a queued round with no votes stops at its data phase)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from store.db.models import RunStatus
from store.db.session import make_engine, make_session_factory
from trainer.config import TrainConfig
from trainer.round import RoundContext
from trainer.scheduler import Schedule


def test_queue_a_round_and_watch_it(make_client: Any, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    client = make_client(url)
    assert client.get("/v1/admin/training-runs").json() == []

    r = client.post("/v1/admin/training-runs")
    assert r.status_code == 201
    queued = r.json()
    assert queued["status"] == "queued" and queued["trigger"] == "operator"
    again = client.post("/v1/admin/training-runs")  # one queued round is enough
    assert again.status_code == 200 and again.json()["id"] == queued["id"]

    engine = make_engine(url)
    try:
        ctx = RoundContext(make_session_factory(engine), tmp_path / "artifacts", tmp_path)
        outcome = Schedule(ctx, TrainConfig()).tick()
    finally:
        engine.dispose()
    assert outcome is not None and outcome.run_id == queued["id"]
    assert outcome.status is RunStatus.STOPPED

    runs = client.get("/v1/admin/training-runs").json()
    assert [(x["id"], x["status"]) for x in runs] == [(queued["id"], "stopped")]
    detail = client.get(f"/v1/admin/training-runs/{queued['id']}").json()
    assert "no feedback in the window" in detail["reason"]
    assert detail["trigger"] == "operator" and detail["finished_at"] is not None
    assert "phase data" in detail["logs"]
    assert detail["metrics"]["config"]["policy"]["algorithm"] == TrainConfig().policy.algorithm
    assert detail["progress"]["phase"] == "done"
    assert set(detail["summary"].values()) == {None}  # stopped before the reward model


def test_the_run_list_summarises_each_round(make_client: Any, tmp_path: Path) -> None:
    from store.db.models import TrainingRun
    from store.db.session import session_scope

    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    client = make_client(url)
    evaluation = {
        "win_rate": 0.625,
        "length_controlled_win_rate": 0.55,
        "check_win_rate": 0.5,
        "kl_candidate": 1.25,
        "kl_serving": 0.0,
        "length_ratio": 1.1,
        "replies": 16.0,
    }
    engine = make_engine(url)
    try:
        with session_scope(make_session_factory(engine)) as s:
            s.add(
                TrainingRun(
                    status=RunStatus.REJECTED,
                    metrics={
                        "reward": {
                            "accuracy": 0.75,
                            "n": 40.0,
                            "length_controlled_accuracy": 0.6,
                            "length_baseline_accuracy": 0.7,
                            "votes_longer_won": 0.3,
                            "votes_reward_length": True,
                        },
                        "check_reward": {"accuracy": 0.7},
                        "evaluation": evaluation,
                    },
                )
            )
            # stopped after the reward model; a figure that is not a number reads as null
            s.add(
                TrainingRun(
                    status=RunStatus.STOPPED,
                    metrics={"reward": {"accuracy": "n/a"}, "evaluation": 3},
                )
            )
    finally:
        engine.dispose()
    full, stopped = sorted(client.get("/v1/admin/training-runs").json(), key=lambda r: r["id"])
    assert full["summary"] == {
        "rm_accuracy": 0.75,
        "rm_length_controlled_accuracy": 0.6,
        "rm_length_baseline_accuracy": 0.7,
        "votes_longer_won": 0.3,
        "votes_reward_length": True,
        "check_rm_accuracy": 0.7,
        "win_rate": 0.625,
        "length_controlled_win_rate": 0.55,
        "check_win_rate": 0.5,
        "kl_candidate": 1.25,
        "kl_serving": 0.0,
        "length_ratio": 1.1,
    }
    assert "metrics" not in full  # the detail still has them all
    assert set(stopped["summary"].values()) == {None}
    detail = client.get(f"/v1/admin/training-runs/{full['id']}").json()
    assert detail["summary"] == full["summary"]


def test_training_api_needs_the_operator_and_says_not_found(make_client: Any) -> None:
    client = make_client()
    assert client.get("/v1/admin/training-runs/999").status_code == 404
    assert client.get("/v1/admin/training-runs?limit=0").status_code == 422
    anon = make_client(auth=False)
    r = anon.post("/v1/admin/training-runs")
    assert r.status_code == 401 and r.json()["error"]["type"]
    r = anon.get("/v1/admin/training-runs", headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 403


def test_candidate_notification(make_client: Any) -> None:
    client = make_client()
    r = client.post("/v1/admin/policies/notify", json={"version": "v9"})
    assert r.status_code == 404
    r = client.post("/v1/admin/policies/notify", json={"version": "v0"})
    assert r.status_code == 202
    # Only a candidate is admitted (tests/test_policies.py follows one to the canary).
    assert r.json() == {"version": "v0", "status": "serving", "accepted": False}
    assert client.post("/v1/admin/policies/notify", json={}).status_code == 422


def test_schedule_process_runs_a_queued_round_and_stops_on_sigterm(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    from sqlalchemy import select

    from store.db.migrate import upgrade
    from store.db.models import TrainingRun
    from store.db.repository import ensure_base_version
    from store.db.session import session_scope

    engine = make_engine(f"sqlite:///{tmp_path / 'loopchat.db'}")
    upgrade(engine)
    sessions = make_session_factory(engine)
    with session_scope(sessions) as s:
        ensure_base_version(s, tiny_model_dir)
        s.add(TrainingRun(status=RunStatus.QUEUED, metrics={"trigger": "operator"}))
    env = {**os.environ, "LOOPCHAT_DATA_DIR": str(tmp_path)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "loopchat",
            "train",
            "--schedule",
            "--set",
            "schedule.poll_seconds=0.5",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        status = None
        while time.monotonic() < deadline and status != RunStatus.STOPPED:
            time.sleep(0.5)
            with session_scope(sessions) as s:
                status = s.scalars(select(TrainingRun.status)).one()
        assert status is RunStatus.STOPPED, "the schedule did not run the queued round"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        assert proc.stderr is not None and "trainer schedule" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        engine.dispose()


def test_a_trainer_started_by_run_stops_when_run_is_killed(tmp_path: Path) -> None:
    """`loopchat run` marks its trainer with its pid; if run dies unannounced (SIGKILL,
    the OOM killer) the trainer gets SIGTERM instead of living on (seen: the trainer of a
    killed run, orphaned and idle with 2.1 GB, still there 44 minutes later)."""
    import contextlib
    import os
    import signal
    import subprocess
    import sys
    import time

    import psutil

    parent_code = (  # `loopchat run`'s own way of starting its trainer
        "import argparse, time\n"
        "from loopchat.commands.run import trainer_process\n"
        "args = argparse.Namespace(env_file=None, train_config=None,\n"
        "                          train_set=['schedule.poll_seconds=0.5'])\n"
        "print(trainer_process(args).pid, flush=True)\n"
        "time.sleep(300)\n"
    )
    env = {**os.environ, "LOOPCHAT_DATA_DIR": str(tmp_path)}
    log = tmp_path / "trainer.log"  # a file, not a pipe: a full pipe would block the logging
    with log.open("w") as err:
        parent = subprocess.Popen(
            [sys.executable, "-c", parent_code],
            env=env,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
    trainer = None
    try:
        assert parent.stdout is not None
        trainer = psutil.Process(int(parent.stdout.readline()))
        deadline = time.monotonic() + 60
        while "trainer schedule" not in log.read_text():  # the schedule is running
            assert time.monotonic() < deadline, f"no schedule:\n{log.read_text()[-3000:]}"
            time.sleep(0.2)
        assert trainer.is_running() and trainer.status() != psutil.STATUS_ZOMBIE
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)

        def gone() -> bool:
            try:
                return trainer.status() == psutil.STATUS_ZOMBIE  # exited, not reaped yet
            except psutil.NoSuchProcess:
                return True

        deadline = time.monotonic() + 30
        while not gone() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert gone(), "the trainer outlived the process that started it"
        assert "signal 15: stopping the schedule" in log.read_text()
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        if trainer is not None:
            with contextlib.suppress(psutil.NoSuchProcess):
                trainer.kill()
