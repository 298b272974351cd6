"""Online DPO: DPO (Rafailov et al. 2023) on fresh on-policy pairs labelled by the reward
model (Guo et al. 2024, "Direct Language Model Alignment from Online AI Feedback"; Xu et
al. 2023; TRL's OnlineDPOTrainer).

Each prompt gets k replies, ranked by r_RM - unfinished_penalty; the best and the worst
form a pair when their scores differ by at least `dpo_min_margin` (closer pairs are mostly
RM noise). Loss over the batch's pairs:

    -log sigmoid(beta * ((log pi(c) - log pi_v0(c)) - (log pi(r) - log pi_v0(r))))

The reference is v0 (the adapter disabled), not the adapter training started from, so the
implicit KL stays anchored to the base model across rounds. A batch with no pair takes no
step. `epochs` steps per batch reuse its pairs.

With `dpo_nll_weight` = alpha > 0 the loss also carries alpha times the chosen reply's
mean per-token negative log-likelihood under the policy (RPO: Pang et al. 2024, "Iterative
Reasoning Preference Optimization"). Plain DPO can widen the margin by pushing both replies
down; the NLL term makes it raise the chosen one, which is a sampled reply of the policy
itself, so the term pulls towards the policy's own best-of-k (as rejection-sampling
fine-tuning does) rather than towards anything off-policy.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F

from trainer.config import PolicyConfig
from trainer.policy.common import (
    Rollout,
    make_optimizer,
    micro_batches,
    optimizer_step,
    trainable_parameters,
)
from trainer.sampling import completion_logprobs


def best_worst_pairs(scores: list[float], k: int, min_margin: float) -> list[tuple[int, int]]:
    """(chosen, rejected) sample indices per group of k, best vs worst, when far enough."""
    pairs = []
    for start in range(0, len(scores), k):
        group = range(start, min(start + k, len(scores)))
        best = max(group, key=lambda i: scores[i])
        worst = min(group, key=lambda i: scores[i])
        if best != worst and scores[best] - scores[worst] >= min_margin:
            pairs.append((best, worst))
    return pairs


class OnlineDPOLearner:
    needs_hidden = False

    def __init__(self, model: Any, cfg: PolicyConfig):
        self.model = model
        self.cfg = cfg
        self.steps_per_batch = max(1, cfg.epochs)
        self.params = trainable_parameters(model)
        self.optimizer = make_optimizer(self.params, cfg)

    def update(self, rollout: Rollout) -> Iterator[tuple[dict[str, float], bool]]:
        cfg = self.cfg
        pairs = best_worst_pairs(rollout.score(), rollout.group, cfg.dpo_min_margin)
        if not pairs:
            for _ in range(self.steps_per_batch):
                yield {"loss": 0.0, "pairs": 0.0}, False
            return
        ref = [float(t.sum()) for t in rollout.ref_logp]
        per_pass = max(1, cfg.micro_batch_size // 2)  # two replies per pair
        for _ in range(self.steps_per_batch):
            total = margin_sum = correct = nll_sum = 0.0
            for chunk in micro_batches(range(len(pairs)), per_pass):
                chosen = [pairs[j][0] for j in chunk]
                rejected = [pairs[j][1] for j in chunk]
                logps = completion_logprobs(
                    self.model,
                    [rollout.samples[i] for i in chosen + rejected],
                    batch_size=2 * len(chunk),
                )
                seq = torch.stack([lp.sum() for lp in logps])
                ref_c = torch.tensor([ref[i] for i in chosen])
                ref_r = torch.tensor([ref[i] for i in rejected])
                margin = (seq[: len(chunk)] - ref_c) - (seq[len(chunk) :] - ref_r)
                nll = torch.stack([-lp.sum() / max(1, lp.numel()) for lp in logps[: len(chunk)]])
                loss = -F.logsigmoid(cfg.dpo_beta * margin).sum() / len(pairs)
                if cfg.dpo_nll_weight > 0:
                    loss = loss + cfg.dpo_nll_weight * nll.sum() / len(pairs)
                loss.backward()  # type: ignore[no-untyped-call]
                total += float(loss.detach())
                margin_sum += float(margin.detach().sum())
                correct += float((margin.detach() > 0).float().sum())
                nll_sum += float(nll.detach().sum())
            norm = optimizer_step(self.optimizer, self.params, cfg)
            yield (
                {
                    "loss": total,
                    "pairs": float(len(pairs)),
                    "dpo_margin": margin_sum / len(pairs),
                    "dpo_accuracy": correct / len(pairs),
                    "chosen_nll": nll_sum / len(pairs),
                    "grad_norm": norm,
                },
                True,
            )
