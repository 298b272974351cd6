"""Loading the policy (base model + LoRA adapter) for training, and saving a servable version.

The policy is the fp32 base model wrapped in a peft `PeftModel` with one LoRA adapter (Hu et
al. 2021) on every attention and MLP projection. Disabling the adapter gives back v0, the
reference every KL is measured to. A saved version is the adapter alone (config and
safetensors weights) plus the tokenizer: what vLLM's `LoRARequest` and the transformers
engine's `PeftModel.from_pretrained` / `load_adapter` read.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from trainer.config import PolicyConfig
from trainer.device import CPU, Placement

TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


def load_tokenizer(model_dir: Path) -> Any:
    """The model's tokenizer, padding on the left (EOS as pad when it has none)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    return tok


def load_policy(
    base_dir: Path, adapter: Path | None, cfg: PolicyConfig, placement: Placement = CPU
) -> tuple[Any, Any]:
    """(PeftModel, tokenizer): the base (fp32 on the CPU; see `trainer.device`) with
    `adapter` to train further, or a new LoRA. peft keeps the adapter's own weights in
    float32 on a bf16 base.

    A new adapter's B matrices start at zero, so it starts exactly at v0.
    """
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=placement.dtype())
    base = base.to(placement.device)  # type: ignore[arg-type]  # transformers types .to oddly
    if adapter is not None:
        model = PeftModel.from_pretrained(base, str(adapter), is_trainable=True)
    else:
        lora = LoraConfig(
            r=cfg.lora_r,
            lora_alpha=cfg.lora_alpha,
            lora_dropout=0.0,
            target_modules=list(TARGET_MODULES),
            bias="none",
            task_type="CAUSAL_LM",
        )
        model = get_peft_model(base, lora)
    model.eval()
    return model, load_tokenizer(base_dir)


def save_adapter(model: Any, dest: Path, tokenizer: Any = None) -> None:
    """Write the active adapter (adapter_config.json, adapter_model.safetensors) and the
    tokenizer into `dest`, so that the directory alone is a servable LoRA version.

    The tokenizer defaults to the base model's (read from the directory it was loaded
    from); `tokenizer=False` writes the adapter alone (a rollout engine's copy).
    """
    dest.mkdir(parents=True, exist_ok=True)
    name = model.active_adapter
    model.save_pretrained(str(dest), selected_adapters=[name], save_embedding_layers=False)
    if name != "default":  # peft writes a non-default adapter into a subfolder
        sub = dest / name
        for f in ADAPTER_FILES:
            shutil.move(str(sub / f), str(dest / f))
        shutil.rmtree(sub, ignore_errors=True)
    for f in ADAPTER_FILES:
        if not (dest / f).is_file():
            raise RuntimeError(f"saving the adapter wrote no {f} in {dest}")
    if tokenizer is False:
        return
    if tokenizer is None:
        tokenizer = load_tokenizer(Path(model.get_base_model().config.name_or_path))
    tokenizer.save_pretrained(str(dest))
