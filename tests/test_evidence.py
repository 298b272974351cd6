"""Which votes count as evidence (`store.evidence`), and that the canary rule and the
trainer count only those."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session

from store.db import repository
from store.db.migrate import upgrade
from store.db.models import (
    Comparison,
    ComparisonChoice,
    PolicyVersion,
    Rating,
    User,
    UserKind,
    new_id,
)
from store.db.session import make_engine, make_session_factory, session_scope
from store.evidence import (
    AGAINST_CONSENSUS,
    OVER_CAP,
    SIDE_BIAS,
    UNTRUSTED,
    Ballot,
    EvidenceRules,
    Thumb,
    screen,
    screen_thumbs,
)
from tests.dbutil import HI, fetch, generation_row, lora_version
from tests.fakes import FakeEngine
from tests.test_policies import add_version, notify
from trainer.config import DataConfig
from trainer.snapshot import take_snapshot

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
OLD = NOW - timedelta(days=1)


def ballot(
    i: int, user: str, winner: str, *, since: datetime | None = OLD, side: str | None = None,
    pair: tuple[str, str] = ("v0", "v1"), rng: random.Random | None = None,
) -> Ballot:  # fmt: skip
    """`user` prefers `winner`; the sides are shuffled as the server shuffles them."""
    first, second = pair
    flip = (rng or random.Random(i)).random() < 0.5
    a, b = (second, first) if flip else (first, second)
    choice = side or ("a" if a == winner else "b")
    return Ballot(f"c{i}", user, since, a, b, choice, OLD + timedelta(seconds=i))


def honest(n_users: int, votes_each: int, p_v1: float, seed: int = 0) -> list[Ballot]:
    rng = random.Random(seed)
    out = []
    for u in range(n_users):
        for _ in range(votes_each):
            winner = "v1" if rng.random() < p_v1 else "v0"
            out.append(ballot(len(out), f"h{u}", winner, rng=rng))
    return out


def test_young_sessions_wait_and_keys_are_trusted() -> None:
    rules = EvidenceRules(trust_age_s=60)
    young = ballot(1, "new", "v1", since=NOW - timedelta(seconds=30))
    aged = ballot(2, "old", "v1", since=NOW - timedelta(seconds=90))
    key = ballot(3, "dev", "v1", since=None)
    s = screen([young, aged, key], rules, NOW)
    assert [b.id for b in s.kept] == ["c2", "c3"]
    assert s.reasons() == {"c1": UNTRUSTED}
    # The same vote counts once the session has aged: votes are held back, not lost.
    later = screen([young], rules, NOW + timedelta(seconds=31))
    assert [b.id for b in later.kept] == ["c1"]


def test_one_voter_counts_at_most_the_cap_per_pair() -> None:
    votes = [ballot(i, "u", "v1") for i in range(30)]
    other_pair = [ballot(100 + i, "u", "v2", pair=("v0", "v2")) for i in range(5)]
    s = screen(
        votes + other_pair, EvidenceRules(max_per_user_pair=20, anomaly_min_votes=10**6), NOW
    )
    assert sum(b.version_a in ("v1",) or b.version_b == "v1" for b in s.kept) == 20
    assert [b.id for b in s.kept][:20] == [f"c{i}" for i in range(20)]  # the first ones
    assert s.counts()[OVER_CAP] == 10 and len(s.kept) == 25
    assert s.counts({"v0", "v2"})[OVER_CAP] == 0


def test_a_voter_who_always_picks_side_a_is_set_aside() -> None:
    votes = honest(10, 10, 0.6) + [ballot(500 + i, "bot", "v1", side="a") for i in range(12)]
    s = screen(votes, EvidenceRules(), NOW)
    assert set(s.flagged) == {"bot"} and s.flagged["bot"].startswith(SIDE_BIAS)
    # Tested on all 12 of its votes; the two past the cap of 10 are over the cap.
    assert s.counts()[SIDE_BIAS] == 10 and s.counts()[OVER_CAP] == 2
    assert all(b.user != "bot" for b in s.kept)


def test_a_voter_against_everyone_else_is_set_aside_and_honest_ones_are_not() -> None:
    votes = honest(20, 15, 0.8, seed=1)
    # Always for the version everyone else rates worse, with the sides shuffled.
    votes += [ballot(900 + i, "shill", "v0") for i in range(15)]
    s = screen(votes, EvidenceRules(max_per_user_pair=20), NOW)
    assert set(s.flagged) == {"shill"} and s.flagged["shill"].startswith(AGAINST_CONSENSUS)
    assert s.counts()[AGAINST_CONSENSUS] == 15


@pytest.mark.parametrize("seed", range(20))
def test_honest_voters_are_not_flagged(seed: int) -> None:
    """Twenty honest voters, 15 votes each (the cap raised to keep them all), with a
    preference from 0.5 to 0.9: at p < 0.001 per test, none is set aside in 20 seeds."""
    p = 0.5 + 0.4 * random.Random(seed).random()
    s = screen(honest(20, 15, p, seed=seed), EvidenceRules(max_per_user_pair=20), NOW)
    assert s.flagged == {} and len(s.kept) == 300


def test_off_keeps_everything() -> None:
    votes = [ballot(i, "bot", "v1", side="a", since=NOW) for i in range(40)]
    assert len(screen(votes, EvidenceRules(enabled=False), NOW).kept) == 40


# -- the canary rule and the trainer count only what the screen keeps -----------------------


@contextmanager
def _new_voter(
    db_url: str, created: datetime | None
) -> Iterator[tuple[Session, str, dict[str, str]]]:
    """A new anonymous user (created now, or at `created`) in an open transaction, with
    the version ids by name, for a helper to add that user's votes."""
    user_id = new_id("usr")
    user = User(id=user_id, kind=UserKind.ANONYMOUS)
    if created is not None:
        user.created_at = created
    eng = make_engine(db_url)
    try:
        with Session(eng) as s, s.begin():
            s.add(user)
            yield s, user_id, {v.name: v.id for v in s.query(PolicyVersion)}
    finally:
        eng.dispose()


def _votes_from(
    db_url: str, winner: str, loser: str, n: int, created: datetime | None = None
) -> str:
    """`n` votes for `winner` from a new anonymous user (created now, or at `created`)."""
    with _new_voter(db_url, created) as (s, user_id, ids):
        for i in range(n):
            ga, gb = f"g-{uuid.uuid4().hex}", f"g-{uuid.uuid4().hex}"
            s.add_all([generation_row(ga, ids[winner]), generation_row(gb, ids[loser])])
            s.flush()
            a_wins = i % 2 == 0  # shuffled sides: the winner is a half the time
            s.add(
                Comparison(
                    user_id=user_id,
                    prompt=HI,
                    generation_a_id=ga if a_wins else gb,
                    generation_b_id=gb if a_wins else ga,
                    choice=ComparisonChoice.A if a_wins else ComparisonChoice.B,
                    voted_at=datetime.now(UTC),
                )
            )
    return user_id


def test_fresh_sessions_cannot_promote_a_canary(make_client: Any, db_url: str) -> None:
    client = make_client(db_url, FakeEngine(), policy_poll_seconds=3600)
    registry = client.app.state.runtime.registry
    add_version(db_url, "v1")
    notify(client, registry, "v1")
    # Forty fresh sessions (a script minting users), one vote each for the canary.
    for _ in range(40):
        _votes_from(db_url, "v1", "v0", 1)
    client.portal.call(registry.poll_once)
    decision = registry.last_decision
    assert decision.metrics["comparisons"] == 0
    assert decision.metrics[f"set_aside_{UNTRUSTED}"] == 40
    assert fetch(db_url, PolicyVersion, PolicyVersion.name == "v1")[0].status.value == "canary"
    # One voter with sixty votes counts as the cap, not as sixty people.
    old = datetime.now(UTC) - timedelta(hours=1)
    _votes_from(db_url, "v1", "v0", 60, created=old)
    client.portal.call(registry.poll_once)
    decision = registry.last_decision
    assert decision.metrics["comparisons"] == 10
    assert decision.metrics[f"set_aside_{OVER_CAP}"] == 50


def test_the_trainer_leaves_out_what_the_screen_sets_aside(db_url: str, tmp_path: Path) -> None:
    eng = make_engine(db_url)
    upgrade(eng)
    sessions = make_session_factory(eng)
    with session_scope(sessions) as s:
        v0 = repository.ensure_base_version(s, tmp_path)
        s.add(lora_version("v1", v0, tmp_path))
    eng.dispose()
    old = datetime.now(UTC) - timedelta(hours=1)
    person = _votes_from(db_url, "v1", "v0", 3, created=old)
    _votes_from(db_url, "v1", "v0", 5)
    eng = make_engine(db_url)
    try:
        with session_scope(make_session_factory(eng)) as s:
            now = datetime.now(UTC) + timedelta(seconds=1)
            kw: dict[str, Any] = {"since": None, "replay_days": 1, "now": now, "max_prompts": 5}
            screened = take_snapshot(s, **kw, evidence=DataConfig().evidence())
            everything = take_snapshot(s, **kw, evidence=EvidenceRules(enabled=False))
    finally:
        eng.dispose()
    assert len(everything.comparisons) == 8
    assert {c.user for c in screened.comparisons} == {person}
    assert len(screened.comparisons) == 3 and screened.set_aside == {UNTRUSTED: 5}


def test_sessions_from_one_address_count_together() -> None:
    """A script minting a fresh session per vote still comes from one address."""
    sybils = [
        Ballot(f"s{i}", f"sybil{i}", OLD, "v1", "v0", "a", OLD + timedelta(seconds=i), "addr-1")
        for i in range(100)
    ]
    people = [
        Ballot(f"p{i}", f"p{i}", OLD, "v1", "v0", "b", OLD + timedelta(seconds=i), f"addr-p{i}")
        for i in range(100)
    ]
    rules = EvidenceRules(max_per_origin_pair=40, anomaly_min_votes=10**6)
    s = screen(sybils + people, rules, NOW)
    assert sum(b.origin == "addr-1" for b in s.kept) == 40
    assert s.counts()[OVER_CAP] == 60 and len(s.kept) == 140


def test_a_session_records_a_hash_of_its_address(make_client: Any, db_url: str) -> None:
    client = make_client(db_url, FakeEngine(), auth=False, trusted_proxy_header="X-Forwarded-For")

    def mint(address: str) -> str:
        client.cookies.clear()
        r = client.post("/v1/session", headers={"X-Forwarded-For": address})
        assert r.status_code == 201, r.text
        return str(r.json()["user_id"])

    a1, a2, b = mint("203.0.113.7"), mint("203.0.113.7"), mint("198.51.100.2")
    origins = {u.id: u.origin for u in fetch(db_url, User)}
    assert origins[a1] == origins[a2] != origins[b]
    assert origins[a1] is not None and "203.0.113" not in origins[a1]


# -- thumbs ---------------------------------------------------------------------------


def thumb(i: int, user: str, value: int, *, since: datetime | None = OLD, version: str = "v1",
          origin: str | None = None) -> Thumb:  # fmt: skip
    return Thumb(f"r{i}", user, since, version, value, OLD + timedelta(seconds=i), origin)


def test_thumbs_wait_for_the_session_and_count_to_the_caps() -> None:
    young = NOW - timedelta(seconds=5)
    votes = [thumb(0, "fresh", -1, since=young), thumb(1, "key", -1, since=None)]
    votes += [thumb(2 + i, "heavy", -1) for i in range(15)]  # one voter, one version
    votes += [thumb(20 + i, "heavy", 1, version="v0") for i in range(3)]  # another version
    s = screen_thumbs(votes, EvidenceRules(), NOW)
    assert s.reasons()["r0"] == UNTRUSTED and "r1" not in s.reasons()
    assert s.counts() == {UNTRUSTED: 1, OVER_CAP: 5}
    assert s.per_version() == {"v0": (3, 0), "v1": (0, 11)}  # the key's and 10 of heavy's
    assert s.counts({"v0"}) == {UNTRUSTED: 0, OVER_CAP: 0}
    off = screen_thumbs(votes, EvidenceRules(enabled=False), NOW)
    assert len(off.kept) == len(votes) and off.dropped == []


def test_thumbs_from_one_address_count_together() -> None:
    votes = [thumb(i, f"minted{i}", -1, origin="addr-1") for i in range(40)]
    votes += [thumb(100 + i, f"person{i}", 1, origin=f"addr-p{i}") for i in range(20)]
    s = screen_thumbs(votes, EvidenceRules(), NOW)
    # 40 sessions from one address count as max(5, 10% of the version's counted thumbs)
    up, down = s.per_version()["v1"]
    assert up == 20 and down <= max(5, 0.1 * (up + down)) + 1


def _thumbs_from(db_url: str, version: str, value: int, n: int, created: datetime | None) -> None:
    """`n` thumbs (each on its own reply of `version`) from one new anonymous user."""
    with _new_voter(db_url, created) as (s, user_id, ids):
        for _ in range(n):
            gid = f"g-{uuid.uuid4().hex}"
            s.add(generation_row(gid, ids[version]))
            s.flush()
            s.add(Rating(generation_id=gid, user_id=user_id, value=value))


def test_minted_sessions_cannot_retire_a_canary_with_thumbs(make_client: Any, db_url: str) -> None:
    client = make_client(db_url, FakeEngine(), policy_poll_seconds=3600)
    registry = client.app.state.runtime.registry
    add_version(db_url, "v1")
    notify(client, registry, "v1")
    old = datetime.now(UTC) - timedelta(hours=1)
    for _ in range(4):  # people who like the serving version's replies
        _thumbs_from(db_url, "v0", 1, 10, created=old)
    for _ in range(40):  # a script: fresh sessions, thumbs-down on the canary's replies
        _thumbs_from(db_url, "v1", -1, 1, created=None)
    _thumbs_from(db_url, "v1", -1, 40, created=old)  # and one aged session, 40 of them
    client.portal.call(registry.poll_once)
    d = registry.last_decision
    assert d.verdict.value == "wait"
    assert d.metrics["canary_thumbs"] == 10  # the aged session's cap
    assert d.metrics[f"thumbs_set_aside_{UNTRUSTED}"] == 40
    assert d.metrics[f"thumbs_set_aside_{OVER_CAP}"] == 30
    assert fetch(db_url, PolicyVersion, PolicyVersion.name == "v1")[0].status.value == "canary"
    stats = client.get("/v1/admin/stats").json()["evidence"]
    assert stats["thumbs_set_aside"] == 70 and stats["thumbs_kept"] == 50


def test_the_trainer_leaves_out_thumbs_the_screen_sets_aside(db_url: str, tmp_path: Path) -> None:
    eng = make_engine(db_url)
    upgrade(eng)
    with session_scope(make_session_factory(eng)) as s:
        repository.ensure_base_version(s, tmp_path)
    eng.dispose()
    _thumbs_from(db_url, "v0", 1, 12, created=datetime.now(UTC) - timedelta(hours=1))
    _thumbs_from(db_url, "v0", -1, 3, created=None)
    eng = make_engine(db_url)
    try:
        with session_scope(make_session_factory(eng)) as s:
            now = datetime.now(UTC) + timedelta(seconds=1)
            kw: dict[str, Any] = {"since": None, "replay_days": 1, "now": now, "max_prompts": 5}
            screened = take_snapshot(s, **kw, evidence=DataConfig().evidence())
            everything = take_snapshot(s, **kw, evidence=EvidenceRules(enabled=False))
    finally:
        eng.dispose()
    assert len(everything.ratings) == 15
    assert [r.value for r in screened.ratings] == [1] * 10
    assert screened.set_aside == {f"thumbs_{UNTRUSTED}": 3, f"thumbs_{OVER_CAP}": 2}
