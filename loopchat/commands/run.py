"""`loopchat run`: the whole service in one command, on embedded defaults.

What runs: first `model prepare` (the bundled model materialized and registered as v0, once),
then the trainer as a child process, `python -m loopchat train --schedule` with this command's
--env-file, settings flags, --train-config and --train-set, and the API server in the
foreground of this process. --no-trainer serves only. The trainer settings are checked before
anything starts, so a bad one fails here rather than in the child after the server is up.

How it stops: when the server returns (Ctrl-C, SIGTERM, or an error), the trainer gets
SIGTERM, 30 seconds to finish, then SIGKILL. If this process dies without that chance
(SIGKILL, the OOM killer), the child still stops: it is started with PARENT_ENV set to this
process's id, and on Linux the trainer then asks the kernel for SIGTERM when its parent dies
(trainer.entry.stay_after_parent).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from loopchat.commands.model import cmd_prepare
from loopchat.commands.serve import cmd_serve
from loopchat.common import Subparsers, add_server_flags, train_config

# Settings flags passed on to the trainer as they were given.
_TRAINER_FLAGS = ("data_dir", "database_url", "model", "host", "port")


def add_parser(subparsers: Subparsers) -> None:
    sp = subparsers.add_parser(
        "run", help="prepare the model, serve, and train on a schedule (embedded defaults)"
    )
    add_server_flags(sp)
    sp.add_argument("--no-trainer", action="store_true", help="serve only")
    sp.add_argument(
        "--train-config", type=Path, metavar="TOML", help="TOML file of trainer settings"
    )
    sp.add_argument(
        "--train-set", action="append", metavar="SECTION.FIELD=VALUE", help="trainer setting"
    )
    sp.set_defaults(func=cmd_run)


def cmd_run(args: argparse.Namespace) -> int:
    """Everything on embedded defaults: prepare the model once, then serve and train."""
    # A bad trainer setting stops here, not in the child after the server is up.
    checked = args.no_trainer or train_config(args.train_config, args.train_set, "loopchat run")
    if not checked:
        return 2
    if cmd_prepare(args) != 0:
        return 2
    trainer = None if args.no_trainer else trainer_process(args)
    try:
        return cmd_serve(args)
    finally:
        if trainer is not None:
            stop_trainer(trainer)


def trainer_argv(args: argparse.Namespace) -> list[str]:
    """`loopchat train --schedule` with this command's options."""
    argv = [sys.executable, "-m", "loopchat"]
    if args.env_file is not None:
        argv += ["--env-file", str(args.env_file)]
    argv += ["train", "--schedule"]
    for key in _TRAINER_FLAGS:
        value = getattr(args, key, None)
        if value is not None:
            argv += [f"--{key.replace('_', '-')}", str(value)]
    if getattr(args, "train_config", None) is not None:
        argv += ["--config", str(args.train_config)]
    for item in getattr(args, "train_set", None) or []:
        argv += ["--set", item]
    return argv


def trainer_process(args: argparse.Namespace) -> subprocess.Popen[bytes]:
    """`loopchat train --schedule` as a child process, with this command's options."""
    from trainer.config import PARENT_ENV

    # The trainer stops when this process dies, even unannounced (SIGKILL, OOM killer).
    return subprocess.Popen(trainer_argv(args), env={**os.environ, PARENT_ENV: str(os.getpid())})


def stop_trainer(trainer: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if the trainer has not ended within 30 seconds."""
    trainer.terminate()
    try:
        trainer.wait(timeout=30)
    except subprocess.TimeoutExpired:
        trainer.kill()
