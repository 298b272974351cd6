"""The `loopchat` command line (public contract in DESIGN.md).

`build_parser` assembles the command groups of `loopchat.commands`, one module each, in the
order `loopchat --help` lists them; `main` parses, sets up logging and runs the command.
Flags and helpers every command shares are in `loopchat.common`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from loopchat.commands import (
    bench,
    export,
    keys,
    model,
    openapi,
    policy,
    run,
    serve,
    simulate,
    train,
)
from loopchat.common import setup_logging

# The command groups in the order of `loopchat --help`.
COMMANDS = (run, serve, model, train, bench, keys, policy, openapi, export, simulate)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="loopchat", description="Chat that learns from its users' votes."
    )
    p.add_argument("-v", "--verbose", action="store_true")
    p.add_argument("--env-file", type=Path, help="file of LOOPCHAT_* settings")
    sub = p.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
