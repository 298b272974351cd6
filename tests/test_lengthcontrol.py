"""Length-controlled figures: replies that differ only in length come out near 0.5, and a
preference that is not length keeps its strength."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from store.lengthcontrol import (
    length_balanced_accuracy,
    length_controlled_win_rate,
    length_preference,
)
from trainer.records import Pair
from trainer.reward import metrics_from_scores

SENTENCE = "The river runs past the old mill."


def _reply(sentences: int) -> str:
    return " ".join([SENTENCE] * sentences)


def _length_only_contest(n: int, seed: int) -> tuple[list[float], list[float]]:
    """Candidate and serving replies that differ only in how many times they say the same
    sentence, the candidate the longer one 80% of the time; a judge that prefers the
    longer reply 90% of the time. (wins, candidate minus serving characters)"""
    rng = random.Random(seed)
    wins, deltas = [], []
    for _ in range(n):
        short, extra = rng.randint(1, 4), rng.randint(1, 3)
        cand, serv = (short + extra, short) if rng.random() < 0.8 else (short, short + extra)
        longer_wins = rng.random() < 0.9
        wins.append(1.0 if (cand > serv) == longer_wins else 0.0)
        deltas.append(float(len(_reply(cand)) - len(_reply(serv))))
    return wins, deltas


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_length_only_win_rate_is_near_half_when_controlled(seed: int) -> None:
    wins, deltas = _length_only_contest(400, seed)
    assert sum(wins) / len(wins) > 0.7  # the raw win rate: all length
    lc = length_controlled_win_rate(wins, deltas)
    assert lc is not None and abs(lc - 0.5) < 0.1


def test_a_preference_beside_length_keeps_its_strength() -> None:
    rng = random.Random(3)
    wins, deltas = [], []
    for _ in range(600):
        delta = rng.gauss(0.0, 40.0)
        good = rng.random() < 0.8  # wins 80% whatever the length
        wins.append(1.0 if good else 0.0)
        deltas.append(delta)
    lc = length_controlled_win_rate(wins, deltas)
    assert lc == pytest.approx(sum(wins) / len(wins), abs=0.03)


def test_controlled_win_rate_edges() -> None:
    assert length_controlled_win_rate([], []) is None
    assert length_controlled_win_rate([1.0, 0.0, 0.5], [3.0, 3.0, 3.0]) == pytest.approx(0.5)
    # A perfect separation by length stays finite and near 0.5.
    lc = length_controlled_win_rate([1.0] * 10 + [0.0] * 10, [5.0] * 10 + [-5.0] * 10)
    assert lc is not None and 0.4 < lc < 0.6
    with pytest.raises(ValueError):
        length_controlled_win_rate([1.0], [])


def test_a_length_only_reward_model_scores_half_controlled() -> None:
    """An RM that scores length and nothing else, on votes where the shorter reply won
    70% of the time: raw accuracy 0.7, length-controlled 0.5."""
    rng = random.Random(5)
    at = datetime(2026, 12, 1, tzinfo=UTC)
    pairs, chosen, rejected = [], [], []
    for _ in range(500):
        a, b = rng.sample(range(1, 8), 2)
        short, long_ = (_reply(min(a, b)), _reply(max(a, b)))
        c, r = (short, long_) if rng.random() < 0.7 else (long_, short)
        pairs.append(Pair((("user", "q"),), c, r, 1.0, "comparison", at))
        chosen.append(-float(len(c)))  # the RM: shorter is better
        rejected.append(-float(len(r)))
    m = metrics_from_scores(pairs, chosen, rejected, None)
    assert m["accuracy"] == pytest.approx(m["length_baseline_accuracy"])
    assert 0.65 < m["accuracy"] < 0.75
    assert m["length_controlled_accuracy"] == pytest.approx(0.5)


def test_balanced_accuracy_needs_both_kinds_of_pair() -> None:
    assert length_balanced_accuracy([1.0, 0.0], [5, 6], [3, 2]) is None  # chosen always longer
    assert length_balanced_accuracy([1.0, 0.0, 1.0], [5, 1, 4], [3, 2, 4]) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        length_balanced_accuracy([1.0], [1, 2], [1])


def test_length_preference_says_whether_votes_reward_length() -> None:
    none = length_preference([3, 1] * 50, [1, 3] * 50)  # half the pairs each way
    assert none.n == 100 and none.longer_won == 0.5 and not none.rewards_length
    shorter = length_preference([1] * 80 + [3] * 20, [3] * 80 + [1] * 20)
    assert shorter.longer_won == pytest.approx(0.2) and shorter.rewards_length
    lean = length_preference([3] * 900 + [1] * 1100, [1] * 900 + [3] * 1100)  # 0.45
    assert lean.interval.high < 0.5 and not lean.rewards_length
    equal = length_preference([2, 2], [2, 2])
    assert equal.n == 0 and not equal.rewards_length
