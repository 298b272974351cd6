"""The policy update of a training round: on-policy RLHF on a LoRA adapter.

`train_policy` runs one of three algorithms on the KL-regularized objective
r_RM - kl_coef * KL(policy || v0) (see `trainer.policy.common`):

- "rloo": REINFORCE with a leave-one-out baseline (Ahmadian et al. 2024): no value
  model, one backward pass per reply.
- "ppo": PPO with a value head, GAE and clipping, as InstructGPT (Ouyang et al. 2022).
- "online_dpo": DPO on best-vs-worst on-policy pairs ranked by the RM (Guo et al. 2024),
  the default: it improved most per CPU-minute here (docs/benchmarks.md).

The reference is always the base model (the adapter disabled), so warm-starting from the
serving adapter keeps the KL measured to v0.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from trainer.config import ALGORITHMS, PolicyConfig
from trainer.policy.common import Learner, PolicyResult, RewardFn, run
from trainer.records import Messages, ProgressFn, no_progress
from trainer.rollouts import Sampler

__all__ = ["ALGORITHMS", "PolicyResult", "RewardFn", "train_policy"]


def train_policy(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Messages],
    reward_fn: RewardFn,
    cfg: PolicyConfig,
    *,
    seed: int = 0,
    progress: ProgressFn = no_progress,
    sampler: Sampler | None = None,
) -> PolicyResult:
    """Update the PeftModel `model` in place on rollouts from `prompts` scored by
    `reward_fn`, drawn by `sampler` (the model's own decode loop unless given);
    ceil(prompts_per_round / batch_prompts) * epochs optimizer steps.
    Returns with the model in eval mode."""
    from trainer.policy.online_dpo import OnlineDPOLearner
    from trainer.policy.ppo import PPOLearner
    from trainer.policy.rloo import RLOOLearner

    torch.manual_seed(seed)
    if cfg.algorithm == "rloo":
        learner: Learner = RLOOLearner(model, cfg)
    elif cfg.algorithm == "ppo":
        learner = PPOLearner(model, cfg, seed=seed)
    elif cfg.algorithm == "online_dpo":
        learner = OnlineDPOLearner(model, cfg)
    else:
        raise ValueError(f"unknown policy algorithm {cfg.algorithm!r}; one of {ALGORITHMS}")
    return run(
        model,
        tokenizer,
        prompts,
        reward_fn,
        cfg,
        learner,
        seed=seed,
        progress=progress,
        sampler=sampler,
    )
