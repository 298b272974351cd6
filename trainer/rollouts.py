"""Where a round's replies are drawn: the policy's rollouts and the gate's samples.

Two samplers with one interface (`Sampler`):

- `TransformersSampler`: `trainer.sampling.sample`, the batched decode loop on the
  training model itself. No second copy of the weights, slow on a CPU.
- `VllmSampler`: a vLLM engine beside the training model in this process (TRL's
  "colocate" mode), on the same base weights, with LoRA enabled. Before each draw of the
  policy's replies the trained adapter is written to disk and handed to the engine as a
  new LoRA (a new id each time: vLLM caches adapters by id), so every rollout is drawn
  from the weights the next update starts from. The previous adapter is removed from the
  engine and its files deleted.

Replies are tokenized here (the chat template, as the service renders it) and handed to
the engine as token ids, and their text is decoded by the trainer's tokenizer, so a
`Sample` means the same thing whichever sampler drew it. Each reply carries its own seed
(the draw's seed and its row), so a vLLM draw is reproducible however the engine batches
it; it is not the same stream of random numbers as the transformers loop, so the two
samplers draw different replies from the same distribution (greedy replies agree).

The log-probs every loss and KL is computed from are always the training model's
(`trainer.sampling.completion_logprobs`), never the engine's: the engine's only job is
to choose the tokens, as in TRL and OpenRLHF.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from store.hardware import choose_dtype, cpu_flags, vllm_available
from trainer.config import RolloutConfig
from trainer.records import Messages, ProgressFn, no_progress
from trainer.sampling import Sample, encode_prompt, eos_ids, sample

log = logging.getLogger("loopchat.trainer")

# vLLM's LoRA ranks: an adapter's rank must be at most the engine's max_lora_rank, which
# must be one of these.
VLLM_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)


@dataclass(frozen=True)
class Draw:
    """How replies are drawn: the same for every sampler."""

    max_new_tokens: int
    temperature: float
    top_p: float = 1.0
    seed: int = 0
    max_prompt_tokens: int = 768


class Sampler(Protocol):
    """Draws `n` replies to each prompt, prompt-major, as `trainer.sampling.sample` does."""

    name: str

    def current(
        self,
        model: Any,
        tokenizer: Any,
        prompts: Sequence[Messages],
        n: int,
        draw: Draw,
        progress: ProgressFn = no_progress,
    ) -> list[Sample]:
        """Replies of the PeftModel `model` as its weights are now (its active adapter)."""
        ...

    def base(
        self, model: Any, tokenizer: Any, prompts: Sequence[Messages], n: int, draw: Draw
    ) -> list[Sample]:
        """Replies of v0, the base model with no adapter."""
        ...

    def saved(
        self,
        adapter: Path,
        model: Any,
        tokenizer: Any,
        prompts: Sequence[Messages],
        n: int,
        draw: Draw,
    ) -> list[Sample]:
        """Replies of the LoRA version saved at `adapter` (the serving one, for the gate)."""
        ...

    def close(self) -> None: ...


class TransformersSampler:
    """Draws with the training model itself (`trainer.sampling.sample`)."""

    name = "transformers"

    def current(
        self,
        model: Any,
        tokenizer: Any,
        prompts: Sequence[Messages],
        n: int,
        draw: Draw,
        progress: ProgressFn = no_progress,
    ) -> list[Sample]:
        return sample(
            model,
            tokenizer,
            prompts,
            n,
            max_new_tokens=draw.max_new_tokens,
            temperature=draw.temperature,
            top_p=draw.top_p,
            seed=draw.seed,
            max_prompt_tokens=draw.max_prompt_tokens,
            progress=progress,
        )

    def base(
        self, model: Any, tokenizer: Any, prompts: Sequence[Messages], n: int, draw: Draw
    ) -> list[Sample]:
        with model.disable_adapter():
            return self.current(model, tokenizer, prompts, n, draw)

    def saved(
        self,
        adapter: Path,
        model: Any,
        tokenizer: Any,
        prompts: Sequence[Messages],
        n: int,
        draw: Draw,
    ) -> list[Sample]:
        with loaded_adapter(model, adapter):
            return self.current(model, tokenizer, prompts, n, draw)

    def close(self) -> None:
        pass


SAVED_ADAPTER = "saved"


@contextlib.contextmanager
def loaded_adapter(model: Any, adapter: Path) -> Iterator[None]:
    """The LoRA at `adapter` loaded beside the model's own and active inside the block;
    the model's own adapter is active again, and the other one gone, after it."""
    own = model.active_adapter
    model.load_adapter(str(adapter), adapter_name=SAVED_ADAPTER)
    try:
        model.set_adapter(SAVED_ADAPTER)
        yield
    finally:
        model.set_adapter(own)
        model.delete_adapter(SAVED_ADAPTER)


def adapter_rank(adapter: Path | None) -> int:
    """The rank of the saved LoRA at `adapter` (0 for none or unreadable)."""
    if adapter is None:
        return 0
    try:
        return int(json.loads((adapter / "adapter_config.json").read_text())["r"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def lora_rank_limit(rank: int) -> int:
    """The smallest rank vLLM accepts as max_lora_rank that holds an adapter of `rank`."""
    for r in VLLM_LORA_RANKS:
        if r >= rank:
            return r
    raise ValueError(f"LoRA rank {rank} is above vLLM's largest ({VLLM_LORA_RANKS[-1]})")


class VllmSampler:
    """A vLLM engine in this process on the base model; the policy is synced as LoRA."""

    name = "vllm"

    def __init__(self, base_dir: Path, cfg: RolloutConfig, lora_rank: int, seed: int = 0):
        self._base_dir = base_dir
        self._cfg = cfg
        self._rank = lora_rank_limit(lora_rank)
        self._seed = seed
        self._llm: Any = None
        self._work = Path(tempfile.mkdtemp(prefix="loopchat-rollouts-"))
        self._next_id = 1
        self._synced: tuple[int, Path] | None = None  # the policy's last LoRA in the engine
        self.dtype = ""
        self.start_s = 0.0  # how long the engine took to start
        self.sync_s = 0.0  # time spent writing and loading adapters, all draws together
        self.syncs = 0

    def _engine(self) -> Any:
        if self._llm is None:
            import torch
            from vllm import LLM

            cfg = self._cfg
            dtype, why = choose_dtype(cfg.dtype, cuda=torch.cuda.is_available(), flags=cpu_flags())
            self.dtype = dtype
            started = time.monotonic()
            log.info("rollouts: starting vLLM on %s, dtype %s (%s)", self._base_dir, dtype, why)
            self._llm = LLM(
                model=str(self._base_dir),
                dtype=dtype,  # type: ignore[arg-type]
                enforce_eager=cfg.enforce_eager,
                kv_cache_memory_bytes=int(cfg.kv_cache_gib * 1024**3),
                gpu_memory_utilization=cfg.gpu_memory_utilization,
                max_model_len=cfg.max_model_len,
                # Chunked prefill off: vLLM on CPU stops its engine when a seeded request is
                # cut mid-prefill (see service.chat.engines.vllm_engine).
                enable_chunked_prefill=False,
                max_num_batched_tokens=max(2048, cfg.max_model_len),
                enable_lora=True,
                max_lora_rank=self._rank,
                max_loras=2,  # the policy's adapter and a saved one (the gate's serving side)
                seed=self._seed,
                disable_log_stats=True,
            )
            self.start_s = time.monotonic() - started
        return self._llm

    def _lora(self, path: Path) -> Any:
        from vllm.lora.request import LoRARequest

        lora_id = self._next_id
        self._next_id += 1
        return LoRARequest(f"rollout-{lora_id}", lora_id, str(path))

    def _sync(self, model: Any) -> Any:
        """The model's trainable adapter as a new LoRA in the engine; the last one goes."""
        from trainer.policy.model import save_adapter

        llm = self._engine()
        started = time.monotonic()
        dest = self._work / f"sync-{self._next_id}"
        save_adapter(model, dest, tokenizer=False)
        req = self._lora(dest)
        if self._synced is not None:
            old_id, old_dir = self._synced
            llm.llm_engine.remove_lora(old_id)
            shutil.rmtree(old_dir, ignore_errors=True)
        llm.llm_engine.add_lora(req)
        self._synced = (req.lora_int_id, dest)
        self.sync_s += time.monotonic() - started
        self.syncs += 1
        return req

    def _generate(
        self,
        tokenizer: Any,
        prompts: Sequence[Messages],
        n: int,
        draw: Draw,
        lora: Any,
        eos: set[int],
        progress: ProgressFn = no_progress,
    ) -> list[Sample]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        llm = self._engine()
        encoded = [encode_prompt(tokenizer, p, draw.max_prompt_tokens) for p in prompts]
        rows = [(i, encoded[i]) for i in range(len(prompts)) for _ in range(n)]
        params = [
            SamplingParams(
                max_tokens=draw.max_new_tokens,
                temperature=max(draw.temperature, 0.0),
                top_p=draw.top_p,
                seed=draw.seed * 1_000_003 + row,
                stop_token_ids=sorted(eos),
                skip_special_tokens=True,
                detokenize=False,
            )
            for row in range(len(rows))
        ]
        outputs = llm.generate(
            [TokensPrompt(prompt_token_ids=ids) for _, ids in rows],
            params,
            lora_request=lora,
            use_tqdm=False,
        )
        out: list[Sample] = []
        for (index, ids), result in zip(rows, outputs, strict=True):
            choice = result.outputs[0]
            completion = [int(t) for t in choice.token_ids]
            finished = bool(completion) and completion[-1] in eos
            text = str(tokenizer.decode(completion, skip_special_tokens=True))
            out.append(Sample(index, list(ids), completion, text, finished))
        progress(len(out), len(rows), {})
        return out

    def current(
        self,
        model: Any,
        tokenizer: Any,
        prompts: Sequence[Messages],
        n: int,
        draw: Draw,
        progress: ProgressFn = no_progress,
    ) -> list[Sample]:
        lora = self._sync(model)
        return self._generate(
            tokenizer, prompts, n, draw, lora, eos_ids(model, tokenizer), progress
        )

    def base(
        self, model: Any, tokenizer: Any, prompts: Sequence[Messages], n: int, draw: Draw
    ) -> list[Sample]:
        return self._generate(tokenizer, prompts, n, draw, None, eos_ids(model, tokenizer))

    def saved(
        self,
        adapter: Path,
        model: Any,
        tokenizer: Any,
        prompts: Sequence[Messages],
        n: int,
        draw: Draw,
    ) -> list[Sample]:
        lora = self._lora(adapter)
        try:
            return self._generate(tokenizer, prompts, n, draw, lora, eos_ids(model, tokenizer))
        finally:
            self._engine().llm_engine.remove_lora(lora.lora_int_id)

    def figures(self) -> dict[str, float | str]:
        return {
            "engine": self.name,
            "dtype": self.dtype,
            "start_s": self.start_s,
            "sync_s": self.sync_s,
            "syncs": float(self.syncs),
        }

    def close(self) -> None:
        """Stops the engine (its core process) and deletes the synced adapters."""
        llm, self._llm = self._llm, None
        if llm is not None:
            with contextlib.suppress(Exception):  # already stopped is as good
                llm.llm_engine.engine_core.shutdown()
            del llm
        shutil.rmtree(self._work, ignore_errors=True)


def resolve_engine(cfg: RolloutConfig) -> str:
    """`vllm` or `transformers`: `auto` takes vLLM where it is installed."""
    if cfg.engine == "auto":
        return "vllm" if vllm_available() else "transformers"
    if cfg.engine == "vllm" and not vllm_available():
        raise RuntimeError("rollouts.engine = vllm, but vLLM is not installed")
    return cfg.engine


def make_sampler(base_dir: Path, cfg: RolloutConfig, lora_rank: int, seed: int = 0) -> Sampler:
    if resolve_engine(cfg) == "vllm":
        return VllmSampler(base_dir, cfg, lora_rank, seed)
    return TransformersSampler()
