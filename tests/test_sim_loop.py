"""The closed loop (harness/simulation/loop.py) and its report (report.py).

Unit tests of the pure parts run without a server. The smoke loop runs 2 rounds on the
tiny talker end to end through the HTTP API only: a real server in this process, a real
`loopchat train --schedule` process on the same data directory and database.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from harness.simulation import loop as loop_module
from harness.simulation.loop import (
    PHASES,
    GoldEvaluation,
    LoopReport,
    RoundRecord,
    TrainingRecord,
    close_verdict,
    gold_win_rate,
    merge_thumbs,
    null_fields,
    run_loop,
    thumbs_table,
    totals_of,
)
from harness.simulation.prompts import load_prompts
from harness.simulation.report import PLOTS, replot, write_report
from harness.simulation.run import VersionStats
from service.settings import Settings
from tests.conftest import ADMIN_TOKEN
from tests.fakes import build_tiny_talker, good_share
from tests.servers import running_server


def test_gold_win_rate_counts_ties_as_half() -> None:
    out = gold_win_rate([0.9, 0.5, 0.2, 0.4], [0.1, 0.5, 0.3, 0.4])
    assert out == {"win_rate": (1 + 0.5 * 2) / 4, "wins": 1, "ties": 2, "losses": 1, "n": 4}
    assert gold_win_rate([], [])["win_rate"] is None
    with pytest.raises(ValueError):
        gold_win_rate([1.0], [])


def test_thumbs_table_has_wilson_intervals_and_merges_rounds() -> None:
    per = {"v0": VersionStats(thumbs_up=8, thumbs_down=2), "v1": VersionStats(replies=3)}
    table = thumbs_table(per)
    assert table["v0"]["rate"] == 0.8 and table["v0"]["n"] == 10
    assert 0.0 < table["v0"]["low"] < 0.8 < table["v0"]["high"] < 1.0
    assert table["v1"] == {
        "thumbs_up": 0,
        "thumbs_down": 0,
        "n": 0,
        "rate": None,
        "low": None,
        "high": None,
    }
    # the same from to_dict() rows, and summed over rounds
    assert thumbs_table({k: v.to_dict() for k, v in per.items()}) == table
    merged = merge_thumbs([table, thumbs_table({"v0": VersionStats(thumbs_up=2, thumbs_down=8)})])
    assert merged["v0"]["n"] == 20 and merged["v0"]["rate"] == 0.5


def _evaluation(serving: str, win: float | None, gold: float | None) -> GoldEvaluation:
    return GoldEvaluation(serving, "v0", 10, 0, gold, 0.4, win, 5, 2, 3, 12.0, 20.0, False)


def hand_made_report() -> LoopReport:
    r0 = RoundRecord(0, "v0", None, serving_end="v0")
    r0.evaluation = _evaluation("v0", 0.5, 0.4)
    r0.kl_serving = r0.sqrt_kl_serving = 0.0
    r0.wall_s = {"vote": None, "train": None, "canary": None, "evaluate": 3.0}
    r1 = RoundRecord(1, "v0", None, serving_end="v1", canary_end="v2", votes_requested=50)
    r1.votes_recorded = 50
    r1.thumbs = thumbs_table(
        {"v0": VersionStats(thumbs_up=10, thumbs_down=15), "v1": VersionStats(thumbs_up=3)}
    )
    r1.training = TrainingRecord(
        1,
        "succeeded",
        None,
        "v2",
        40.0,
        {"rm_accuracy": 0.7, "kl_candidate": 1.2, "win_rate": 0.6},
        0.8,
        0.3,
        {},
        {},
    )
    r1.evaluation = _evaluation("v1", 0.65, 0.55)
    r1.kl_serving, r1.sqrt_kl_serving, r1.kl_candidate = 0.8, math.sqrt(0.8), 1.2
    r1.wall_s = {"vote": 20.0, "train": 40.0, "canary": 1.0, "evaluate": 4.0}
    r1.promoted = ["v1"]
    report = LoopReport(config={"rounds": 1, "gold": "x:y"}, rounds=[r0, r1])
    report.totals = totals_of(report)
    return report


def _check_images(out: Path) -> None:
    import matplotlib.image

    for name in PLOTS:
        path = out / name
        assert path.is_file() and path.stat().st_size > 1000, name
        img = matplotlib.image.imread(str(path))
        assert img.shape[0] > 100 and img.shape[1] > 100, name


def test_write_report_from_a_hand_made_report_and_replot(tmp_path: Path) -> None:
    report = hand_made_report()
    assert report.totals["final_win_rate"] == 0.65
    assert report.totals["wall_s"]["train"] == 40.0
    assert report.totals["promoted"] == ["v1"]
    assert report.totals["versions_published"] == ["v2"]
    write_report(report.to_dict(), tmp_path)
    data = json.loads((tmp_path / "report.json").read_text())
    assert [r["round"] for r in data["rounds"]] == [0, 1]
    assert data["rounds"][1]["training"]["summary"]["rm_accuracy"] == 0.7
    _check_images(tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "| 1 | v1 | v2 | 50/50 | 1 | succeeded |" in md
    for name in PLOTS:
        (tmp_path / name).unlink()
    replot(tmp_path)  # from report.json alone
    _check_images(tmp_path)


def test_null_fields_lists_nested_nulls() -> None:
    from dataclasses import asdict

    names = null_fields(asdict(hand_made_report().rounds[1]))
    assert "server_ratings" in names and "training.reason" in names
    assert "training.summary.rm_accuracy" not in names


# -- the smoke loop --------------------------------------------------------------------------

# Small trainer settings for the tiny talker on 2 cores (tests/test_trainer_round.py's,
# smaller), with loose gates so a candidate is likely to be published; the test does not
# need it to be.
TRAIN_SET = [
    "threads=2",
    "schedule.poll_seconds=0.5",
    # only the loop's queued rounds: no round of the schedule's own
    "schedule.min_new_events=100000",
    "schedule.min_events=100000",
    "schedule.interval_minutes=100000",
    "data.heldout_fraction=0.25",
    "data.min_train_pairs=4",
    "data.min_heldout_pairs=2",
    "reward.epochs=4",
    "reward.batch_size=8",
    "reward.learning_rate=2e-3",
    "reward.max_length=96",
    "reward.min_heldout_accuracy=0.0",
    "reward.check_model=false",
    "policy.algorithm=rloo",
    "policy.prompts_per_round=16",
    "policy.batch_prompts=8",
    "policy.samples_per_prompt=4",
    "policy.max_new_tokens=16",
    "policy.learning_rate=1.5e-3",
    "policy.kl_coef=0.02",
    "evaluation.max_prompts=8",
    "evaluation.max_new_tokens=16",
    "evaluation.samples_per_prompt=2",
    "evaluation.min_win_rate=0.0",
    "evaluation.max_length_ratio=100",
    "evaluation.min_length_ratio=0.01",
]
VOTES = 48


def test_an_unchanged_version_is_scored_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The gold evaluation samples a version once and reuses its replies in later rounds,
    so the serving version's gold moves only when the version changes (seeded sampling does
    not repeat exactly: sampling an unchanged v1 again moved its gold from 0.773 to 0.818)."""
    prompts = load_prompts("heldout")[:4]
    seeds = list(range(len(prompts)))
    calls: list[str] = []

    async def fake_sample(
        base_url: str, version: str, prompts: Any, seeds: Any, gold: Any, **_: Any
    ) -> tuple[dict[int, Any], int]:
        calls.append(version)  # each call answers differently, as vLLM's sampling does
        text = " ".join(["word"] * (len(calls) + 2))
        return {
            i: loop_module._Sample(p, seeds[i], text, float(gold(p.text, text)))
            for i, p in enumerate(prompts)
        }, 0

    monkeypatch.setattr(loop_module, "_sample_version", fake_sample)

    def gold(prompt: str, reply: str) -> float:
        return 1.0 / len(reply.split())

    baseline = {
        i: loop_module._Sample(p, seeds[i], "a b c d e f g h", gold(p.text, "a b c d e f g h"))
        for i, p in enumerate(prompts)
    }
    sampled: dict[str, Any] = {"v0": baseline}

    def evaluate(version: str) -> GoldEvaluation:
        return loop_module._evaluate(
            "http://127.0.0.1:9", version, baseline, prompts, seeds, gold,
            temperature=0.7, max_tokens=8, concurrency=2, admin_token="t", sampled=sampled,
        )  # fmt: skip

    v0 = evaluate("v0")
    assert calls == [] and v0.reused and v0.reused_baseline and v0.win_rate == 0.5
    first = evaluate("v1")
    assert calls == ["v1"] and not first.reused and first.gold_serving == 1 / 3
    assert first.win_rate == 1.0
    again = evaluate("v1")
    assert calls == ["v1"] and again.reused and not again.reused_baseline
    assert (again.gold_serving, again.win_rate) == (first.gold_serving, first.win_rate)
    new = evaluate("v3")
    assert calls == ["v1", "v3"] and not new.reused and new.gold_serving == 1 / 4


def test_close_verdict_promotes_a_canary_that_won_more_than_half() -> None:
    def verdict(version: str, n: int, rate: float | None) -> dict[str, Any]:
        metrics = {"comparisons": n, "wins": None if rate is None else rate * n, "win_rate": rate}
        return {"version": version, "verdict": "wait", "reason": "", "metrics": metrics}

    action, why = close_verdict("v2", verdict("v2", 210, 0.543), 30)
    assert action == "promote" and "0.543 of 210" in why
    assert close_verdict("v2", verdict("v2", 210, 0.5), 30)[0] == "retire"  # a tie is no gain
    assert close_verdict("v2", verdict("v2", 40, 0.45), 30)[0] == "retire"
    action, why = close_verdict("v2", verdict("v2", 29, 0.9), 30)
    assert action is None and "29 of 30" in why  # too few comparisons: keeps waiting
    assert close_verdict("v2", verdict("v1", 210, 0.9), 30)[0] is None  # about another canary
    assert close_verdict("v2", None, 30)[0] is None


def good_words(prompt: str, reply: str) -> float:
    """A preference the project does not ship: the tiny talker's good words. The smoke
    loop plugs it in as `tests.test_sim_loop:good_words`, with no code change."""
    return good_share(reply)


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_two_round_smoke_loop_through_the_http_api(tmp_path: Path) -> None:
    talker = build_tiny_talker(tmp_path / "talker")
    data = tmp_path / "data"
    data.mkdir()
    db = f"sqlite:///{data / 'loopchat.db'}"
    settings = Settings(
        data_dir=data,
        database_url=db,
        model=talker,
        engine="transformers",
        admin_token=ADMIN_TOKEN,
        policy_poll_seconds=1,
        default_max_tokens=16,
        vote_rate_per_minute=100000,
        # the simulator plays the proxy in front of its users: each comes from an address
        # of its own, so 12 users get sessions where one address may start only 2
        trusted_proxy_header="X-Forwarded-For",
        session_mints_per_address="2/hour",
    )
    out = tmp_path / "report"
    lines: list[str] = []
    start = time.monotonic()
    with running_server(settings, ready_timeout=120) as base:
        env = {
            **os.environ,
            "LOOPCHAT_DATA_DIR": str(data),
            "LOOPCHAT_DATABASE_URL": db,
            "LOOPCHAT_MODEL": str(talker),
            "LOOPCHAT_ADMIN_TOKEN": ADMIN_TOKEN,
        }
        argv = [sys.executable, "-m", "loopchat", "train", "--schedule"]
        for item in [*TRAIN_SET, f"notify_url={base}"]:
            argv += ["--set", item]
        # The trainer's log goes to a file: an unread pipe fills up and blocks its logging.
        trainer_log = open(tmp_path / "trainer.log", "w")  # noqa: SIM115
        trainer = subprocess.Popen(
            argv, env=env, stdout=subprocess.DEVNULL, stderr=trainer_log, text=True
        )
        try:
            report = run_loop(
                base,
                ADMIN_TOKEN,
                rounds=2,
                votes_per_round=VOTES,
                gold="tests.test_sim_loop:good_words",
                seed=1,
                max_tokens=16,
                eval_samples=8,
                out_dir=out,
                progress=lines.append,
                promote="close",
                close_min_comparisons=5,
                train_timeout_s=600,
                poll_s=0.5,
                users=6,
                concurrency=2,
            )
        finally:
            trainer.send_signal(signal.SIGTERM)
            try:
                code = trainer.wait(timeout=60)
            except subprocess.TimeoutExpired:
                trainer.kill()
                trainer.wait()
                code = None
            trainer_log.close()
            stderr = (tmp_path / "trainer.log").read_text()
    elapsed = time.monotonic() - start
    print(f"smoke loop: {elapsed:.0f} s", *lines, sep="\n")
    assert report.rounds[-1].round == 2
    assert code == 0, f"the trainer did not exit cleanly on SIGTERM:\n{stderr[-3000:]}"
    assert "trainer schedule" in stderr

    data_json: dict[str, Any] = json.loads((out / "report.json").read_text())
    rounds = data_json["rounds"]
    assert [r["round"] for r in rounds] == [0, 1, 2]
    assert data_json["config"]["gold"] == "tests.test_sim_loop:good_words"
    assert not data_json["stopped_early"], data_json["stop_reason"]
    fields = set(RoundRecord.__dataclass_fields__)
    for r in rounds:
        assert set(r) == fields, r["round"]
        for name in null_fields(r):
            assert r["nulls"].get(name), f"round {r['round']}: {name} is null with no reason"
        ev = r["evaluation"]
        assert ev["samples"] == 8 and ev["gold_serving"] is not None
        assert 0.0 <= ev["win_rate"] <= 1.0
    assert rounds[0]["evaluation"]["win_rate"] == 0.5
    for r in rounds[1:]:
        assert r["votes_requested"] == VOTES and r["votes_recorded"] == VOTES
        t = r["training"]
        assert isinstance(t["run_id"], int)
        assert t["status"] in ("succeeded", "stopped", "rejected", "failed"), t
        assert set(t["summary"]) >= {"rm_accuracy", "win_rate", "kl_candidate"}
        assert set(r["wall_s"]) == set(PHASES)
        assert r["wall_s"]["vote"] > 0 and r["wall_s"]["train"] > 0
        sim = r["simulation"]
        assert 0 < sim["gold_decided"] <= sim["comparisons"]
        assert 0.0 <= sim["gold_agreement"] <= 1.0 and 0.5 <= sim["accuracy_ceiling"] <= 1.0
        if t["status"] == "succeeded":
            assert r["candidate"] == t["policy_version"]
            assert r["candidate_status"] in ("canary", "serving", "retired", "failed")
    # promote="close": a canary still waiting after round 2's votes was decided by its
    # live record, as the server reported it, before round 2's training
    r2 = rounds[2]
    canary = r2["promotion"]["canary_after_votes"]
    if canary:
        verdict = r2["promotion"]["verdict"]
        action, why = close_verdict(canary, verdict, 5)
        assert r2["promotion"]["reason"] == why
        if action is None:
            assert r2["promotion"]["action"] is None
        else:
            assert r2["promotion"]["action"] == f"{action} {canary}"
            assert canary in (r2["promoted"] if action == "promote" else r2["retired"])
        if action == "promote":
            assert r2["evaluation"]["serving"] == canary
            assert r2["evaluation"]["reused_baseline"] is False
    assert all(not r["other_runs"] for r in rounds), "the schedule ran a round of its own"
    totals = data_json["totals"]
    assert totals["votes_recorded"] == 2 * VOTES
    assert sum(totals["training_runs"].values()) == 2
    _check_images(out)
    assert "| round |" in (out / "report.md").read_text()
