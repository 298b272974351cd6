"""Confidence intervals for proportions, shared by the service, the trainer and the harness.

One Wilson score interval serves the admin statistics (thumbs-up rates), the canary rule
(win rates with ties as half-wins) and the simulation reports, so the same votes give
the same bounds wherever they are shown.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist


@dataclass(frozen=True)
class Interval:
    low: float
    high: float


def z_score(level: float) -> float:
    """The two-sided standard normal quantile of a confidence `level` (0.95: 1.96)."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    return NormalDist().inv_cdf((1.0 + level) / 2.0)


def wilson_interval(successes: float, n: int, level: float = 0.95) -> Interval:
    """Wilson score interval for the proportion successes / n at confidence `level`.

    `successes` may be fractional (a tie is half a win). Without trials (n == 0) nothing
    is known and the interval is all of [0, 1]; ValueError for n < 0 or successes
    outside [0, n]. The bounds are exactly 0 and 1 at the extremes.
    """
    if n < 0 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n, got successes={successes}, n={n}")
    if n == 0:
        return Interval(0.0, 1.0)
    z = z_score(level)
    p = successes / n
    z2 = z * z
    denom = 1.0 + z2 / n
    center = (p + z2 / (2.0 * n)) / denom
    half = z / denom * math.sqrt(p * (1.0 - p) / n + z2 / (4.0 * n * n))
    low = 0.0 if successes <= 0 else max(0.0, center - half)
    high = 1.0 if successes >= n else min(1.0, center + half)
    return Interval(low, high)


def confidence_sequence(
    successes: float, n: int, level: float = 0.95, tuned_for: int = 200
) -> Interval:
    """An anytime-valid interval for the mean of outcomes in [0, 1] after `n` of them.

    A rule that looks at a fixed-n interval after every vote and acts the first time it
    clears a bound is wrong far more often than 1 - `level`: checked often enough, a
    fair coin's interval eventually leaves 0.5. This one holds at every n at once: with
    probability at least `level` the true mean lies in every interval of the sequence,
    so the canary rule may look as often as it likes.

    It is the two-sided normal-mixture boundary of Howard, Ramdas, McAuliffe and Sekhon,
    "Time-uniform, nonparametric, nonasymptotic confidence sequences" (2021): outcomes in
    [0, 1] are sub-Gaussian with variance 1/4, and the mixture martingale
    sqrt(rho / (V + rho)) * exp(S^2 / (2 (V + rho))) with V = n/4 crosses 1/alpha with
    probability at most alpha (Ville). `tuned_for`: the n where it is narrowest for its
    level (any value is valid; it only moves where the width is spent). Fractional
    successes (ties as half-wins) are allowed; n == 0 gives [0, 1].
    """
    if n < 0 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n, got successes={successes}, n={n}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if tuned_for < 1:
        raise ValueError(f"tuned_for must be at least 1, got {tuned_for}")
    if n == 0:
        return Interval(0.0, 1.0)
    alpha = 1.0 - level
    log_inv = math.log(1.0 / alpha)
    rho = (tuned_for / 4.0) / (2.0 * log_inv + math.log(1.0 + 2.0 * log_inv))
    v = n / 4.0
    radius = math.sqrt((v + rho) * math.log((v + rho) / (rho * alpha * alpha))) / n
    p = successes / n
    return Interval(max(0.0, p - radius), min(1.0, p + radius))
