"""The shared vote queries (store.votes) and the one Wilson interval (store.intervals)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
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
)
from store.db.session import make_engine, make_session_factory, session_scope
from store.intervals import Interval, confidence_sequence, wilson_interval, z_score
from store.votes import (
    ComparisonSides,
    VersionThumbs,
    comparisons_with_replies,
    ratings_with_replies,
    thumbs_per_version,
)
from tests.dbutil import generation_row, lora_version

T = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
H = timedelta(hours=1)
USER, OTHER = "usr-votes", "usr-other"


def _comparison(cid: str, a: str, b: str, choice: str | None, at: datetime | None) -> Comparison:
    return Comparison(
        id=cid,
        user_id=USER,
        prompt=[{"role": "user", "content": "hi"}],
        generation_a_id=a,
        generation_b_id=b,
        choice=None if choice is None else ComparisonChoice(choice),
        created_at=T,
        voted_at=at,
    )


def _rating(gen: str, value: int, at: datetime, live: bool = True, user: str = USER) -> Rating:
    return Rating(generation_id=gen, user_id=user, value=value, live=live, created_at=at)


@pytest.fixture
def sessions(db_url: str, tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    """v0 and v1; replies done (v0), cut (v1), failed (v1), streaming (v0); votes on them."""
    eng = make_engine(db_url)
    upgrade(eng)
    factory = make_session_factory(eng)
    with session_scope(factory) as s:
        v0 = repository.ensure_base_version(s, tmp_path)
        v1 = lora_version("v1", v0, tmp_path)
        s.add_all([v1, *(User(id=u, kind=UserKind.ANONYMOUS) for u in (USER, OTHER))])
        s.flush()
        s.add_all(
            [
                generation_row("done", v0.id, text="done text"),
                generation_row("cut", v1.id, status=GenerationStatus.CUT_OFF),
                generation_row("failed", v1.id, status=GenerationStatus.ERROR),
                generation_row("streaming", v0.id, status=GenerationStatus.STREAMING),
            ]
        )
        s.flush()
        s.add_all(
            [
                _comparison("cmp-ok", "done", "cut", "a", T + H),
                _comparison("cmp-failed", "done", "failed", "b", T + 2 * H),
                _comparison("cmp-open", "done", "cut", None, None),
                _comparison("cmp-late", "cut", "done", "tie", T + 30 * H),
                _rating("done", 1, T + H),
                _rating("done", -1, T + 2 * H, live=False),  # changed since
                _rating("cut", -1, T + 3 * H),
                _rating("streaming", 1, T + 4 * H),
                _rating("cut", 1, T + 30 * H, user=OTHER),
            ]
        )
    yield factory
    eng.dispose()


def _comparison_rows(factory: sessionmaker[Session], **kw: Any) -> list[Any]:
    sides = ComparisonSides.new()
    stmt = comparisons_with_replies(
        sides, Comparison.id, *sides.replies("id", "text", "status"), **kw
    ).order_by(Comparison.id)
    with session_scope(factory) as s:
        return list(s.execute(stmt))


def test_comparisons_join_both_replies_and_their_versions(
    sessions: sessionmaker[Session],
) -> None:
    (row,) = [r for r in _comparison_rows(sessions) if r.id == "cmp-ok"]
    assert (row.a_id, row.a_text, row.a_version) == ("done", "done text", "v0")
    assert (row.b_id, row.b_version) == ("cut", "v1")
    assert GenerationStatus(row.b_status) is GenerationStatus.CUT_OFF


def test_comparisons_voted_finished_and_window(sessions: sessionmaker[Session]) -> None:
    def ids(**kw: Any) -> list[str]:
        return [r.id for r in _comparison_rows(sessions, **kw)]

    assert ids() == ["cmp-failed", "cmp-late", "cmp-ok"]  # the open one is not voted
    assert ids(voted=False) == ["cmp-failed", "cmp-late", "cmp-ok", "cmp-open"]
    # A failed reply leaves its comparison out; a cut-off one counts as finished.
    assert ids(finished=True) == ["cmp-late", "cmp-ok"]
    assert ids(since=T + 2 * H) == ["cmp-failed", "cmp-late"]  # since is inclusive
    assert ids(until=T + 2 * H) == ["cmp-ok"]  # until is exclusive
    naive = (T + 2 * H).replace(tzinfo=None)  # naive times are taken as UTC
    assert ids(until=naive) == ["cmp-ok"]


def test_ratings_with_replies_live_and_finished(sessions: sessionmaker[Session]) -> None:
    def rows(**kw: Any) -> list[tuple[str, int, str]]:
        stmt = ratings_with_replies(Generation.id, Rating.value, **kw).order_by(Rating.created_at)
        with session_scope(sessions) as s:
            return [(gid, value, version) for gid, value, version in s.execute(stmt)]

    assert len(rows()) == 5
    usable = [("done", 1, "v0"), ("cut", -1, "v1"), ("cut", 1, "v1")]
    assert rows(live=True, finished=True) == usable  # not the streaming reply's, nor the old
    assert rows(live=True, until=T + 4 * H) == [("done", 1, "v0"), ("cut", -1, "v1")]
    assert rows(since=T + 4 * H) == [("streaming", 1, "v0"), ("cut", 1, "v1")]


def test_thumbs_per_version_counts_live_ratings_in_the_window(
    sessions: sessionmaker[Session],
) -> None:
    with session_scope(sessions) as s:
        everything = thumbs_per_version(s)
        window = thumbs_per_version(s, since=T + 2 * H, until=T + 10 * H)
        empty = thumbs_per_version(s, since=T + 40 * H)
    v0, v1 = everything
    assert (v0.version, v0.up, v0.down) == ("v0", 2, 0)  # the changed vote is not live
    assert (v1.version, v1.up, v1.down) == ("v1", 1, 1)
    assert v0.version_id < v1.version_id
    assert window == [
        VersionThumbs(v0.version_id, "v0", 1, 0),
        VersionThumbs(v1.version_id, "v1", 0, 1),
    ]
    assert empty == []


# -- the Wilson interval -------------------------------------------------------------------


def test_wilson_interval_known_values() -> None:
    # Newcombe (1998), Statistics in Medicine 17:857, table I, method 3 (Wilson score).
    published = {
        (81, 263): (0.2553, 0.3662),
        (15, 148): (0.0624, 0.1605),
        (0, 20): (0.0, 0.1611),
        (1, 29): (0.0061, 0.1718),
        (29, 29): (0.8830, 1.0),
        (5, 10): (0.2366, 0.7634),
        (50, 100): (0.4038, 0.5962),
        (0, 10): (0.0, 0.2775),
        (10, 10): (0.7225, 1.0),
    }
    for (k, n), (low, high) in published.items():
        ci = wilson_interval(k, n)
        assert (ci.low, ci.high) == pytest.approx((low, high), abs=5e-5)
    # The bounds are exact at the extremes, not merely close.
    assert wilson_interval(0, 10).low == 0.0 and wilson_interval(10, 10).high == 1.0
    # Roots of (k/n - p)^2 = z^2 p (1 - p) / n, found by bisection, for z = z_score(0.99).
    ci = wilson_interval(8, 10, level=0.99)
    assert (ci.low, ci.high) == pytest.approx((0.400819, 0.959869), abs=1e-6)
    assert z_score(0.95) == pytest.approx(1.959964, abs=1e-6)
    assert wilson_interval(50, 100, level=0.99).low < wilson_interval(50, 100).low
    half = wilson_interval(2.5, 5)  # half-wins (ties) are allowed
    assert half.low == pytest.approx(1 - half.high)
    assert wilson_interval(0, 0) == Interval(0.0, 1.0)  # no trials: nothing is known
    for bad in ((3, 2), (-1, 2), (0, -1)):
        with pytest.raises(ValueError):
            wilson_interval(*bad)
    with pytest.raises(ValueError):
        wilson_interval(1, 2, level=1.0)


def test_confidence_sequence_is_wider_than_wilson_and_shrinks() -> None:
    for n in (30, 100, 1000):
        cs, w = confidence_sequence(0.6 * n, n), wilson_interval(0.6 * n, n)
        assert cs.low < w.low and cs.high > w.high  # the price of looking at every n
    widths = [confidence_sequence(n / 2, n).high - confidence_sequence(n / 2, n).low
              for n in (10, 100, 1000, 10000)]  # fmt: skip
    assert widths == sorted(widths, reverse=True) and widths[-1] < 0.06
    assert confidence_sequence(0, 0) == Interval(0.0, 1.0)
    assert confidence_sequence(2.5, 5).low < 0.5 < confidence_sequence(2.5, 5).high
    for bad in ((-1, 3), (4, 3), (1, -1)):
        with pytest.raises(ValueError):
            confidence_sequence(*bad)
    with pytest.raises(ValueError):
        confidence_sequence(1, 2, tuned_for=0)
