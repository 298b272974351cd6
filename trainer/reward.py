"""The reward model: Bradley-Terry on users' preference pairs, as a LoRA adapter.

The RM is the policy's backbone loaded as `AutoModelForSequenceClassification` with one
label (a scalar reward read at the last real token), plus a LoRA adapter of task SEQ_CLS,
so the adapter artifact carries the new `score` head with it (peft's modules_to_save).
Everything is fp32: the trainer runs on CPU.

The loss is TRL's `RewardTrainer.compute_loss` (trl/trainer/reward_trainer.py, 1.16):

    loss = -log sigmoid(r_chosen - r_rejected)

here weighted per pair (`Pair.weight`), plus `unpaired_weight` times a logistic loss on
single thumbs (up wants r > 0, down wants r < 0), which also pins the reward's offset that
the pairwise loss leaves free. It is written as a small loop of our own rather than through
`RewardTrainer` so the trainer keeps control of threads, progress reports and checkpoints.

Inputs are the tokenizer's chat template over prompt + assistant reply; a sequence longer
than `max_length` loses the start of its prompt, never the reply.

`pair_metrics` measures an RM on held-out pairs. Besides accuracy it reports what a
length-only rule ("the shorter reply wins") scores on the same pairs and the RM's accuracy
on the pairs where that rule is wrong: an RM on a little data learns length first.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from store.lengthcontrol import length_balanced_accuracy
from trainer.chat import chat_head, encode_chat, quiet_transformers
from trainer.config import RewardConfig
from trainer.device import CPU, Placement
from trainer.records import Messages, Pair, ProgressFn, ScoreFn, Unpaired, no_progress

META_FILE = "reward_model.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
FORMAT = 1
MAX_GRAD_NORM = 1.0
LENGTH_WINDOW = 8  # training batches formed from windows of this many batches sorted by length
LORA_DROPOUT = 0.05
_NOTE_ERROR_CHARS = 300


class Scorer(Protocol):
    """Anything that scores replies to prompts; `RewardNet` is one."""

    def score(
        self, prompts: Sequence[Messages], replies: Sequence[str], batch_size: int = 16
    ) -> list[float]: ...


class RewardModel(Scorer, Protocol):
    """What a round needs of a reward model, whatever its kind (`RewardConfig.kind`)."""

    warm_started: bool

    def fit(
        self,
        pairs: Sequence[Pair],
        unpaired: Sequence[Unpaired],
        cfg: RewardConfig,
        *,
        seed: int = 0,
        progress: ProgressFn = no_progress,
    ) -> dict[str, float]: ...

    def save(self, dest: Path) -> None: ...

    def keep_features(self) -> None:
        """Persist what scoring computed that later rounds can reuse (a no-op for a model
        without a cache)."""

    def policy_scorer(self, reward_length: bool) -> ScoreFn:
        """What the policy is trained on. `reward_length` False (the votes do not reward
        length): the score without the part that follows length, where the model has one
        (after ODIN, Chen et al. 2024, whose RL uses the quality head only)."""


def create_reward_model(
    base_dir: Path,
    cfg: RewardConfig,
    previous: Path | None,
    *,
    seed: int = 0,
    cache_file: Path | None = None,
    placement: Placement = CPU,
) -> tuple[RewardModel, str]:
    """The round's reward model of `cfg.kind`, and a line for the run log saying where it
    came from. A head is refitted on the whole window each round (its features cached at
    `cache_file`); a LoRA model warm-starts from `previous` (`RewardNet.create`)."""
    if cfg.kind == "head":
        from trainer.head import HeadRewardModel

        cached = "" if cache_file is None else f", features cached in {cache_file}"
        head = HeadRewardModel.fresh(base_dir, cfg, cache_file, placement)
        return head, f"linear head, refitted{cached}"
    return RewardNet.create(base_dir, cfg, previous, seed=seed, placement=placement)


def _load_backbone(base_dir: Path, placement: Placement = CPU) -> tuple[Any, Any]:
    """The base model as a 1-label sequence classifier (on `placement`: fp32 on the CPU)
    and its tokenizer."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(base_dir))
    pad_id = tokenizer.pad_token_id
    if pad_id is None:
        pad_id = tokenizer.eos_token_id
        tokenizer.pad_token_id = pad_id
    with quiet_transformers():
        model = AutoModelForSequenceClassification.from_pretrained(
            str(base_dir), num_labels=1, dtype=placement.dtype()
        ).to(placement.device)
    # The head reads the rightmost token that is not pad_token_id: with right padding that
    # is the last real token (SmolLM2's template ends a reply with "<|im_end|>\n").
    model.config.pad_token_id = pad_id
    return model, tokenizer


def _targets(spec: str) -> str | list[str] | None:
    """RewardConfig.lora_targets as peft's target_modules (None: peft's default)."""
    spec = spec.strip()
    if spec in ("", "auto"):
        return None
    if spec == "all-linear":
        return spec
    return [name.strip() for name in spec.split(",") if name.strip()]


def _top_layers(model: Any, n: int) -> list[int] | None:
    """Indices of the top `n` transformer layers, or None (every layer) when n is 0."""
    total = int(model.config.num_hidden_layers)
    if n <= 0 or n >= total:
        return None
    return list(range(total - n, total))


class RewardNet:
    """The reward model as a network: a LoRA adapter and score head on the base model (see
    the module docstring). A saved one is recorded as a `store.db.models.RewardModel` row."""

    def __init__(self, model: Any, tokenizer: Any, base_dir: Path, max_length: int) -> None:
        self.model = model  # peft.PeftModel over a *ForSequenceClassification
        self.tokenizer = tokenizer
        self.base_dir = base_dir
        self.max_length = max_length
        self.pad_id: int = int(model.config.pad_token_id)
        self.warm_started = False  # continued from the last round's RM (set by `create`)

    # -- construction ------------------------------------------------------------------

    @classmethod
    def fresh(
        cls, base_dir: Path, cfg: RewardConfig, seed: int = 0, placement: Placement = CPU
    ) -> RewardNet:
        """A new adapter and a new score head (seeded) on the base model."""
        import torch
        from peft import LoraConfig, TaskType, get_peft_model

        with torch.random.fork_rng(devices=[]):  # seeded, and the caller's RNG untouched
            torch.manual_seed(seed)
            base, tokenizer = _load_backbone(base_dir, placement)
            lora = LoraConfig(
                task_type=TaskType.SEQ_CLS,
                r=cfg.lora_r,
                lora_alpha=cfg.lora_alpha,
                lora_dropout=LORA_DROPOUT,
                target_modules=_targets(cfg.lora_targets),
                layers_to_transform=_top_layers(base, cfg.lora_layers),
            )
            model = get_peft_model(base, lora)
        model.eval()
        return cls(model, tokenizer, base_dir, cfg.max_length)

    @classmethod
    def _from_artifact(
        cls,
        path: Path,
        base_dir: Path,
        max_length: int | None,
        trainable: bool,
        placement: Placement = CPU,
    ) -> RewardNet:
        """Load a saved RM, refusing one whose weights do not match the adapter exactly."""
        from peft import PeftModel, get_peft_model_state_dict
        from safetensors import safe_open

        meta = json.loads((path / META_FILE).read_text())
        if meta.get("format") != FORMAT:
            raise ValueError(f"unknown reward model format {meta.get('format')!r}")
        for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS):  # else peft would ask the Hub
            if not (path / name).is_file():
                raise FileNotFoundError(f"no {name} in {path}")
        base, tokenizer = _load_backbone(base_dir, placement)
        with quiet_transformers():
            model = PeftModel.from_pretrained(base, str(path), is_trainable=trainable)
        # peft only warns about missing keys; a partial adapter is not the previous RM.
        with safe_open(str(path / ADAPTER_WEIGHTS), framework="pt") as f:
            saved = set(f.keys())
        expected = set(get_peft_model_state_dict(model).keys())
        if saved != expected:
            missing = sorted(expected - saved)[:3]
            extra = sorted(saved - expected)[:3]
            raise ValueError(f"adapter weights do not match: missing {missing}, unexpected {extra}")
        model.eval()
        length = int(meta["max_length"]) if max_length is None else max_length
        return cls(model, tokenizer, base_dir, length)

    @classmethod
    def create(
        cls,
        base_dir: Path,
        cfg: RewardConfig,
        previous: Path | None,
        seed: int = 0,
        placement: Placement = CPU,
    ) -> tuple[RewardNet, str]:
        """The RM to train this round, and a line for the run log saying where it came from.

        Warm-starts from `previous` when `cfg.warm_start` and it loads (its adapter shape is
        kept; `cfg.max_length` applies); anything wrong with it gives a fresh model instead.
        """
        if previous is None or not cfg.warm_start:
            why = "no previous reward model" if previous is None else "warm_start is off"
            return cls.fresh(base_dir, cfg, seed, placement), f"fresh ({why})"
        try:
            rm = cls._from_artifact(
                Path(previous), base_dir, cfg.max_length, trainable=True, placement=placement
            )
        except Exception as e:  # any broken artifact: start over, never fail the round
            error = " ".join(f"{type(e).__name__}: {e}".split())
            if len(error) > _NOTE_ERROR_CHARS:
                error = error[: _NOTE_ERROR_CHARS - 3] + "..."
            note = f"fresh: previous reward model at {previous} could not be loaded ({error})"
            return cls.fresh(base_dir, cfg, seed, placement), note
        rm.warm_started = True
        return rm, f"warm-started from {previous}"

    @classmethod
    def load(cls, path: Path, base_dir: Path | None = None) -> RewardNet:
        """A saved RM for scoring; its base model is the one recorded at save time."""
        path = Path(path)
        if base_dir is None:
            base_dir = Path(json.loads((path / META_FILE).read_text())["base_model"])
        rm = cls._from_artifact(path, base_dir, None, trainable=False)
        for p in rm.model.parameters():
            p.requires_grad_(False)
        return rm

    def save(self, dest: Path) -> None:
        """Adapter + score head + reward_model.json into `dest` (the caller makes it atomic)."""
        dest = Path(dest)
        dest.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(str(dest))
        meta = {
            "format": FORMAT,
            "kind": "bradley_terry_lora",
            "base_model": str(Path(self.base_dir).resolve()),
            "max_length": self.max_length,
            "pad_token_id": self.pad_id,
        }
        (dest / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")

    # -- inputs ------------------------------------------------------------------------

    def _head(self, prompt: Messages) -> tuple[str, list[int]]:
        return chat_head(self.tokenizer, prompt)

    def encode(
        self, prompt: Messages, reply: str, head: tuple[str, list[int]] | None = None
    ) -> list[int]:
        """Token ids of prompt + reply in the chat template, at most max_length (see
        `encode_chat`)."""
        return encode_chat(self.tokenizer, prompt, reply, self.max_length, head)[0]

    def encode_many(self, prompts: Sequence[Messages], replies: Sequence[str]) -> list[list[int]]:
        """`encode` of each reply to its prompt, rendering each distinct prompt once."""
        if len(prompts) != len(replies):
            raise ValueError(f"{len(prompts)} prompts but {len(replies)} replies")
        cache: dict[Messages, tuple[str, list[int]]] = {}
        out = []
        for prompt, reply in zip(prompts, replies, strict=True):
            if prompt not in cache:
                cache[prompt] = self._head(prompt)
            out.append(self.encode(prompt, reply, cache[prompt]))
        return out

    def forward(self, seqs: Sequence[list[int]]) -> Any:
        """Rewards (a 1-d tensor) of token sequences, right-padded to the longest.

        Runs in the model's current mode and grad setting: training calls it with grad.
        """
        import torch

        device = next(self.model.parameters()).device
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
            mask[i, : len(s)] = 1
        out = self.model(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False)
        return out.logits[:, 0].float().cpu()  # losses are computed on the CPU (trainer.device)

    def trainable_parameters(self) -> list[Any]:
        """The parameters training updates: the LoRA adapter and the score head."""
        params = [p for p in self.model.parameters() if p.requires_grad]
        if not params:
            raise ValueError("the reward model has no trainable parameters (loaded for scoring?)")
        return params

    def fit(
        self,
        pairs: Sequence[Pair],
        unpaired: Sequence[Unpaired],
        cfg: RewardConfig,
        *,
        seed: int = 0,
        progress: ProgressFn = no_progress,
    ) -> dict[str, float]:
        """`train_reward_model` on this model."""
        return train_reward_model(self, pairs, unpaired, cfg, seed=seed, progress=progress)

    def keep_features(self) -> None:
        """Nothing to keep: the LoRA RM has no feature cache."""

    def policy_scorer(self, reward_length: bool) -> ScoreFn:
        """The score as it is: the LoRA RM has no separate length term to leave out."""
        return self.score

    # -- scoring -----------------------------------------------------------------------

    def score(
        self, prompts: Sequence[Messages], replies: Sequence[str], batch_size: int = 16
    ) -> list[float]:
        """The reward of each reply to its prompt (no grad; batches of similar length)."""
        import torch

        seqs = self.encode_many(prompts, replies)
        order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
        scores = [0.0] * len(seqs)
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode():
                for start in range(0, len(order), max(1, batch_size)):
                    idx = order[start : start + max(1, batch_size)]
                    values = self.forward([seqs[i] for i in idx]).tolist()
                    for i, v in zip(idx, values, strict=True):
                        scores[i] = float(v)
        finally:
            self.model.train(was_training)
        return scores


# -- training ------------------------------------------------------------------------------


def _chunks(
    lengths: Sequence[int], n_steps: int, rng: random.Random, window: int = 1
) -> list[list[int]]:
    """Indices of `lengths` in n_steps nearly equal chunks, in random order.

    A seeded shuffle, then (window > 1) each run of `window` chunks' worth sorted by length
    so a chunk pads little, then the chunks shuffled: every item once.
    """
    order = list(range(len(lengths)))
    rng.shuffle(order)
    per_chunk = max(1, math.ceil(len(order) / n_steps))
    if window > 1:
        run = per_chunk * window
        order = [
            i
            for start in range(0, len(order), run)
            for i in sorted(order[start : start + run], key=lambda i: lengths[i])
        ]
    edges = [(len(order) * k) // n_steps for k in range(n_steps + 1)]
    chunks = [order[edges[k] : edges[k + 1]] for k in range(n_steps)]
    rng.shuffle(chunks)
    return chunks


@dataclass(frozen=True)
class _Plan:
    """How much one call of `train_reward_model` trains."""

    pairs: int
    unpaired: int  # single thumbs trained on (none when cfg.unpaired_weight is 0)
    per_epoch: int  # optimizer steps per epoch
    epochs: int

    @property
    def total(self) -> int:
        return self.per_epoch * max(0, self.epochs)


@dataclass(frozen=True)
class _Encoded:
    """The training data as token ids, with what the loss needs of each item."""

    pairs: list[tuple[list[int], list[int]]]  # (chosen, rejected)
    pair_lengths: list[int]  # the longer reply of each pair, for batching by length
    weights: list[float]  # Pair.weight
    unpaired: list[list[int]]
    signs: list[float]  # +1 for a thumb up, -1 for a thumb down


@dataclass
class _History:
    losses: list[float] = field(default_factory=list)
    accuracies: list[float] = field(default_factory=list)  # steps with pairs only


def train_reward_model(
    rm: RewardNet,
    pairs: Sequence[Pair],
    unpaired: Sequence[Unpaired],
    cfg: RewardConfig,
    *,
    seed: int = 0,
    progress: ProgressFn = no_progress,
) -> dict[str, float]:
    """Fit the RM: weighted Bradley-Terry on pairs plus the weighted logistic loss on thumbs.

    Each epoch visits every pair once, in a seeded shuffle, about `cfg.batch_size` pairs a
    step, batched with pairs of similar length (less padding). Single thumbs (when
    `cfg.unpaired_weight` > 0) are spread over the same steps, at most 2 * batch_size a step
    (more steps when there are many). One forward pass per step carries chosen, rejected
    and unpaired replies together. Dropout is seeded with `seed` (torch's global RNG).
    `cfg.epochs` passes, or `cfg.warm_epochs` when the RM was warm-started and that is set.
    """
    import torch

    use_unpaired = list(unpaired) if cfg.unpaired_weight > 0 else []
    plan = _plan(rm, cfg, len(pairs), len(use_unpaired))
    started = time.monotonic()
    if plan.total == 0:
        rm.model.eval()
        return _untrained_summary(plan)
    data = _encode_data(rm, pairs, use_unpaired)
    torch.manual_seed(seed)
    history = _fit(rm, data, plan, cfg, random.Random(seed), progress)
    return _fit_summary(plan, history, time.monotonic() - started)


def _plan(rm: RewardNet, cfg: RewardConfig, n_pairs: int, n_unpaired: int) -> _Plan:
    """Steps per epoch: enough for every pair at batch_size and every thumb at twice that."""
    batch = max(1, cfg.batch_size)
    per_epoch = max(math.ceil(n_pairs / batch), math.ceil(n_unpaired / (2 * batch)))
    epochs = cfg.warm_epochs if rm.warm_started and cfg.warm_epochs > 0 else cfg.epochs
    return _Plan(n_pairs, n_unpaired, per_epoch, epochs)


def _untrained_summary(plan: _Plan) -> dict[str, float]:
    """What `train_reward_model` reports when there is nothing to train on (or no epochs)."""
    return {
        "steps": 0.0,
        "loss_first": 0.0,
        "loss_last": 0.0,
        "seconds": 0.0,
        "pairs": float(plan.pairs),
        "unpaired": float(plan.unpaired),
    }


def _encode_data(rm: RewardNet, pairs: Sequence[Pair], unpaired: Sequence[Unpaired]) -> _Encoded:
    prompts = [p.prompt for p in pairs]
    pair_seqs = list(
        zip(
            rm.encode_many(prompts, [p.chosen for p in pairs]),
            rm.encode_many(prompts, [p.rejected for p in pairs]),
            strict=True,
        )
    )
    return _Encoded(
        pairs=pair_seqs,
        pair_lengths=[max(len(c), len(r)) for c, r in pair_seqs],
        weights=[float(p.weight) for p in pairs],
        unpaired=rm.encode_many([u.prompt for u in unpaired], [u.completion for u in unpaired]),
        signs=[1.0 if u.label else -1.0 for u in unpaired],
    )


def _batches(
    data: _Encoded, plan: _Plan, rng: random.Random
) -> Iterator[tuple[list[int], list[int]]]:
    """(pair indices, thumb indices) of each step, epoch after epoch."""
    for _ in range(plan.epochs):
        # Pairs batch by length (a pair's loss compares its own two replies); thumbs
        # do not: sorted, a batch's labels would follow its length.
        pair_chunks = _chunks(data.pair_lengths, plan.per_epoch, rng, LENGTH_WINDOW)
        thumb_chunks = _chunks([len(s) for s in data.unpaired], plan.per_epoch, rng)
        yield from zip(pair_chunks, thumb_chunks, strict=True)


def _fit(
    rm: RewardNet,
    data: _Encoded,
    plan: _Plan,
    cfg: RewardConfig,
    rng: random.Random,
    progress: ProgressFn,
) -> _History:
    """The optimizer steps, each reported to `progress`; leaves the model in eval mode."""
    import torch

    params = rm.trainable_parameters()
    optim = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=0.0)
    rm.model.train()
    history = _History()
    try:
        for pi, ui in _batches(data, plan, rng):
            loss, metrics = _batch_loss(rm, data, pi, ui, cfg.unpaired_weight)
            optim.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, MAX_GRAD_NORM)
            optim.step()
            history.losses.append(loss.item())
            if "accuracy" in metrics:
                history.accuracies.append(metrics["accuracy"])
            metrics["loss"] = history.losses[-1]
            progress(len(history.losses), plan.total, metrics)
    finally:
        optim.zero_grad(set_to_none=True)
        rm.model.eval()
    return history


def _batch_loss(
    rm: RewardNet, data: _Encoded, pi: list[int], ui: list[int], unpaired_weight: float
) -> tuple[Any, dict[str, float]]:
    """One step's loss (a scalar tensor with grad) and its batch metrics, from one forward
    pass over the chosen replies, then the rejected ones, then the thumbs."""
    import torch
    import torch.nn.functional as F

    seqs = (
        [data.pairs[i][0] for i in pi]
        + [data.pairs[i][1] for i in pi]
        + [data.unpaired[i] for i in ui]
    )
    rewards = rm.forward(seqs)
    loss = rewards.new_zeros(())
    metrics: dict[str, float] = {}
    if pi:
        margin = rewards[: len(pi)] - rewards[len(pi) : 2 * len(pi)]
        w = torch.tensor([data.weights[i] for i in pi], dtype=rewards.dtype)
        loss = loss + (w * -F.logsigmoid(margin)).sum() / len(pi)
        metrics["accuracy"] = ((margin > 0).float() + 0.5 * (margin == 0).float()).mean().item()
    if ui:
        s = torch.tensor([data.signs[i] for i in ui], dtype=rewards.dtype)
        unp_loss = F.softplus(-s * rewards[2 * len(pi) :]).mean()
        loss = loss + unpaired_weight * unp_loss
        metrics["unpaired_loss"] = unp_loss.item()
    return loss, metrics


def _fit_summary(plan: _Plan, history: _History, seconds: float) -> dict[str, float]:
    """Steps, the loss over the first and last few steps, throughput, last batch accuracy."""
    losses, accs = history.losses, history.accuracies
    few = max(1, min(5, len(losses) // 3))
    out = {
        "steps": float(len(losses)),
        "loss_first": sum(losses[:few]) / few,
        "loss_last": sum(losses[-few:]) / few,
        "seconds": seconds,
        "pairs": float(plan.pairs),
        "unpaired": float(plan.unpaired),
        "pairs_per_second": plan.pairs * plan.epochs / seconds if seconds > 0 else 0.0,
    }
    if accs:
        tail = accs[-few:]
        out["accuracy_last"] = sum(tail) / len(tail)
    return out


# -- evaluation ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Scored:
    pair: Pair
    chosen: float
    rejected: float


def _win(d: float) -> float:
    return 1.0 if d > 0 else 0.5 if d == 0 else 0.0


def _sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


def _pearson(xs: Sequence[float], ys: Sequence[float]) -> float:
    n = len(xs)
    if n < 2:
        return 0.0
    mx, my = sum(xs) / n, sum(ys) / n
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    sxx = sum((x - mx) ** 2 for x in xs)
    syy = sum((y - my) ** 2 for y in ys)
    if sxx <= 0 or syy <= 0:
        return 0.0
    return sxy / math.sqrt(sxx * syy)


def _ece(probs_chosen: Sequence[float], bins: int = 10) -> float:
    """Expected calibration error of P(chosen wins), over both orientations of every pair.

    A pair with p = sigmoid(r_c - r_r) counts as (p, outcome 1) and (1 - p, outcome 0), so
    the predictions cover [0, 1] and a model that is right 80% of the time it says 0.8
    scores 0.
    """
    counts = [0] * bins
    sum_p = [0.0] * bins
    sum_y = [0.0] * bins
    for p in probs_chosen:
        for q, y in ((p, 1.0), (1.0 - p, 0.0)):
            b = min(int(q * bins), bins - 1)
            counts[b] += 1
            sum_p[b] += q
            sum_y[b] += y
    n = sum(counts)
    if n == 0:
        return 0.0
    return sum(abs(sum_y[b] - sum_p[b]) for b in range(bins) if counts[b]) / n


def metrics_from_scores(
    pairs: Sequence[Pair],
    chosen_scores: Sequence[float],
    rejected_scores: Sequence[float],
    since: datetime | None,
) -> dict[str, float]:
    """Held-out metrics of an RM from its scores of each pair's chosen and rejected reply.

    Tie pairs (source "tie") are left out. Keys: n, accuracy (score ties count half),
    new_n and new_pair_accuracy (pairs with at >= since; every pair when since is None;
    accuracy omitted when new_n is 0), ece and brier of sigmoid(r_c - r_r), mean_margin,
    length_baseline_accuracy ("the shorter reply wins", by characters, ties half),
    shorter_loses_n and shorter_loses_accuracy (RM accuracy where the chosen reply is not
    the shorter one; omitted when there is none), length_controlled_accuracy (the accuracy
    where the chosen reply is longer and where it is shorter, averaged: 0.5 for a
    length-only model; omitted unless both kinds of pair are there), length_corr (Pearson
    of score and characters over every reply; 0 when undefined). With no pairs only n and new_n (0).
    """
    if not len(pairs) == len(chosen_scores) == len(rejected_scores):
        raise ValueError("pairs and scores differ in length")
    rows = [
        _Scored(p, float(c), float(r))
        for p, c, r in zip(pairs, chosen_scores, rejected_scores, strict=True)
        if p.source != "tie"
    ]
    n = len(rows)
    new = [x for x in rows if since is None or x.pair.at >= since]
    out: dict[str, float] = {"n": float(n), "new_n": float(len(new))}
    if n == 0:
        return out
    wins = [_win(x.chosen - x.rejected) for x in rows]
    out["accuracy"] = sum(wins) / n
    if new:
        out["new_pair_accuracy"] = sum(_win(x.chosen - x.rejected) for x in new) / len(new)
    probs = [_sigmoid(x.chosen - x.rejected) for x in rows]
    out["ece"] = _ece(probs)
    out["brier"] = sum((1.0 - p) ** 2 for p in probs) / n
    out["mean_margin"] = sum(x.chosen - x.rejected for x in rows) / n
    out["length_baseline_accuracy"] = (
        sum(_win(len(x.pair.rejected) - len(x.pair.chosen)) for x in rows) / n
    )
    where_shorter_loses = [
        w for x, w in zip(rows, wins, strict=True) if len(x.pair.chosen) >= len(x.pair.rejected)
    ]
    out["shorter_loses_n"] = float(len(where_shorter_loses))
    if where_shorter_loses:
        out["shorter_loses_accuracy"] = sum(where_shorter_loses) / len(where_shorter_loses)
    balanced = length_balanced_accuracy(
        wins, [len(x.pair.chosen) for x in rows], [len(x.pair.rejected) for x in rows]
    )
    if balanced is not None:
        out["length_controlled_accuracy"] = balanced
    scores = [x.chosen for x in rows] + [x.rejected for x in rows]
    lengths = [float(len(x.pair.chosen)) for x in rows] + [
        float(len(x.pair.rejected)) for x in rows
    ]
    out["length_corr"] = _pearson(scores, lengths)
    return out


def pair_metrics(rm: Scorer, pairs: Sequence[Pair], since: datetime | None) -> dict[str, float]:
    """`metrics_from_scores` of `rm` on the pairs (tie pairs are not scored)."""
    kept = [p for p in pairs if p.source != "tie"]
    prompts = [p.prompt for p in kept]
    scores = rm.score(prompts + prompts, [p.chosen for p in kept] + [p.rejected for p in kept])
    return metrics_from_scores(kept, scores[: len(kept)], scores[len(kept) :], since)
