"""The gate a candidate must pass before it is offered to users (pure, no I/O)."""

from __future__ import annotations

from dataclasses import dataclass

from trainer.config import EvalConfig


@dataclass(frozen=True)
class EvalSummary:
    """What the gate looks at, from `trainer.evaluate`."""

    win_rate: float  # candidate's RM win rate over the serving policy, ties half
    length_controlled_win_rate: float | None  # the same at equal reply length
    kl: float  # mean KL(candidate || v0) per reply, nats
    length_ratio: float  # mean reply tokens, candidate / serving
    prompts: int  # held-out prompts evaluated


def gate(summary: EvalSummary, cfg: EvalConfig, *, votes_reward_length: bool) -> list[str]:
    """Reasons to reject the candidate; empty when it may be published.

    When the votes do not reward length (`store.lengthcontrol.LengthPreference`), the RM
    win rate must also reach `min_win_rate` at equal length: a candidate that wins only by
    being longer or shorter is not what those users asked for.
    """
    reasons: list[str] = []
    if summary.prompts == 0:
        return ["no held-out prompts to evaluate on"]
    if not summary.win_rate >= cfg.min_win_rate:
        reasons.append(
            f"RM win rate over the serving policy {summary.win_rate:.3f} is below "
            f"{cfg.min_win_rate:.3f} (evaluation.min_win_rate)"
        )
    lc = summary.length_controlled_win_rate
    won = summary.win_rate >= cfg.min_win_rate
    if won and not votes_reward_length and lc is not None and not lc >= cfg.min_win_rate:
        reasons.append(
            f"RM win rate at equal length {lc:.3f} is below {cfg.min_win_rate:.3f} "
            f"(evaluation.min_win_rate) and the votes do not reward length: the win "
            f"{summary.win_rate:.3f} comes from reply length"
        )
    if not summary.kl <= cfg.max_kl:
        reasons.append(
            f"KL to the reference {summary.kl:.2f} nats exceeds the budget of "
            f"{cfg.max_kl:.2f} (evaluation.max_kl)"
        )
    low, high = cfg.min_length_ratio, cfg.max_length_ratio
    if not low <= summary.length_ratio <= high:
        reasons.append(
            f"mean reply length changed by a factor of {summary.length_ratio:.2f}, outside "
            f"[{low:.2f}, {high:.2f}] (evaluation.min_length_ratio, max_length_ratio)"
        )
    return reasons
