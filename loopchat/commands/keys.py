"""`loopchat keys create | list | revoke`: API keys for developers."""

from __future__ import annotations

import argparse
import sys

from loopchat.common import Subparsers, add_settings_flags, database, settings_from


def add_parser(subparsers: Subparsers) -> None:
    keys = subparsers.add_parser("keys", help="API keys for developers").add_subparsers(
        dest="keys_cmd", required=True
    )
    sp = keys.add_parser("create", help="create a key; prints the secret once")
    add_settings_flags(sp)
    sp.add_argument("--name", required=True, help="who or what the key is for")
    sp.add_argument(
        "--scope",
        action="append",
        default=[],
        choices=["pin"],
        help="grant beyond chat and votes; pin: use any loaded version (loopchat@v3)",
    )
    sp.set_defaults(func=cmd_keys)
    sp = keys.add_parser("list", help="list keys (secrets are never shown again)")
    add_settings_flags(sp)
    sp.add_argument("--all", action="store_true", help="include revoked keys")
    sp.set_defaults(func=cmd_keys)
    sp = keys.add_parser("revoke", help="revoke a key at once")
    add_settings_flags(sp)
    sp.add_argument("key_id")
    sp.set_defaults(func=cmd_keys)


def cmd_keys(args: argparse.Namespace) -> int:
    """API keys: the secret of a new key goes alone to stdout (KEY=$(loopchat keys create))."""
    from service.identity import store
    from store.db.session import session_scope

    with database(settings_from(args)) as sessions, session_scope(sessions) as s:
        if args.keys_cmd == "create":
            info, secret = store.create_api_key(s, args.name, tuple(args.scope))
            scopes = f", scopes: {' '.join(info.scopes)}" if info.scopes else ""
            print(
                f"created {info.id} ({info.name}{scopes}); the key is shown once:",
                file=sys.stderr,
            )
            print(secret)
        elif args.keys_cmd == "list":
            keys = store.list_api_keys(s, include_revoked=args.all)
            print(f"{'ID':<40} {'PREFIX':<11} {'CREATED':<20} {'STATE':<8} {'SCOPES':<8} NAME")
            for k in keys:
                state = "revoked" if k.revoked_at else "active"
                created = k.created_at.strftime("%Y-%m-%d %H:%M:%S")
                scopes = " ".join(k.scopes) or "-"
                print(f"{k.id:<40} {k.prefix:<11} {created:<20} {state:<8} {scopes:<8} {k.name}")
        else:
            revoked = store.revoke_api_key(s, args.key_id)
            if revoked is None:
                print(f"no API key with id {args.key_id}", file=sys.stderr)
                return 1
            print(f"revoked {revoked.id} ({revoked.name})", file=sys.stderr)
    return 0
