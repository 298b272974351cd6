"""Policy weights on disk: merged full weights, and adapters relative to them.

vLLM holds one set of full weights and applies LoRA adapters per request. Serving the
`serving` version from merged weights is faster on CPU than a LoRA per request, while a
canary and retained versions still run beside it as adapters. Every version the trainer
publishes is a PEFT LoRA adapter on the base model v0, so its delta per target module is
ΔV = s_V · B_V A_V (s = lora_alpha / r, or lora_alpha / √r with rsLoRA). On weights that hold
version W, version V is served by an adapter for ΔV - ΔW, which is exactly a LoRA of rank
r_V + r_W:

    B = [s_V·B_V, -s_W·B_W]  (columns),   A = [A_V; A_W]  (rows),   lora_alpha = r  (scale 1)

`None` stands for v0 (no adapter): ΔV - Δv0 is V's own adapter, Δv0 - ΔW is -ΔW.

Both kinds of artifact are written into a staging directory beside the destination and
renamed into place when complete, so a reader never sees a half-written one. Nothing is
imported at module import: torch and safetensors load inside the functions.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from store.fsutil import atomic_dir

if TYPE_CHECKING:
    import torch

    Factors = tuple[torch.Tensor, torch.Tensor]  # (A, B) of one module, ΔW = B @ A

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
SINGLE_WEIGHTS = "model.safetensors"
# PEFT prefixes every saved module path with this (LoraModel wrapping the model).
PEFT_PREFIX = "base_model.model."
LORA_A = ".lora_A.weight"
LORA_B = ".lora_B.weight"
# Base-directory files that are weights; everything else (configs, tokenizer) is copied.
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".h5", ".msgpack", ".onnx")

# String inits that only choose the starting adapter weights (vLLM's list too).
_PLAIN_INITS = ("gaussian", "eva", "orthogonal", "mica", "lora_ga")


class WeightsError(ValueError):
    """An adapter or weights directory that cannot be read or applied. Names the path."""

    def __init__(self, path: Path, why: str):
        super().__init__(f"{path}: {why}")
        self.path = path
        self.why = why


@dataclass(frozen=True)
class LoraDelta:
    """A LoRA delta per target module: ΔW = B @ A, the adapter's scale already in B.

    Keys are PEFT module paths (`base_model.model.model.layers.0.self_attn.q_proj`); A is
    (r x in) and B is (out x r), float32. `rank` is the largest module rank.
    """

    modules: Mapping[str, Factors]
    target_modules: tuple[str, ...]
    rank: int
    base_model: str


# -- reading -------------------------------------------------------------------------------


def _read_config(path: Path) -> dict[str, Any]:
    cfg_file = path / ADAPTER_CONFIG
    if not cfg_file.is_file():
        raise WeightsError(path, f"no {ADAPTER_CONFIG}")
    try:
        cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise WeightsError(cfg_file, f"unreadable adapter config: {e}") from e
    if not isinstance(cfg, dict):
        raise WeightsError(cfg_file, "adapter config is not a JSON object")
    return cfg


def _check_config(cfg_file: Path, cfg: Mapping[str, Any]) -> None:
    """Refuse adapters whose effect is not a plain low-rank delta on linear weights."""
    if cfg.get("peft_type") != "LORA":
        raise WeightsError(cfg_file, f"peft_type is {cfg.get('peft_type')!r}, not 'LORA'")
    init = cfg.get("init_lora_weights", True)
    unsupported = {
        "use_dora": bool(cfg.get("use_dora")),
        "fan_in_fan_out": bool(cfg.get("fan_in_fan_out")),
        "lora_bias": bool(cfg.get("lora_bias")),
        "modules_to_save": bool(cfg.get("modules_to_save")),
        "alpha_pattern": bool(cfg.get("alpha_pattern")),
        "bias": cfg.get("bias", "none") != "none",
        "layer_replication": bool(cfg.get("layer_replication")),
        # PiSSA, OLoRA, CorDA, LoftQ: the adapter is relative to modified base weights.
        "init_lora_weights": isinstance(init, str) and init.lower() not in _PLAIN_INITS,
    }
    bad = sorted(k for k, v in unsupported.items() if v)
    if bad:
        raise WeightsError(cfg_file, f"unsupported LoRA options: {', '.join(bad)}")
    r, alpha = cfg.get("r"), cfg.get("lora_alpha")
    if not isinstance(r, int) or r <= 0 or not isinstance(alpha, int | float) or alpha <= 0:
        raise WeightsError(cfg_file, f"bad r={r!r} / lora_alpha={alpha!r}")


def _scale(cfg: Mapping[str, Any], rank: int) -> float:
    alpha = float(cfg["lora_alpha"])
    return alpha / math.sqrt(rank) if cfg.get("use_rslora") else alpha / rank


def _load_tensors(file: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    if not file.is_file():
        raise WeightsError(file.parent, f"no {file.name}")
    try:
        return load_file(str(file))
    except Exception as e:  # safetensors raises its own SafetensorError, OSError, ...
        raise WeightsError(file, f"unreadable safetensors: {e}") from e


def read_adapter(path: Path) -> LoraDelta:
    """The delta of the PEFT LoRA adapter in `path` (adapter_config.json + safetensors)."""
    import torch

    cfg = _read_config(path)
    _check_config(path / ADAPTER_CONFIG, cfg)
    file = path / ADAPTER_WEIGHTS
    tensors = _load_tensors(file)
    names = {k.removesuffix(LORA_A).removesuffix(LORA_B) for k in tensors}
    modules: dict[str, Factors] = {}
    for name in sorted(names):
        a, b = tensors.get(name + LORA_A), tensors.get(name + LORA_B)
        if a is None or b is None:
            raise WeightsError(file, f"{name}: not a lora_A/lora_B pair (unsupported tensor)")
        if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[1]:
            raise WeightsError(
                file, f"{name}: lora_A {tuple(a.shape)} and lora_B {tuple(b.shape)} do not chain"
            )
        a, b = a.to(torch.float32), b.to(torch.float32)
        if not (bool(torch.isfinite(a).all()) and bool(torch.isfinite(b).all())):
            raise WeightsError(file, f"{name}: non-finite values")
        modules[name] = (a, b * _scale(cfg, a.shape[0]))
    if not modules:
        raise WeightsError(file, "no LoRA tensors")
    return LoraDelta(
        modules=modules,
        target_modules=_short_names(modules),
        rank=max(a.shape[0] for a, _ in modules.values()),
        base_model=str(cfg.get("base_model_name_or_path") or ""),
    )


def adapter_rank(path: Path) -> int:
    """The largest LoRA rank in the adapter at `path`: vLLM's max_lora_rank must cover it."""
    cfg = _read_config(path)
    _check_config(path / ADAPTER_CONFIG, cfg)
    pattern = cfg.get("rank_pattern") or {}
    return max([int(cfg["r"]), *(int(v) for v in pattern.values())])


def _short_names(modules: Mapping[str, object]) -> tuple[str, ...]:
    return tuple(sorted({name.rsplit(".", 1)[-1] for name in modules}))


# -- relative adapters ---------------------------------------------------------------------


def relative_delta(target: LoraDelta | None, current: LoraDelta | None) -> LoraDelta:
    """target - current as one LoRA of a single rank (zero-padded where a side is absent).

    PEFT and vLLM need one rank per adapter, so every module is padded to the largest.
    """
    import torch

    if target is None and current is None:
        raise ValueError("target and current are both v0: there is no delta")
    parts: dict[str, list[Factors]] = {}
    for delta, sign in ((target, 1.0), (current, -1.0)):
        if delta is not None:
            for name, (a, b) in delta.modules.items():
                parts.setdefault(name, []).append((a, b * sign))
    joined = {
        name: (torch.cat([a for a, _ in ab], 0), torch.cat([b for _, b in ab], 1))
        for name, ab in parts.items()
    }
    rank = max(a.shape[0] for a, _ in joined.values())
    modules = {name: _pad(a, b, rank) for name, (a, b) in joined.items()}
    base = next(d.base_model for d in (target, current) if d is not None)
    return LoraDelta(modules, _short_names(modules), rank, base)


def _pad(a: torch.Tensor, b: torch.Tensor, rank: int) -> Factors:
    """(A, B) with zero rows in A and zero columns in B up to `rank`: the same B @ A."""
    import torch

    extra = rank - a.shape[0]
    if extra == 0:
        return a.contiguous(), b.contiguous()
    a = torch.cat([a, a.new_zeros(extra, a.shape[1])], 0)
    b = torch.cat([b, b.new_zeros(b.shape[0], extra)], 1)
    return a.contiguous(), b.contiguous()


def adapter_config(delta: LoraDelta) -> dict[str, Any]:
    """A PEFT LoraConfig for `delta` with lora_alpha = r, so the scale is 1."""
    return {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": delta.base_model,
        "r": delta.rank,
        "lora_alpha": delta.rank,
        "lora_dropout": 0.0,
        "target_modules": list(delta.target_modules),
        "bias": "none",
        "fan_in_fan_out": False,
        "use_rslora": False,
        "use_dora": False,
        "modules_to_save": None,
        "rank_pattern": {},
        "alpha_pattern": {},
        "inference_mode": True,
    }


def save_delta(delta: LoraDelta, out: Path) -> Path:
    """Write `delta` as a PEFT LoRA adapter directory at `out` (atomically)."""
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    for name, (a, b) in delta.modules.items():
        tensors[name + LORA_A] = a.contiguous()
        tensors[name + LORA_B] = b.contiguous()
    with atomic_dir(out) as tmp:
        (tmp / ADAPTER_CONFIG).write_text(
            json.dumps(adapter_config(delta), indent=2) + "\n", encoding="utf-8"
        )
        save_file(tensors, str(tmp / ADAPTER_WEIGHTS), metadata={"format": "pt"})
    return out


def write_relative_adapter(target: Path | None, current: Path | None, out: Path) -> Path:
    """Write at `out` an adapter that turns weights holding `current` into `target`.

    Either side None means v0. Its rank (`adapter_rank(out)`) is at most the sum of the
    two ranks. target == current is refused: serve the weights themselves instead.
    """
    if target == current or (
        target is not None and current is not None and target.resolve() == current.resolve()
    ):
        raise ValueError(f"target and current are the same version ({target}): no adapter needed")
    t = None if target is None else read_adapter(target)
    c = None if current is None else read_adapter(current)
    return save_delta(relative_delta(t, c), out)


# -- merged weights ------------------------------------------------------------------------


def _weight_key(module: str) -> str:
    """The base state-dict key of a PEFT module path's weight."""
    return module.removeprefix(PEFT_PREFIX) + ".weight"


def _shards(base_dir: Path) -> list[str]:
    index = base_dir / SAFETENSORS_INDEX
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            return sorted(set(weight_map.values()))
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise WeightsError(index, f"unreadable safetensors index: {e}") from e
    if (base_dir / SINGLE_WEIGHTS).is_file():
        return [SINGLE_WEIGHTS]
    raise WeightsError(base_dir, "no safetensors weights (model.safetensors or an index)")


def _metadata(file: Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(file), framework="pt") as f:
        meta = f.metadata()
    return {"format": "pt", **(meta or {})}


def _apply(tensors: dict[str, torch.Tensor], pending: dict[str, Factors], file: Path) -> None:
    """Add B @ A to each weight in `tensors` that has pending factors, in place; consume them.

    One module's delta exists at a time, computed in float32 and rounded once to the
    base's dtype.
    """
    for key in [k for k in pending if k in tensors]:
        w, (a, b) = tensors[key], pending.pop(key)
        if tuple(w.shape) != (b.shape[0], a.shape[1]):
            raise WeightsError(
                file, f"{key}: delta {(b.shape[0], a.shape[1])} != weight {tuple(w.shape)}"
            )
        w.copy_(w.to(a.dtype).addmm_(b, a))


def write_merged(base_dir: Path, adapter: Path | None, out: Path) -> Path:
    """Write at `out` a model directory with the base's weights plus `adapter`'s delta.

    The base's configs and tokenizer files are copied, so transformers and vLLM load `out`
    as a model, and shards keep the base's names, dtype and keys (a tied lm_head stays
    tied: no key is added). adapter None copies the base weights (v0).
    """
    shards = _shards(base_dir)
    pending: dict[str, Factors] = {}
    if adapter is not None:
        pending = {_weight_key(k): ab for k, ab in read_adapter(adapter).modules.items()}
    with atomic_dir(out) as tmp:
        _copy_side_files(base_dir, tmp)
        for shard in shards:
            _merge_shard(base_dir / shard, pending, tmp / shard)
        if pending:
            raise WeightsError(
                adapter or base_dir,
                f"the base model at {base_dir} has no weight {sorted(pending)[0]}"
                + (f" (and {len(pending) - 1} more)" if len(pending) > 1 else ""),
            )
    return out


def _merge_shard(src: Path, pending: dict[str, Factors], dest: Path) -> None:
    from safetensors.torch import save_file

    tensors = _load_tensors(src)
    meta = _metadata(src)
    _apply(tensors, pending, src)
    save_file(tensors, str(dest), metadata=meta)


def _copy_side_files(base_dir: Path, dest: Path) -> None:
    """Config, generation config, tokenizer, chat template, shard index: all but weights."""
    for f in base_dir.iterdir():
        if f.is_file() and (f.name == SAFETENSORS_INDEX or not f.name.endswith(_WEIGHT_SUFFIXES)):
            shutil.copy2(f, dest / f.name)
