"""`loopchat bench serve | swap | train | reward`: benchmarks of the serving and training paths."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path

from loopchat.common import (
    Subparsers,
    add_settings_flags,
    prepare_bundled_model,
    settings_from,
    train_config,
)


def add_parser(subparsers: Subparsers) -> None:
    bench = subparsers.add_parser("bench", help="benchmarks").add_subparsers(
        dest="bench_cmd", required=True
    )
    _add_serve(bench)
    _add_swap(bench)
    _add_train(bench)
    _add_reward(bench)


def _add_serve(bench: Subparsers) -> None:
    sp = bench.add_parser("serve", help="engine vs HTTP API under the same concurrent load")
    add_settings_flags(sp)
    sp.add_argument("--concurrency", type=int, nargs="+", default=[16, 64])
    sp.add_argument("--max-tokens", type=int, default=64)
    sp.add_argument("--requests-per-stream", type=int, default=1)
    sp.set_defaults(func=cmd_bench_serve)


def _add_swap(bench: Subparsers) -> None:
    sp = bench.add_parser("swap", help="promote a new policy version under continuous chat load")
    add_settings_flags(sp)
    sp.add_argument("--modes", nargs="+", choices=["merged", "lora"], default=["merged", "lora"])
    sp.add_argument("--concurrency", type=int, default=8, help="streaming clients")
    sp.add_argument("--max-tokens", type=int, default=64)
    sp.add_argument("--phase-seconds", type=float, default=20.0, help="before and after the swap")
    sp.set_defaults(func=cmd_bench_swap)


def _add_train(bench: Subparsers) -> None:
    sp = bench.add_parser("train", help="one training round per data size, timed by phase")
    add_settings_flags(sp)
    sp.add_argument("--events", type=int, nargs="+", default=[100, 300, 1000])
    sp.add_argument("--config", type=Path, help="TOML file of trainer settings")
    sp.add_argument("--set", action="append", metavar="SECTION.FIELD=VALUE")
    sp.set_defaults(func=cmd_bench_train)


def _add_reward(bench: Subparsers) -> None:
    sp = bench.add_parser(
        "reward", help="reward-model variants trained on the same votes, side by side"
    )
    add_settings_flags(sp)
    sp.add_argument(
        "--events",
        type=int,
        help="synthetic votes in a throwaway database (default: the data directory's votes)",
    )
    sp.add_argument("--until", help="only votes before this ISO time (UTC unless it says)")
    sp.add_argument(
        "--variant",
        action="append",
        metavar="'NAME [SECTION.FIELD=VALUE ...]'",
        help="a name and its overrides (repeat; default: one variant, the config as given)",
    )
    sp.add_argument("--config", type=Path, help="TOML file of trainer settings")
    sp.add_argument("--set", action="append", metavar="SECTION.FIELD=VALUE")
    sp.set_defaults(func=cmd_bench_reward)


def cmd_bench_serve(args: argparse.Namespace) -> int:
    from harness.bench.serve import BenchConfig, run_bench_serve

    settings = settings_from(args)
    cfg = BenchConfig(
        concurrency=tuple(args.concurrency),
        max_tokens=args.max_tokens,
        requests_per_stream=args.requests_per_stream,
    )
    return run_bench_serve(settings, cfg)


def cmd_bench_swap(args: argparse.Namespace) -> int:
    from harness.bench.swap import SwapConfig, run_bench_swap

    settings = settings_from(args)
    prepare_bundled_model(settings)
    cfg = SwapConfig(
        modes=tuple(dict.fromkeys(args.modes)),
        concurrency=args.concurrency,
        max_tokens=args.max_tokens,
        phase_seconds=args.phase_seconds,
    )
    return run_bench_swap(settings, cfg)


def cmd_bench_train(args: argparse.Namespace) -> int:
    cfg = train_config(args.config, args.set, "loopchat bench train")
    if cfg is None:
        return 2
    settings = settings_from(args)
    prepare_bundled_model(settings)
    from harness.bench.train import run_bench_train

    return run_bench_train(settings.resolved_model_dir, cfg, args.events)


def cmd_bench_reward(args: argparse.Namespace) -> int:
    from harness.bench.reward import parse_variant, run_bench_reward, variant_configs
    from trainer.config import ConfigError

    try:
        variants = [parse_variant(text) for text in args.variant or ["config"]]
        configs = variant_configs(args.config, args.set or [], variants)
    except ConfigError as e:
        print(f"loopchat bench reward: {e}", file=sys.stderr)
        return 2
    if args.events is not None and args.events < 1:
        print("loopchat bench reward: --events must be at least 1", file=sys.stderr)
        return 2
    until = None
    if args.until:
        until = _reward_until(args.until)
        if until is None:
            return 2
    settings = settings_from(args)
    prepare_bundled_model(settings)
    return run_bench_reward(
        settings.resolved_model_dir,
        configs,
        variants,
        database_url=None if args.events else settings.resolved_database_url,
        events=args.events or 0,
        until=until,
    )


def _reward_until(text: str) -> datetime | None:
    """--until as an aware time (naive is UTC), or None after saying why it is not one."""
    try:
        until = datetime.fromisoformat(text)
    except ValueError:
        print(f"loopchat bench reward: --until {text!r} is not an ISO time", file=sys.stderr)
        return None
    return until if until.tzinfo is not None else until.replace(tzinfo=UTC)
