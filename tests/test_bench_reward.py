"""`loopchat bench reward` on the tiny model: every variant trains a fresh RM on the same
votes and is measured on the same held-out pairs; bad input is refused before training."""

from __future__ import annotations

from pathlib import Path

import pytest

from loopchat.cli import main


def _rows(out: str) -> list[list[str]]:
    lines = [line for line in out.splitlines() if line.strip()]
    assert lines[0].startswith("variant | train pairs")
    return [line.split(" | ") for line in lines[2:]]


def test_variants_train_on_the_same_votes(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["bench", "reward", "--model", str(tiny_model_dir), "--data-dir", str(tmp_path)]
    shared = ["--events", "80", "--set", "reward.max_length=96", "--set", "reward.epochs=1"]
    variants = ["--variant", "a", "--variant", "again", "--variant", "all reward.lora_layers=0"]
    assert main([*base, *shared, *variants]) == 0
    captured = capsys.readouterr()
    rows = _rows(captured.out)
    assert [r[0] for r in rows] == ["a", "again", "all"]
    assert "[bench reward] all: step 1/" in captured.err  # progress while it trains
    assert rows[2][-1] == "reward.lora_layers=0"
    assert rows[0][-1] == "(the config as given)"
    # the same training and held-out pairs, and "the shorter reply wins" on the same pairs
    assert {tuple(r[1:4]) for r in rows} == {tuple(rows[0][1:4])}
    assert int(rows[0][1]) > 0 and int(rows[0][3]) > 0
    assert len({r[5] for r in rows}) == 1
    # a variant with nothing changed is the same seeded run: the same accuracy
    assert rows[0][4:8] == rows[1][4:8]
    assert all(0.0 <= float(r[4]) <= 1.0 for r in rows)


@pytest.mark.parametrize(
    "variants, message",
    [
        (["--variant", "a reward.epochs=zero"], "variant a: reward.epochs: expected int"),
        (["--variant", "a", "--variant", "a"], "variant names repeat"),
        (["--variant", "a data.heldout_fraction=0.5"], "give data settings with --set"),
        (["--variant", "reward.epochs=1"], "start with a name"),
        (["--events", "0"], "--events must be at least 1"),
        (["--until", "yesterday"], "is not an ISO time"),
        (["--events", "80", "--until", "2000-01-01"], "it needs some of both"),  # votes after
        ([], "it needs some of both"),  # the data directory holds no votes
    ],
)
def test_bad_input_is_refused(
    tiny_model_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    variants: list[str],
    message: str,
) -> None:
    args = ["bench", "reward", "--model", str(tiny_model_dir), "--data-dir", str(tmp_path)]
    assert main([*args, *variants]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
