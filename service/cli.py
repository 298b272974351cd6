"""The `loopchat` command line (public contract in DESIGN.md)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from service.settings import Settings, load_settings

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


def cmd_prepare(args: argparse.Namespace) -> int:
    from service.db.migrate import upgrade
    from service.db.repository import ensure_base_version
    from service.db.session import make_engine, make_session_factory, session_scope
    from service.modelstore import prepare_bundled

    settings = _settings(args)
    model_dir = settings.resolved_model_dir
    if settings.model is None:
        prepare_bundled(model_dir)
    elif not (model_dir / "config.json").is_file():
        log.error("%s is not a Hugging Face model directory (no config.json)", model_dir)
        return 2
    db = make_engine(settings.resolved_database_url)
    upgrade(db)
    with session_scope(make_session_factory(db)) as s:
        v = ensure_base_version(s, model_dir)
        log.info("policy version %s (%s) -> %s", v.name, v.status, v.artifact_uri)
    db.dispose()
    return 0


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


def cmd_run(args: argparse.Namespace) -> int:
    """Everything on embedded defaults: prepare the model once, then serve."""
    if cmd_prepare(args) != 0:
        return 2
    return cmd_serve(args)


def cmd_bench_serve(args: argparse.Namespace) -> int:
    from service.bench.serve import BenchConfig, run_bench_serve

    settings = _settings(args)
    cfg = BenchConfig(
        concurrency=tuple(args.concurrency),
        max_tokens=args.max_tokens,
        requests_per_stream=args.requests_per_stream,
    )
    return run_bench_serve(settings, cfg)


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

    sp = sub.add_parser("run", help="prepare the model and serve everything on embedded defaults")
    server(sp)
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

    bench = sub.add_parser("bench", help="benchmarks").add_subparsers(
        dest="bench_cmd", required=True
    )
    sp = bench.add_parser("serve", help="engine vs HTTP API under the same concurrent load")
    common(sp)
    sp.add_argument("--concurrency", type=int, nargs="+", default=[16, 64])
    sp.add_argument("--max-tokens", type=int, default=64)
    sp.add_argument("--requests-per-stream", type=int, default=1)
    sp.set_defaults(func=cmd_bench_serve)
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
