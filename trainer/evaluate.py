"""Evaluate a candidate policy against the serving one on held-out prompts.

Both policies answer the same held-out prompts (same seeds); the round's reward model
scores every reply. Reported: the candidate's RM win rate over serving (ties half), mean
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

from trainer.config import EvalConfig
from trainer.gate import EvalSummary
from trainer.records import Messages, ProgressFn, no_progress
from trainer.reward import RewardModel
from trainer.sampling import Sample, kl_per_reply, sample

SERVING_ADAPTER = "serving"


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


def evaluate_candidate(
    policy: Any,
    tokenizer: Any,
    serving_adapter: Path | None,
    prompts: Sequence[Messages],
    rm: RewardModel,
    check_rm: RewardModel | None,
    cfg: EvalConfig,
    *,
    seed: int = 0,
    progress: ProgressFn = no_progress,
) -> Evaluation:
    """`policy` is the trained PeftModel with the candidate as its active adapter; the
    serving policy is v0 (adapter disabled) or the LoRA adapter at `serving_adapter`."""
    prompts = list(prompts[: cfg.max_prompts])
    n = cfg.samples_per_prompt
    total = 5
    candidate_name = policy.active_adapter

    def draw() -> list[Sample]:
        return sample(
            policy,
            tokenizer,
            prompts,
            n,
            max_new_tokens=cfg.max_new_tokens,
            temperature=cfg.temperature,
            seed=seed,
        )

    cand = draw()
    progress(1, total, {"replies": float(len(cand))})
    if serving_adapter is None:
        with policy.disable_adapter():
            serv = draw()
        serving_kl = [0.0] * len(serv)
    else:
        policy.load_adapter(str(serving_adapter), adapter_name=SERVING_ADAPTER)
        try:
            policy.set_adapter(SERVING_ADAPTER)
            serv = draw()
            serving_kl = kl_per_reply(policy, serv)
        finally:
            policy.set_adapter(candidate_name)
            policy.delete_adapter(SERVING_ADAPTER)
    progress(2, total, {"replies": float(len(serv))})

    cand_kl = kl_per_reply(policy, cand)
    progress(3, total, {"kl": _mean(cand_kl)})

    expanded = [prompts[s.prompt_index] for s in cand]
    cand_r = rm.score(expanded, [s.text for s in cand])
    serv_r = rm.score(expanded, [s.text for s in serv])
    progress(4, total, {"win_rate": win_rate(cand_r, serv_r)})

    metrics: dict[str, float] = {
        "prompts": float(len(prompts)),
        "replies": float(len(cand)),
        "win_rate": win_rate(cand_r, serv_r),
        "reward_candidate": _mean(cand_r),
        "reward_serving": _mean(serv_r),
        "kl_candidate": _mean(cand_kl),
        "kl_serving": _mean(serving_kl),
        "length_candidate": _mean([float(len(s.completion_ids)) for s in cand]),
        "length_serving": _mean([float(len(s.completion_ids)) for s in serv]),
        "finished_candidate": _mean([float(s.finished) for s in cand]),
        "finished_serving": _mean([float(s.finished) for s in serv]),
    }
    if check_rm is not None:
        check_c = check_rm.score(expanded, [s.text for s in cand])
        check_s = check_rm.score(expanded, [s.text for s in serv])
        metrics["check_win_rate"] = win_rate(check_c, check_s)
        metrics["check_reward_candidate"] = _mean(check_c)
        metrics["check_reward_serving"] = _mean(check_s)
    progress(5, total, {k: v for k, v in metrics.items() if k.endswith("win_rate")})

    ratio = metrics["length_candidate"] / max(metrics["length_serving"], 1.0)
    metrics["length_ratio"] = ratio
    summary = EvalSummary(
        win_rate=metrics["win_rate"],
        kl=metrics["kl_candidate"],
        length_ratio=ratio,
        prompts=len(prompts),
    )
    examples = [
        {
            "prompt": list(map(list, prompts[c.prompt_index])),
            "candidate": c.text,
            "serving": s.text,
            "reward_candidate": rc,
            "reward_serving": rs,
        }
        for c, s, rc, rs in list(zip(cand, serv, cand_r, serv_r, strict=True))[:3]
    ]
    return Evaluation(metrics, summary, examples)
