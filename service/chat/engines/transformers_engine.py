"""Plain transformers + peft engine: light, starts fast, for tests and small machines.

Decoding runs on one worker thread, one step per executor call, so concurrent requests
interleave token by token (fair, no batching). A request that is closed early simply
stops scheduling steps: its slot is free at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from service.chat.engines.base import (
    Delta,
    EngineError,
    EngineInfo,
    Sampling,
    VersionSpec,
)
from service.chat.textstream import IncrementalText, StopMatcher
from service.chat.tokenizer import ChatTokenizer
from store.domain import VersionKind

log = logging.getLogger(__name__)


class TransformersEngine:
    def __init__(
        self,
        model_dir: Path,
        *,
        max_model_len: int = 2048,
        threads: int | None = None,
        work_dir: Path | None = None,
    ):
        self._model_dir = model_dir
        self._max_model_len = max_model_len
        self._threads = threads
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tf-engine")
        self._base: Any = None
        self._tokenizer: ChatTokenizer | None = None
        self._versions: dict[str, VersionSpec] = {}
        self._models: dict[str, Any] = {}  # merged versions own a full model
        self._peft: Any = None  # PeftModel wrapping the base once an adapter is loaded
        self._weights: str | None = None  # version served by a merged copy (merged mode)
        self._merged: Any = None
        self._work_dir = work_dir
        self._tmp: Any = None
        self._ready = False

    @property
    def ready(self) -> bool:
        return self._ready

    def info(self) -> EngineInfo:
        return EngineInfo(
            "transformers", self._model_dir, self._max_model_len, self.loaded_versions()
        )

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def start(self) -> None:
        if self._ready:
            return
        await self._run(self._load_base)
        self._ready = True

    def _load_base(self) -> None:
        import torch
        from transformers import AutoModelForCausalLM

        if self._threads:
            torch.set_num_threads(self._threads)
        try:
            model = AutoModelForCausalLM.from_pretrained(str(self._model_dir), dtype=torch.float32)
        except (OSError, ValueError) as e:
            raise EngineError(f"cannot load model from {self._model_dir}: {e}") from e
        self._base = model.eval()  # type: ignore[no-untyped-call]
        self._tokenizer = ChatTokenizer.from_dir(self._model_dir)

    async def shutdown(self) -> None:
        self._ready = False
        self._executor.shutdown(wait=False, cancel_futures=True)
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def loaded_versions(self) -> list[str]:
        return list(self._versions)

    def weights_version(self) -> str | None:
        return self._weights

    async def set_weights(self, name: str) -> dict[str, float]:
        """Serve `name` from a merged copy of the weights (no adapter on its requests).

        The base model stays as it is, so the other versions need nothing new, and no
        request waits: a request of `name` already running simply continues on the
        merged copy, which computes the same function.
        """
        spec = self._versions.get(name)
        if spec is None:
            raise EngineError(f"version {name!r} is not loaded")
        if name == self._weights or spec.kind is VersionKind.MERGED:
            return {}  # a merged version is its own full model already
        if spec.kind is VersionKind.BASE:
            self._merged, self._weights = None, None
            return {}
        t0 = time.perf_counter()
        model, out = await self._run(self._load_merged, spec)
        self._merged, self._weights = model, name
        await asyncio.to_thread(_sweep, out)
        return {"prepare_s": time.perf_counter() - t0, "pause_s": 0.0}

    def _load_merged(self, spec: VersionSpec) -> tuple[Any, Path]:
        import torch
        from transformers import AutoModelForCausalLM

        from service.policies.weights import WeightsError, write_merged

        if self._work_dir is None and self._tmp is None:
            import tempfile

            self._tmp = tempfile.TemporaryDirectory(prefix="loopchat-tf-")
        root = self._work_dir or Path(self._tmp.name)
        out = root / "merged" / spec.name
        try:
            if not out.exists():
                write_merged(self._model_dir, spec.path, out)
            model = AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32)
        except (WeightsError, OSError, ValueError) as e:
            raise EngineError(f"cannot merge {spec.name!r} into full weights: {e}") from e
        return model.eval(), out  # type: ignore[no-untyped-call]

    async def load_version(self, spec: VersionSpec) -> None:
        if spec.name in self._versions:
            raise EngineError(
                f"version name {spec.name!r} is already loaded; names are never reused"
            )
        await self._run(self._load, spec)
        self._versions[spec.name] = spec

    def _load(self, spec: VersionSpec) -> None:
        import torch
        from transformers import AutoModelForCausalLM

        if spec.kind is VersionKind.BASE:
            return
        try:
            if spec.kind is VersionKind.MERGED:
                m = AutoModelForCausalLM.from_pretrained(str(spec.path), dtype=torch.float32)
                self._models[spec.name] = m.eval()  # type: ignore[no-untyped-call]
            else:
                from peft import PeftModel

                if self._peft is None:
                    self._peft = PeftModel.from_pretrained(
                        self._base, str(spec.path), adapter_name=spec.name
                    ).eval()
                else:
                    self._peft.load_adapter(str(spec.path), adapter_name=spec.name)
        except (OSError, ValueError, RuntimeError, KeyError) as e:
            raise EngineError(
                f"cannot load {spec.kind} version {spec.name!r} from {spec.path}: {e}"
            ) from e

    async def unload_version(self, name: str) -> None:
        spec = self._versions.pop(name, None)
        if spec is None:
            raise EngineError(f"version {name!r} is not loaded")
        if name == self._weights:
            self._merged, self._weights = None, None
        if spec.kind is VersionKind.MERGED:
            self._models.pop(name, None)
        elif spec.kind is VersionKind.LORA and self._peft is not None:
            await self._run(self._peft.delete_adapter, name)

    def _model_for(self, version: str) -> Any:
        spec = self._versions.get(version)
        if spec is None:
            raise EngineError(f"version {version!r} is not loaded")
        if spec.kind is VersionKind.MERGED:
            return self._models[version]
        if version == self._weights:
            return self._merged
        if spec.kind is VersionKind.LORA:
            self._peft.set_adapter(version)
            return self._peft
        if self._peft is not None:
            # The base through the wrapper, with adapters switched off for this call.
            return _BaseView(self._peft)
        return self._base

    async def generate(
        self, version: str, prompt_ids: list[int], sampling: Sampling, request_id: str
    ) -> AsyncIterator[Delta]:
        if not self._ready or self._tokenizer is None:
            raise EngineError("engine is not ready")
        if version not in self._versions:
            raise EngineError(f"version {version!r} is not loaded")
        state = _Decode(self, version, prompt_ids, sampling, self._tokenizer)
        text = IncrementalText(self._tokenizer.decode)
        stops = StopMatcher(sampling.stop)
        produced = 0
        while True:
            token = await self._run(state.step)
            if token in state.eos:
                yield Delta(stops.flush(), 1, "stop")
                return
            produced += 1
            out, stopped = stops.feed(text.push(token))
            if stopped:
                yield Delta(out, 1, "stop")
                return
            if produced >= sampling.max_tokens:
                yield Delta(out + stops.flush(), 1, "length")
                return
            yield Delta(out, 1)


def _sweep(keep: Path) -> None:
    """Delete the other merged copies next to `keep` (loaded models no longer need them)."""
    import shutil

    for d in keep.parent.glob("*"):
        if d != keep:
            shutil.rmtree(d, ignore_errors=True)


class _BaseView:
    """Calls the peft-wrapped model with its adapters disabled."""

    def __init__(self, peft: Any):
        self._peft = peft

    def __call__(self, **kwargs: Any) -> Any:
        with self._peft.disable_adapter():
            return self._peft(**kwargs)


class _Decode:
    """Per-request decode state; `step` runs on the engine thread and returns a token id."""

    def __init__(
        self,
        engine: TransformersEngine,
        version: str,
        prompt_ids: list[int],
        sampling: Sampling,
        tokenizer: ChatTokenizer,
    ):
        import torch

        self._engine = engine
        self._version = version
        self._sampling = sampling
        self._input = torch.tensor([prompt_ids], dtype=torch.long)
        self._past: Any = None
        self._gen = torch.Generator()
        seed = sampling.seed if sampling.seed is not None else int(torch.seed() % (2**63))
        self._gen.manual_seed(seed)
        eos = set(tokenizer.eos_ids())
        cfg_eos = getattr(engine._base.generation_config, "eos_token_id", None)
        if isinstance(cfg_eos, int):
            eos.add(cfg_eos)
        elif isinstance(cfg_eos, list):
            eos.update(cfg_eos)
        self.eos = eos

    def step(self) -> int:
        import torch

        model = self._engine._model_for(self._version)
        with torch.inference_mode():
            out = model(input_ids=self._input, past_key_values=self._past, use_cache=True)
        self._past = out.past_key_values
        token = _sample(out.logits[0, -1].float(), self._sampling, self._gen)
        self._input = torch.tensor([[token]], dtype=torch.long)
        return token


def _sample(logits: Any, sampling: Sampling, gen: Any) -> int:
    import torch

    if sampling.temperature <= 0:
        return int(torch.argmax(logits).item())
    probs = torch.softmax(logits / sampling.temperature, dim=-1)
    if sampling.top_p < 1.0:
        sorted_p, order = torch.sort(probs, descending=True)
        keep = torch.cumsum(sorted_p, dim=-1) - sorted_p < sampling.top_p
        sorted_p = torch.where(keep, sorted_p, torch.zeros_like(sorted_p))
        choice = torch.multinomial(sorted_p / sorted_p.sum(), 1, generator=gen)
        return int(order[choice].item())
    return int(torch.multinomial(probs, 1, generator=gen).item())
