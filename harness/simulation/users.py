"""A simulated user: turns gold scores into noisy votes. Pure logic, seeded, no I/O.

Comparisons follow Bradley-Terry on the gold scores, then a label flip, as in AlpacaFarm's
simulated annotators (25% flips by default):

    P(prefer a) = sigmoid((g_a - g_b) / temperature)      temperature 0: the gold winner
    then, with probability flip_rate, the choice is swapped

so a user agrees with the gold ranking of a clearly different pair with probability
1 - flip_rate, which is also the best accuracy any reward model can reach on these votes.
A tie is voted only when |g_a - g_b| <= tie_epsilon (by default: identical scores, such as
identical replies). Thumbs: up when gold + N(0, thumbs_noise^2) > thumbs_threshold, so
P(up) = Phi((g - threshold) / noise).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Literal

from harness.simulation.gold import Gold, GoldReasons, reasons_for, word_count

Choice = Literal["a", "b", "tie"]
Rating = Literal["up", "down"]

DEFAULT_FLIP_RATE = 0.25
DEFAULT_TEMPERATURE = 0.02  # on the shipped golds' [0, 1] scale: a 0.1 gap is 99.3% sure
DEFAULT_TIE_EPSILON = 1e-9
DEFAULT_THUMBS_THRESHOLD = 0.5
DEFAULT_THUMBS_NOISE = 0.1
TOO_SHORT_WORDS = 3  # a thumbs-down on a reply shorter than this says "too_short"


def sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


def normal_cdf(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


@dataclass(frozen=True)
class ComparisonPick:
    """A simulated user's vote in a comparison (a, b or tie), with the gold scores it was
    judged on and whether label noise flipped it."""

    choice: Choice
    reason: str | None
    gold_a: float
    gold_b: float
    flipped: bool


@dataclass(frozen=True)
class Thumbs:
    rating: Rating
    reason: str
    gold: float


class SimulatedUser:
    def __init__(
        self,
        gold: Gold,
        rng: random.Random,
        flip_rate: float = DEFAULT_FLIP_RATE,
        *,
        temperature: float = DEFAULT_TEMPERATURE,
        tie_epsilon: float = DEFAULT_TIE_EPSILON,
        thumbs_threshold: float = DEFAULT_THUMBS_THRESHOLD,
        thumbs_noise: float = DEFAULT_THUMBS_NOISE,
        reasons: GoldReasons | None = None,
    ):
        if not 0.0 <= flip_rate <= 1.0:
            raise ValueError(f"flip_rate must be in [0, 1], not {flip_rate}")
        for name, value in (
            ("temperature", temperature),
            ("tie_epsilon", tie_epsilon),
            ("thumbs_noise", thumbs_noise),
        ):
            if not (value >= 0.0 and math.isfinite(value)):
                raise ValueError(f"{name} must be a finite number >= 0, not {value}")
        if not math.isfinite(thumbs_threshold):
            raise ValueError(f"thumbs_threshold must be finite, not {thumbs_threshold}")
        self.gold = gold
        self.rng = rng
        self.flip_rate = flip_rate
        self.temperature = temperature
        self.tie_epsilon = tie_epsilon
        self.thumbs_threshold = thumbs_threshold
        self.thumbs_noise = thumbs_noise
        self.reasons = reasons if reasons is not None else reasons_for(gold)

    def score(self, prompt: str, reply: str) -> float:
        """The gold score, checked: a plug-in that returns junk fails loudly here."""
        value = self.gold(prompt, reply)
        try:
            x = float(value)
        except (TypeError, ValueError):
            raise TypeError(
                f"the gold function returned {type(value).__name__}, not a number"
            ) from None
        if not math.isfinite(x):
            raise ValueError(f"the gold function returned {x}")
        return x

    def p_prefer_a(self, gold_a: float, gold_b: float) -> float:
        """Bradley-Terry probability of preferring a, before the flip."""
        d = gold_a - gold_b
        if self.temperature == 0.0:
            return 1.0 if d > 0 else 0.0 if d < 0 else 0.5
        return sigmoid(d / self.temperature)

    def judge(self, prompt: str, a: str, b: str) -> ComparisonPick:
        ga, gb = self.score(prompt, a), self.score(prompt, b)
        if abs(ga - gb) <= self.tie_epsilon:
            return ComparisonPick("tie", None, ga, gb, False)
        choice: Choice = "a" if self.rng.random() < self.p_prefer_a(ga, gb) else "b"
        flipped = self.rng.random() < self.flip_rate
        if flipped:
            choice = "b" if choice == "a" else "a"
        return ComparisonPick(choice, self.reasons.comparison, ga, gb, flipped)

    def compare(self, prompt: str, a: str, b: str) -> Choice:
        return self.judge(prompt, a, b).choice

    def rate(self, prompt: str, reply: str) -> Thumbs:
        g = self.score(prompt, reply)
        noisy = g + (self.rng.gauss(0.0, self.thumbs_noise) if self.thumbs_noise > 0 else 0.0)
        if noisy > self.thumbs_threshold:
            return Thumbs("up", self.reasons.up, g)
        short = word_count(reply) < TOO_SHORT_WORDS
        return Thumbs("down", "too_short" if short else self.reasons.down, g)

    def thumbs(self, prompt: str, reply: str) -> tuple[Rating, str]:
        t = self.rate(prompt, reply)
        return t.rating, t.reason

    # The noise model's expectations (what the tests check the draws against).

    def expected_agreement(self, gold_a: float, gold_b: float) -> float:
        """P(the vote names the gold-better reply), for distinct scores."""
        p = self.p_prefer_a(max(gold_a, gold_b), min(gold_a, gold_b))
        return p * (1.0 - self.flip_rate) + (1.0 - p) * self.flip_rate

    def expected_up(self, gold: float) -> float:
        if self.thumbs_noise == 0.0:
            return 1.0 if gold > self.thumbs_threshold else 0.0
        return 1.0 - normal_cdf((self.thumbs_threshold - gold) / self.thumbs_noise)
