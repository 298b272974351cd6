"""`loopchat bench loop`'s table and plots from the loop reports of several golds, and its
refusals; the loops themselves run in `tests/test_sim_loop.py`'s way, not here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.simulation.sweep import SweepConfig, SweepError, rows_of, run_gold, slug
from loopchat.cli import main


def _report(wins: list[float | None]) -> dict[str, object]:
    rounds = []
    for r, w in enumerate(wins):
        rounds.append(
            {
                "round": r,
                "evaluation": {
                    "serving": f"v{r}",
                    "win_rate": w,
                    "length_controlled_win_rate": None if w is None else w - 0.05,
                    "words_serving": 40.0 - r,
                    "words_baseline": 40.0,
                },
                "rm_accuracy": None if r == 0 else 0.6 + r / 100,
                "rm_length_controlled_accuracy": None if r == 0 else 0.55,
                "rm_length_baseline_accuracy": None if r == 0 else 0.5,
                "kl_serving": float(r),
            }
        )
    return {"rounds": rounds}


def test_rows_follow_the_report() -> None:
    rows = rows_of("warm", _report([0.5, 0.6, None]))
    assert [r.round for r in rows] == [0, 1, 2]
    assert rows[1].gold_win_rate == 0.6
    assert rows[1].length_controlled_win_rate == pytest.approx(0.55)
    assert rows[1].rm_accuracy == 0.61 and rows[0].rm_accuracy is None
    assert rows[2].gold_win_rate is None and rows[2].kl == 2.0


def test_summary_only_writes_one_table_and_plot(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for gold, wins in (("concise", [0.5, 0.7, 0.8]), ("plain_words", [0.5, 0.55, 0.65])):
        (tmp_path / gold).mkdir()
        (tmp_path / gold / "report.json").write_text(json.dumps(_report(wins)))
    args = ["bench", "loop", "--golds", "concise,plain_words,warm", "--out", str(tmp_path)]
    assert main([*args, "--summary-only"]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if " | " in line]
    assert lines[0].startswith("gold | round | serving | gold win rate vs v0")
    body = [line.split(" | ") for line in lines[2:]]
    assert [(r[0], r[1]) for r in body] == [
        (g, str(i)) for g in ("concise", "plain_words") for i in range(3)
    ]
    assert body[2][3] == "0.800" and body[5][3] == "0.650"
    saved = json.loads((tmp_path / "sweep.json").read_text())
    assert len(saved) == 6 and (tmp_path / "sweep.png").stat().st_size > 0


@pytest.mark.parametrize(
    "args, message",
    [
        (["--golds", "concise,nosuch"], "gold 'nosuch' is not"),
        (["--golds", "concise", "--rounds", "0"], "--rounds >= 1"),
        (["--golds", " , "], "give golds"),
    ],
)
def test_bad_input_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert main(["bench", "loop", "--out", str(tmp_path), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_every_gold_starts_on_a_fresh_product(tmp_path: Path) -> None:
    cfg = SweepConfig(golds=("warm",), out=tmp_path)
    (tmp_path / "warm" / "data").mkdir(parents=True)
    with pytest.raises(SweepError, match="fresh product"):
        run_gold(cfg, "warm", print)
    assert slug("harness.simulation.gold:warm") == "warm" and slug("a b:c/d") == "c_d"
