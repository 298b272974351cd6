"""Vote ratings and the canary rule: recover known strengths, intervals, verdicts."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from service.policies.ratings import (
    DEFAULT_PRIOR,
    HeadToHead,
    Match,
    bootstrap_intervals,
    elo,
    fit_bradley_terry,
    head_to_head,
    rate_versions,
)
from service.policies.rules import PromotionRule, Verdict, decide
from store.intervals import Interval, confidence_sequence, wilson_interval

TRUE = {"v0": 0.0, "v1": 0.5, "v2": 1.0, "v3": -0.5}
NAMES = list(TRUE)


def simulate(n: int, seed: int, truth: dict[str, float] = TRUE) -> list[Match]:
    """Bradley-Terry votes between random pairs, with ties that keep E[score_a] = P(a wins)."""
    rng = np.random.default_rng(seed)
    names = list(truth)
    out = []
    for _ in range(n):
        i, j = rng.choice(len(names), size=2, replace=False)
        a, b = names[i], names[j]
        p = 1.0 / (1.0 + math.exp(truth[b] - truth[a]))
        tie = 0.4 * min(p, 1.0 - p)  # a tie replaces half a win and half a loss
        u = rng.random()
        score = 1.0 if u < p - tie / 2 else 0.5 if u < p + tie / 2 else 0.0
        out.append(Match(a, b, score))
    return out


# -- Bradley-Terry fit ---------------------------------------------------------------------


def test_fit_recovers_known_strengths_and_order() -> None:
    matches = simulate(3000, seed=1)
    assert any(m.score_a == 0.5 for m in matches)
    fit = fit_bradley_terry(matches, NAMES, anchor="v0")
    assert fit["v0"] == 0.0
    for name, truth in TRUE.items():
        assert abs(fit[name] - truth) < 0.15, (name, fit[name], truth)
    assert sorted(fit, key=fit.__getitem__) == ["v3", "v0", "v1", "v2"]


def test_anchor_shifts_without_changing_differences() -> None:
    matches = simulate(500, seed=2)
    by_v0 = fit_bradley_terry(matches, NAMES)  # default anchor: first of versions
    by_v2 = fit_bradley_terry(matches, NAMES, anchor="v2")
    assert by_v0["v0"] == 0.0 and by_v2["v2"] == 0.0
    for name in NAMES:
        assert by_v0[name] - by_v0["v2"] == pytest.approx(by_v2[name], abs=1e-9)
    assert fit_bradley_terry(matches)["v0"] == 0.0  # no versions: alphabetical first
    with pytest.raises(ValueError):
        fit_bradley_terry(matches, NAMES, anchor="nope")


def test_perfect_separation_stays_finite() -> None:
    fit = fit_bradley_terry([Match("a", "b", 1.0)] * 40, ["a", "b"])
    assert math.isfinite(fit["b"])
    assert fit["a"] > fit["b"]
    assert fit["a"] - fit["b"] < 10.0
    more = fit_bradley_terry([Match("a", "b", 1.0)] * 400, ["a", "b"])
    assert more["a"] - more["b"] > fit["a"] - fit["b"]  # more evidence, larger gap


@pytest.mark.parametrize(("wins", "ties", "losses"), [(40, 0, 0), (7, 2, 3), (1, 0, 0), (0, 1, 0)])
def test_fit_is_the_map_under_the_gaussian_prior(wins: int, ties: int, losses: int) -> None:
    # Two versions: s_a = -s_b = gap/2, and the log posterior's derivative in s_a,
    # score - n * sigmoid(gap) - prior * gap / 2, must vanish at the fit.
    scores = [1.0] * wins + [0.5] * ties + [0.0] * losses
    matches = [Match("a", "b", x) for x in scores]
    gap = fit_bradley_terry(matches, ["b", "a"])["a"]
    residual = sum(scores) - len(scores) / (1.0 + math.exp(-gap))
    assert residual == pytest.approx(DEFAULT_PRIOR * gap / 2, abs=1e-7)
    shrunk = fit_bradley_terry(matches, ["b", "a"], prior=10 * DEFAULT_PRIOR)["a"]
    assert abs(shrunk) < abs(gap) or gap == shrunk == 0.0  # a stronger prior pulls to 0


def test_version_without_matches_gets_prior_mean_and_wide_interval() -> None:
    matches = simulate(1000, seed=3)
    versions = ["new", *NAMES, "idle"]
    fit = fit_bradley_terry(matches, versions)
    assert fit["new"] == 0.0 and fit["idle"] == 0.0  # anchor and idle both at the prior mean
    ci = bootstrap_intervals(matches, versions, anchor="v0", samples=50)
    assert ci["v0"] == Interval(0.0, 0.0)
    idle = ci["idle"]
    played = ci["v1"]
    assert idle.low < -3.0 and idle.high > 3.0
    assert idle.high - idle.low > 5 * (played.high - played.low)


def test_invalid_matches_are_refused() -> None:
    with pytest.raises(ValueError):
        fit_bradley_terry([Match("a", "a", 1.0)])
    with pytest.raises(ValueError):
        fit_bradley_terry([Match("a", "b", 2.0)])


# -- bootstrap -----------------------------------------------------------------------------


def test_bootstrap_contains_truth_and_shrinks_with_more_votes() -> None:
    small = bootstrap_intervals(simulate(300, seed=4), NAMES, anchor="v0", seed=1)
    large = bootstrap_intervals(simulate(3000, seed=4), NAMES, anchor="v0", seed=1)
    for name, truth in TRUE.items():
        assert large[name].low <= truth <= large[name].high, (name, large[name])
        assert small[name].low <= truth <= small[name].high, (name, small[name])
        if name != "v0":
            assert large[name].high - large[name].low < 0.6 * (small[name].high - small[name].low)


def test_bootstrap_is_deterministic_given_seed() -> None:
    matches = simulate(800, seed=5)
    first = bootstrap_intervals(matches, NAMES, seed=7)
    assert bootstrap_intervals(matches, NAMES, seed=7) == first
    assert bootstrap_intervals(matches, NAMES, seed=8) != first


# -- proportions ---------------------------------------------------------------------------


def test_head_to_head_ties_order_and_other_versions() -> None:
    matches = [
        Match("canary", "serving", 1.0),
        Match("serving", "canary", 0.0),  # stored the other way round: a canary win
        Match("serving", "canary", 1.0),
        Match("canary", "serving", 0.5),
        Match("canary", "old", 1.0),  # not a direct match
        Match("old", "serving", 0.0),
    ]
    h2h = head_to_head(matches, "canary", "serving", 0.95)
    assert h2h.n == 4
    assert h2h.wins == 2.5
    assert h2h.rate == 0.625
    assert h2h.interval == wilson_interval(2.5, 4)
    other = head_to_head(matches, "serving", "canary", 0.95)
    assert other.wins == 1.5 and other.n == 4
    assert head_to_head([], "a", "b", 0.95) == HeadToHead(0.0, 0, 0.5, Interval(0.0, 1.0))


def test_rate_versions_puts_it_together() -> None:
    matches = simulate(1500, seed=9)
    ratings = rate_versions(matches, {"v1": (30, 10), "v2": (0, 0)}, NAMES, anchor="v0", samples=50)
    by = {r.name: r for r in ratings}
    assert [r.name for r in ratings] == NAMES
    assert by["v0"].elo == 1000.0
    assert by["v2"].elo == pytest.approx(elo(by["v2"].strength))
    assert by["v2"].interval.low < by["v2"].elo < by["v2"].interval.high
    assert elo(math.log(10.0)) == pytest.approx(1400.0)  # 400 Elo = 10:1 odds
    assert by["v1"].comparisons == sum("v1" in (m.a, m.b) for m in matches)
    assert by["v1"].thumbs_rate == 0.75
    assert by["v1"].thumbs_interval == wilson_interval(30, 40)
    assert by["v2"].thumbs_rate is None and by["v2"].thumbs_interval is None


# -- promotion rule ------------------------------------------------------------------------


def h2h(wins: float, n: int) -> HeadToHead:
    return HeadToHead(wins, n, wins / n if n else 0.5, wilson_interval(wins, n))


RULE = PromotionRule()
EVEN = (20, 20)


def test_waits_below_min_comparisons() -> None:
    d = decide(RULE, h2h(12, 12), EVEN, EVEN)  # all wins, but only 12 votes
    assert d.verdict is Verdict.WAIT
    assert "18 more" in d.reason
    assert d.metrics["comparisons"] == 12


def test_promotes_retires_and_waits_on_comparisons() -> None:
    promote = decide(RULE, h2h(70, 100), EVEN, EVEN)
    assert promote.verdict is Verdict.PROMOTE
    assert "0.70" in promote.reason and "100 comparisons" in promote.reason
    assert promote.metrics["win_low"] == pytest.approx(confidence_sequence(70, 100).low)
    assert decide(RULE, h2h(30, 100), EVEN, EVEN).verdict is Verdict.RETIRE
    wait = decide(RULE, h2h(52, 100), EVEN, EVEN)
    assert wait.verdict is Verdict.WAIT
    assert "not yet confident" in wait.reason


def test_retires_on_thumbs_even_with_few_comparisons() -> None:
    d = decide(RULE, h2h(3, 5), (10, 40), (40, 10))
    assert d.verdict is Verdict.RETIRE
    assert "thumbs" in d.reason
    assert d.metrics["canary_thumbs_rate"] == 0.2
    assert d.metrics["serving_thumbs_rate"] == 0.8
    off = PromotionRule(retire_on_thumbs=False)
    assert decide(off, h2h(3, 5), (10, 40), (40, 10)).verdict is Verdict.WAIT
    assert decide(RULE, h2h(3, 5), (2, 8), (40, 10)).verdict is Verdict.WAIT  # too few thumbs
    assert decide(RULE, h2h(3, 5), (20, 30), (30, 20)).verdict is Verdict.WAIT  # overlapping


def test_a_rule_checked_after_every_vote_rarely_decides_an_even_canary() -> None:
    """The rule runs at every poll, so it must hold under continuous monitoring: over
    1000 votes of an even canary, a fixed-n 95% interval checked after each vote
    decides in a large share of runs; the rule's confidence sequence in about 5%."""
    runs, votes = 200, 1000
    fixed = sequential = 0
    for seed in range(runs):
        rng = random.Random(seed)
        wins, by_fixed, by_rule = 0, False, False
        for n in range(1, votes + 1):
            wins += rng.random() < 0.5
            if n < RULE.min_comparisons:
                continue
            w = wilson_interval(wins, n)
            by_fixed = by_fixed or w.low > 0.5 or w.high < 0.5
            verdict = decide(RULE, h2h(wins, n), EVEN, EVEN).verdict
            by_rule = by_rule or verdict is not Verdict.WAIT
            if by_fixed and by_rule:
                break
        fixed += by_fixed
        sequential += by_rule
    assert fixed / runs > 0.25
    assert sequential / runs <= 0.08


def test_rule_validates_its_bounds() -> None:
    with pytest.raises(ValueError):
        PromotionRule(win_lower_bound=0.4)
