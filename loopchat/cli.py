"""The `loopchat` command line (public contract in DESIGN.md)."""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from service.settings import Settings, load_settings

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger("loopchat")


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def _settings(args: argparse.Namespace) -> Settings:
    overrides = {}
    for key in ("host", "port", "engine", "model", "data_dir", "database_url"):
        value = getattr(args, key, None)
        if value is not None:
            overrides[key] = value
    return load_settings(getattr(args, "env_file", None), **overrides)


@contextmanager
def _database(settings: Settings, read_only: bool = False) -> Iterator[sessionmaker[Session]]:
    """The migrated database of `settings`, as a session factory, disposed afterwards."""
    from store.db.migrate import upgrade
    from store.db.session import make_engine, make_session_factory

    db = make_engine(settings.resolved_database_url)
    try:
        upgrade(db)
        yield make_session_factory(db, read_only=read_only)
    finally:
        db.dispose()


def cmd_prepare(args: argparse.Namespace) -> int:
    from store.db.repository import ensure_base_version
    from store.db.session import session_scope
    from store.modelstore import prepare_bundled

    settings = _settings(args)
    model_dir = settings.resolved_model_dir
    if settings.model is None:
        prepare_bundled(model_dir)
    elif not (model_dir / "config.json").is_file():
        log.error("%s is not a Hugging Face model directory (no config.json)", model_dir)
        return 2
    with _database(settings) as sessions, session_scope(sessions) as s:
        v = ensure_base_version(s, model_dir)
        log.info("policy version %s (%s) -> %s", v.name, v.status, v.artifact_uri)
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    """API keys: the secret of a new key goes alone to stdout (KEY=$(loopchat keys create))."""
    from service.identity import store
    from store.db.session import session_scope

    with _database(_settings(args)) as sessions, session_scope(sessions) as s:
        if args.keys_cmd == "create":
            info, secret = store.create_api_key(s, args.name)
            print(f"created {info.id} ({info.name}); the key is shown once:", file=sys.stderr)
            print(secret)
        elif args.keys_cmd == "list":
            keys = store.list_api_keys(s, include_revoked=args.all)
            print(f"{'ID':<40} {'PREFIX':<11} {'CREATED':<20} {'STATE':<8} NAME")
            for k in keys:
                state = "revoked" if k.revoked_at else "active"
                created = k.created_at.strftime("%Y-%m-%d %H:%M:%S")
                print(f"{k.id:<40} {k.prefix:<11} {created:<20} {state:<8} {k.name}")
        else:
            revoked = store.revoke_api_key(s, args.key_id)
            if revoked is None:
                print(f"no API key with id {args.key_id}", file=sys.stderr)
                return 1
            print(f"revoked {revoked.id} ({revoked.name})", file=sys.stderr)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from service.feedback.export import ExportFilter, ExportFormat, export_lines
    from service.identity.auth import resolve_secrets
    from store.db.session import session_scope

    settings = _settings(args)
    flt = ExportFilter(since=args.since, until=args.until, version=args.version)
    secret = resolve_secrets(settings).session_secret
    n = 0
    with ExitStack() as stack:
        sessions = stack.enter_context(_database(settings, read_only=True))
        s = stack.enter_context(session_scope(sessions))
        try:  # checks the filters before anything is written
            lines = export_lines(s, ExportFormat(args.format), flt, secret, settings.model_alias)
        except ValueError as e:
            print(f"loopchat export: {e}", file=sys.stderr)
            return 2
        if args.output in (None, "-"):
            for line in lines:
                sys.stdout.write(line)
                n += 1
        else:
            # Written beside the target and renamed at the end: a failed export never
            # leaves a half file or clobbers an earlier one.
            target = Path(args.output)
            tmp = target.with_name(f".{target.name}.partial")
            try:
                with open(tmp, "w", encoding="utf-8") as out:
                    for line in lines:
                        out.write(line)
                        n += 1
                tmp.replace(target)
            finally:
                tmp.unlink(missing_ok=True)
    print(f"exported {n} {args.format} rows", file=sys.stderr)
    return 0


def _timestamp(value: str) -> datetime:
    """ISO-8601 date or time; naive values are UTC."""
    try:
        ts = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO-8601 date or time: {value!r}") from None
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from service.app import create_app

    settings = _settings(args)
    app = create_app(settings)
    print(
        f"loopchat: serving on http://{settings.host}:{settings.port}  "
        f"(OpenAI base_url http://{settings.host}:{settings.port}/v1; "
        f"ready when GET /readyz says so)",
        flush=True,
    )
    uvicorn.run(
        app, host=settings.host, port=settings.port, log_level="info", ws="websockets-sansio"
    )
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from trainer.config import ConfigError, describe, load_config

    try:
        cfg = load_config(args.config, args.set)
    except ConfigError as e:
        print(f"loopchat train: {e}", file=sys.stderr)
        return 2
    if args.show_config:
        print(describe(cfg), end="")
        return 0
    if not (args.once or args.schedule):
        print("loopchat train: say --once or --schedule", file=sys.stderr)
        return 2
    from trainer.entry import run_trainer

    return run_trainer(_settings(args), cfg, schedule=args.schedule)


def _trainer_process(args: argparse.Namespace) -> subprocess.Popen[bytes]:
    """`loopchat train --schedule` as a child process, with this command's options."""
    argv = [sys.executable, "-m", "loopchat"]
    if args.env_file is not None:
        argv += ["--env-file", str(args.env_file)]
    argv += ["train", "--schedule"]
    for key in ("data_dir", "database_url", "model", "host", "port"):
        value = getattr(args, key, None)
        if value is not None:
            argv += [f"--{key.replace('_', '-')}", str(value)]
    if getattr(args, "train_config", None) is not None:
        argv += ["--config", str(args.train_config)]
    for item in getattr(args, "train_set", None) or []:
        argv += ["--set", item]
    from trainer.config import PARENT_ENV

    # The trainer stops when this process dies, even unannounced (SIGKILL, OOM killer).
    return subprocess.Popen(argv, env={**os.environ, PARENT_ENV: str(os.getpid())})


def cmd_run(args: argparse.Namespace) -> int:
    """Everything on embedded defaults: prepare the model once, then serve and train."""
    if not args.no_trainer:
        from trainer.config import ConfigError, load_config

        try:  # a bad trainer setting stops here, not in the child after the server is up
            load_config(args.train_config, args.train_set)
        except ConfigError as e:
            print(f"loopchat run: {e}", file=sys.stderr)
            return 2
    if cmd_prepare(args) != 0:
        return 2
    trainer = None if args.no_trainer else _trainer_process(args)
    try:
        return cmd_serve(args)
    finally:
        if trainer is not None:
            trainer.terminate()
            try:
                trainer.wait(timeout=30)
            except subprocess.TimeoutExpired:
                trainer.kill()


def cmd_bench_train(args: argparse.Namespace) -> int:
    from trainer.config import ConfigError, load_config

    try:
        cfg = load_config(args.config, args.set)
    except ConfigError as e:
        print(f"loopchat bench train: {e}", file=sys.stderr)
        return 2
    settings = _settings(args)
    if settings.model is None:
        from store.modelstore import prepare_bundled

        prepare_bundled(settings.resolved_model_dir)
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
        try:
            until = datetime.fromisoformat(args.until)
        except ValueError:
            print(
                f"loopchat bench reward: --until {args.until!r} is not an ISO time", file=sys.stderr
            )
            return 2
        if until.tzinfo is None:
            until = until.replace(tzinfo=UTC)
    settings = _settings(args)
    if settings.model is None:
        from store.modelstore import prepare_bundled

        prepare_bundled(settings.resolved_model_dir)
    return run_bench_reward(
        settings.resolved_model_dir,
        configs,
        variants,
        database_url=None if args.events else settings.resolved_database_url,
        events=args.events or 0,
        until=until,
    )


def cmd_bench_serve(args: argparse.Namespace) -> int:
    from harness.bench.serve import BenchConfig, run_bench_serve

    settings = _settings(args)
    cfg = BenchConfig(
        concurrency=tuple(args.concurrency),
        max_tokens=args.max_tokens,
        requests_per_stream=args.requests_per_stream,
    )
    return run_bench_serve(settings, cfg)


def cmd_bench_swap(args: argparse.Namespace) -> int:
    from harness.bench.swap import SwapConfig, run_bench_swap

    settings = _settings(args)
    if settings.model is None:
        from store.modelstore import prepare_bundled

        prepare_bundled(settings.resolved_model_dir)
    cfg = SwapConfig(
        modes=tuple(dict.fromkeys(args.modes)),
        concurrency=args.concurrency,
        max_tokens=args.max_tokens,
        phase_seconds=args.phase_seconds,
    )
    return run_bench_swap(settings, cfg)


def cmd_policy(args: argparse.Namespace) -> int:
    from service.identity.auth import resolve_secrets
    from service.policies import commands

    settings = _settings(args)
    with _database(settings) as sessions:
        if args.action == "list":
            return commands.list_versions(sessions)
        if args.action == "events":
            return commands.list_events(sessions, args.limit)
        if args.action == "ratings":
            return commands.show_ratings(sessions)
        url = args.url or commands.server_url(settings.host, settings.port)
        target = commands.Target(url, resolve_secrets(settings).admin_token)
        ref = getattr(args, "ref", None)
        return commands.change(target, sessions, args.action, ref, args.reason or "")


def cmd_openapi(args: argparse.Namespace) -> int:
    """Print the HTTP API's OpenAPI schema (the web app's client is generated from it)."""
    import json

    from service.app import create_app

    schema = create_app(load_settings()).openapi()
    text = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    if args.output:
        args.output.write_text(text)
    else:
        sys.stdout.write(text)
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    """Simulated users chat and vote on a running server through its HTTP API (issue 7)."""
    import json
    import os
    import time

    from harness.simulation.gold import GoldSpecError, load_gold
    from harness.simulation.run import Progress, SimulationError, simulate

    if not args.verbose:
        logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per request
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # --gold mymodule:fn finds ./mymodule.py
    try:
        gold = load_gold(args.gold)
    except GoldSpecError as e:
        print(f"loopchat simulate: {e}", file=sys.stderr)
        return 2
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

    if args.replot is not None:
        from harness.simulation.report import replot

        try:
            paths = replot(args.replot)
        except (OSError, ValueError, KeyError) as e:
            print(f"loopchat simulate --replot: {e}", file=sys.stderr)
            return 1
        print("\n".join(str(p) for p in paths))
        return 0
    if args.rounds:
        return _simulate_loop(args, gold)
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
            progress=progress,
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
    return 0 if not result.stopped_early else 1


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


def _simulate_loop(args: argparse.Namespace, gold: object) -> int:
    """`loopchat simulate --rounds N`: the closed loop against a running server + trainer."""
    import time

    from harness.simulation.loop import LoopError, run_loop
    from harness.simulation.run import SimulationError
    from service.identity.auth import resolve_secrets

    admin_token = args.admin_token or resolve_secrets(_settings(args)).admin_token
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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="loopchat", description="Chat that learns from its users' votes."
    )
    p.add_argument("-v", "--verbose", action="store_true")
    p.add_argument("--env-file", type=Path, help="file of LOOPCHAT_* settings")
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--data-dir", type=Path)
        sp.add_argument("--database-url")
        sp.add_argument("--model", type=Path, help="Hugging Face model directory")
        sp.add_argument("--engine", choices=["auto", "vllm", "transformers"])

    def server(sp: argparse.ArgumentParser) -> None:
        common(sp)
        sp.add_argument("--host")
        sp.add_argument("--port", type=int)

    sp = sub.add_parser(
        "run", help="prepare the model, serve, and train on a schedule (embedded defaults)"
    )
    server(sp)
    sp.add_argument("--no-trainer", action="store_true", help="serve only")
    sp.add_argument(
        "--train-config", type=Path, metavar="TOML", help="TOML file of trainer settings"
    )
    sp.add_argument(
        "--train-set", action="append", metavar="SECTION.FIELD=VALUE", help="trainer setting"
    )
    sp.set_defaults(func=cmd_run)
    sp = sub.add_parser("serve", help="start the API server")
    server(sp)
    sp.set_defaults(func=cmd_serve)

    model = sub.add_parser("model", help="model management").add_subparsers(
        dest="model_cmd", required=True
    )
    sp = model.add_parser("prepare", help="materialize the bundled model and register it as v0")
    common(sp)
    sp.set_defaults(func=cmd_prepare)

    sp = sub.add_parser("train", help="iterated online RLHF rounds from the stored votes")
    server(sp)  # host/port: the server to notify of new candidates
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

    bench = sub.add_parser("bench", help="benchmarks").add_subparsers(
        dest="bench_cmd", required=True
    )
    keys = sub.add_parser("keys", help="API keys for developers").add_subparsers(
        dest="keys_cmd", required=True
    )
    sp = keys.add_parser("create", help="create a key; prints the secret once")
    common(sp)
    sp.add_argument("--name", required=True, help="who or what the key is for")
    sp.set_defaults(func=cmd_keys)
    sp = keys.add_parser("list", help="list keys (secrets are never shown again)")
    common(sp)
    sp.add_argument("--all", action="store_true", help="include revoked keys")
    sp.set_defaults(func=cmd_keys)
    sp = keys.add_parser("revoke", help="revoke a key at once")
    common(sp)
    sp.add_argument("key_id")
    sp.set_defaults(func=cmd_keys)

    policy = sub.add_parser(
        "policy", help="policy versions: list, promote, roll back"
    ).add_subparsers(dest="action", required=True)
    for name, text in [
        ("list", "every version with its status"),
        ("events", "swaps, promotions, rollbacks, retirements, failed loads (newest first)"),
        ("ratings", "Bradley-Terry (Elo scale) and thumbs-up rate per version from live votes"),
        ("promote", "make a candidate, the canary or a retained version serve"),
        ("rollback", "serve again the version before the current one (or the one named)"),
        ("retire", "stop a candidate or the canary from taking traffic"),
    ]:
        sp = policy.add_parser(name, help=text)
        common(sp)
        if name == "events":
            sp.add_argument("--limit", type=int, default=50)
        if name in ("promote", "retire"):
            sp.add_argument("ref", help="version name (v3) or id")
        if name == "rollback":
            sp.add_argument("ref", nargs="?", help="a retained version; default the previous one")
        if name in ("promote", "rollback", "retire"):
            sp.add_argument("--reason", help="recorded in the event log")
            sp.add_argument("--url", help="the server (default http://LOOPCHAT_HOST:LOOPCHAT_PORT)")
        sp.set_defaults(func=cmd_policy)

    sp = sub.add_parser("openapi", help="print the HTTP API's OpenAPI schema as JSON")
    sp.add_argument("-o", "--output", type=Path, help="write to this file")
    sp.set_defaults(func=cmd_openapi)

    sp = sub.add_parser("export", help="feedback as JSONL in the shapes TRL reads")
    common(sp)
    sp.add_argument(
        "--format",
        choices=["pairs", "unpaired", "raw"],
        default="pairs",
        help="pairs: prompt/chosen/rejected; unpaired: prompt/completion/label; raw: every vote",
    )
    sp.add_argument("--since", type=_timestamp, help="votes at or after (ISO-8601, UTC if naive)")
    sp.add_argument("--until", type=_timestamp, help="votes before (ISO-8601, UTC if naive)")
    sp.add_argument("--version", help="only votes on replies of this policy version (v3)")
    sp.add_argument("-o", "--output", help="file to write (default stdout)")
    sp.set_defaults(func=cmd_export)

    sp = sub.add_parser(
        "simulate",
        help="simulated users chat and vote on a running server (HTTP API only); "
        "--rounds N runs the closed loop (votes, training, canary, gold evaluation)",
        description="Simulated users chat and vote on a running server. With --rounds N "
        "it runs the closed loop, which needs a running server AND trainer: `loopchat run` "
        "(or `loopchat serve` + `loopchat train --schedule`); it queues training rounds "
        "through the operator API and writes report.json, plots and report.md to --out.",
    )
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
    sp.set_defaults(func=cmd_simulate)

    sp = bench.add_parser("serve", help="engine vs HTTP API under the same concurrent load")
    common(sp)
    sp.add_argument("--concurrency", type=int, nargs="+", default=[16, 64])
    sp.add_argument("--max-tokens", type=int, default=64)
    sp.add_argument("--requests-per-stream", type=int, default=1)
    sp.set_defaults(func=cmd_bench_serve)

    sp = bench.add_parser("swap", help="promote a new policy version under continuous chat load")
    common(sp)
    sp.add_argument("--modes", nargs="+", choices=["merged", "lora"], default=["merged", "lora"])
    sp.add_argument("--concurrency", type=int, default=8, help="streaming clients")
    sp.add_argument("--max-tokens", type=int, default=64)
    sp.add_argument("--phase-seconds", type=float, default=20.0, help="before and after the swap")
    sp.set_defaults(func=cmd_bench_swap)

    sp = bench.add_parser("train", help="one training round per data size, timed by phase")
    common(sp)
    sp.add_argument("--events", type=int, nargs="+", default=[100, 300, 1000])
    sp.add_argument("--config", type=Path, help="TOML file of trainer settings")
    sp.add_argument("--set", action="append", metavar="SECTION.FIELD=VALUE")
    sp.set_defaults(func=cmd_bench_train)

    sp = bench.add_parser(
        "reward", help="reward-model variants trained on the same votes, side by side"
    )
    common(sp)
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
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args.verbose)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
