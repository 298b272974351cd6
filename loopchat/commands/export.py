"""`loopchat export`: the stored feedback as JSONL, in the shapes TRL reads."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path

from loopchat.common import Subparsers, add_settings_flags, database, settings_from


def add_parser(subparsers: Subparsers) -> None:
    sp = subparsers.add_parser("export", help="feedback as JSONL in the shapes TRL reads")
    add_settings_flags(sp)
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


def _timestamp(value: str) -> datetime:
    """ISO-8601 date or time; naive values are UTC."""
    try:
        ts = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO-8601 date or time: {value!r}") from None
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)


def cmd_export(args: argparse.Namespace) -> int:
    from service.feedback.export import ExportFilter, ExportFormat, export_lines
    from service.identity.auth import resolve_secrets
    from store.db.session import session_scope

    settings = settings_from(args)
    flt = ExportFilter(since=args.since, until=args.until, version=args.version)
    secret = resolve_secrets(settings).session_secret
    with ExitStack() as stack:
        sessions = stack.enter_context(database(settings, read_only=True))
        s = stack.enter_context(session_scope(sessions))
        try:  # checks the filters before anything is written
            lines = export_lines(
                s,
                ExportFormat(args.format),
                flt,
                secret,
                settings.model_alias,
                settings.evidence_rules(),
            )
        except ValueError as e:
            print(f"loopchat export: {e}", file=sys.stderr)
            return 2
        if args.output in (None, "-"):
            n = _write_stdout(lines)
        else:
            n = _write_file(lines, Path(args.output))
    print(f"exported {n} {args.format} rows", file=sys.stderr)
    return 0


def _write_stdout(lines: Iterable[str]) -> int:
    n = 0
    for line in lines:
        sys.stdout.write(line)
        n += 1
    return n


def _write_file(lines: Iterable[str], target: Path) -> int:
    """Written beside the target and renamed at the end: a failed export never leaves a
    half file or clobbers an earlier one."""
    tmp = target.with_name(f".{target.name}.partial")
    n = 0
    try:
        with open(tmp, "w", encoding="utf-8") as out:
            for line in lines:
                out.write(line)
                n += 1
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)
    return n
