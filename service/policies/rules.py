"""When live votes promote a canary to serving or retire it (pure; no database).

The canary shares traffic with the serving version, and users compare their answers
side by side. Those direct comparisons are the primary evidence: the canary is promoted
when the lower confidence bound of its win rate clears `win_lower_bound`, and retired
when the upper bound falls below `1 - win_lower_bound`. Until `min_comparisons` votes
exist neither happens, so a lucky first few votes cannot swap the model.

The rule is evaluated after every poll, so its win-rate bounds are a confidence sequence
(valid at every vote count at once), not a fixed-n interval: checked after each vote, a
95% Wilson interval sends an equal canary one way or the other in about half the runs
over 3000 votes, where the sequence does so in about 5% (docs/policies.md).

Thumbs are weaker evidence (different prompts, different users), so they can only
retire, and only when the two thumbs-up intervals do not overlap: a canary that users
clearly dislike should not wait for comparisons to accumulate. Every decision carries a
short sentence with the numbers, because an operator reads it in the event log.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from service.policies.ratings import HeadToHead
from store.evidence import Screening, ThumbScreening
from store.intervals import Interval, confidence_sequence


@dataclass(frozen=True)
class PromotionRule:
    min_comparisons: int = 30
    """Direct canary-vs-serving comparisons needed before comparisons decide anything."""
    win_lower_bound: float = 0.5
    """Promote when the win-rate interval lies above this; retire when below 1 minus it."""
    level: float = 0.95
    """Confidence level of the win-rate sequence and the thumbs-up intervals."""
    tuned_for: int = 200
    """Comparisons at which the win-rate sequence is narrowest (any value is valid)."""
    min_thumbs: int = 30
    """Thumbs each version needs before thumbs may retire the canary."""
    retire_on_thumbs: bool = True
    """Retire a canary whose thumbs-up interval lies wholly below the serving version's."""

    def __post_init__(self) -> None:
        if not 0.5 <= self.win_lower_bound < 1.0:
            raise ValueError("win_lower_bound must be in [0.5, 1) so promote and retire exclude")
        if not 0.0 < self.level < 1.0:
            raise ValueError("level must be in (0, 1)")
        if self.tuned_for < 1:
            raise ValueError("tuned_for must be at least 1")
        if self.min_comparisons < 0 or self.min_thumbs < 0:
            raise ValueError("min_comparisons and min_thumbs must not be negative")


class Verdict(StrEnum):
    PROMOTE = "promote"  # the canary becomes the serving version
    RETIRE = "retire"  # the canary stops taking traffic
    WAIT = "wait"  # not enough evidence either way yet


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    reason: str
    metrics: dict[str, float | int | None]


def _thumbs(up_down: tuple[int, int], rule: PromotionRule) -> tuple[int, float | None, Interval]:
    up, down = up_down
    n = up + down
    return n, (up / n if n else None), confidence_sequence(up, n, rule.level, rule.tuned_for)


def _fmt(rate: float, ci: Interval) -> str:
    return f"{rate:.2f} [{ci.low:.2f}, {ci.high:.2f}]"


def decide(
    rule: PromotionRule,
    h2h: HeadToHead,
    canary_thumbs: tuple[int, int],
    serving_thumbs: tuple[int, int],
) -> Decision:
    """The rule's verdict on a canary, from its comparisons with serving and both thumbs.

    `h2h` is the canary's head-to-head record against serving (canary first); its
    bounds are the rule's confidence sequence at `rule.level`. Thumbs are (up, down),
    bounded the same way, since they too are looked at after every poll.
    """
    win = confidence_sequence(h2h.wins, h2h.n, rule.level, rule.tuned_for)
    c_n, c_rate, c_ci = _thumbs(canary_thumbs, rule)
    s_n, s_rate, s_ci = _thumbs(serving_thumbs, rule)
    metrics: dict[str, float | int | None] = {
        "comparisons": h2h.n,
        "wins": h2h.wins,
        "win_rate": h2h.rate,
        "win_low": win.low,
        "win_high": win.high,
        "canary_thumbs": c_n,
        "canary_thumbs_rate": c_rate,
        "serving_thumbs": s_n,
        "serving_thumbs_rate": s_rate,
    }
    record = f"win rate {_fmt(h2h.rate, win)} over {h2h.n} comparisons"

    def verdict(v: Verdict, reason: str) -> Decision:
        return Decision(v, reason, metrics)

    thumbs_retire = (
        rule.retire_on_thumbs and min(c_n, s_n) >= rule.min_thumbs and c_ci.high < s_ci.low
    )
    if h2h.n >= rule.min_comparisons:
        if win.low > rule.win_lower_bound:
            return verdict(Verdict.PROMOTE, f"{record}: beats the serving version")
        if win.high < 1.0 - rule.win_lower_bound:
            return verdict(Verdict.RETIRE, f"{record}: loses to the serving version")
    if thumbs_retire and c_rate is not None and s_rate is not None:
        return verdict(
            Verdict.RETIRE,
            f"thumbs-up rate {_fmt(c_rate, c_ci)} over {c_n} votes is below the serving "
            f"version's {_fmt(s_rate, s_ci)} over {s_n}",
        )
    if h2h.n < rule.min_comparisons:
        return verdict(
            Verdict.WAIT,
            f"{h2h.n} of {rule.min_comparisons} comparisons so far: "
            f"waiting for {rule.min_comparisons - h2h.n} more",
        )
    return verdict(Verdict.WAIT, f"{record}: not yet confident")


def screening_metrics(
    screening: Screening,
    canary: str,
    serving: str,
    thumbs: ThumbScreening,
) -> dict[str, float | int | None]:
    """What the screen set aside among the canary's comparisons with serving (and the
    two versions' thumbs), by reason, for the decision's metrics (events, the dashboard)."""
    pair = {canary, serving}
    kept = sum({b.version_a, b.version_b} == pair for b in screening.kept)
    out: dict[str, float | int | None] = {"screened_in": kept}
    for reason, n in screening.counts(pair).items():
        out[f"set_aside_{reason}"] = n
    out["flagged_voters"] = len(screening.flagged)
    for reason, n in thumbs.counts(pair).items():
        out[f"thumbs_set_aside_{reason}"] = n
    return out
