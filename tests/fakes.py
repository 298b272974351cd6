"""Fakes before downloads: a scripted engine and a tiny random model of SmolLM2's architecture."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

from service.chat.engines.base import Delta, EngineError, EngineInfo, Sampling, VersionSpec

TINY_CACHE = Path(__file__).resolve().parent.parent / ".cache" / "tiny-smollm2"


def build_tiny_model(dest: Path) -> Path:
    """A 2-layer random Llama with the bundled model's real tokenizer and chat template.

    Built once per checkout under .cache/ (about 10 MB, git-ignored) and copied to `dest`.
    """
    if not (TINY_CACHE / "config.json").is_file():
        _build(TINY_CACHE)
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(TINY_CACHE, dest)
    return dest


def _build(out: Path) -> None:
    import tempfile

    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from service.modelstore import bundled_gguf

    gguf = bundled_gguf()
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=64,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.eos_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent))
    model.save_pretrained(str(tmp))
    tok.save_pretrained(str(tmp))
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)


class FakeEngine:
    """Replies with a scripted text, one word per delta, `delay` seconds apart."""

    def __init__(
        self, reply: str = "Hello there, friend.", delay: float = 0.0, max_model_len: int = 2048
    ):
        self.reply = reply
        self.delay = delay
        self.max_model_len = max_model_len
        self.versions: dict[str, VersionSpec] = {}
        self.started = False
        self.active = 0  # requests currently generating
        self.fail_after: int | None = None  # raise after this many deltas
        self.calls: list[tuple[str, list[int], Sampling]] = []

    @property
    def ready(self) -> bool:
        return self.started

    def info(self) -> EngineInfo:
        return EngineInfo("fake", Path("fake"), self.max_model_len, list(self.versions))

    async def start(self) -> None:
        self.started = True

    async def shutdown(self) -> None:
        self.started = False

    async def load_version(self, spec: VersionSpec) -> None:
        if spec.name in self.versions:
            raise EngineError(f"{spec.name} already loaded")
        self.versions[spec.name] = spec

    async def unload_version(self, name: str) -> None:
        self.versions.pop(name)

    def loaded_versions(self) -> list[str]:
        return list(self.versions)

    async def generate(
        self, version: str, prompt_ids: list[int], sampling: Sampling, request_id: str
    ) -> AsyncIterator[Delta]:
        if version not in self.versions:
            raise EngineError(f"{version} not loaded")
        self.calls.append((version, prompt_ids, sampling))
        words = self.reply.split(" ")
        self.active += 1
        try:
            for i, w in enumerate(words[: sampling.max_tokens]):
                if self.fail_after is not None and i >= self.fail_after:
                    raise RuntimeError("scripted engine failure")
                if self.delay:
                    await asyncio.sleep(self.delay)
                text = w if i == 0 else " " + w
                last = i == len(words) - 1 or i == sampling.max_tokens - 1
                reason = None if not last else ("stop" if i == len(words) - 1 else "length")
                yield Delta(text, 1, reason)
        finally:
            self.active -= 1
