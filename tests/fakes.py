"""Fakes before downloads: a scripted engine and a tiny random model of SmolLM2's architecture."""

from __future__ import annotations

import asyncio
import random
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

from service.chat.engines.base import Delta, EngineError, EngineInfo, Sampling, VersionSpec
from store.domain import VersionKind

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

    from store.modelstore import bundled_gguf

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
        self.weights: str | None = None
        self.broken: set[str] = set()  # versions whose artifact "fails to load"

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
        if spec.name in self.broken:
            raise EngineError(f"cannot load adapter {spec.name!r}: corrupt file")
        self.versions[spec.name] = spec

    async def unload_version(self, name: str) -> None:
        self.versions.pop(name)

    async def set_weights(self, name: str) -> dict[str, float]:
        if name not in self.versions:
            raise EngineError(f"{name} not loaded")
        base = self.versions[name].kind is VersionKind.BASE
        self.weights = None if base else name  # None: the base model, as real engines say
        return {"pause_s": 0.0}

    def weights_version(self) -> str | None:
        return self.weights

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


# -- a tiny model that talks: for end-to-end training rounds -------------------------------

GOOD_WORDS = ("sunny", "bright", "happy", "warm", "kind", "gentle", "calm", "sweet")
BAD_WORDS = ("cold", "dark", "sad", "grim", "harsh", "bitter", "rough", "dull")
TALK_PROMPTS = tuple(
    f"{verb} {thing}."
    for verb in ("Tell me about", "Describe", "Say something on", "Write a line about")
    for thing in ("the sea", "my day", "winter", "a cat", "the city", "music", "a friend")
)
TINY_TALKER_CACHE = TINY_CACHE.parent / "tiny-talker"


def talk_reply(rng: random.Random, good_share: float = 0.5) -> str:
    """A reply of 4-9 words, each good with probability `good_share`."""
    n = rng.randint(4, 9)
    words = [rng.choice(GOOD_WORDS if rng.random() < good_share else BAD_WORDS) for _ in range(n)]
    return " ".join(words).capitalize() + "."


def good_share(text: str) -> float:
    """The gold property of the end-to-end tests: the share of good words in a reply."""
    words = [w.strip(".,!?").lower() for w in text.split()]
    known = [w for w in words if w in GOOD_WORDS or w in BAD_WORDS]
    return sum(w in GOOD_WORDS for w in known) / len(known) if known else 0.0


def build_tiny_talker(dest: Path) -> Path:
    """The tiny random model, fine-tuned for a few seconds to answer TALK_PROMPTS with
    replies of GOOD_WORDS and BAD_WORDS, each reply in its own mood (share of good words),
    ending with the EOS token.

    A random model never ends a reply and spreads over 49k tokens, so a training round on
    it could not show a policy moving toward a preference; this one can. Cached like the
    tiny model.
    """
    if not (TINY_TALKER_CACHE / "config.json").is_file():
        _build_talker(TINY_TALKER_CACHE)
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(TINY_TALKER_CACHE, dest)
    return dest


def _build_talker(out: Path) -> None:
    import tempfile

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = build_tiny_model(out.parent / ".talker-src")
    tok = AutoTokenizer.from_pretrained(str(src))
    model = AutoModelForCausalLM.from_pretrained(str(src))
    rng = random.Random(0)
    torch.manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(120):
        ids, labels = [], []
        for _ in range(16):
            prompt = tok.apply_chat_template(
                [{"role": "user", "content": rng.choice(TALK_PROMPTS)}],
                tokenize=False,
                add_generation_prompt=True,
            )
            p = tok.encode(prompt, add_special_tokens=False)
            # Each reply has its own mood (share of good words), so the model carries the
            # mood along the reply: a feature a reward model can read and a policy can shift.
            text = talk_reply(rng, good_share=rng.random())
            r = [*tok.encode(text, add_special_tokens=False), tok.eos_token_id]
            ids.append(p + r)
            labels.append([-100] * len(p) + r)
        width = max(map(len, ids))
        pad = tok.eos_token_id
        x = torch.tensor([s + [pad] * (width - len(s)) for s in ids])
        y = torch.tensor([s + [-100] * (width - len(s)) for s in labels])
        mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in ids])
        loss = model(input_ids=x, attention_mask=mask, labels=y).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    tmp = Path(tempfile.mkdtemp(dir=out.parent))
    model.save_pretrained(str(tmp))
    tok.save_pretrained(str(tmp))
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    shutil.rmtree(src, ignore_errors=True)
