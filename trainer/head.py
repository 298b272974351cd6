"""The reward model as a linear Bradley-Terry head on frozen features of the base model.

Each (prompt, reply) is run once through the frozen base model; its features are the
hidden states averaged over the reply's tokens at a middle and the last layer, and the
last layer at the last token (`FeatureExtractor`). A reply's features never change, so
they are computed once and kept in a cache on disk: a round pays one forward pass per
reply it has not seen, and the fit itself is a convex problem over a few thousand rows.

The head separates length from everything else (after ODIN, Chen et al. 2024): the
reply's log token count is a feature of its own, and every other feature has its linear
dependence on that log length, over the training replies, taken out. So

    r(x) = w . phi_perp(x) + c * loglen(x)

and `c` is what the votes say about length (`length_coef`), while `w` can only use what
does not move with length. When users do not reward length, `c` stays near 0 and the
policy gains nothing by making replies longer or shorter.

The loss is the weighted Bradley-Terry pair loss plus `unpaired_weight` times a logistic
loss on single thumbs (which also fits an offset), plus an L2 penalty `lambda / 2 * |w|^2`.
Lambda is not a fixed count of steps or a learning rate to tune: it is chosen each round
by cross-validation on the training pairs, folds by prompt, as the value with the lowest
held-out log loss (`HeadFit.cv`). Fits are full-batch L-BFGS in float64, so the same
data give the same model. Scores are clipped to the range the training replies scored
(`Head.low`, `Head.high`): a linear head extrapolates without bound off the votes' replies,
and the policy must not be steered by that.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from trainer.chat import encode_chat, quiet_transformers
from trainer.config import RewardConfig
from trainer.device import CPU, Placement
from trainer.records import (
    Messages,
    Pair,
    ProgressFn,
    ScoreFn,
    Unpaired,
    no_progress,
    prompt_key,
)

META_FILE = "reward_model.json"
HEAD_FILE = "head.npz"
FORMAT = 2
KIND = "linear_head"
LAMBDAS = (1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0)  # the cross-validation grid
CV_FOLDS = 5
MIN_CV_PAIRS = 20  # fewer pairs: no cross-validation, the middle of the grid
LENGTH_RIDGE = 1e-3  # the length coefficient is one number: barely shrunk
_LBFGS_ITERS = 200


def reply_key(prompt: Messages, reply: str) -> str:
    """The cache key of a (prompt, reply): the same text gives the same features."""
    return hashlib.sha256((prompt_key(prompt) + "\0" + reply).encode()).hexdigest()


class FeatureExtractor:
    """The frozen base model, turning (prompt, reply) into a feature row.

    A row is [mean over reply tokens at the middle layer, the same at the last layer,
    the last layer at the last token, reply tokens]; the last column is the raw token
    count the head turns into its length feature.
    """

    def __init__(
        self,
        base_dir: Path,
        max_length: int,
        cache_file: Path | None = None,
        placement: Placement = CPU,
    ):
        from transformers import AutoModel, AutoTokenizer

        self.base_dir = Path(base_dir)
        self.max_length = max_length
        self.tokenizer = AutoTokenizer.from_pretrained(str(base_dir))
        with quiet_transformers():
            self.model = AutoModel.from_pretrained(str(base_dir), dtype=placement.dtype())
        self.model.to(placement.device)
        self.device = placement.device
        self.model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        layers = int(self.model.config.num_hidden_layers)
        self.layers = (layers // 2, layers)  # hidden_states index: 0 is the embeddings
        self.dim = 3 * int(self.model.config.hidden_size) + 1
        self.cache_file = cache_file
        self._cache: dict[str, np.ndarray] = self._load_cache()
        self.computed = 0  # rows computed (not found in the cache) since construction

    # -- the cache -----------------------------------------------------------------------

    def _load_cache(self) -> dict[str, np.ndarray]:
        if self.cache_file is None or not self.cache_file.is_file():
            return {}
        try:
            with np.load(self.cache_file) as z:
                keys, rows = z["keys"], z["rows"]
                if rows.ndim != 2 or rows.shape[1] != self.dim or str(z["model"]) != self._tag():
                    return {}
                return {str(k): rows[i].astype(np.float16) for i, k in enumerate(keys)}
        except (OSError, ValueError, KeyError):
            return {}  # an unreadable cache only costs the forward passes again

    def _tag(self) -> str:
        return f"{self.base_dir.resolve()}|{self.max_length}|{self.layers}"

    def save_cache(self) -> None:
        """Write the cache (float16) next to itself, then move it into place."""
        if self.cache_file is None or not self._cache:
            return
        self.cache_file.parent.mkdir(parents=True, exist_ok=True)
        keys = np.array(sorted(self._cache))
        rows = np.stack([self._cache[k] for k in keys])
        tmp = self.cache_file.with_suffix(".tmp.npz")
        np.savez(tmp, keys=keys, rows=rows, model=np.array(self._tag()))
        tmp.replace(self.cache_file)

    # -- features ------------------------------------------------------------------------

    def encode(self, prompt: Messages, reply: str) -> tuple[list[int], int]:
        """Token ids of prompt + reply in the chat template (the prompt cut from the left
        to fit max_length), and where the reply starts."""
        return encode_chat(self.tokenizer, prompt, reply, self.max_length)

    def features(
        self, prompts: Sequence[Messages], replies: Sequence[str], batch_size: int = 16
    ) -> np.ndarray:
        """One float32 row per reply (see the class docstring), from the cache or computed."""
        keys = [reply_key(p, r) for p, r in zip(prompts, replies, strict=True)]
        todo = sorted({k: i for i, k in enumerate(keys) if k not in self._cache}.values())
        if todo:
            encoded = {i: self.encode(prompts[i], replies[i]) for i in todo}
            order = sorted(todo, key=lambda i: len(encoded[i][0]))
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                rows = self._forward([encoded[i] for i in idx])
                for i, row in zip(idx, rows, strict=True):
                    # float16 in memory as on disk: a cached and a fresh row are the same
                    self._cache[keys[i]] = row.astype(np.float16)
            self.computed += len(todo)
        if not keys:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([self._cache[k] for k in keys]).astype(np.float32)

    def _forward(self, batch: list[tuple[list[int], int]]) -> list[np.ndarray]:
        import torch

        pad = self.tokenizer.pad_token_id
        pad = self.tokenizer.eos_token_id if pad is None else pad
        width = max(len(ids) for ids, _ in batch)
        ids = torch.full((len(batch), width), int(pad), dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, (seq, _) in enumerate(batch):
            ids[i, : len(seq)] = torch.tensor(seq, dtype=torch.long)
            mask[i, : len(seq)] = 1
        with torch.inference_mode():
            out = self.model(
                input_ids=ids.to(self.device),
                attention_mask=mask.to(self.device),
                output_hidden_states=True,
            )
        mid, last = (out.hidden_states[k].float().cpu() for k in self.layers)
        rows = []
        for i, (seq, start) in enumerate(batch):
            end = len(seq)
            start = min(start, end - 1)  # an empty reply: its template's closing tokens
            rows.append(
                np.concatenate(
                    [
                        mid[i, start:end].mean(0).numpy(),
                        last[i, start:end].mean(0).numpy(),
                        last[i, end - 1].numpy(),
                        np.array([end - start], dtype=np.float32),
                    ]
                ).astype(np.float32)
            )
        return rows


# -- the head ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Head:
    """The fitted head: standardization, length projection and weights (see the module
    docstring). Scores rows of `FeatureExtractor.features`."""

    mean: np.ndarray  # per feature, over the training replies
    scale: np.ndarray
    length_mean: float
    length_scale: float
    beta: np.ndarray  # each standardized feature's slope on the standardized log length
    w: np.ndarray
    length_coef: float
    bias: float
    # the range of the training replies' rewards: scores are clipped to it, because a
    # linear head extrapolates without bound on replies unlike any it was fitted on (a
    # garbled reply scored -39 where the votes' replies spanned about +-6), and a policy
    # would chase or flee that extrapolation instead of what the votes said
    low: float = -np.inf
    high: float = np.inf
    # the same for the score without its length term (`quality`)
    quality_low: float = -np.inf
    quality_high: float = np.inf

    def design(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(phi_perp, loglen): standardized, length taken out; the standardized log length."""
        return _design(rows, self.mean, self.scale, self.length_mean, self.length_scale, self.beta)

    def raw(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(score, quality) before clipping; quality is the score without
        `length_coef * loglen`, what does not move with length."""
        phi, ell = self.design(rows)
        quality: np.ndarray = phi @ self.w + self.bias
        return quality + self.length_coef * ell, quality

    def score(self, rows: np.ndarray) -> np.ndarray:
        out: np.ndarray = np.clip(self.raw(rows)[0], self.low, self.high)
        return out

    def quality(self, rows: np.ndarray) -> np.ndarray:
        out: np.ndarray = np.clip(self.raw(rows)[1], self.quality_low, self.quality_high)
        return out

    def save(self, path: Path) -> None:
        np.savez(
            path,
            mean=self.mean,
            scale=self.scale,
            length=np.array([self.length_mean, self.length_scale, self.length_coef, self.bias]),
            beta=self.beta,
            w=self.w,
            range=np.array([self.low, self.high, self.quality_low, self.quality_high]),
        )

    @classmethod
    def load(cls, path: Path) -> Head:
        with np.load(path) as z:
            lm, ls, lc, b = (float(v) for v in z["length"])
            bounds = [float(v) for v in z["range"]] if "range" in z else []
            bounds += [-np.inf, np.inf] * ((4 - len(bounds)) // 2)
            return cls(z["mean"], z["scale"], lm, ls, z["beta"], z["w"], lc, b, *bounds)


def _design(
    rows: np.ndarray,
    mean: np.ndarray,
    scale: np.ndarray,
    length_mean: float,
    length_scale: float,
    beta: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    x = (rows[:, :-1].astype(np.float64) - mean) / scale
    ell = (np.log1p(rows[:, -1].astype(np.float64)) - length_mean) / length_scale
    return x - np.outer(ell, beta), ell


@dataclass(frozen=True)
class _Problem:
    """A fit's data in design-matrix form."""

    diff: np.ndarray  # phi(chosen) - phi(rejected), per pair
    diff_len: np.ndarray
    pair_w: np.ndarray
    single: np.ndarray  # phi of each thumb
    single_len: np.ndarray
    sign: np.ndarray
    single_w: float


def _standardizer(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, float, np.ndarray]:
    x = rows[:, :-1].astype(np.float64)
    mean, scale = x.mean(0), x.std(0)
    scale[scale < 1e-8] = 1.0
    ell = np.log1p(rows[:, -1].astype(np.float64))
    lm, ls = float(ell.mean()), float(ell.std()) or 1.0
    z = (x - mean) / scale
    e = (ell - lm) / ls
    beta = (z * e[:, None]).mean(0) / max(float((e * e).mean()), 1e-12)
    return mean, scale, lm, ls, beta


def _solve(p: _Problem, lam: float) -> tuple[np.ndarray, float, float]:
    """(w, length_coef, bias) minimizing the penalized loss, by L-BFGS (float64)."""
    import torch

    d = p.diff.shape[1] if p.diff.size else p.single.shape[1]
    theta = torch.zeros(d + 2, dtype=torch.float64, requires_grad=True)
    diff, dl = torch.from_numpy(p.diff), torch.from_numpy(p.diff_len)
    pw = torch.from_numpy(p.pair_w)
    single, sl = torch.from_numpy(p.single), torch.from_numpy(p.single_len)
    sign = torch.from_numpy(p.sign)
    opt = torch.optim.LBFGS(
        [theta], max_iter=_LBFGS_ITERS, tolerance_grad=1e-9, line_search_fn="strong_wolfe"
    )

    def closure() -> Any:
        opt.zero_grad()
        w, c, b = theta[:d], theta[d], theta[d + 1]
        loss = 0.5 * lam * (w * w).sum() + 0.5 * LENGTH_RIDGE * c * c
        if len(pw):
            margin = diff @ w + c * dl
            loss = loss + (pw * torch.nn.functional.softplus(-margin)).sum() / len(pw)
        if len(sign) and p.single_w > 0:
            r = single @ w + c * sl + b
            loss = loss + p.single_w * torch.nn.functional.softplus(-sign * r).mean()
        loss.backward()  # type: ignore[no-untyped-call]
        return loss

    opt.step(closure)  # type: ignore[no-untyped-call]
    out = theta.detach().numpy()
    return out[:d].copy(), float(out[d]), float(out[d + 1])


@dataclass(frozen=True)
class HeadFit:
    """What a fit chose and measured: the lambda, and per lambda the cross-validated
    log loss and accuracy (folds by prompt)."""

    lam: float
    cv: dict[float, tuple[float, float]]  # lambda -> (log loss, accuracy)


def _folds(pairs: Sequence[Pair], k: int) -> list[int]:
    """A fold per pair, by prompt hash, so a prompt's pairs stay together."""
    return [int(p.key[:8], 16) % k for p in pairs]


def _problem(
    head_rows: tuple[np.ndarray, np.ndarray, float, float, np.ndarray],
    chosen: np.ndarray,
    rejected: np.ndarray,
    weights: np.ndarray,
    singles: np.ndarray,
    signs: np.ndarray,
    single_w: float,
) -> _Problem:
    pc, lc = _design(chosen, *head_rows)
    pr, lr = _design(rejected, *head_rows)
    ps, ls = _design(singles, *head_rows)
    return _Problem(pc - pr, lc - lr, weights, ps, ls, signs, single_w)


def _cv(
    pairs: Sequence[Pair],
    chosen: np.ndarray,
    rejected: np.ndarray,
    weights: np.ndarray,
    std: tuple[np.ndarray, np.ndarray, float, float, np.ndarray],
    progress: ProgressFn,
) -> HeadFit:
    """The lambda with the lowest cross-validated pair log loss (thumbs left out: the
    choice is about telling pairs apart)."""
    folds = np.array(_folds(pairs, CV_FOLDS))
    used = [f for f in range(CV_FOLDS) if (folds == f).any() and (folds != f).any()]
    if len(pairs) < MIN_CV_PAIRS or len(used) < 2:
        mid = LAMBDAS[len(LAMBDAS) // 2]
        return HeadFit(mid, {})
    empty = np.zeros((0, chosen.shape[1]), dtype=np.float32)
    cv: dict[float, tuple[float, float]] = {}
    for step, lam in enumerate(LAMBDAS, 1):
        loss = correct = total = 0.0
        for f in used:
            tr, te = folds != f, folds == f
            prob = _problem(std, chosen[tr], rejected[tr], weights[tr], empty, np.zeros(0), 0.0)
            w, c, _ = _solve(prob, lam)
            test = _problem(std, chosen[te], rejected[te], weights[te], empty, np.zeros(0), 0.0)
            m = test.diff @ w + c * test.diff_len
            loss += float((test.pair_w * np.logaddexp(0.0, -m)).sum())
            correct += float((test.pair_w * ((m > 0) + 0.5 * (m == 0))).sum())
            total += float(test.pair_w.sum())
        cv[lam] = (loss / total, correct / total)
        progress(step, len(LAMBDAS) + 1, {"lambda": lam, "cv_accuracy": cv[lam][1]})
    best = min(cv, key=lambda lam: (cv[lam][0], -lam))
    return HeadFit(best, cv)


class HeadRewardModel:
    """A reward model: `FeatureExtractor` + a fitted `Head`. The same interface as the
    LoRA reward model (`trainer.reward.RewardNet`): fit, score, save, load."""

    warm_started = False  # a head is refitted on the whole window each round

    def __init__(self, features: FeatureExtractor, head: Head | None = None):
        self.features = features
        self.head = head
        self.last_fit: HeadFit | None = None

    @classmethod
    def fresh(
        cls,
        base_dir: Path,
        cfg: RewardConfig,
        cache_file: Path | None = None,
        placement: Placement = CPU,
    ) -> HeadRewardModel:
        return cls(FeatureExtractor(base_dir, cfg.max_length, cache_file, placement))

    def fit(
        self,
        pairs: Sequence[Pair],
        unpaired: Sequence[Unpaired],
        cfg: RewardConfig,
        *,
        seed: int = 0,
        progress: ProgressFn = no_progress,
    ) -> dict[str, float]:
        """Features (cached), then lambda by cross-validation, then the fit on every pair
        and thumb. Deterministic: `seed` is not used."""
        started = time.monotonic()
        pairs = [p for p in pairs if p.source != "tie"]
        singles = list(unpaired) if cfg.unpaired_weight > 0 else []
        before = self.features.computed
        chosen = self.features.features([p.prompt for p in pairs], [p.chosen for p in pairs])
        rejected = self.features.features([p.prompt for p in pairs], [p.rejected for p in pairs])
        single = self.features.features(
            [u.prompt for u in singles], [u.completion for u in singles]
        )
        self.features.save_cache()
        computed = self.features.computed - before
        all_rows = np.concatenate([chosen, rejected, single])
        if len(all_rows) == 0:
            return {"steps": 0.0, "seconds": 0.0, "pairs": 0.0, "unpaired": 0.0}
        std = _standardizer(all_rows)
        weights = np.array([p.weight for p in pairs], dtype=np.float64)
        signs = np.array([1.0 if u.label else -1.0 for u in singles])
        chosen_fit = _cv(pairs, chosen, rejected, weights, std, progress)
        prob = _problem(std, chosen, rejected, weights, single, signs, cfg.unpaired_weight)
        w, c, b = _solve(prob, chosen_fit.lam)
        head = Head(*std, w=w, length_coef=c, bias=b)
        seen, quality = head.raw(all_rows)
        self.head = replace(
            head,
            low=float(seen.min()),
            high=float(seen.max()),
            quality_low=float(quality.min()),
            quality_high=float(quality.max()),
        )
        self.last_fit = chosen_fit
        progress(len(LAMBDAS) + 1, len(LAMBDAS) + 1, {"lambda": chosen_fit.lam})
        m = prob.diff @ w + c * prob.diff_len if len(pairs) else np.zeros(0)
        out = {
            "steps": float(len(LAMBDAS) * CV_FOLDS + 1),
            "seconds": time.monotonic() - started,
            "pairs": float(len(pairs)),
            "unpaired": float(len(singles)),
            "features_computed": float(computed),
            "lambda": chosen_fit.lam,
            "length_coef": c,
            "loss_last": float(np.logaddexp(0.0, -m).mean()) if len(m) else 0.0,
        }
        if chosen_fit.cv:
            out["cv_accuracy"] = chosen_fit.cv[chosen_fit.lam][1]
        return out

    def keep_features(self) -> None:
        """Write the feature cache, with what scoring added (held-out replies are scored
        again every round)."""
        self.features.save_cache()

    def score(
        self, prompts: Sequence[Messages], replies: Sequence[str], batch_size: int = 16
    ) -> list[float]:
        return self._scores(prompts, replies, batch_size, length=True)

    def policy_scorer(self, reward_length: bool) -> ScoreFn:
        """The full score where the votes reward length; else the score without its length
        term, so a policy gains nothing by growing or shrinking its replies where users did
        not ask for that (a round's candidate had won 0.672 by length alone and 0.450 at
        equal length, and the gate refused it)."""
        if reward_length:
            return self.score
        return lambda prompts, replies: self._scores(prompts, replies, 16, length=False)

    def _scores(
        self, prompts: Sequence[Messages], replies: Sequence[str], batch_size: int, length: bool
    ) -> list[float]:
        """Clipped scores of the replies: with the length term, or without it."""
        if self.head is None:
            raise ValueError("the reward head is not fitted")
        rows = self.features.features(prompts, replies, batch_size)
        if len(rows) == 0:
            return []
        out = self.head.score(rows) if length else self.head.quality(rows)
        return [float(v) for v in out]

    def save(self, dest: Path) -> None:
        if self.head is None:
            raise ValueError("the reward head is not fitted")
        dest = Path(dest)
        dest.mkdir(parents=True, exist_ok=True)
        self.head.save(dest / HEAD_FILE)
        meta = {
            "format": FORMAT,
            "kind": KIND,
            "base_model": str(self.features.base_dir.resolve()),
            "max_length": self.features.max_length,
            "lambda": self.last_fit.lam if self.last_fit else None,
            "length_coef": self.head.length_coef,
        }
        (dest / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")

    @classmethod
    def load(cls, path: Path, base_dir: Path | None = None) -> HeadRewardModel:
        path = Path(path)
        meta = json.loads((path / META_FILE).read_text())
        if meta.get("kind") != KIND:
            raise ValueError(f"not a reward head: kind {meta.get('kind')!r}")
        base = Path(base_dir or meta["base_model"])
        return cls(FeatureExtractor(base, int(meta["max_length"])), Head.load(path / HEAD_FILE))
