"""The `loopchat` parser as assembled from its command modules, without running a command."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest

from loopchat.cli import build_parser
from loopchat.commands.run import trainer_argv

# Every leaf command of the CLI contract (DESIGN.md) with the function that runs it.
LEAVES = {
    ("run",): "cmd_run",
    ("serve",): "cmd_serve",
    ("model", "prepare"): "cmd_prepare",
    ("train", "--once"): "cmd_train",
    ("bench", "serve"): "cmd_bench_serve",
    ("bench", "swap"): "cmd_bench_swap",
    ("bench", "train"): "cmd_bench_train",
    ("bench", "reward"): "cmd_bench_reward",
    ("keys", "create", "--name", "n"): "cmd_keys",
    ("keys", "list"): "cmd_keys",
    ("keys", "revoke", "k"): "cmd_keys",
    ("policy", "list"): "cmd_policy",
    ("policy", "events"): "cmd_policy",
    ("policy", "ratings"): "cmd_policy",
    ("policy", "promote", "v1"): "cmd_policy",
    ("policy", "rollback"): "cmd_policy",
    ("policy", "retire", "v1"): "cmd_policy",
    ("openapi",): "cmd_openapi",
    ("export",): "cmd_export",
    ("simulate",): "cmd_simulate",
}


@pytest.mark.parametrize("argv", list(LEAVES), ids=" ".join)
def test_every_command_parses_to_its_function(argv: tuple[str, ...]) -> None:
    args = build_parser().parse_args(list(argv))
    assert args.func.__name__ == LEAVES[argv]


def test_help_lists_the_commands_in_order(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "{run,serve,model,train,bench,keys,policy,openapi,export,simulate}" in out


def test_run_starts_the_trainer_with_its_own_options() -> None:
    train = ["--train-config", "t.toml", "--train-set", "a.b=1", "--train-set", "c.d=2"]
    args = build_parser().parse_args(
        ["--env-file", "x.env", "run", "--port", "9000", "--data-dir", "d", *train]
    )
    assert trainer_argv(args) == [
        sys.executable,
        "-m",
        "loopchat",
        "--env-file",
        "x.env",
        "train",
        "--schedule",
        "--data-dir",
        "d",
        "--port",
        "9000",
        "--config",
        "t.toml",
        "--set",
        "a.b=1",
        "--set",
        "c.d=2",
    ]


def test_trainer_argv_reads_only_what_it_is_given() -> None:
    args = argparse.Namespace(env_file=None, train_config=None, train_set=None)
    assert trainer_argv(args) == [sys.executable, "-m", "loopchat", "train", "--schedule"]
    assert build_parser().parse_args(["run"]).env_file is None
    assert isinstance(build_parser().parse_args(["--env-file", "e", "serve"]).env_file, Path)
