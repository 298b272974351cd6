"""`loopchat serve`: the API server in the foreground."""

from __future__ import annotations

import argparse

from loopchat.common import Subparsers, add_server_flags, settings_from


def add_parser(subparsers: Subparsers) -> None:
    sp = subparsers.add_parser("serve", help="start the API server")
    add_server_flags(sp)
    sp.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from service.app import create_app, server_options

    settings = settings_from(args)
    app = create_app(settings)
    print(
        f"loopchat: serving on http://{settings.host}:{settings.port}  "
        f"(OpenAI base_url http://{settings.host}:{settings.port}/v1; "
        f"ready when GET /readyz says so)",
        flush=True,
    )
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="info", **server_options())
    return 0
