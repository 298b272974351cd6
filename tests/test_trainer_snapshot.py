"""Reading a round's votes from storage (trainer.snapshot), on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.orm import Session, sessionmaker

from store.db import repository
from store.db.migrate import upgrade
from store.db.models import (
    Comparison,
    ComparisonChoice,
    Generation,
    GenerationStatus,
    Rating,
    User,
    UserKind,
    new_id,
)
from store.db.session import make_engine, make_session_factory, session_scope
from tests.dbutil import generation_row, lora_version
from trainer.records import Snapshot, messages
from trainer.snapshot import count_events, last_vote_at, take_snapshot

T = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
H = timedelta(hours=1)
D = timedelta(days=1)
SINCE = T + 2 * D
NOW = T + 5 * D  # with replay_days=3 the window is [T - 1 day, T + 5 days)

P_MATH = [{"role": "user", "content": "What is 2+2?"}]
P_COLOR = [
    {"role": "system", "content": "Answer in one word."},
    {"role": "user", "content": "Name a colour, bitte."},
]
P_HI = [{"role": "user", "content": "Say hi"}]
P_POEM = [{"role": "user", "content": "A haiku?"}]
P_OLD = [{"role": "user", "content": "Long ago?"}]


@dataclass(frozen=True)
class Fixture:
    sessions: sessionmaker[Session]
    engine: Any
    users: tuple[str, str, str]


@pytest.fixture
def data(db_url: str, tmp_path: Path) -> Iterator[Fixture]:
    """Nine replies (some not final, two old), nine rating rows, six comparisons."""
    eng = make_engine(db_url)
    upgrade(eng)
    sessions = make_session_factory(eng)
    u1, u2, u3 = new_id("usr"), new_id("usr"), new_id("usr")
    with session_scope(sessions) as s:
        v0 = repository.ensure_base_version(s, tmp_path)
        v1 = lora_version("v1", v0, tmp_path)
        s.add(v1)
        s.add_all(User(id=u, kind=UserKind.ANONYMOUS) for u in (u1, u2, u3))
        s.flush()

        def gen(
            gid: str, version: int, prompt: list[dict[str, str]], text: str,
            status: GenerationStatus, reason: str | None, created: datetime,
        ) -> Generation:  # fmt: skip
            g = generation_row(gid, version, prompt=prompt, text=text, status=status)
            g.finish_reason = reason
            g.created_at = created
            return g

        done, cut = GenerationStatus.COMPLETED, GenerationStatus.CUT_OFF
        s.add_all(
            [
                gen("g1", v0.id, P_MATH, "4", done, "stop", T),
                gen("g2", v1.id, P_MATH, "Four.", done, "length", T + timedelta(minutes=1)),
                gen("g3", v0.id, P_COLOR, "Blue", cut, None, T + 2 * H),
                gen("g4", v0.id, P_HI, "hi th", GenerationStatus.STREAMING, None, T + 3 * H),
                gen("g5", v1.id, P_HI, "", GenerationStatus.ERROR, None, T + 3 * H),
                gen("g6", v1.id, P_POEM, "Leaves fall", done, "stop", T - 10 * D),
                gen("g7", v0.id, P_POEM, "Snow melts", done, "stop", T + 4 * H),
                gen("g8", v0.id, P_MATH, "four", done, "stop", T + 5 * H),
                gen("g9", v0.id, P_OLD, "Yes", done, "stop", T - 9 * D),  # unvoted, old
            ]
        )
        s.flush()

        def rating(
            gen: str, user: str, value: int, at: datetime, superseded: datetime | None = None
        ) -> Rating:
            return Rating(
                generation_id=gen,
                user_id=user,
                value=value,
                live=superseded is None,
                created_at=at,
                superseded_at=superseded,
            )

        def cmp(
            cid: str, user: str | None, a: str, b: str, choice: str | None,
            voted_at: datetime | None,
        ) -> Comparison:  # fmt: skip
            return Comparison(
                id=cid,
                user_id=user,
                prompt=P_MATH,
                generation_a_id=a,
                generation_b_id=b,
                choice=None if choice is None else ComparisonChoice(choice),
                created_at=(voted_at or T) - timedelta(minutes=1),
                voted_at=voted_at,
            )

        s.add_all(
            [
                rating("g1", u1, 1, T, superseded=T + H),  # changed: superseded, left out
                rating("g1", u1, -1, T + H),
                rating("g2", u2, 1, T + 2 * H),
                rating("g3", u3, 1, T + D),  # cut off: final, kept
                rating("g4", u3, 1, T + D),  # still streaming
                rating("g5", u1, -1, T + D),  # error
                rating("g6", u2, 1, T - 2 * D),  # before the window
                rating("g7", u1, 1, NOW),  # at the window's end, which is excluded
                rating("g7", u2, -1, T + 3 * D),
            ]
        )
        s.add_all(
            [
                cmp("cmp-1", u1, "g1", "g2", "b", T + 5 * H),
                cmp("cmp-2", u2, "g3", "g1", "tie", T + D),
                cmp("cmp-3", u1, "g1", "g2", None, None),  # never voted
                cmp("cmp-4", u3, "g4", "g1", "a", T + D),  # a reply still streaming
                cmp("cmp-5", u2, "g6", "g7", "both_bad", T - 2 * D),  # before the window
                cmp("cmp-6", None, "g7", "g6", "a", T + 3 * D),
            ]
        )
    try:
        yield Fixture(sessions, eng, (u1, u2, u3))
    finally:
        eng.dispose()


def _snapshot(f: Fixture, since: datetime | None = SINCE, max_prompts: int = 10) -> Snapshot:
    with session_scope(f.sessions) as s:
        return take_snapshot(s, since=since, replay_days=3, now=NOW, max_prompts=max_prompts)


def test_snapshot_reads_live_ratings_of_final_replies_in_the_window(data: Fixture) -> None:
    u1, u2, u3 = data.users
    snap = _snapshot(data)
    assert snap.window_start == T - D
    assert snap.window_end == NOW
    assert snap.since == SINCE
    got = [(r.reply.generation_id, r.user, r.value, r.at) for r in snap.ratings]
    assert got == [
        ("g1", u1, -1, T + H),
        ("g2", u2, 1, T + 2 * H),
        ("g3", u3, 1, T + D),
        ("g7", u2, -1, T + 3 * D),
    ]
    assert all(r.at.tzinfo is not None and r.at.utcoffset() == timedelta(0) for r in snap.ratings)
    assert len({r.id for r in snap.ratings}) == 4


def test_snapshot_replies_carry_prompt_text_version_and_finished(data: Fixture) -> None:
    snap = _snapshot(data)
    replies = {r.reply.generation_id: r.reply for r in snap.ratings}
    replies |= {c.a.generation_id: c.a for c in snap.comparisons}
    replies |= {c.b.generation_id: c.b for c in snap.comparisons}
    g1, g2, g3, g6 = replies["g1"], replies["g2"], replies["g3"], replies["g6"]
    assert (g1.prompt, g1.text, g1.version, g1.finished) == (messages(P_MATH), "4", "v0", True)
    assert (g2.text, g2.version, g2.finished) == ("Four.", "v1", False)  # hit the length cap
    assert (g3.prompt, g3.version, g3.finished) == (messages(P_COLOR), "v0", False)  # cut off
    assert (g6.version, g6.finished) == ("v1", True)
    assert g1.prompt == (("user", "What is 2+2?"),)


def test_snapshot_reads_voted_comparisons_of_final_replies_in_the_window(data: Fixture) -> None:
    u1, u2, _ = data.users
    snap = _snapshot(data)
    got = [
        (c.id, c.user, c.a.generation_id, c.b.generation_id, c.choice, c.at)
        for c in snap.comparisons
    ]
    assert got == [
        ("cmp-1", u1, "g1", "g2", "b", T + 5 * H),
        ("cmp-2", u2, "g3", "g1", "tie", T + D),
        ("cmp-6", None, "g7", "g6", "a", T + 3 * D),  # g6 is old, the vote is not
    ]
    assert all(c.at.utcoffset() == timedelta(0) for c in snap.comparisons)


def test_snapshot_prompts_are_distinct_final_and_newest_first(data: Fixture) -> None:
    snap = _snapshot(data)
    # g8 (math, newest), g7 (poem), g3 (colour); streaming/error (hi), g6 and g9 (old) left out.
    assert snap.prompts == (messages(P_MATH), messages(P_POEM), messages(P_COLOR))
    assert _snapshot(data, max_prompts=2).prompts == (messages(P_MATH), messages(P_POEM))
    assert _snapshot(data, max_prompts=0).prompts == ()


def test_snapshot_without_since_reads_everything_before_now(data: Fixture) -> None:
    snap = _snapshot(data, since=None)
    assert snap.window_start is None and snap.since is None
    assert [r.reply.generation_id for r in snap.ratings] == ["g6", "g1", "g2", "g3", "g7"]
    assert [c.id for c in snap.comparisons] == ["cmp-5", "cmp-1", "cmp-2", "cmp-6"]
    assert snap.prompts == tuple(messages(p) for p in (P_MATH, P_POEM, P_COLOR, P_OLD))


def test_snapshot_takes_since_in_any_timezone(data: Fixture) -> None:
    plus_two = SINCE.astimezone(timezone(timedelta(hours=2)))
    assert _snapshot(data, since=plus_two) == _snapshot(data)


def test_snapshot_reads_with_a_fixed_number_of_queries(data: Fixture) -> None:
    statements: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            statements.append(statement)

    event.listen(data.engine, "before_cursor_execute", seen)
    try:
        snap = _snapshot(data, since=None)
    finally:
        event.remove(data.engine, "before_cursor_execute", seen)
    assert len(snap.ratings) + len(snap.comparisons) == 9
    assert len(statements) == 3  # ratings, comparisons, prompts: no query per vote


def test_count_events_counts_every_rating_row_and_voted_comparison(data: Fixture) -> None:
    with session_scope(data.sessions) as s:
        # ratings created at/after T + 1 day: g3, g4, g5, g7 twice; comparisons: 2, 4, 6
        assert count_events(s, T + D) == 5 + 3
        # from T: the superseded rating counts as the event it was
        assert count_events(s, T) == 8 + 4
        assert count_events(s, None) == 9 + 5  # the unvoted comparison is no event
        assert count_events(s, NOW + timedelta(seconds=1)) == 0
        assert count_events(s, (T + D).astimezone(timezone(timedelta(hours=-5)))) == 8


def test_last_vote_at_is_the_latest_vote_event(data: Fixture) -> None:
    with session_scope(data.sessions) as s:
        at = last_vote_at(s)
    assert at == NOW and at is not None and at.utcoffset() == timedelta(0)


def test_empty_database(db_url: str) -> None:
    eng = make_engine(db_url)
    try:
        upgrade(eng)
        with session_scope(make_session_factory(eng)) as s:
            assert last_vote_at(s) is None
            assert count_events(s, None) == 0
            snap = take_snapshot(s, since=None, replay_days=30, now=NOW, max_prompts=10)
        assert (snap.ratings, snap.comparisons, snap.prompts) == ((), (), ())
    finally:
        eng.dispose()
