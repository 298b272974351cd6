"""`loopchat bench reward` on the tiny model: every variant trains a fresh RM on the same
votes and is measured on the same held-out pairs; bad input is refused before training."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loopchat.cli import main


def _tables(out: str) -> list[list[list[str]]]:
    """Each table on stdout (tables are separated by a blank line), rows split in cells."""
    blocks = [b for b in out.strip().split("\n\n") if b.strip()]
    return [[line.split(" | ") for line in b.splitlines()] for b in blocks]


def _rows(out: str) -> list[list[str]]:
    table = _tables(out)[0]
    assert " | ".join(table[0]).startswith("votes | variant | train pairs")
    return table[2:]


def test_variants_train_on_the_same_votes(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["bench", "reward", "--model", str(tiny_model_dir), "--data-dir", str(tmp_path)]
    shared = ["--events", "80", "--set", "reward.max_length=96", "--set", "reward.epochs=1"]
    variants = ["--variant", "a", "--variant", "again", "--variant", "lora reward.kind=lora"]
    assert main([*base, *shared, *variants]) == 0
    captured = capsys.readouterr()
    rows = _rows(captured.out)
    assert [r[1] for r in rows] == ["a", "again", "lora"]
    assert {r[0] for r in rows} == {"stored"}
    assert "[bench reward] stored lora" in captured.err and "step 1/" in captured.err
    assert rows[2][-1] == "reward.kind=lora"
    assert rows[0][-1] == "(the config as given)"
    # the same training and held-out pairs, and "the shorter reply wins" on the same pairs
    assert {tuple(r[2:5]) for r in rows} == {tuple(rows[0][2:5])}
    assert int(rows[0][2]) > 0 and int(rows[0][4]) > 0
    assert len({r[9] for r in rows}) == 1
    # a variant with nothing changed is the same run: the same accuracy
    assert rows[0][5:11] == rows[1][5:11]
    assert all(0.0 <= float(r[5]) <= 1.0 for r in rows)
    # no gold: nothing to compare with
    assert rows[0][7] == rows[0][8] == "-"


def _pool(tmp_path: Path) -> Path:
    """Three replies to each of 60 prompts, as `--replies` keeps them."""
    pool = tmp_path / "replies.jsonl"
    lines = []
    for i in range(60):
        lines.append(
            json.dumps(
                {
                    "prompt": f"Tell me about topic {i}.",
                    "replies": [
                        f"Sure! You will love topic {i}, friend!",
                        f"Topic {i} is a subject of some note in the literature.",
                        f"Topic {i}: thanks for asking. It is good.",
                    ],
                }
            )
        )
    pool.write_text("\n".join(lines) + "\n")
    return pool


def test_golds_and_sizes_give_learning_curves_on_the_same_replies(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pool = _pool(tmp_path)
    out = tmp_path / "curves"
    args = ["bench", "reward", "--model", str(tiny_model_dir), "--data-dir", str(tmp_path)]
    args += ["--replies", str(pool), "--gold", "warm", "--gold", "concise"]
    args += ["--sizes", "20,all", "--set", "reward.max_length=64", "--out", str(out)]
    assert main(args) == 0
    capsys_out = capsys.readouterr().out
    rows = _rows(capsys_out)
    assert [(r[0], r[2]) for r in rows][:1] == [("warm", "20")]
    assert [r[0] for r in rows] == ["warm", "warm", "concise", "concise"]
    assert int(rows[1][2]) > 20  # all of them
    # the same held-out pairs at every size of one gold's curve
    assert rows[0][4] == rows[1][4] and rows[2][4] == rows[3][4]
    for r in rows:
        assert 0.5 <= float(r[8]) <= 1.0  # the noise ceiling: votes agreeing with the gold
        assert 0.0 <= float(r[7]) <= 1.0  # the RM against the gold's order
    assert (out / "rows.json").is_file() and (out / "curves.png").stat().st_size > 0
    # each gold's correlation with reply length and base rate on these 180 replies: the
    # longest reply is never the warm one here, and concise scores short replies higher
    profile = {r[0]: r for r in _tables(capsys_out)[1][2:]}
    assert set(profile) == {"warm", "concise"}
    assert all(int(p[1]) == 180 for p in profile.values())
    assert float(profile["concise"][2]) < -0.5
    golds = json.loads((out / "golds.json").read_text())
    assert golds["warm"]["replies"] == 180 and 0.0 <= golds["warm"]["base_rate"] <= 1.0


def test_an_adversary_is_trained_on_with_the_screen_off_and_on(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["bench", "reward", "--model", str(tiny_model_dir), "--data-dir", str(tmp_path)]
    args += ["--replies", str(_pool(tmp_path)), "--gold", "concise", "--adversary", "0.3"]
    assert main([*args, "--set", "reward.max_length=64"]) == 0
    captured = capsys.readouterr()
    rows = _rows(captured.out)
    label = "concise +adv0.30x1"
    assert [r[0] for r in rows] == ["concise", f"{label} screen off", f"{label} screen on"]
    assert len({r[4] for r in rows}) == 1  # measured on the same honest held-out pairs
    clean, off, on = (int(r[2]) for r in rows)
    assert off > on >= clean  # the screen set some of the scripted votes aside
    assert f"[bench reward] {label} screen off: 77 of 257 comparisons" in captured.err
    assert "set aside" in captured.err


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
        (["--events", "80", "--sizes", "10,none"], "--sizes: 'none' is not"),
        (["--events", "80", "--gold", "nosuch"], "gold 'nosuch' is not"),
        (["--replies", "x.jsonl", "--per-prompt", "1"], "--per-prompt must be at least 2"),
        (["--events", "80", "--adversary", "0.3"], "--adversary needs --gold"),
        (["--events", "80", "--gold", "warm", "--adversary", "1"], "share must be in [0, 1)"),
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
