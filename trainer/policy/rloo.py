"""RLOO: REINFORCE with a leave-one-out baseline (Kool et al. 2019; Ahmadian et al. 2024,
"Back to Basics: Revisiting REINFORCE Style Optimization for Learning from Human
Feedback in LLMs"; TRL's RLOOTrainer).

Each prompt gets k replies with rewards R_i = r_RM - kl_coef * KL_i - penalty_i. The
baseline of reply i is the mean reward of the prompt's other k - 1 replies, so
A_i = R_i - mean_{j != i} R_j needs no value model, and the whole reply is one action:

    loss = -mean_i(A_i * sum_t log pi(y_i,t))

One optimizer step per batch of prompts; with `epochs` > 1 the same rollouts are reused
for further steps (slightly off-policy, no ratio correction).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from trainer.config import PolicyConfig
from trainer.policy.common import (
    Rollout,
    make_optimizer,
    micro_batches,
    optimizer_step,
    trainable_parameters,
)
from trainer.sampling import completion_logprobs


def leave_one_out_advantages(rewards: torch.Tensor, k: int) -> torch.Tensor:
    """A_i = R_i - mean of the other replies' R in its group of k (prompt-major, flat)."""
    if k < 2:
        raise ValueError("RLOO needs at least 2 samples per prompt")
    grouped = rewards.view(-1, k)
    baseline = (grouped.sum(dim=1, keepdim=True) - grouped) / (k - 1)
    return (grouped - baseline).reshape(-1)


class RLOOLearner:
    needs_hidden = False

    def __init__(self, model: Any, cfg: PolicyConfig):
        self.model = model
        self.cfg = cfg
        self.steps_per_batch = max(1, cfg.epochs)
        self.params = trainable_parameters(model)
        self.optimizer = make_optimizer(self.params, cfg)

    def update(self, rollout: Rollout) -> Iterator[tuple[dict[str, float], bool]]:
        rewards = torch.tensor(rollout.objective(), dtype=torch.float32)
        adv = leave_one_out_advantages(rewards, rollout.group)
        n = len(rollout.samples)
        for _ in range(self.steps_per_batch):
            total = 0.0
            for idx in micro_batches(range(n), self.cfg.micro_batch_size):
                logps = completion_logprobs(
                    self.model, [rollout.samples[i] for i in idx], batch_size=len(idx)
                )
                seq = torch.stack([lp.sum() for lp in logps])
                loss = -(adv[idx] * seq).sum() / n
                loss.backward()  # type: ignore[no-untyped-call]
                total += float(loss.detach())
            norm = optimizer_step(self.optimizer, self.params, self.cfg)
            yield (
                {
                    "loss": total,
                    "grad_norm": norm,
                    "advantage_abs_mean": float(adv.abs().mean()),
                },
                True,
            )
