"""`loopchat policy ...`: list, events, ratings, promote, rollback, retire.

Changes go through the running server's operator API, so the engine swaps at once.
When no server answers, `promote` and `rollback` write the change to the database
instead (same lifecycle checks, same event log); a server follows it when it starts or
at its next poll. Reading commands use the database directly.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass

import httpx
from sqlalchemy.orm import Session, sessionmaker

from service.errors import LoopchatError
from service.policies import store
from service.policies.lifecycle import Actor, promotion_kind
from service.policies.ratings import rate_versions
from store.db.session import session_scope
from store.domain import VersionStatus

S = VersionStatus


@dataclass(frozen=True)
class Target:
    url: str
    admin_token: str


def _print_table(rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def list_versions(sessions: sessionmaker[Session]) -> int:
    with session_scope(sessions) as s:
        rows = store.versions(s)
    names = {r.id: r.name for r in rows}
    table = [["NAME", "STATUS", "KIND", "PARENT", "CREATED", "TRAINER WIN RATE", "ERROR"]]
    for r in rows:
        win = r.metrics.get("win_rate")
        table.append(
            [
                r.name,
                r.status.value,
                r.kind.value,
                names.get(r.parent_id, "-") if r.parent_id else "-",
                r.created_at.strftime("%Y-%m-%d %H:%M"),
                f"{win:.3f}" if isinstance(win, float) else "-",
                (r.error or "")[:60],
            ]
        )
    _print_table(table)
    return 0


def list_events(sessions: sessionmaker[Session], limit: int) -> int:
    with session_scope(sessions) as s:
        rows = store.events(s, limit=limit)
    table = [["TIME", "KIND", "VERSION", "FROM", "ACTOR", "REASON"]]
    for e in rows:
        when = e.created_at.strftime("%Y-%m-%d %H:%M:%S")
        table.append([when, e.kind, e.version, e.previous_version or "-", e.actor, e.reason[:80]])
    _print_table(table)
    return 0


def show_ratings(sessions: sessionmaker[Session]) -> int:
    with session_scope(sessions) as s:
        rows, matches, thumbs = store.versions(s), store.matches(s), store.thumbs(s)
    shown = [r.name for r in rows if r.status not in (S.REJECTED, S.FAILED)]
    table = [["VERSION", "ELO", "95% INTERVAL", "COMPARISONS", "THUMBS UP", "UP RATE"]]
    for v in rate_versions(matches, thumbs, shown):
        rate = "-" if v.thumbs_rate is None else f"{v.thumbs_rate:.3f}"
        if v.thumbs_interval is not None:
            rate += f" [{v.thumbs_interval.low:.3f}, {v.thumbs_interval.high:.3f}]"
        interval = f"[{v.interval.low:.0f}, {v.interval.high:.0f}]"
        votes = f"{v.thumbs_up}/{v.thumbs_up + v.thumbs_down}"
        table.append([v.name, f"{v.elo:.0f}", interval, str(v.comparisons), votes, rate])
    _print_table(table)
    return 0


def change(
    target: Target,
    sessions: sessionmaker[Session],
    action: str,
    ref: str | None,
    reason: str,
) -> int:
    """`action` is promote, rollback or retire. Prints the version's new state as JSON."""
    verb = "promote" if action == "rollback" else action  # rollback to a named version
    path = "/v1/admin/policies/rollback" if ref is None else f"/v1/admin/policies/{ref}/{verb}"
    try:
        r = httpx.post(
            target.url.rstrip("/") + path,
            json={"reason": reason or None},
            headers={"Authorization": f"Bearer {target.admin_token}"},
            timeout=60.0,
        )
    except (httpx.ConnectError, httpx.ConnectTimeout) as e:
        # Only when the request never reached a server: after that, it may have acted.
        if action == "retire":
            print(f"loopchat policy: no server at {target.url} ({e})", file=sys.stderr)
            return 1
        print(f"no server at {target.url}; writing the change to the database", file=sys.stderr)
        return _offline(sessions, ref, reason)
    except httpx.HTTPError as e:
        print(
            f"loopchat policy {action}: {target.url} did not answer ({e}); check with "
            f"`loopchat policy events` before trying again",
            file=sys.stderr,
        )
        return 1
    if r.status_code >= 300:
        try:
            message = r.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = r.text[:300]
        print(f"loopchat policy {action}: {message}", file=sys.stderr)
        return 1
    print(json.dumps(r.json(), indent=2, default=str))
    return 0


def _offline(sessions: sessionmaker[Session], ref: str | None, reason: str) -> int:
    try:
        with session_scope(sessions) as s:
            name = offline_promote(s, ref, reason)
    except LoopchatError as e:
        print(f"loopchat policy: {e.message}", file=sys.stderr)
        return 1
    print(f"{name} serves from the next server start or poll")
    return 0


def offline_promote(session: Session, ref: str | None, reason: str) -> str:
    """Make `ref` (or the version that served before the current one) serve, in the
    database only. Same checks and event as the server's promote."""
    current = next(iter(store.versions(session, [S.SERVING])), None)
    if ref is None:
        previous = store.previous_serving(session, current.name) if current else None
        if previous is None:
            raise LoopchatError("there is no earlier serving version to roll back to")
        ref = previous
    row = store.find(session, ref)
    if current is not None and row.name == current.name:
        return row.name
    kind = promotion_kind(row.status)
    if current is not None:
        store.transition(session, current.name, S.RETIRED)
    store.transition(session, row.name, S.SERVING)
    note = "written to the database while the server was unreachable"
    store.record_event(
        session,
        kind,
        row.id,
        Actor.OPERATOR,
        f"{reason}; {note}" if reason else note,
        previous_version_id=current.id if current else None,
    )
    return row.name


def server_url(host: str, port: int) -> str:
    host = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host
    return f"http://{host}:{port}"
