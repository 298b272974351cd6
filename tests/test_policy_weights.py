"""Merged weights and relative adapters, checked against peft on the tiny model's logits.

Two random adapters on the tiny model: V (r=4, rsLoRA, every projection) and W (r=8, plain
scale, attention only), with lora_B scaled up so their deltas move the logits visibly.
Every artifact this module writes is loaded back with transformers and peft in float32 and
must give the logits of the version it stands for.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from service.policies.weights import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    WeightsError,
    adapter_rank,
    read_adapter,
    write_merged,
    write_relative_adapter,
)

PROMPT = torch.tensor([[1, 504, 2830, 314, 260, 4757, 30, 198, 17, 9031, 42, 7]])
ALL = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
ATOL = 1e-4


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _make_adapter(base: Path, dest: Path, seed: int, **lora: Any) -> Path:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    cfg = LoraConfig(task_type="CAUSAL_LM", init_lora_weights=False, lora_dropout=0.0, **lora)
    peft_model = get_peft_model(model, cfg)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.mul_(20.0)
    peft_model.save_pretrained(str(dest))
    return dest


@pytest.fixture(scope="module")
def dirs(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("weights")
    v = _make_adapter(
        tiny_model_dir, root / "V", 1, r=4, lora_alpha=8, use_rslora=True, target_modules=ALL
    )
    w = _make_adapter(tiny_model_dir, root / "W", 2, r=8, lora_alpha=16, target_modules=ALL[:4])
    return {
        "base": tiny_model_dir,
        "V": v,
        "W": w,
        "merged_W": write_merged(tiny_model_dir, w, root / "merged_W"),
    }


def logits(model_dir: Path, adapter: Path | None = None) -> torch.Tensor:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model: Any = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    if adapter is not None:
        model = PeftModel.from_pretrained(model, str(adapter))
    model.eval()
    with torch.no_grad():
        out: torch.Tensor = model(input_ids=PROMPT).logits
    return out


@pytest.fixture(scope="module")
def ref(dirs: dict[str, Path]) -> dict[str, torch.Tensor]:
    """Logits of v0, V and W through peft: what every artifact must reproduce."""
    return {
        "base": logits(dirs["base"]),
        "V": logits(dirs["base"], dirs["V"]),
        "W": logits(dirs["base"], dirs["W"]),
    }


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return torch.allclose(a, b, atol=ATOL, rtol=1e-4)


def test_the_adapters_move_the_logits(ref: dict[str, torch.Tensor]) -> None:
    # Otherwise every equality below would hold trivially.
    for v in ("V", "W"):
        assert (ref[v] - ref["base"]).abs().max() > 100 * ATOL
    assert (ref["V"] - ref["W"]).abs().max() > 100 * ATOL


def test_merged_weights_give_the_adapters_logits(
    dirs: dict[str, Path], ref: dict[str, torch.Tensor], tmp_path: Path
) -> None:
    merged = write_merged(dirs["base"], dirs["V"], tmp_path / "merged_V")
    got = logits(merged)
    assert _close(got, ref["V"])
    assert not _close(got, ref["base"])
    assert _close(logits(dirs["merged_W"]), ref["W"])


def test_merged_v0_is_the_base_with_its_keys_and_tied_head(
    dirs: dict[str, Path], ref: dict[str, torch.Tensor], tmp_path: Path
) -> None:
    from transformers import AutoModelForCausalLM

    merged = write_merged(dirs["base"], None, tmp_path / "v0")
    assert torch.equal(logits(merged), ref["base"])
    base_sd = load_file(str(dirs["base"] / "model.safetensors"))
    for d in (merged, dirs["merged_W"]):
        sd = load_file(str(d / "model.safetensors"))
        assert set(sd) == set(base_sd)
        assert "lm_head.weight" not in sd
        assert {k: v.dtype for k, v in sd.items()} == {k: v.dtype for k, v in base_sd.items()}
        model = AutoModelForCausalLM.from_pretrained(str(d))
        assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    for f in ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"):
        if (dirs["base"] / f).is_file():
            assert (merged / f).read_bytes() == (dirs["base"] / f).read_bytes()


def test_relative_adapter_turns_merged_w_into_v(
    dirs: dict[str, Path], ref: dict[str, torch.Tensor], tmp_path: Path
) -> None:
    rel = write_relative_adapter(dirs["V"], dirs["W"], tmp_path / "V-W")
    assert _close(logits(dirs["merged_W"], rel), ref["V"])
    # One rank for every module, the sum of both; modules of V alone are zero-padded.
    assert adapter_rank(rel) == 4 + 8
    cfg = json.loads((rel / ADAPTER_CONFIG).read_text())
    assert sorted(cfg["target_modules"]) == sorted(ALL)
    assert cfg["lora_alpha"] == cfg["r"] == 12
    tensors = load_file(str(rel / ADAPTER_WEIGHTS))
    assert len(tensors) == 2 * 2 * len(ALL)  # two layers, A and B per module
    for key, t in tensors.items():
        assert key.startswith("base_model.model.model.layers.")
        assert t.dtype == torch.float32
        assert t.shape[0 if ".lora_A." in key else 1] == 12


def test_relative_adapter_back_to_v0(
    dirs: dict[str, Path], ref: dict[str, torch.Tensor], tmp_path: Path
) -> None:
    rel = write_relative_adapter(None, dirs["W"], tmp_path / "v0-W")
    assert adapter_rank(rel) == 8
    assert _close(logits(dirs["merged_W"], rel), ref["base"])


def test_relative_adapter_from_v0_is_the_adapter_itself(
    dirs: dict[str, Path], ref: dict[str, torch.Tensor], tmp_path: Path
) -> None:
    rel = write_relative_adapter(dirs["V"], None, tmp_path / "V-v0")
    assert adapter_rank(rel) == 4
    mine, theirs = read_adapter(rel), read_adapter(dirs["V"])
    assert set(mine.modules) == set(theirs.modules)
    for name, (a, b) in theirs.modules.items():
        a2, b2 = mine.modules[name]
        assert torch.allclose(b2 @ a2, b @ a, atol=1e-6)
    assert _close(logits(dirs["base"], rel), ref["V"])


def test_same_target_and_current_is_refused(dirs: dict[str, Path], tmp_path: Path) -> None:
    for target, current in ((dirs["V"], dirs["V"]), (None, None)):
        with pytest.raises(ValueError, match="same version"):
            write_relative_adapter(target, current, tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_merged_keeps_a_bf16_base_in_bf16(dirs: dict[str, Path], tmp_path: Path) -> None:
    base = tmp_path / "bf16"
    shutil.copytree(dirs["base"], base)
    sd = load_file(str(base / "model.safetensors"))
    save_file({k: v.to(torch.bfloat16) for k, v in sd.items()}, str(base / "model.safetensors"))
    merged = load_file(str(write_merged(base, dirs["V"], tmp_path / "m") / "model.safetensors"))
    assert {v.dtype for v in merged.values()} == {torch.bfloat16}
    key = "model.layers.0.mlp.down_proj.weight"
    a, b = read_adapter(dirs["V"]).modules["base_model.model." + key.removesuffix(".weight")]
    want = sd[key].to(torch.bfloat16).float() + b @ a
    assert torch.allclose(merged[key].float(), want, rtol=8e-3, atol=1e-3)  # bf16 rounding
    assert not torch.equal(merged[key], sd[key].to(torch.bfloat16))


def test_merged_sharded_base(
    dirs: dict[str, Path], ref: dict[str, torch.Tensor], tmp_path: Path
) -> None:
    from transformers import AutoModelForCausalLM

    base = tmp_path / "sharded"
    model = AutoModelForCausalLM.from_pretrained(str(dirs["base"]), dtype=torch.float32)
    model.save_pretrained(str(base), max_shard_size="4MB")
    for f in dirs["base"].iterdir():
        if not (base / f.name).exists():
            shutil.copy2(f, base / f.name)
    (base / "model.safetensors").unlink(missing_ok=True)
    shards = sorted(p.name for p in base.glob("*.safetensors"))
    assert len(shards) > 1
    merged = write_merged(base, dirs["V"], tmp_path / "m")
    assert sorted(p.name for p in merged.glob("*.safetensors")) == shards
    assert _close(logits(merged), ref["V"])


def _broken(dirs: dict[str, Path], tmp_path: Path, how: str) -> Path:
    bad = tmp_path / f"bad-{how}"
    shutil.copytree(dirs["V"], bad)
    if how == "truncated":
        data = (bad / ADAPTER_WEIGHTS).read_bytes()
        (bad / ADAPTER_WEIGHTS).write_bytes(data[: len(data) // 2])
    elif how == "no-config":
        (bad / ADAPTER_CONFIG).unlink()
    elif how == "bad-json":
        (bad / ADAPTER_CONFIG).write_text("{not json")
    elif how == "no-weights":
        (bad / ADAPTER_WEIGHTS).unlink()
    return bad


@pytest.mark.parametrize("how", ["truncated", "no-config", "bad-json", "no-weights"])
def test_broken_adapter_is_a_weights_error_and_leaves_nothing(
    dirs: dict[str, Path], tmp_path: Path, how: str
) -> None:
    bad = _broken(dirs, tmp_path, how)
    out_dir = tmp_path / "out"
    calls: dict[str, Callable[[], Path]] = {
        "merged": lambda: write_merged(dirs["base"], bad, out_dir / "merged"),
        "relative": lambda: write_relative_adapter(bad, dirs["W"], out_dir / "rel"),
        "relative-current": lambda: write_relative_adapter(dirs["W"], bad, out_dir / "rel2"),
    }
    for what, call in calls.items():
        with pytest.raises(WeightsError) as e:
            call()
        assert str(bad) in str(e.value), what
        assert isinstance(e.value, ValueError)
    assert not out_dir.exists() or list(out_dir.iterdir()) == []


@pytest.mark.parametrize(
    "change",
    [{"peft_type": "IA3"}, {"use_dora": True}, {"init_lora_weights": "pissa"}, {"r": 0}],
)
def test_adapters_that_are_not_a_plain_delta_are_refused(
    dirs: dict[str, Path], tmp_path: Path, change: dict[str, Any]
) -> None:
    bad = tmp_path / "odd"
    shutil.copytree(dirs["V"], bad)
    cfg = json.loads((bad / ADAPTER_CONFIG).read_text())
    (bad / ADAPTER_CONFIG).write_text(json.dumps(cfg | change))
    with pytest.raises(WeightsError, match=str(bad)):
        read_adapter(bad)


def test_merge_fails_whole_on_a_module_the_base_lacks(
    dirs: dict[str, Path], tmp_path: Path
) -> None:
    bad = tmp_path / "extra"
    shutil.copytree(dirs["V"], bad)
    tensors = load_file(str(bad / ADAPTER_WEIGHTS))
    tensors = {k.replace("layers.1.", "layers.7."): v for k, v in tensors.items()}
    save_file(tensors, str(bad / ADAPTER_WEIGHTS))
    with pytest.raises(WeightsError, match=r"layers\.7\."):
        write_merged(dirs["base"], bad, tmp_path / "out" / "m")
    assert list((tmp_path / "out").iterdir()) == []
