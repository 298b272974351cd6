"""`loopchat bench serve | swap | train | reward | loop`: benchmarks of the serving and
training paths, and of the closed loop over several golds."""

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
    _add_loop(bench)
    _add_attack(bench)


def _add_attack(bench: Subparsers) -> None:
    sp = bench.add_parser(
        "attack", help="scripted votes against the canary rule, with and without the vote screen"
    )
    add_settings_flags(sp)
    sp.add_argument("--shares", type=float, nargs="+", default=[0.1, 0.3])
    sp.add_argument("--addresses", type=int, nargs="+", default=[1, 10])
    sp.add_argument("--seeds", type=int, default=20)
    sp.set_defaults(func=cmd_bench_attack)


def cmd_bench_attack(args: argparse.Namespace) -> int:
    from harness.bench.attack import run_bench_attack

    if args.seeds < 1 or any(not 0 <= s < 1 for s in args.shares) or min(args.addresses) < 1:
        print("bench attack: --seeds >= 1, --shares in [0, 1), --addresses >= 1", file=sys.stderr)
        return 2
    return run_bench_attack(settings_from(args), args.shares, args.addresses, args.seeds)


def _add_loop(bench: Subparsers) -> None:
    sp = bench.add_parser(
        "loop",
        help="the closed loop over several golds with the product's trainer defaults: "
        "one table and plots",
        description="For each gold in turn: a fresh data directory under --out, `loopchat "
        "run` on it with harness/simulation/loop.toml (threads, no schedule of its own: "
        "nothing that makes the loop learn), the closed loop of `loopchat simulate --rounds`, "
        "then the server stopped. Writes OUT/sweep.md, sweep.json and sweep.png, and each "
        "gold's own report under OUT/<gold>/.",
    )
    sp.add_argument(
        "--golds",
        default="concise,warm,plain_words,simple_sentences",
        help="comma-separated golds (shipped names or module:function)",
    )
    sp.add_argument("--rounds", type=int, default=5)
    sp.add_argument("--votes", type=int, default=300, help="votes per round")
    sp.add_argument("--out", type=Path, help="default data/sweep/<timestamp>")
    sp.add_argument("--port", type=int, default=8100, help="where each gold's server listens")
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument(
        "--summary-only", action="store_true", help="only rewrite the table and plots in --out"
    )
    # The simulated users and the evaluation, as in the closed-loop benchmark
    # (docs/simulation.md): the same for every gold.
    sp.add_argument("--comparison-share", type=float, default=0.7)
    sp.add_argument("--max-tokens", type=int, default=96)
    sp.add_argument("--eval-samples", type=int, default=66)
    sp.add_argument("--concurrency", type=int, default=32)
    sp.add_argument("--temperature", type=float, default=0.0, help="Bradley-Terry temperature")
    sp.add_argument("--promote", default="close", choices=["rule", "close", "always", "never"])
    sp.set_defaults(func=cmd_bench_loop)


def cmd_bench_loop(args: argparse.Namespace) -> int:
    import time

    from harness.simulation.gold import GoldSpecError, load_gold
    from harness.simulation.sweep import SweepConfig, run_sweep, write_summary

    golds = tuple(g.strip() for g in args.golds.split(",") if g.strip())
    try:
        for g in golds:
            load_gold(g)
    except GoldSpecError as e:
        print(f"loopchat bench loop: {e}", file=sys.stderr)
        return 2
    if not golds or args.rounds < 1 or args.votes < 1:
        print("loopchat bench loop: give golds, --rounds >= 1 and --votes >= 1", file=sys.stderr)
        return 2
    out = args.out or Path("data") / "sweep" / time.strftime("%Y%m%d-%H%M%S")
    cfg = SweepConfig(
        golds=golds,
        rounds=args.rounds,
        votes=args.votes,
        out=out,
        port=args.port,
        seed=args.seed,
        loop_options={
            "comparison_share": args.comparison_share,
            "max_tokens": args.max_tokens,
            "eval_samples": args.eval_samples,
            "concurrency": args.concurrency,
            "temperature": args.temperature,
            "promote": args.promote,
        },
    )
    if args.summary_only:
        rows = write_summary(cfg, golds)
    else:
        t0 = time.monotonic()

        def say(line: str) -> None:
            print(f"[{time.monotonic() - t0:7.0f} s] {line}", file=sys.stderr, flush=True)

        rows = run_sweep(cfg, say)
    print((out / "sweep.md").read_text(encoding="utf-8"))
    return 0 if rows else 1


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
    sp.add_argument(
        "--rollouts",
        nargs="+",
        choices=["transformers", "vllm"],
        help="rollout engines to run each round with, side by side on the same votes "
        "(default: both where vLLM is installed, else the config's own)",
    )
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
    sp.add_argument(
        "--replies",
        type=Path,
        metavar="FILE",
        help="votes on v0's own replies kept in FILE (JSON lines; sampled into it on first "
        "use: --per-prompt replies to each simulation prompt), in a throwaway database",
    )
    sp.add_argument("--per-prompt", type=int, default=3, help="replies per prompt (--replies)")
    sp.add_argument("--until", help="only votes before this ISO time (UTC unless it says)")
    sp.add_argument(
        "--gold",
        action="append",
        metavar="GOLD",
        help="re-vote the same replies as simulated users with this taste (repeat; a shipped "
        "name or module:function); default: the votes as stored",
    )
    sp.add_argument(
        "--sizes",
        help="training pairs per learning-curve point, comma-separated (e.g. 50,100,200,400,"
        "all); default: all",
    )
    sp.add_argument("--seed", type=int, default=0, help="seed of re-voting and subsets")
    sp.add_argument(
        "--adversary",
        type=float,
        metavar="SHARE",
        help="with --gold: also add this share of scripted votes against the gold, and "
        "train with the vote screen off and on (measured on the honest held-out pairs)",
    )
    sp.add_argument(
        "--adversary-addresses", type=int, default=1, help="client addresses it votes from"
    )
    sp.add_argument("--out", type=Path, help="also write rows.json and curves.png here")
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
    from store.hardware import vllm_available

    engines = args.rollouts or (["transformers", "vllm"] if vllm_available() else [])
    return run_bench_train(settings.resolved_model_dir, cfg, args.events, engines)


def cmd_bench_reward(args: argparse.Namespace) -> int:
    from harness.bench.poison import Adversary
    from harness.bench.reward import (
        CurvePlan,
        VoteSource,
        parse_sizes,
        parse_variant,
        run_bench_reward,
        variant_configs,
    )
    from trainer.config import ConfigError

    try:
        variants = [parse_variant(text) for text in args.variant or ["config"]]
        configs = variant_configs(args.config, args.set or [], variants)
        adversary = None
        if args.adversary is not None:
            if not args.gold:
                raise ConfigError("--adversary needs --gold: its votes go against a gold")
            adversary = Adversary(args.adversary, args.adversary_addresses)
        plan = CurvePlan(tuple(args.gold or ()), parse_sizes(args.sizes), args.seed, adversary)
    except (ConfigError, ValueError) as e:
        print(f"loopchat bench reward: {e}", file=sys.stderr)
        return 2
    if args.events is not None and args.events < 1:
        print("loopchat bench reward: --events must be at least 1", file=sys.stderr)
        return 2
    if args.per_prompt < 2:
        print("loopchat bench reward: --per-prompt must be at least 2", file=sys.stderr)
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
        source=VoteSource(
            database_url=(None if args.events or args.replies else settings.resolved_database_url),
            replies=args.replies,
            per_prompt=args.per_prompt,
            events=args.events or 0,
        ),
        until=until,
        plan=plan,
        out_dir=args.out,
    )


def _reward_until(text: str) -> datetime | None:
    """--until as an aware time (naive is UTC), or None after saying why it is not one."""
    try:
        until = datetime.fromisoformat(text)
    except ValueError:
        print(f"loopchat bench reward: --until {text!r} is not an ISO time", file=sys.stderr)
        return None
    return until if until.tzinfo is not None else until.replace(tzinfo=UTC)
