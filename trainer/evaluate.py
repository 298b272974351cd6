"""Evaluate a candidate policy against the serving one on held-out prompts.

Both policies answer the same held-out prompts (same seeds); the round's reward model
scores every reply. Reported: the candidate's RM win rate over serving (ties half), the
same at equal reply length (`store.lengthcontrol.length_controlled_win_rate`), mean
reward of each, the same two under a second reward model trained on the other half of
the pairs (a check on over-optimizing the first one: Gao et al. 2022), KL to the
reference v0 in nats per reply, and reply length. `trainer.gate` decides on the result.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from store.lengthcontrol import length_controlled_win_rate
from trainer.config import EvalConfig
from trainer.gate import EvalSummary
from trainer.records import Messages, ProgressFn, no_progress
from trainer.reward import Scorer
from trainer.rollouts import Draw, Sampler, TransformersSampler, loaded_adapter
from trainer.sampling import Sample, kl_per_reply

EVAL_STEPS = 5  # progress steps: candidate replies, serving replies, KL, RM, check RM


@dataclass(frozen=True)
class Evaluation:
    metrics: dict[str, float]
    summary: EvalSummary
    examples: list[dict[str, Any]]  # a few held-out prompts with both replies, for the log


def win_rate(candidate: Sequence[float], serving: Sequence[float]) -> float:
    """Share of paired replies where the candidate scores higher; equal scores count half."""
    if not candidate:
        return 0.0
    wins = sum(
        1.0 if c > s else 0.5 if c == s else 0.0 for c, s in zip(candidate, serving, strict=True)
    )
    return wins / len(candidate)


def _mean(xs: Sequence[float]) -> float:
    return float(statistics.fmean(xs)) if xs else 0.0


@dataclass(frozen=True)
class _Side:
    """One policy's replies to the held-out prompts, their KL to v0 and RM rewards."""

    replies: list[Sample]
    kl: list[float]
    rewards: list[float]


def evaluate_candidate(
    policy: Any,
    tokenizer: Any,
    serving_adapter: Path | None,
    prompts: Sequence[Messages],
    rm: Scorer,
    check_rm: Scorer | None,
    cfg: EvalConfig,
    *,
    seed: int = 0,
    progress: ProgressFn = no_progress,
    sampler: Sampler | None = None,
) -> Evaluation:
    """`policy` is the trained PeftModel with the candidate as its active adapter; the
    serving policy is v0 (adapter disabled) or the LoRA adapter at `serving_adapter`.
    Replies are drawn by `sampler` (the policy's own decode loop unless given); both
    sides draw with the same seed."""
    prompts = list(prompts[: cfg.max_prompts])
    draws = sampler or TransformersSampler()
    how = Draw(cfg.max_new_tokens, cfg.temperature, seed=seed)
    k = cfg.samples_per_prompt
    cand = draws.current(policy, tokenizer, prompts, k, how)
    progress(1, EVAL_STEPS, {"replies": float(len(cand))})
    if serving_adapter is None:
        serv, serving_kl = draws.base(policy, tokenizer, prompts, k, how), [0.0] * len(cand)
    else:
        serv = draws.saved(serving_adapter, policy, tokenizer, prompts, k, how)
        with loaded_adapter(policy, serving_adapter):
            serving_kl = kl_per_reply(policy, serv)
    progress(2, EVAL_STEPS, {"replies": float(len(serv))})
    cand_kl = kl_per_reply(policy, cand)
    progress(3, EVAL_STEPS, {"kl": _mean(cand_kl)})

    expanded = [prompts[s.prompt_index] for s in cand]
    candidate = _Side(cand, cand_kl, rm.score(expanded, [s.text for s in cand]))
    serving = _Side(serv, serving_kl, rm.score(expanded, [s.text for s in serv]))
    progress(4, EVAL_STEPS, {"win_rate": win_rate(candidate.rewards, serving.rewards)})

    metrics = {
        "prompts": float(len(prompts)),
        "replies": float(len(cand)),
        **_compare(candidate, serving),
    }
    if check_rm is not None:
        metrics.update(_check_metrics(check_rm, expanded, cand, serv))
    progress(5, EVAL_STEPS, {k: v for k, v in metrics.items() if k.endswith("win_rate")})

    ratio = metrics["length_candidate"] / max(metrics["length_serving"], 1.0)
    metrics["length_ratio"] = ratio
    summary = EvalSummary(
        win_rate=metrics["win_rate"],
        length_controlled_win_rate=metrics.get("length_controlled_win_rate"),
        kl=metrics["kl_candidate"],
        length_ratio=ratio,
        prompts=len(prompts),
    )
    return Evaluation(metrics, summary, _examples(prompts, candidate, serving))


def _compare(candidate: _Side, serving: _Side) -> dict[str, float]:
    """Win rate, then mean reward, KL, reply tokens and finished share of each side."""
    cand, serv = candidate.replies, serving.replies
    out = {
        "win_rate": win_rate(candidate.rewards, serving.rewards),
        "reward_candidate": _mean(candidate.rewards),
        "reward_serving": _mean(serving.rewards),
        "kl_candidate": _mean(candidate.kl),
        "kl_serving": _mean(serving.kl),
        "length_candidate": _mean([float(len(s.completion_ids)) for s in cand]),
        "length_serving": _mean([float(len(s.completion_ids)) for s in serv]),
        "finished_candidate": _mean([float(s.finished) for s in cand]),
        "finished_serving": _mean([float(s.finished) for s in serv]),
    }
    controlled = length_controlled_win_rate(
        [win_rate([c], [s]) for c, s in zip(candidate.rewards, serving.rewards, strict=True)],
        [
            float(len(c.completion_ids) - len(s.completion_ids))
            for c, s in zip(cand, serv, strict=True)
        ],
    )
    if controlled is not None:
        out["length_controlled_win_rate"] = controlled
    return out


def _check_metrics(
    check_rm: Scorer,
    prompts: Sequence[Messages],
    cand: Sequence[Sample],
    serv: Sequence[Sample],
) -> dict[str, float]:
    """Win rate and mean rewards under the check RM (trained on the other half of pairs)."""
    check_c = check_rm.score(prompts, [s.text for s in cand])
    check_s = check_rm.score(prompts, [s.text for s in serv])
    return {
        "check_win_rate": win_rate(check_c, check_s),
        "check_reward_candidate": _mean(check_c),
        "check_reward_serving": _mean(check_s),
    }


def _examples(
    prompts: Sequence[Messages], candidate: _Side, serving: _Side
) -> list[dict[str, Any]]:
    """The first three held-out replies of both sides, for the run log."""
    rows = zip(candidate.replies, serving.replies, candidate.rewards, serving.rewards, strict=True)
    return [
        {
            "prompt": list(map(list, prompts[c.prompt_index])),
            "candidate": c.text,
            "serving": s.text,
            "reward_candidate": rc,
            "reward_serving": rs,
        }
        for c, s, rc, rs in list(rows)[:3]
    ]
