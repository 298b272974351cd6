"""The reward-model attack of `bench reward --adversary`: scripted comparison votes
against the gold, from sessions minted at the product's rate, through the product's own
vote screen."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from harness.bench.poison import Adversary, poison, screened
from store.evidence import EvidenceRules
from trainer.records import ComparisonVote, Reply, Snapshot

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _gold(prompt: str, reply: str) -> float:
    return -float(len(reply))  # shorter is better


def _snapshot(n: int, minutes: float) -> Snapshot:
    votes = []
    for i in range(n):
        prompt = (("user", f"question {i % 40}"),)
        short = Reply(f"g{i}a", prompt, "short", "v0", True)
        long = Reply(f"g{i}b", prompt, "a much longer reply", "v0", True)
        at = T0 + timedelta(seconds=i * minutes * 60 / n)
        a, b, choice = (short, long, "a") if i % 2 else (long, short, "b")  # sides shuffled
        votes.append(ComparisonVote(f"c{i}", f"u{i % 100}", a, b, choice, at))
    end = votes[-1].at + timedelta(seconds=1)
    return Snapshot((), tuple(votes), (), None, end, None)


def test_the_adversary_casts_its_share_against_the_gold_from_aged_sessions() -> None:
    snap = _snapshot(700, minutes=120)
    rules = EvidenceRules()
    p = poison(snap, _gold, Adversary(0.3), rules, seed=1)
    scripted = [c for c in p.snapshot.comparisons if c.id in p.adversary_ids]
    assert len(scripted) == 300  # 30% of all 1000 cast
    assert all(len((c.a if c.choice == "a" else c.b).text) > 5 for c in scripted)  # the longer
    # one address, at most 20 sessions an hour, each old enough to count by the end
    assert {s.origin for s in p.sessions.values()} == {"adv-addr-0"}
    assert len(p.sessions) <= 20 * 2 + 1
    assert all((snap.window_end - s.since).total_seconds() >= rules.trust_age_s
               for s in p.sessions.values())  # fmt: skip
    assert [c.at for c in p.snapshot.comparisons] == sorted(c.at for c in p.snapshot.comparisons)


def test_the_screen_keeps_one_address_to_its_cap_and_every_honest_vote() -> None:
    snap = _snapshot(700, minutes=120)
    rules = EvidenceRules()
    p = poison(snap, _gold, Adversary(0.3), rules, seed=1)
    kept, screening = screened(p, rules)
    honest = [c for c in kept.comparisons if c.id not in p.adversary_ids]
    scripted = [c for c in kept.comparisons if c.id in p.adversary_ids]
    assert len(honest) == 700
    # one address counts at most max(5, 10% of the pair's counted votes)
    assert 0 < len(scripted) <= 0.1 * len(kept.comparisons) + 1
    assert screening.counts()["over_user_cap"] == 300 - len(scripted)
    # from ten addresses it gets ten caps
    many = poison(snap, _gold, Adversary(0.3, addresses=10), rules, seed=1)
    kept10, _ = screened(many, rules)
    assert sum(c.id in many.adversary_ids for c in kept10.comparisons) > 3 * len(scripted)
    off, _ = screened(p, EvidenceRules(enabled=False))
    assert len(off.comparisons) == 1000


def test_no_adversary_changes_nothing_and_bad_settings_are_refused() -> None:
    snap = _snapshot(50, minutes=10)
    assert poison(snap, _gold, Adversary(0.0), EvidenceRules(), seed=0).snapshot == snap
    for bad in ({"share": 1.0}, {"share": -0.1}, {"share": 0.3, "addresses": 0}):
        with pytest.raises(ValueError):
            Adversary(**bad)  # type: ignore[arg-type]
