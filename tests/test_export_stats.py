"""Feedback export (pairs, unpaired, raw) and statistics, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from service.feedback import export
from service.feedback.export import ExportFilter, ExportFormat, export_lines, export_rows
from service.feedback.stats import feedback_stats
from service.identity.credentials import pseudonym
from store.db import repository
from store.db.migrate import upgrade
from store.db.models import (
    Comparison,
    ComparisonChoice,
    GenerationStatus,
    Rating,
    User,
    UserKind,
    new_id,
)
from store.db.session import make_engine, make_session_factory, session_scope
from store.evidence import EvidenceRules
from store.intervals import wilson_interval
from tests.dbutil import generation_row, lora_version

SECRET = "test-secret"
ALIAS = "loopchat"
T = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
H = timedelta(hours=1)
D = timedelta(days=1)

P_MATH = [{"role": "user", "content": "What is 2+2?"}]
P_COLOR = [
    {"role": "system", "content": "Answer in one word."},
    {"role": "user", "content": "Name a colour, bitte."},
]
P_HI = [{"role": "user", "content": "Say hi"}]
P_POEM = [{"role": "user", "content": "A haiku?"}]

TEXTS = {
    "chatcmpl-1": "4",
    "chatcmpl-2": "Four.",
    "chatcmpl-3": "Blau - blue, grün ü",
    "chatcmpl-4": "Red",
    "chatcmpl-5": "hi (still stream",
    "chatcmpl-6": "Leaves fall",
    "chatcmpl-7": "Snow melts",
}


@dataclass(frozen=True)
class Fixture:
    sessions: sessionmaker[Session]
    users: tuple[str, str, str]


def _cmp(
    cid: str, user: str, prompt: list[dict[str, str]], a: str, b: str, choice: str | None,
    reason: str | None, voted_at: datetime | None,
) -> Comparison:  # fmt: skip
    return Comparison(
        id=cid,
        user_id=user,
        prompt=prompt,
        generation_a_id=a,
        generation_b_id=b,
        choice=None if choice is None else ComparisonChoice(choice),
        reason=reason,
        created_at=(voted_at or T + 3 * D) - timedelta(minutes=1),
        voted_at=voted_at,
    )


@pytest.fixture
def data(db_url: str, tmp_path: Path) -> Iterator[Fixture]:
    """Versions v0 and v1; seven replies; six rating rows; seven comparisons (one open)."""
    eng = make_engine(db_url)
    upgrade(eng)
    sessions = make_session_factory(eng)
    u1, u2, u3 = new_id("usr"), new_id("usr"), new_id("usr")
    with session_scope(sessions) as s:
        v0 = repository.ensure_base_version(s, tmp_path)
        v1 = lora_version("v1", v0, tmp_path)
        s.add(v1)
        s.add_all(
            User(id=u, kind=UserKind.ANONYMOUS, created_at=T - timedelta(days=30))
            for u in (u1, u2, u3)
        )
        s.flush()
        done = GenerationStatus.COMPLETED
        s.add_all(
            [
                generation_row(
                    "chatcmpl-1", v0.id, prompt=P_MATH, text=TEXTS["chatcmpl-1"], status=done
                ),
                generation_row(
                    "chatcmpl-2", v1.id, prompt=P_MATH, text=TEXTS["chatcmpl-2"], status=done
                ),
                generation_row(
                    "chatcmpl-3", v0.id, prompt=P_COLOR, text=TEXTS["chatcmpl-3"], status=done
                ),
                generation_row(
                    "chatcmpl-4",
                    v1.id,
                    prompt=P_COLOR,
                    text=TEXTS["chatcmpl-4"],
                    status=GenerationStatus.CUT_OFF,
                ),
                generation_row(
                    "chatcmpl-5",
                    v0.id,
                    prompt=P_HI,
                    text=TEXTS["chatcmpl-5"],
                    status=GenerationStatus.STREAMING,
                ),
                generation_row(
                    "chatcmpl-6", v1.id, prompt=P_POEM, text=TEXTS["chatcmpl-6"], status=done
                ),
                generation_row(
                    "chatcmpl-7", v1.id, prompt=P_POEM, text=TEXTS["chatcmpl-7"], status=done
                ),
            ]
        )
        s.flush()

        def rating(
            gen: str, user: str, value: int, reason: str | None, at: datetime,
            superseded: datetime | None = None, comment: str | None = None,
        ) -> Rating:  # fmt: skip
            return Rating(
                generation_id=gen,
                user_id=user,
                value=value,
                reason=reason,
                comment=comment,
                live=superseded is None,
                created_at=at,
                superseded_at=superseded,
            )

        s.add_all(
            [
                # u1 changed their mind on reply 1: up, then down.
                rating("chatcmpl-1", u1, 1, "accurate", T, superseded=T + H),
                rating("chatcmpl-1", u1, -1, "wrong", T + H, comment="it is 4, but terse"),
                rating("chatcmpl-2", u2, 1, "helpful", T + 2 * H),
                # u2 rated reply 3 down, then withdrew it.
                rating("chatcmpl-3", u2, -1, None, T + 3 * H, superseded=T + 4 * H),
                rating("chatcmpl-4", u3, 1, "helpful", T + D),
                # A vote on a reply still streaming: not final, left out of training exports.
                rating("chatcmpl-5", u3, 1, None, T + D + H),
            ]
        )
        s.add_all(
            [
                _cmp("cmp-1", u1, P_MATH, "chatcmpl-1", "chatcmpl-2", "b", "more_helpful",
                     T + 5 * H),
                _cmp("cmp-2", u2, P_COLOR, "chatcmpl-4", "chatcmpl-3", "b", "more_accurate",
                     T + D + 2 * H),
                _cmp("cmp-3", u1, P_MATH, "chatcmpl-1", "chatcmpl-2", "tie", None, T + D + 3 * H),
                _cmp("cmp-4", u3, P_COLOR, "chatcmpl-3", "chatcmpl-4", "both_bad", "other",
                     T + 2 * D),
                _cmp("cmp-5", u1, P_MATH, "chatcmpl-1", "chatcmpl-2", None, None, None),
                _cmp("cmp-6", u2, P_POEM, "chatcmpl-6", "chatcmpl-7", "a", None, T + 2 * D + H),
                _cmp("cmp-7", u3, P_HI, "chatcmpl-5", "chatcmpl-2", "a", "more_helpful",
                     T + 2 * D + 2 * H),
            ]
        )  # fmt: skip
    try:
        yield Fixture(sessions, (u1, u2, u3))
    finally:
        eng.dispose()


def _rows(
    f: Fixture,
    fmt: ExportFormat,
    flt: ExportFilter | None = None,
    evidence: EvidenceRules | None = None,
) -> list[dict[str, Any]]:
    with session_scope(f.sessions) as s:
        return list(export_rows(s, fmt, flt or ExportFilter(), SECRET, ALIAS, evidence))


def _reply(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def test_pairs_put_the_winner_in_chosen(data: Fixture) -> None:
    rows = _rows(data, ExportFormat.PAIRS)
    assert rows == [
        {"prompt": P_MATH, "chosen": _reply("Four."), "rejected": _reply("4")},  # cmp-1, b won
        # cmp-2: b (v0) won against a cut-off reply (cut-off text is final)
        {"prompt": P_COLOR, "chosen": _reply(TEXTS["chatcmpl-3"]), "rejected": _reply("Red")},
        {"prompt": P_POEM, "chosen": _reply("Leaves fall"), "rejected": _reply("Snow melts")},
    ]
    # tie, both_bad, the open comparison and cmp-7 (a reply still streaming) are not pairs
    assert all(set(r) == {"prompt", "chosen", "rejected"} for r in rows)


def test_unpaired_has_one_row_per_live_rating_of_a_finished_reply(data: Fixture) -> None:
    rows = _rows(data, ExportFormat.UNPAIRED)
    assert rows == [
        {"prompt": P_MATH, "completion": _reply("4"), "label": False},  # the changed vote
        {"prompt": P_MATH, "completion": _reply("Four."), "label": True},
        {"prompt": P_COLOR, "completion": _reply("Red"), "label": True},
    ]


def test_raw_keeps_every_vote_event_with_history(data: Fixture) -> None:
    u1, _, u3 = data.users
    rows = _rows(data, ExportFormat.RAW)
    kinds = [(r["kind"], r["id"]) for r in rows]
    assert [k for k, _ in kinds].count("rating") == 6
    assert [i for k, i in kinds if k == "comparison"] == [
        "cmp-1", "cmp-2", "cmp-3", "cmp-4", "cmp-6", "cmp-7",
    ]  # fmt: skip
    times = [r["created_at"] if r["kind"] == "rating" else r["voted_at"] for r in rows]
    assert times == sorted(times)  # vote order across both kinds

    changed = [r for r in rows if r["kind"] == "rating" and r["generation_id"] == "chatcmpl-1"]
    assert changed == [
        {
            "kind": "rating",
            "id": changed[0]["id"],
            "user": pseudonym(SECRET, u1),
            "generation_id": "chatcmpl-1",
            "policy_version": "loopchat@v0",
            "generation_status": "completed",
            "prompt": P_MATH,
            "text": "4",
            "value": "up",
            "reason": "accurate",
            "comment": None,
            "live": False,
            "created_at": "2026-11-20T10:00:00+00:00",
            "superseded_at": "2026-11-20T11:00:00+00:00",
        },
        {
            "kind": "rating",
            "id": changed[1]["id"],
            "user": pseudonym(SECRET, u1),
            "generation_id": "chatcmpl-1",
            "policy_version": "loopchat@v0",
            "generation_status": "completed",
            "prompt": P_MATH,
            "text": "4",
            "value": "down",
            "reason": "wrong",
            "comment": "it is 4, but terse",
            "live": True,
            "created_at": "2026-11-20T11:00:00+00:00",
            "superseded_at": None,
        },
    ]
    withdrawn = [r for r in rows if r["kind"] == "rating" and r["generation_id"] == "chatcmpl-3"]
    assert [(w["live"], w["superseded_at"]) for w in withdrawn] == [
        (False, "2026-11-20T14:00:00+00:00")
    ]
    streaming = [r for r in rows if r.get("generation_id") == "chatcmpl-5"]
    assert streaming[0]["generation_status"] == "streaming"

    cmp7 = next(r for r in rows if r["id"] == "cmp-7")
    assert cmp7 == {
        "kind": "comparison",
        "id": "cmp-7",
        "user": pseudonym(SECRET, u3),
        "prompt": P_HI,
        "choice": "a",
        "reason": "more_helpful",
        "created_at": "2026-11-22T11:59:00+00:00",
        "voted_at": "2026-11-22T12:00:00+00:00",
        "generation_a_id": "chatcmpl-5",
        "generation_b_id": "chatcmpl-2",
        "policy_version_a": "loopchat@v0",
        "policy_version_b": "loopchat@v1",
        "generation_status_a": "streaming",
        "generation_status_b": "completed",
        "text_a": TEXTS["chatcmpl-5"],
        "text_b": "Four.",
        "set_aside": None,
    }
    assert {r["choice"] for r in rows if r["kind"] == "comparison"} == {"a", "b", "tie", "both_bad"}


def test_pseudonyms_are_stable_and_hide_user_ids(data: Fixture) -> None:
    first = _rows(data, ExportFormat.RAW)
    again = _rows(data, ExportFormat.RAW)
    assert [r["user"] for r in first] == [r["user"] for r in again]
    assert {r["user"] for r in first} == {pseudonym(SECRET, u) for u in data.users}
    with session_scope(data.sessions) as s:
        text = "".join(export_lines(s, ExportFormat.RAW, ExportFilter(), SECRET, ALIAS))
        other = list(export_rows(s, ExportFormat.RAW, ExportFilter(), "another", ALIAS))
    assert not any(u in text for u in data.users)
    assert {r["user"] for r in other}.isdisjoint({r["user"] for r in first})


def test_lines_are_compact_json_with_unicode_kept(data: Fixture) -> None:
    with session_scope(data.sessions) as s:
        lines = list(export_lines(s, ExportFormat.PAIRS, ExportFilter(), SECRET, ALIAS))
    assert len(lines) == 3
    assert all(line.endswith("\n") and line.count("\n") == 1 for line in lines)
    assert "Blau - blue, grün ü" in lines[1]
    assert ", " not in lines[0] and '": ' not in lines[0]
    assert [json.loads(line) for line in lines] == _rows(data, ExportFormat.PAIRS)


def test_filter_by_version(data: Fixture) -> None:
    v0 = ExportFilter(version="v0")
    assert [r["chosen"][0]["content"] for r in _rows(data, ExportFormat.PAIRS, v0)] == [
        "Four.",
        TEXTS["chatcmpl-3"],
    ]
    assert _rows(data, ExportFormat.UNPAIRED, v0) == [
        {"prompt": P_MATH, "completion": _reply("4"), "label": False}
    ]
    v1 = ExportFilter(version="loopchat@v1")
    assert len(_rows(data, ExportFormat.PAIRS, v1)) == 3
    assert [r["completion"][0]["content"] for r in _rows(data, ExportFormat.UNPAIRED, v1)] == [
        "Four.",
        "Red",
    ]
    raw = _rows(data, ExportFormat.RAW, v1)
    assert [r["id"] for r in raw if r["kind"] == "comparison"] == [
        "cmp-1", "cmp-2", "cmp-3", "cmp-4", "cmp-6", "cmp-7",
    ]  # fmt: skip
    assert [r["generation_id"] for r in raw if r["kind"] == "rating"] == [
        "chatcmpl-2",
        "chatcmpl-4",
    ]
    assert _rows(data, ExportFormat.RAW, ExportFilter(version="v9")) == []
    with pytest.raises(ValueError, match="not a model of this service"):
        _rows(data, ExportFormat.PAIRS, ExportFilter(version="other@v1"))


def test_filter_by_time_window_is_half_open(data: Fixture) -> None:
    day2 = ExportFilter(since=T + D, until=T + 2 * D)
    assert _rows(data, ExportFormat.PAIRS, day2) == [
        {"prompt": P_COLOR, "chosen": _reply(TEXTS["chatcmpl-3"]), "rejected": _reply("Red")}
    ]
    assert _rows(data, ExportFormat.UNPAIRED, day2) == [
        {"prompt": P_COLOR, "completion": _reply("Red"), "label": True}
    ]
    raw = _rows(data, ExportFormat.RAW, day2)
    # r5 at exactly `since` is in; cmp-4 at exactly `until` is out.
    assert [(r["kind"], r.get("generation_id", r["id"])) for r in raw] == [
        ("rating", "chatcmpl-4"),
        ("rating", "chatcmpl-5"),
        ("comparison", "cmp-2"),
        ("comparison", "cmp-3"),
    ]
    # Naive bounds are UTC; other offsets are converted.
    naive = ExportFilter(since=(T + D).replace(tzinfo=None), until=(T + 2 * D).replace(tzinfo=None))
    assert _rows(data, ExportFormat.RAW, naive) == raw
    cet = timezone(timedelta(hours=1))
    plus_one = ExportFilter(since=(T + D).astimezone(cet), until=(T + 2 * D).astimezone(cet))
    assert _rows(data, ExportFormat.RAW, plus_one) == raw
    only_since = ExportFilter(since=T + 2 * D)
    assert [r["id"] for r in _rows(data, ExportFormat.RAW, only_since)] == [
        "cmp-4", "cmp-6", "cmp-7",
    ]  # fmt: skip
    with pytest.raises(ValueError, match="before"):
        _rows(data, ExportFormat.RAW, ExportFilter(since=T, until=T))


def test_small_batches_give_the_same_rows(data: Fixture, monkeypatch: pytest.MonkeyPatch) -> None:
    whole = {fmt: _rows(data, fmt) for fmt in ExportFormat}
    monkeypatch.setattr(export, "BATCH_ROWS", 2)
    for fmt in ExportFormat:
        assert _rows(data, fmt) == whole[fmt]


def test_raw_merges_long_streams_in_vote_order(data: Fixture) -> None:
    u1 = data.users[0]
    start = T + 10 * D
    with session_scope(data.sessions) as s:
        s.add_all(
            Rating(
                generation_id="chatcmpl-2",
                user_id=u1,
                value=1 if i % 3 else -1,
                live=False,
                created_at=start + timedelta(seconds=2 * i),
                superseded_at=start + timedelta(seconds=2 * i + 1),
            )
            for i in range(1200)
        )
        s.add_all(
            _cmp(f"cmp-x{i:04d}", u1, P_MATH, "chatcmpl-1", "chatcmpl-2", "a", None,
                 start + timedelta(seconds=3 * i + 1))
            for i in range(700)
        )  # fmt: skip
    rows = _rows(data, ExportFormat.RAW, ExportFilter(since=start))
    assert len(rows) == 1900
    times = [datetime.fromisoformat(r["created_at" if r["kind"] == "rating" else "voted_at"])
             for r in rows]  # fmt: skip
    assert times == sorted(times)
    # One voter picking side a 700 times is set aside by the vote screen (past the cap,
    # and the first 20 for side bias): raw says so, pairs (what trains) leaves them out;
    # with the screen off all 700 are pairs.
    aside = Counter(r["set_aside"] for r in rows if r["kind"] == "comparison")
    assert set(aside) == {"over_user_cap", "side_bias"} and sum(aside.values()) == 700
    assert aside["over_user_cap"] >= 680  # the cap counts this voter's earlier votes too
    assert _rows(data, ExportFormat.PAIRS, ExportFilter(since=start)) == []
    off = EvidenceRules(enabled=False)
    assert len(_rows(data, ExportFormat.PAIRS, ExportFilter(since=start), off)) == 700


def test_stats_over_the_whole_data(data: Fixture) -> None:
    with session_scope(data.sessions) as s:
        out = feedback_stats(s, days=3, alias=ALIAS, now=T + 2 * D + 12 * H)
    assert out.window_days == 3
    assert out.since == datetime(2026, 11, 20, tzinfo=UTC)
    assert out.until == datetime(2026, 11, 22, 22, tzinfo=UTC)
    days = [
        (d.day, d.ratings, d.thumbs_up, d.thumbs_down, d.comparisons) for d in out.votes_per_day
    ]
    assert days == [
        (date(2026, 11, 20), 4, 2, 2, 1),
        (date(2026, 11, 21), 2, 2, 0, 2),
        (date(2026, 11, 22), 0, 0, 0, 3),
    ]
    v0, v1 = out.versions
    ci = wilson_interval(1, 2)
    assert v0.model_dump() == {
        "version": "loopchat@v0",
        "thumbs_up": 1,  # the streaming reply's live up
        "thumbs_down": 1,  # the changed vote counts as its live down only
        "up_rate": 0.5,
        "up_rate_low": pytest.approx(ci.low),
        "up_rate_high": pytest.approx(ci.high),
        "comparisons": 5,
        "wins": 2,
        "losses": 1,
        "ties": 1,
        "both_bad": 1,
        "win_rate": pytest.approx(2 / 3),
        "self_comparisons": 0,
    }
    ci = wilson_interval(2, 2)
    assert v1.model_dump() == {
        "version": "loopchat@v1",
        "thumbs_up": 2,
        "thumbs_down": 0,
        "up_rate": 1.0,
        "up_rate_low": pytest.approx(ci.low),
        "up_rate_high": pytest.approx(ci.high),
        "comparisons": 6,
        "wins": 1,
        "losses": 2,
        "ties": 1,
        "both_bad": 1,
        "win_rate": pytest.approx(1 / 3),
        "self_comparisons": 1,
    }
    assert [(r.kind, r.reason, r.count) for r in out.reasons] == [
        ("comparison", "more_helpful", 2),
        ("up", "helpful", 2),
        ("comparison", "more_accurate", 1),
        ("comparison", "other", 1),
        ("down", "wrong", 1),
    ]
    assert out.totals.model_dump() == {"ratings": 4, "comparisons_voted": 6, "comparisons_open": 1}
    json.loads(out.model_dump_json())  # serialisable as an API response


def test_stats_window_counts_only_recent_votes(data: Fixture) -> None:
    with session_scope(data.sessions) as s:
        out = feedback_stats(s, days=1, alias=ALIAS, now=T + 2 * D + 12 * H)
    assert out.since == datetime(2026, 11, 22, tzinfo=UTC)
    assert [(d.day, d.ratings, d.comparisons) for d in out.votes_per_day] == [
        (date(2026, 11, 22), 0, 3)
    ]
    got = {
        v.version: (v.thumbs_up, v.thumbs_down, v.up_rate, v.up_rate_low, v.up_rate_high)
        for v in out.versions
    }
    assert got == {
        "loopchat@v0": (0, 0, None, None, None),
        "loopchat@v1": (0, 0, None, None, None),
    }
    v0, v1 = out.versions
    assert (v0.comparisons, v0.wins, v0.losses, v0.both_bad, v0.win_rate) == (2, 1, 0, 1, 1.0)
    assert (v1.comparisons, v1.wins, v1.losses, v1.both_bad, v1.self_comparisons) == (3, 0, 1, 1, 1)
    assert [(r.kind, r.reason, r.count) for r in out.reasons] == [
        ("comparison", "more_helpful", 1),
        ("comparison", "other", 1),
    ]
    assert out.totals.ratings == 4  # totals are all time

    with session_scope(data.sessions) as s:
        empty = feedback_stats(s, days=2, alias=ALIAS, now=T - 5 * D)
        with pytest.raises(ValueError):
            feedback_stats(s, days=0, alias=ALIAS)
    assert empty.versions == [] and empty.reasons == []
    assert [d.ratings + d.comparisons for d in empty.votes_per_day] == [0, 0]


def test_days_and_times_are_utc_whatever_the_session_time_zone(data: Fixture, db_url: str) -> None:
    u1 = data.users[0]
    with session_scope(data.sessions) as s:  # 23:30 UTC is already the next day in Tokyo
        s.add(Rating(generation_id="chatcmpl-6", user_id=u1, value=1, created_at=T + 13.5 * H))
    kwargs: dict[str, Any] = {}
    if db_url.startswith("postgresql"):
        kwargs["connect_args"] = {"options": "-c timezone=Asia/Tokyo"}
    eng = make_engine(db_url, **kwargs)
    try:
        with session_scope(make_session_factory(eng)) as s:
            out = feedback_stats(s, days=3, alias=ALIAS, now=T + 2 * D + 12 * H)
            rows = list(export_rows(s, ExportFormat.RAW, ExportFilter(), SECRET, ALIAS))
    finally:
        eng.dispose()
    assert [(d.day, d.ratings) for d in out.votes_per_day] == [
        (date(2026, 11, 20), 5),
        (date(2026, 11, 21), 2),
        (date(2026, 11, 22), 0),
    ]
    late = [r for r in rows if r.get("generation_id") == "chatcmpl-6"]
    assert late[0]["created_at"] == "2026-11-20T23:30:00+00:00"
    assert all(
        r[k].endswith("+00:00") for r in rows for k in ("created_at", "voted_at") if r.get(k)
    )


def test_exports_load_with_datasets_and_trl_templates(
    data: Fixture, tmp_path: Path, tiny_model_dir: Path
) -> None:
    from datasets import load_dataset
    from transformers import AutoTokenizer
    from trl.data_utils import is_conversational, maybe_apply_chat_template

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert tokenizer.chat_template
    expected = {
        ExportFormat.PAIRS: ({"prompt", "chosen", "rejected"}, 3),
        ExportFormat.UNPAIRED: ({"prompt", "completion", "label"}, 3),
    }
    for fmt, (columns, n) in expected.items():
        path = tmp_path / f"{fmt.value}.jsonl"
        with session_scope(data.sessions) as s, path.open("w", encoding="utf-8") as f:
            f.writelines(export_lines(s, fmt, ExportFilter(), SECRET, ALIAS))
        ds = load_dataset(
            "json", data_files=str(path), split="train", cache_dir=str(tmp_path / "hf")
        )
        assert set(ds.column_names) == columns
        assert len(ds) == n
        for row in ds:
            assert is_conversational(row)
            out = maybe_apply_chat_template(row, tokenizer)
            text_keys = columns - {"label"}
            assert all(isinstance(out[k], str) and out[k] for k in text_keys)
            if fmt is ExportFormat.PAIRS:
                assert row["chosen"][0]["content"] in out["chosen"]
                assert row["rejected"][0]["content"] in out["rejected"]
            else:
                assert out["label"] is row["label"]
                assert isinstance(row["label"], bool)
                assert row["completion"][0]["content"] in out["completion"]
            assert row["prompt"][-1]["content"] in out["prompt"]
