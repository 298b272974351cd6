"""`loopchat openapi`: the HTTP API's OpenAPI schema (the web app's client is generated from it)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from loopchat.common import Subparsers


def add_parser(subparsers: Subparsers) -> None:
    sp = subparsers.add_parser("openapi", help="print the HTTP API's OpenAPI schema as JSON")
    sp.add_argument("-o", "--output", type=Path, help="write to this file")
    sp.set_defaults(func=cmd_openapi)


def cmd_openapi(args: argparse.Namespace) -> int:
    """Print the HTTP API's OpenAPI schema (the web app's client is generated from it)."""
    import json

    from service.app import create_app
    from service.settings import load_settings

    schema = create_app(load_settings()).openapi()
    text = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    if args.output:
        args.output.write_text(text)
    else:
        sys.stdout.write(text)
    return 0
