"""`loopchat policy ...`: policy versions, their events and ratings; promote, roll back, retire."""

from __future__ import annotations

import argparse

from loopchat.common import Subparsers, add_settings_flags, database, settings_from

# Each action with its help, in the order `loopchat policy --help` lists them.
ACTIONS = [
    ("list", "every version with its status"),
    ("events", "swaps, promotions, rollbacks, retirements, failed loads (newest first)"),
    ("ratings", "Bradley-Terry (Elo scale) and thumbs-up rate per version from live votes"),
    ("promote", "make a candidate, the canary or a retained version serve"),
    ("rollback", "serve again the version before the current one (or the one named)"),
    ("retire", "stop a candidate or the canary from taking traffic"),
]


def add_parser(subparsers: Subparsers) -> None:
    policy = subparsers.add_parser(
        "policy", help="policy versions: list, promote, roll back"
    ).add_subparsers(dest="action", required=True)
    for name, text in ACTIONS:
        sp = policy.add_parser(name, help=text)
        add_settings_flags(sp)
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


def cmd_policy(args: argparse.Namespace) -> int:
    from service.identity.auth import resolve_secrets
    from service.policies import commands

    settings = settings_from(args)
    with database(settings) as sessions:
        if args.action == "list":
            return commands.list_versions(sessions)
        if args.action == "events":
            return commands.list_events(sessions, args.limit)
        if args.action == "ratings":
            return commands.show_ratings(sessions)
        # A change asks the running server first (it swaps the served version at once).
        url = args.url or commands.server_url(settings.host, settings.port)
        target = commands.Target(url, resolve_secrets(settings).admin_token)
        ref = getattr(args, "ref", None)
        return commands.change(target, sessions, args.action, ref, args.reason or "")
