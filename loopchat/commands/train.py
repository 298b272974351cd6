"""`loopchat train --once | --schedule`: training rounds from the stored votes."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from loopchat.common import Subparsers, add_server_flags, settings_from, train_config


def add_parser(subparsers: Subparsers) -> None:
    sp = subparsers.add_parser("train", help="iterated online RLHF rounds from the stored votes")
    add_server_flags(sp)  # host/port: the server to notify of new candidates
    mode = sp.add_mutually_exclusive_group()
    mode.add_argument("--once", action="store_true", help="run one round now")
    mode.add_argument("--schedule", action="store_true", help="run rounds as votes arrive")
    sp.add_argument("--config", type=Path, help="TOML file of trainer settings")
    sp.add_argument(
        "--set",
        action="append",
        metavar="SECTION.FIELD=VALUE",
        help="override one setting, e.g. --set policy.algorithm=ppo (repeatable)",
    )
    sp.add_argument(
        "--show-config", action="store_true", help="print every setting with its help and exit"
    )
    sp.set_defaults(func=cmd_train)


def cmd_train(args: argparse.Namespace) -> int:
    from trainer.config import describe

    cfg = train_config(args.config, args.set, "loopchat train")
    if cfg is None:
        return 2
    if args.show_config:
        print(describe(cfg), end="")
        return 0
    if not (args.once or args.schedule):
        print("loopchat train: say --once or --schedule", file=sys.stderr)
        return 2
    from trainer.entry import run_trainer

    return run_trainer(settings_from(args), cfg, schedule=args.schedule)
