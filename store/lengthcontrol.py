"""Length-controlled figures: how much of a preference is left once reply length is
taken out. Shared by the trainer (its reward model and its gate), the harness (gold
evaluation) and the service (the dashboard shows what the trainer recorded).

A reward model trained on a few hundred votes learns length first, and a policy can
move length with its stop token alone, so a raw win rate or accuracy can come from
length only. Two figures take it out:

- `length_balanced_accuracy`: the accuracy on the pairs where the voters chose the
  longer reply and on those where they chose the shorter one, averaged. "The shorter
  reply wins" scores exactly 0.5 on it, whatever the share of each kind.
- `length_controlled_win_rate`: after AlpacaEval's length-controlled win rate (Dubois et
  al. 2024), without its per-instruction term: a logistic regression of each win on the
  length difference, read at a difference of 0. A judge that prefers the longer reply
  and nothing else scores about 0.5.

`length_preference` says whether votes reward length at all (in either direction): the
share of pairs the longer reply won, with its Wilson interval.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from store.intervals import Interval, wilson_interval

_NEWTON_STEPS = 50
LENGTH_MARGIN = 0.05  # a share of "longer won" within 0.45-0.55 is no length preference
_RIDGE = 1e-3  # keeps the fit finite when wins separate perfectly by length


def _sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


def length_balanced_accuracy(
    correct: Sequence[float], chosen_lengths: Sequence[float], rejected_lengths: Sequence[float]
) -> float | None:
    """Mean of the accuracy where the chosen reply is longer and where it is shorter.

    `correct` is 1, 0 (or 0.5 for a scoring tie) per pair; pairs of equal length are left
    out. None when either kind of pair is missing: then length and preference cannot be
    told apart on these pairs.
    """
    if not len(correct) == len(chosen_lengths) == len(rejected_lengths):
        raise ValueError("correct, chosen_lengths and rejected_lengths differ in length")
    longer = [c for c, a, b in zip(correct, chosen_lengths, rejected_lengths, strict=True) if a > b]
    shorter = [
        c for c, a, b in zip(correct, chosen_lengths, rejected_lengths, strict=True) if a < b
    ]
    if not longer or not shorter:
        return None
    return 0.5 * (sum(longer) / len(longer) + sum(shorter) / len(shorter))


def length_controlled_win_rate(
    wins: Sequence[float], length_deltas: Sequence[float]
) -> float | None:
    """P(win) at equal length, from a logistic regression of each win on the length
    difference, read at a difference of 0:

        logit P(win_i) = a + b * sign(delta_i) + c * tanh(delta_i / sd(delta))

    `wins` are 1, 0 or 0.5 (a tie) per comparison, `length_deltas` the first side's
    length minus the other's. The tanh term is AlpacaEval's; the sign term lets a judge
    who simply prefers the longer reply, by however little, be fitted as such (with the
    tanh term alone such a judge still came out at 0.52-0.59 on 400 comparisons). A small
    ridge keeps a perfect separation finite. None with no comparisons; the raw win rate
    when every delta is the same (length cannot explain a difference it never has).
    """
    if len(wins) != len(length_deltas):
        raise ValueError("wins and length_deltas differ in length")
    n = len(wins)
    if n == 0:
        return None
    mean = sum(length_deltas) / n
    sd = math.sqrt(sum((d - mean) ** 2 for d in length_deltas) / n)
    if sd == 0.0:
        return sum(wins) / n
    rows = [(1.0, float(np.sign(d)), math.tanh(d / sd)) for d in length_deltas]
    theta = _logistic_fit(np.array(rows), np.array(wins, dtype=float))
    return _sigmoid(float(theta[0]))


def _logistic_fit(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Ridge-penalized logistic regression with fractional outcomes, by Newton's method."""
    n, k = x.shape
    theta = np.zeros(k)
    for _ in range(_NEWTON_STEPS):
        p = 1.0 / (1.0 + np.exp(-(x @ theta)))
        grad = x.T @ (p - y) / n + _RIDGE * theta
        hess = (x * (p * (1.0 - p))[:, None]).T @ x / n + _RIDGE * np.eye(k)
        step = np.linalg.solve(hess, grad)
        theta -= step
        if float(np.abs(step).sum()) < 1e-10:
            break
    return theta


@dataclass(frozen=True)
class LengthPreference:
    """How often the longer reply of a pair won, over pairs of unequal length."""

    n: int
    longer_won: float  # share of the pairs
    interval: Interval

    @property
    def rewards_length(self) -> bool:
        """The votes favour one length, longer or shorter, by more than `LENGTH_MARGIN`
        from a coin flip at 95%. The margin keeps a slight lean, which many votes make
        significant, from counting: a preference for short words leans to shorter
        replies a little (longer won 0.45 of pairs, say) without asking for length."""
        if self.n == 0:
            return False
        return self.interval.low > 0.5 + LENGTH_MARGIN or self.interval.high < 0.5 - LENGTH_MARGIN


def length_preference(
    chosen_lengths: Sequence[float], rejected_lengths: Sequence[float]
) -> LengthPreference:
    """The share of unequal-length pairs whose longer reply was chosen, with its 95%
    Wilson interval. Give it decided pairs only (not ties)."""
    if len(chosen_lengths) != len(rejected_lengths):
        raise ValueError("chosen_lengths and rejected_lengths differ in length")
    decided = [(a, b) for a, b in zip(chosen_lengths, rejected_lengths, strict=True) if a != b]
    wins = sum(1 for a, b in decided if a > b)
    n = len(decided)
    return LengthPreference(n, wins / n if n else 0.5, wilson_interval(wins, n))
