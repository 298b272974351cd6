"""`loopchat simulate`: simulated users chat and vote on a running server.

One batch of votes by default; with --rounds N the closed loop (votes, training, canary,
gold evaluation) against a running server and trainer; with --replot DIR only the report.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loopchat.common import Subparsers, settings_from

if TYPE_CHECKING:
    from harness.simulation.gold import Gold
    from harness.simulation.run import Progress, SimulationResult


def add_parser(subparsers: Subparsers) -> None:
    sp = subparsers.add_parser(
        "simulate",
        help="simulated users chat and vote on a running server (HTTP API only); "
        "--rounds N runs the closed loop (votes, training, canary, gold evaluation)",
        description="Simulated users chat and vote on a running server. With --rounds N "
        "it runs the closed loop, which needs a running server AND trainer: `loopchat run` "
        "(or `loopchat serve` + `loopchat train --schedule`); it queues training rounds "
        "through the operator API and writes report.json, plots and report.md to --out.",
    )
    # In this order: `loopchat simulate --help` lists the flags as they are added.
    _add_run_flags(sp)
    _add_user_flags(sp)
    _add_access_flags(sp)
    sp.set_defaults(func=cmd_simulate)


def _add_run_flags(sp: argparse.ArgumentParser) -> None:
    """Where to, how many votes and rounds, what the loop does, where the report goes."""
    sp.add_argument("--url", default="http://127.0.0.1:8000", help="the server's base URL")
    sp.add_argument(
        "--votes",
        type=int,
        default=300,
        help="votes to store (thumbs + A/B); per round with --rounds",
    )
    sp.add_argument(
        "--rounds",
        type=int,
        default=0,
        help="closed-loop rounds (0: one simulation only); needs a server + trainer running",
    )
    sp.add_argument("--out", type=Path, help="report directory (default data/sim/<timestamp>)")
    sp.add_argument(
        "--eval-samples", type=int, default=50, help="held-out prompts per gold evaluation"
    )
    sp.add_argument(
        "--train-timeout", type=float, default=3600.0, help="seconds to wait for a training round"
    )
    sp.add_argument(
        "--promote",
        choices=["rule", "close", "always", "never"],
        default="rule",
        help="rule: the server's canary rule decides; close: the rule decides during the "
        "votes, and a canary still waiting when the round's votes end is promoted if it won "
        "more than half of its (at least 30) comparisons, else retired; always: promote the "
        "canary after each round's votes; never: retire it then",
    )
    sp.add_argument(
        "--replot", type=Path, metavar="DIR", help="redraw plots and report.md from DIR/report.json"
    )
    sp.add_argument("--data-dir", type=Path, help="where the operator token is (data/admin_token)")


def _add_user_flags(sp: argparse.ArgumentParser) -> None:
    """What the simulated users prefer and how they chat and vote."""
    sp.add_argument(
        "--gold",
        default="harness.simulation.gold:concise",
        help="the users' preference, module:function (prompt, reply) -> float; "
        "shipped: concise, warm, uses_list, answers_number",
    )
    sp.add_argument("--flip-rate", type=float, default=0.25, help="label noise of A/B votes")
    sp.add_argument("--comparison-share", type=float, default=0.5, help="share of A/B votes")
    sp.add_argument("--users", type=int, default=20, help="simulated users (web sessions)")
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument(
        "--split",
        choices=["train", "heldout"],
        default="train",
        help="prompts to send; votes on heldout ones leak the evaluation set into training",
    )
    sp.add_argument("--max-tokens", type=int, help="per reply (default: the server's)")
    sp.add_argument("--concurrency", type=int, default=4, help="requests at once")
    sp.add_argument("--temperature", type=float, help="Bradley-Terry temperature (0.02)")
    sp.add_argument("--thumbs-threshold", type=float, help="thumbs up above this gold (0.5)")
    sp.add_argument("--thumbs-noise", type=float, help="sd of the gold noise of thumbs (0.1)")


def _add_access_flags(sp: argparse.ArgumentParser) -> None:
    """How the users sign in, the operator token, and the summary's shape."""
    sp.add_argument(
        "--auth",
        choices=["session", "key"],
        default="session",
        help="web sessions (default), or API keys made with the operator token",
    )
    sp.add_argument(
        "--admin-token",
        help="operator token, for --auth key and --rounds (default $LOOPCHAT_ADMIN_TOKEN; "
        "with --rounds also DATA_DIR/admin_token)",
    )
    sp.add_argument("--json", action="store_true", help="print the summary as JSON")


def cmd_simulate(args: argparse.Namespace) -> int:
    """Simulated users chat and vote on a running server through its HTTP API only, as real
    clients do, so that a run exercises exactly what users meet."""
    from harness.simulation.gold import GoldSpecError, load_gold

    if not args.verbose:
        logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per request
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # --gold mymodule:fn finds ./mymodule.py
    try:
        gold = load_gold(args.gold)
    except GoldSpecError as e:
        print(f"loopchat simulate: {e}", file=sys.stderr)
        return 2
    if args.replot is not None:
        return _replot(args.replot)
    if args.rounds:
        return _simulate_loop(args)
    return _simulate_once(args, gold)


def _replot(report_dir: Path) -> int:
    """`--replot DIR`: the plots and report.md drawn again from DIR/report.json."""
    from harness.simulation.report import replot

    try:
        paths = replot(report_dir)
    except (OSError, ValueError, KeyError) as e:
        print(f"loopchat simulate --replot: {e}", file=sys.stderr)
        return 1
    print("\n".join(str(p) for p in paths))
    return 0


def _simulate_once(args: argparse.Namespace, gold: Gold) -> int:
    """One batch of votes, summed up as a table (or JSON with --json)."""
    import json

    from harness.simulation.run import SimulationError, simulate

    admin_token = args.admin_token or os.environ.get("LOOPCHAT_ADMIN_TOKEN") or None
    try:
        result = simulate(
            args.url,
            votes=args.votes,
            gold=gold,
            flip_rate=args.flip_rate,
            split=args.split,
            seed=args.seed,
            max_tokens=args.max_tokens,
            progress=_progress_printer(),
            admin_token=admin_token,
            **_user_options(args),
        )
    except (SimulationError, ValueError) as e:
        print(f"loopchat simulate: {e}", file=sys.stderr)
        return 1
    summary = result.to_dict()
    summary["config"]["gold"] = args.gold
    if args.json:
        print(json.dumps(summary, indent=2, sort_keys=True))
    else:
        _print_summary(result)
    return 0 if not result.stopped_early else 1


def _progress_printer() -> Callable[[Progress], None]:
    """A progress line on stderr at most every 5 seconds, and one at the end."""
    import time

    last = [0.0]

    def progress(p: Progress) -> None:
        now = time.monotonic()
        if p.votes + p.errors < p.target and now - last[0] < 5.0:
            return
        last[0] = now
        print(
            f"simulate: {p.votes}/{p.target} votes, {p.errors} errors, {p.elapsed_s:.0f} s",
            file=sys.stderr,
            flush=True,
        )

    return progress


def _print_summary(result: SimulationResult) -> None:
    cv = result.comparison_votes
    print(
        f"{result.votes}/{result.votes_target} votes in {result.elapsed_s:.1f} s: "
        f"{result.thumbs_up} up / {result.thumbs_down} down on {result.chats} chats, "
        f"comparisons a {cv['a']} / b {cv['b']} / tie {cv['tie']}, {result.errors} errors"
    )
    for kind, n in sorted(result.error_kinds.items()):
        print(f"  error x{n}: {kind}")
    print(f"{'VERSION':<10} {'REPLIES':>7} {'UP':>5} {'DOWN':>5} {'UP%':>6} {'GOLD':>6}")
    for name, v in sorted(result.per_version.items()):
        rate = "-" if v.thumbs_up_rate is None else f"{100 * v.thumbs_up_rate:.1f}"
        g = "-" if v.gold_mean is None else f"{v.gold_mean:.3f}"
        print(f"{name:<10} {v.replies:>7} {v.thumbs_up:>5} {v.thumbs_down:>5} {rate:>6} {g:>6}")


def _user_options(args: argparse.Namespace) -> dict[str, Any]:
    """How the simulated users behave: the same for one batch and for every loop round."""
    options: dict[str, Any] = {
        "comparison_share": args.comparison_share,
        "users": args.users,
        "concurrency": args.concurrency,
        "auth": args.auth,
    }
    for key in ("temperature", "thumbs_threshold", "thumbs_noise"):
        if getattr(args, key) is not None:
            options[key] = getattr(args, key)
    return options


def _simulate_loop(args: argparse.Namespace) -> int:
    """`loopchat simulate --rounds N`: the closed loop against a running server + trainer."""
    import time

    from harness.simulation.loop import LoopError, run_loop
    from harness.simulation.run import SimulationError
    from service.identity.auth import resolve_secrets

    admin_token = args.admin_token or resolve_secrets(settings_from(args)).admin_token
    out = args.out or Path("data") / "sim" / time.strftime("%Y%m%d-%H%M%S")
    t0 = time.monotonic()

    def say(line: str) -> None:
        print(f"[{time.monotonic() - t0:7.0f} s] {line}", file=sys.stderr, flush=True)

    try:
        report = run_loop(
            args.url,
            admin_token,
            rounds=args.rounds,
            votes_per_round=args.votes,
            gold=args.gold,
            flip_rate=args.flip_rate,
            seed=args.seed,
            max_tokens=args.max_tokens,
            eval_samples=args.eval_samples,
            out_dir=out,
            progress=say,
            promote=args.promote,
            train_timeout_s=args.train_timeout,
            **_user_options(args),
        )
    except (LoopError, SimulationError, ValueError) as e:
        print(f"loopchat simulate: {e}", file=sys.stderr)
        return 1
    print((out / "report.md").read_text(encoding="utf-8"))
    print(f"report: {out / 'report.json'}", file=sys.stderr)
    return 1 if report.stopped_early else 0
