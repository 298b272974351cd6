"""PPO for RLHF as in the InstructGPT line of work (Ziegler et al. 2019; Stiennon et al.
2020; Ouyang et al. 2022), in compact form (cf. "The N+ Implementation Details of RLHF with
PPO", Huang et al. 2024, and TRL's PPOTrainer).

- Each reply token is an action. Per-token reward: -kl_coef * (log pi - log pi_v0) at
  every token, plus the RM score (less the unfinished penalty) at the last token.
- A scalar value head (a Linear on the policy's last hidden state, zero-initialised,
  trained together with the LoRA adapter) estimates V(s_t); advantages by GAE with
  gamma = 1 and lambda = gae_lambda, whitened over the batch's tokens.
- Loss per token, averaged over the batch's tokens: the clipped surrogate
  max(-A * ratio, -A * clip(ratio, 1 +- clip_range)) against the rollout's log-probs, plus
  value_coef * 0.5 * max((V - G)^2, (V_clipped - G)^2) with V clipped around the rollout's
  values by clip_range.
- `epochs` optimizer steps per rollout batch, each one pass over the batch in shuffled
  micro-batches with accumulated gradients.

The value head lives for one call of `train_policy` (one round) and is not saved: serving
needs only the adapter.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
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
from trainer.sampling import completion_states


def token_rewards(rollout: Rollout) -> list[torch.Tensor]:
    """-kl_coef * (logp - logp_ref) per token, with RM score - penalty added at the end."""
    out = []
    for lp, ref, score in zip(rollout.logp, rollout.ref_logp, rollout.score(), strict=True):
        r = -rollout.kl_coef * (lp - ref)
        r[-1] = r[-1] + score
        out.append(r)
    return out


def gae(
    rewards: Sequence[torch.Tensor], values: Sequence[torch.Tensor], lam: float
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """(advantages, returns) per reply by GAE with gamma = 1; V after the last token is 0."""
    advs, rets = [], []
    for r, v in zip(rewards, values, strict=True):
        n = r.shape[0]
        adv = torch.zeros(n)
        running = 0.0
        for t in range(n - 1, -1, -1):
            nxt = float(v[t + 1]) if t + 1 < n else 0.0
            delta = float(r[t]) + nxt - float(v[t])
            running = delta + lam * running
            adv[t] = running
        advs.append(adv)
        rets.append(adv + v)
    return advs, rets


def whiten(tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Shift and scale to mean 0, std 1 over all tokens of the batch."""
    flat = torch.cat(list(tensors))
    mean = flat.mean()
    std = flat.std() if flat.numel() > 1 else torch.tensor(1.0)
    return [(t - mean) / (std + 1e-8) for t in tensors]


class PPOLearner:
    needs_hidden = True

    def __init__(self, model: Any, cfg: PolicyConfig, seed: int = 0):
        self.model = model
        self.cfg = cfg
        self.steps_per_batch = max(1, cfg.epochs)
        hidden = int(model.get_base_model().config.hidden_size)
        self.value_head = torch.nn.Linear(hidden, 1)
        torch.nn.init.zeros_(self.value_head.weight)
        torch.nn.init.zeros_(self.value_head.bias)
        self.params = [*trainable_parameters(model), *self.value_head.parameters()]
        self.optimizer = make_optimizer(self.params, cfg)
        self.gen = torch.Generator().manual_seed(seed)

    def values(self, hidden: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.value_head(hidden).squeeze(-1)
        return out

    def update(self, rollout: Rollout) -> Iterator[tuple[dict[str, float], bool]]:
        if rollout.hidden is None:
            raise ValueError("PPO needs rollouts collected with hidden states")
        cfg = self.cfg
        with torch.no_grad():
            old_values = [self.values(h) for h in rollout.hidden]
        advs, rets = gae(token_rewards(rollout), old_values, cfg.gae_lambda)
        advs = whiten(advs)
        n = len(rollout.samples)
        tokens = sum(int(lp.numel()) for lp in rollout.logp)
        for _ in range(self.steps_per_batch):
            order = torch.randperm(n, generator=self.gen).tolist()
            pg_total = vf_total = clipped = approx_kl = 0.0
            for idx in micro_batches(order, cfg.micro_batch_size):
                logps, states = completion_states(
                    self.model, [rollout.samples[i] for i in idx], batch_size=len(idx)
                )
                pg = vf = torch.zeros(())
                for i, lp, h in zip(idx, logps, states, strict=True):
                    old, adv, ret, v_old = rollout.logp[i], advs[i], rets[i], old_values[i]
                    ratio = torch.exp(lp - old)
                    bounded = torch.clamp(ratio, 1 - cfg.clip_range, 1 + cfg.clip_range)
                    pg = pg + torch.maximum(-adv * ratio, -adv * bounded).sum()
                    v = self.values(h)
                    v_clip = v_old + torch.clamp(v - v_old, -cfg.clip_range, cfg.clip_range)
                    vf = vf + 0.5 * torch.maximum((v - ret) ** 2, (v_clip - ret) ** 2).sum()
                    with torch.no_grad():
                        clipped += float((ratio != bounded).float().sum())
                        approx_kl += float((0.5 * (lp - old) ** 2).sum())
                loss = (pg + cfg.value_coef * vf) / tokens
                loss.backward()  # type: ignore[no-untyped-call]
                pg_total += float(pg.detach())
                vf_total += float(vf.detach())
            norm = optimizer_step(self.optimizer, self.params, cfg)
            yield (
                {
                    "loss": (pg_total + cfg.value_coef * vf_total) / tokens,
                    "policy_loss": pg_total / tokens,
                    "value_loss": vf_total / tokens,
                    "clip_frac": clipped / tokens,
                    "approx_kl": approx_kl / tokens,
                    "grad_norm": norm,
                },
                True,
            )
