"""Ratings of policy versions from live user votes (pure functions, no database).

Users compare two answers ("A or B is better") and give thumbs up or down. To decide
whether a canary beats the serving version, and to show a leaderboard over all versions,
we fit a Bradley-Terry model to the comparisons: each version has a log-strength s and
P(a beats b) = sigmoid(s_a - s_b). Ties count as half a win each way.

The fit is maximum a posteriori under a zero-mean Gaussian prior on every log-strength
(ridge). Plain maximum likelihood diverges under perfect separation (a canary that won
all of its first five votes would get infinite strength) and is undefined for versions
without votes; the prior keeps both finite, gives an unvoted version the prior mean, and
is negligible once a pair has tens of votes. Strengths are reported relative to an anchor
version (shifted to 0), which does not change the fit.

Uncertainty comes from a bootstrap over votes. Votes are aggregated into a win matrix,
and a resample of votes is a multinomial draw of counts over the distinct
(a, b, score) cells, so 200 refits are one batched Newton solve over K x K matrices,
not over individual votes.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

# Re-exported: the ratings below return Interval, so their callers may import it from here.
from store.intervals import Interval as Interval
from store.intervals import wilson_interval, z_score

Array = npt.NDArray[np.float64]

DEFAULT_PRIOR = 0.25  # precision of the Gaussian prior: sigma = 2 nats (about 350 Elo)
ELO_PER_NAT = 400.0 / math.log(10.0)  # 400 Elo = 10:1 odds


@dataclass(frozen=True)
class Match:
    """One comparison vote: score_a is 1.0 (a won), 0.0 (b won) or 0.5 (tie)."""

    a: str
    b: str
    score_a: float


def _prepare(
    matches: Sequence[Match], versions: Sequence[str] | None, anchor: str | None
) -> tuple[list[str], Array, Array, int]:
    """Names (`versions` in order, then others seen in matches, sorted), the distinct
    (a, b, score) cells as rows of a flattened K x K win matrix, their counts, and the
    anchor's index (default: the first of `versions`, else the alphabetically first)."""
    seen = {n for m in matches for n in (m.a, m.b)}
    names = list(dict.fromkeys(versions or ()))
    names += sorted(seen - set(names))
    anchor = anchor if anchor is not None else (versions[0] if versions else min(names))
    if anchor not in names:
        raise ValueError(f"anchor {anchor!r} is not among the rated versions")
    index = {n: i for i, n in enumerate(names)}
    counts: dict[tuple[int, int, float], int] = {}
    for m in matches:
        if m.a == m.b or not 0.0 <= m.score_a <= 1.0:
            raise ValueError(f"invalid match {m}: need a != b and 0 <= score_a <= 1")
        key = (index[m.a], index[m.b], float(m.score_a))
        counts[key] = counts.get(key, 0) + 1
    k = len(names)
    rows = np.zeros((len(counts), k * k))
    for row, (i, j, score) in enumerate(counts):
        rows[row, i * k + j] += score
        rows[row, j * k + i] += 1.0 - score
    return names, rows, np.array(list(counts.values()), dtype=np.float64), index[anchor]


def _log_posterior(wins: Array, s: Array, prior: float) -> Array:
    diff = s[..., :, None] - s[..., None, :]
    loglik: Array = -(wins * np.logaddexp(0.0, -diff)).sum(axis=(-2, -1))
    penalty: Array = 0.5 * prior * (s * s).sum(axis=-1)
    return loglik - penalty


def _fit(wins: Array, prior: float, tol: float = 1e-9, max_iter: int = 100) -> Array:
    """Batched MAP log-strengths for win matrices of shape (..., K, K).

    Newton's method with step halving (the log posterior is strictly concave, so this
    converges from 0 for any data); wins[i, j] is how often i beat j.
    """
    if prior <= 0.0:
        raise ValueError("prior must be positive (it keeps strengths finite)")
    k = wins.shape[-1]
    games = wins + np.swapaxes(wins, -1, -2)
    s = np.zeros(wins.shape[:-1])
    value = _log_posterior(wins, s, prior)
    for _ in range(max_iter):
        p = 0.5 * (1.0 + np.tanh((s[..., :, None] - s[..., None, :]) / 2.0))  # sigmoid
        grad = (wins - games * p).sum(axis=-1) - prior * s
        curv = games * p * (1.0 - p)
        hess = -curv + np.eye(k) * (curv.sum(axis=-1, keepdims=True) + prior)  # minus Hessian
        step = np.linalg.solve(hess, grad[..., None])[..., 0]
        t = np.ones(s.shape[:-1])
        for _ in range(40):
            new_s = s + t[..., None] * step
            new_value = _log_posterior(wins, new_s, prior)
            worse = new_value < value - 1e-12 * (1.0 + np.abs(value))
            if not worse.any():
                break
            t = np.where(worse, t / 2.0, t)
        s, value = new_s, new_value
        if np.abs(t[..., None] * step).max(initial=0.0) < tol:
            break
    return s


def fit_bradley_terry(
    matches: Iterable[Match],
    versions: Sequence[str] | None = None,
    *,
    anchor: str | None = None,
    prior: float = DEFAULT_PRIOR,
) -> dict[str, float]:
    """Bradley-Terry log-strengths (nats), MAP under a N(0, 1/prior) prior on each.

    Versions without matches get the prior mean 0 before anchoring. The anchor (default:
    the first of `versions`, else the alphabetically first name) is shifted to 0.
    """
    matches = tuple(matches)
    if not matches and not versions:
        return {}
    names, rows, counts, a = _prepare(matches, versions, anchor)
    s = _fit((counts @ rows).reshape(len(names), len(names)), prior)
    s = s - s[a]
    return {n: float(v) for n, v in zip(names, s, strict=True)}


def elo(strength: float, base: float = 1000.0) -> float:
    """A log-strength on the Elo display scale (400 points = 10:1 odds)."""
    return ELO_PER_NAT * strength + base


def bootstrap_intervals(
    matches: Iterable[Match],
    versions: Sequence[str],
    *,
    samples: int = 200,
    level: float = 0.95,
    seed: int = 0,
    anchor: str | None = None,
    prior: float = DEFAULT_PRIOR,
) -> dict[str, Interval]:
    """Percentile bootstrap intervals of the anchored log-strengths (resampling votes).

    The anchor's interval is (0, 0) by definition. A version without any matches gets
    the prior's own spread around its estimate, since resampling cannot move it.
    """
    matches = tuple(matches)
    if not matches and not versions:
        return {}
    if samples < 1:
        raise ValueError("samples must be at least 1")
    names, rows, counts, a = _prepare(matches, versions, anchor)
    k, z = len(names), z_score(level)
    point = _fit((counts @ rows).reshape(k, k), prior)
    point = point - point[a]
    if len(matches):
        rng = np.random.default_rng(seed)
        draws = rng.multinomial(len(matches), counts / counts.sum(), size=samples)
        fits = _fit((draws @ rows).reshape(samples, k, k), prior)
        fits = fits - fits[:, a : a + 1]
        q = 50.0 * (1.0 - level)
        low, high = np.percentile(fits, [q, 100.0 - q], axis=0)
    else:
        low = high = point
    played = {n for m in matches for n in (m.a, m.b)}
    spread = z / math.sqrt(prior)
    out: dict[str, Interval] = {}
    for i, n in enumerate(names):
        if n not in played and i != a:
            out[n] = Interval(float(point[i] - spread), float(point[i] + spread))
        else:
            out[n] = Interval(float(low[i]), float(high[i]))
    return out


@dataclass(frozen=True)
class HeadToHead:
    wins: float  # first's wins over second, ties as half
    n: int  # direct matches between the two
    rate: float  # wins / n; 0.5 (no evidence either way) when n == 0
    interval: Interval  # Wilson interval of the rate


def head_to_head(
    matches: Iterable[Match], first: str, second: str, level: float = 0.95
) -> HeadToHead:
    """The first version's win rate against the second over their direct matches."""
    wins, n = 0.0, 0
    for m in matches:
        if (m.a, m.b) == (first, second):
            wins, n = wins + m.score_a, n + 1
        elif (m.a, m.b) == (second, first):
            wins, n = wins + 1.0 - m.score_a, n + 1
    return HeadToHead(wins, n, wins / n if n else 0.5, wilson_interval(wins, n, level))


@dataclass(frozen=True)
class VersionRating:
    name: str
    strength: float  # log-strength relative to the anchor (nats)
    elo: float
    interval: Interval  # bootstrap interval on the Elo scale
    comparisons: int  # comparison votes that involve this version
    thumbs_up: int
    thumbs_down: int
    thumbs_rate: float | None  # up / (up + down); None without thumbs
    thumbs_interval: Interval | None  # Wilson interval of thumbs_rate


def rate_versions(
    matches: Iterable[Match],
    thumbs: Mapping[str, tuple[int, int]],
    versions: Sequence[str],
    *,
    anchor: str | None = None,
    samples: int = 200,
    level: float = 0.95,
    seed: int = 0,
) -> list[VersionRating]:
    """One rating per version (`versions` order, then others seen in matches)."""
    matches = tuple(matches)
    strengths = fit_bradley_terry(matches, versions, anchor=anchor)
    intervals = bootstrap_intervals(
        matches, versions, samples=samples, level=level, seed=seed, anchor=anchor
    )
    out = []
    for name, s in strengths.items():
        up, down = thumbs.get(name, (0, 0))
        total = up + down
        ci = intervals[name]
        out.append(
            VersionRating(
                name=name,
                strength=s,
                elo=elo(s),
                interval=Interval(elo(ci.low), elo(ci.high)),
                comparisons=sum(name in (m.a, m.b) for m in matches),
                thumbs_up=up,
                thumbs_down=down,
                thumbs_rate=up / total if total else None,
                thumbs_interval=wilson_interval(up, total, level) if total else None,
            )
        )
    return out
