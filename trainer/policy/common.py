"""What the policy-update algorithms share: prompt batches, rollouts, rewards, the loop.

Every algorithm optimizes the KL-regularized objective of RLHF (Ziegler et al. 2019,
Stiennon et al. 2020, Ouyang et al. 2022):

    R(x, y) = r_RM(x, y) - kl_coef * KL(y) - unfinished_penalty * [y hit max_new_tokens]

with KL(y) = sum_t log pi(y_t | ...) - log pi_v0(y_t | ...), the sampled per-reply KL to v0
(the base model: the adapter disabled, whatever adapter training started from). A reply cut
at the length cap is not a finished reply and is penalized rather than trained as if it
had ended.

`run` is the loop: draw the round's prompts (shuffled with the seed, cycled when too few),
and per batch of prompts sample k replies each, score them (`collect`), then hand the
`Rollout` to the algorithm's `Learner`, which takes its optimizer steps and yields one
metrics dict per step.

With `kl_step` > 0 a round is a trust region around where it started: from the second
batch on, the rollouts also measure KL(policy || the round's starting weights), and once
that reaches `kl_step` nats per reply the round takes no more steps (PPO's target-KL early
stop and TRPO's trust region, applied per round). It bounds how far one round's candidate
moves from the serving version, not the KL to v0: rounds that move the same way add up
in sqrt(KL), so the gate's budget (`evaluation.max_kl`) still decides how many fit.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from trainer.config import PolicyConfig
from trainer.records import Messages, ProgressFn, no_progress
from trainer.rollouts import Draw, Sampler, TransformersSampler
from trainer.sampling import (
    Sample,
    completion_logprobs,
    completion_states,
    reference_logprobs,
)

# Reward model scores for (prompt, reply) pairs, one float per pair.
RewardFn = Callable[[Sequence[Messages], Sequence[str]], list[float]]

SCORE_BATCH = 8  # rows per no-grad log-prob pass


@dataclass
class PolicyResult:
    """What a policy update did: optimizer steps, replies sampled, metrics per step."""

    steps: int
    rollouts: int
    history: list[dict[str, float]] = field(default_factory=list)
    kl_moved: float | None = None  # KL to the round's start, last measured (kl_step on)
    stopped: str | None = None  # why the round stopped before its last batch
    undone: int = 0  # optimizer steps taken and then undone (kl_step_max, kl_budget)
    draw_s: float = 0.0  # seconds the sampler took drawing rollouts, all batches together
    learn_s: float = 0.0  # seconds in the learner's steps


@dataclass
class Rollout:
    """One batch of on-policy samples, scored; tensors carry no graph.

    Samples are prompt-major: k = `group` consecutive samples share a prompt.
    `hidden` (the last hidden state before each reply token) is kept only when asked for.
    """

    samples: list[Sample]
    prompts: list[Messages]  # per sample
    group: int
    rm: list[float]
    logp: list[torch.Tensor]
    ref_logp: list[torch.Tensor]
    kl_coef: float
    unfinished_penalty: float
    hidden: list[torch.Tensor] | None = None
    draw_s: float = 0.0  # seconds the sampler took to draw the replies

    def kl(self) -> list[float]:
        return [float((a - b).sum()) for a, b in zip(self.logp, self.ref_logp, strict=True)]

    def penalty(self) -> list[float]:
        return [0.0 if s.finished else self.unfinished_penalty for s in self.samples]

    def score(self) -> list[float]:
        """RM score less the unfinished penalty (no KL): what online DPO ranks by."""
        return [r - p for r, p in zip(self.rm, self.penalty(), strict=True)]

    def objective(self) -> list[float]:
        """R = r_RM - kl_coef * KL - penalty, per reply."""
        return [s - self.kl_coef * k for s, k in zip(self.score(), self.kl(), strict=True)]

    def metrics(self) -> dict[str, float]:
        n = len(self.samples)
        kl = self.kl()
        return {
            "reward_mean": sum(self.rm) / n,
            "kl_mean": sum(kl) / n,
            "objective_mean": sum(self.objective()) / n,
            "length_mean": sum(len(s.completion_ids) for s in self.samples) / n,
            "finished_frac": sum(1.0 for s in self.samples if s.finished) / n,
        }


def prompt_batches(
    prompts: Sequence[Messages], cfg: PolicyConfig, seed: int
) -> list[list[Messages]]:
    """The round's prompts in batches of `batch_prompts`: shuffled, cycled to
    `prompts_per_round`, so there are ceil(prompts_per_round / batch_prompts) batches."""
    if not prompts:
        raise ValueError("no prompts to sample rollouts from")
    if cfg.batch_prompts < 1 or cfg.prompts_per_round < 1:
        raise ValueError("policy.batch_prompts and policy.prompts_per_round must be >= 1")
    order = list(prompts)
    random.Random(seed).shuffle(order)
    drawn = [order[i % len(order)] for i in range(cfg.prompts_per_round)]
    return [drawn[i : i + cfg.batch_prompts] for i in range(0, len(drawn), cfg.batch_prompts)]


def collect(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Messages],
    reward_fn: RewardFn,
    cfg: PolicyConfig,
    *,
    seed: int,
    hidden: bool = False,
    sampler: Sampler | None = None,
) -> Rollout:
    """Sample k replies per prompt (with `sampler`: the model's own decode loop unless
    given), score them with the RM, and take the policy's and v0's log-probs of every
    reply token under the training model (no grad)."""
    k = cfg.samples_per_prompt
    draw = Draw(cfg.max_new_tokens, cfg.temperature, cfg.top_p, seed)
    started = time.monotonic()
    samples = (sampler or TransformersSampler()).current(model, tokenizer, prompts, k, draw)
    draw_s = time.monotonic() - started
    per_sample = [prompts[s.prompt_index] for s in samples]
    rm = [float(x) for x in reward_fn(per_sample, [s.text for s in samples])]
    if len(rm) != len(samples):
        raise ValueError(f"reward_fn returned {len(rm)} scores for {len(samples)} replies")
    states: list[torch.Tensor] | None = None
    with torch.no_grad():
        if hidden:
            logp, states = completion_states(model, samples, SCORE_BATCH)
        else:
            logp = completion_logprobs(model, samples, SCORE_BATCH)
    ref = reference_logprobs(model, samples, SCORE_BATCH)
    return Rollout(
        samples=samples,
        prompts=per_sample,
        group=k,
        rm=rm,
        logp=[t.detach() for t in logp],
        ref_logp=[t.detach() for t in ref],
        kl_coef=cfg.kl_coef,
        unfinished_penalty=cfg.unfinished_penalty,
        hidden=None if states is None else [h.detach().clone() for h in states],
        draw_s=draw_s,
    )


def micro_batches(indices: Sequence[int], size: int) -> Iterator[list[int]]:
    step = max(1, size)
    for start in range(0, len(indices), step):
        yield list(indices[start : start + step])


def trainable_parameters(model: Any) -> list[torch.nn.Parameter]:
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the policy has no trainable parameters (load it with is_trainable)")
    return params


def make_optimizer(params: Sequence[torch.nn.Parameter], cfg: PolicyConfig) -> Any:
    return torch.optim.AdamW(list(params), lr=cfg.learning_rate)


def optimizer_step(
    optimizer: Any, params: Sequence[torch.nn.Parameter], cfg: PolicyConfig
) -> float:
    """Clip the accumulated gradients, step, clear them; returns the norm before clipping."""
    norm = torch.nn.utils.clip_grad_norm_(list(params), cfg.max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(norm)


class StartPoint:
    """The trainable weights as a round started, to measure how far the policy has moved."""

    def __init__(self, model: Any):
        self.model = model
        self.params = trainable_parameters(model)
        self.saved = self.snapshot()

    def snapshot(self) -> list[torch.Tensor]:
        return [p.detach().clone() for p in self.params]

    def restore(self, saved: list[torch.Tensor]) -> None:
        with torch.no_grad():
            for p, s in zip(self.params, saved, strict=True):
                p.copy_(s)

    def kl(self, rollout: Rollout) -> float:
        """Mean per-reply KL(policy || start) on the rollout's samples (drawn from the
        policy): the rollout's own log-probs less the start weights' on the same tokens."""
        current = self.snapshot()
        try:
            self.restore(self.saved)
            with torch.no_grad():
                start = completion_logprobs(self.model, rollout.samples, SCORE_BATCH)
        finally:
            self.restore(current)
        per_reply = [float((a - b).sum()) for a, b in zip(rollout.logp, start, strict=True)]
        return sum(per_reply) / len(per_reply)


class Learner(Protocol):
    """One algorithm's update rule, given scored rollouts."""

    steps_per_batch: int  # optimizer steps per rollout batch (for progress totals)
    needs_hidden: bool  # whether rollouts must keep hidden states (a value head)

    def update(self, rollout: Rollout) -> Iterator[tuple[dict[str, float], bool]]:
        """Take the steps on one rollout batch; yields (metrics, stepped) after each."""
        ...


def run(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Messages],
    reward_fn: RewardFn,
    cfg: PolicyConfig,
    learner: Learner,
    *,
    seed: int,
    progress: ProgressFn = no_progress,
    sampler: Sampler | None = None,
) -> PolicyResult:
    """Rollouts (drawn by `sampler`) and updates for one round; leaves the model in eval
    mode."""
    batches = prompt_batches(prompts, cfg, seed)
    total = len(batches) * learner.steps_per_batch
    result = PolicyResult(steps=0, rollouts=0)
    region = TrustRegion(model, cfg) if TrustRegion.wanted(cfg) else None
    try:
        for b, batch in enumerate(batches):
            rollout = collect(
                model,
                tokenizer,
                batch,
                reward_fn,
                cfg,
                seed=seed * 1_000_003 + b,
                hidden=learner.needs_hidden,
                sampler=sampler,
            )
            result.rollouts += len(rollout.samples)
            result.draw_s += rollout.draw_s
            measured = rollout.metrics()
            if region is not None:
                result.stopped = region.check(result, rollout, measured, b, len(batches))
                if result.stopped is not None:
                    result.history.append({**measured, "batch": float(b), "stepped": 0.0})
                    break
            started = time.monotonic()
            taken = _learn(model, learner, rollout, measured, b, result, total, progress)
            result.learn_s += time.monotonic() - started
            if region is not None:
                region.last_steps = taken
    finally:
        model.eval()
    return result


def _learn(
    model: Any,
    learner: Learner,
    rollout: Rollout,
    measured: dict[str, float],
    b: int,
    result: PolicyResult,
    total: int,
    progress: ProgressFn,
) -> int:
    """The learner's steps on batch b's rollout, each a row of `result.history` and a
    progress report; returns the optimizer steps it took."""
    model.train()
    taken = 0
    for metrics, stepped in learner.update(rollout):
        result.steps += int(stepped)
        taken += int(stepped)
        row = {**measured, **metrics, "batch": float(b), "stepped": float(stepped)}
        result.history.append(row)
        progress(len(result.history), total, row)
    model.eval()
    return taken


class TrustRegion:
    """The round's trust region (kl_step, kl_step_max, kl_budget): checked on each batch's
    rollouts before the learner trains on them."""

    def __init__(self, model: Any, cfg: PolicyConfig):
        self.cfg = cfg
        self.start = StartPoint(model)
        self.measure_moved = cfg.kl_step > 0 or cfg.kl_step_max > 0
        # The weights before the last batch's update, and its step count, so that an update
        # the next rollouts find past a hard edge (kl_step_max, kl_budget) can be undone.
        self.keep_before = cfg.kl_step_max > 0 or cfg.kl_budget > 0
        self.before: list[torch.Tensor] | None = None
        self.last_steps = 0

    @staticmethod
    def wanted(cfg: PolicyConfig) -> bool:
        return cfg.kl_step > 0 or cfg.kl_step_max > 0 or cfg.kl_budget > 0

    def check(
        self,
        result: PolicyResult,
        rollout: Rollout,
        measured: dict[str, float],
        b: int,
        n_batches: int,
    ) -> str | None:
        """Why the round stops before training on batch b, or None to go on.

        Records the KL moved from the round's start (from the second batch on) in `result`
        and `measured`; past a hard edge it undoes the last batch's update.
        """
        cfg = self.cfg
        where = f"before batch {b + 1} of {n_batches}"
        if self.measure_moved and b > 0:
            result.kl_moved = measured["kl_moved"] = self.start.kl(rollout)
        edge = _past_edge(cfg, measured, result.kl_moved if b > 0 else None)
        if edge is not None and self.before is not None:
            self.start.restore(self.before)  # the candidate is the policy before that update
            result.steps -= self.last_steps
            result.undone += self.last_steps
            return f"{where}: {edge}; batch {b}'s update undone"
        if edge is not None:  # the serving version itself is past the budget
            return f"{where}: {edge}; no step taken"
        moved = result.kl_moved or 0.0
        if cfg.kl_step > 0 and b > 0 and moved >= cfg.kl_step:
            return f"{where}: KL to the round's start {moved:.3f} >= kl_step {cfg.kl_step:g}"
        if self.keep_before:
            self.before = self.start.snapshot()
        return None


def _past_edge(cfg: PolicyConfig, measured: dict[str, float], moved: float | None) -> str | None:
    """Why the policy that drew this rollout is past a hard edge of the trust region (the
    last update went too far), or None."""
    if cfg.kl_step_max > 0 and moved is not None and moved >= cfg.kl_step_max:
        return f"KL to the round's start {moved:.3f} >= kl_step_max {cfg.kl_step_max:g}"
    ref = measured["kl_mean"]
    if cfg.kl_budget > 0 and ref >= cfg.kl_budget:
        return f"KL to the reference {ref:.3f} >= kl_budget {cfg.kl_budget:g}"
    return None
