from __future__ import annotations

from harness.tables import cell, pipe_table


def test_cell_formats_floats_and_marks_missing_values() -> None:
    assert cell(0.66666) == "0.667"
    assert cell(12.345, 1) == "12.3"
    assert cell(None) == "-"
    assert cell(7) == "7"  # ints and strings as they are
    assert cell("v2") == "v2"


def test_pipe_table_has_a_rule_per_column_and_a_line_per_row() -> None:
    lines = pipe_table(["a", "b"], [["1", "2"], ["3", "4"]])
    assert lines == ["a | b", "--- | ---", "1 | 2", "3 | 4"]
    assert pipe_table(["only"], []) == ["only", "---"]


def test_bench_train_table_puts_each_phase_and_metric_in_its_column() -> None:
    from harness.bench.train import PHASES, BenchRow, render
    from trainer.config import TrainConfig

    row = BenchRow(
        events=300,
        engine="transformers",
        status="succeeded",
        phases={"data": 1.25, "reward": 60.0, "policy": 120.5},
        total=181.75,
        counts={"train_pairs": 140},
        metrics={
            "reward": {"accuracy": 0.7},
            "evaluation": {"win_rate": 0.6, "reward_candidate": 1.5, "reward_serving": 1.0},
            "policy": {"draw_s": 90.0, "learn_s": 20.0},
        },
    )
    fast = BenchRow(
        events=300,
        engine="vllm",
        status="succeeded",
        phases={"policy": 50.0},
        total=90.875,
        counts={},
        metrics={"policy": {"draw_s": 22.5, "engine_start_s": 25.0}},
    )
    lines = render([row, fast], TrainConfig()).splitlines()
    head = lines[0].split(" | ")
    cells = dict(zip(head, lines[2].split(" | "), strict=True))
    assert len(head) == 3 + len(PHASES) + 10
    assert (cells["events"], cells["pairs"], cells["reward"], cells["policy"]) == (
        "300",
        "140",
        "60.0",
        "120.5",
    )
    assert (cells["check_reward"], cells["total s"], cells["RM acc"]) == ("-", "181.8", "0.700")
    assert (cells["reward gain"], cells["KL nats"]) == ("0.500", "-")
    assert (cells["rollouts"], cells["policy: draw"], cells["engine start"]) == (
        "transformers",
        "90.0",
        "-",
    )
    second = dict(zip(head, lines[3].split(" | "), strict=True))
    assert (second["rollouts"], second["engine start"]) == ("vllm", "25.0")
    assert "300 events, transformers: succeeded" in lines
    assert "300 events: vLLM rollouts draw 4.00x faster, the round 2.00x faster" in "\n".join(lines)
