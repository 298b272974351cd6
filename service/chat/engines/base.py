"""The engine protocol: what the chat service and the hot-swap registry need from an engine.

An engine holds one base model and any number of loaded policy *versions* (the base
itself, LoRA adapters on it, or merged full weights), each under a unique name, and
generates with a named version. Engines speak token ids; chat templating lives in
`service.chat.tokenizer` so that limits are checked before a request reaches the engine.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

from store.domain import VersionKind


@dataclass(frozen=True)
class VersionSpec:
    """A policy version to load: `path` is the adapter or weights directory."""

    name: str
    kind: VersionKind
    path: Path


@dataclass(frozen=True)
class Sampling:
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 256
    stop: tuple[str, ...] = ()
    seed: int | None = None


@dataclass
class Delta:
    """New text since the last delta; `finish_reason` is set on the last one."""

    text: str
    num_tokens: int
    finish_reason: str | None = None


@dataclass
class EngineInfo:
    name: str
    base_model: Path
    max_model_len: int
    loaded: list[str] = field(default_factory=list)


class EngineError(RuntimeError):
    """The engine could not do what was asked (bad artifact, unknown version, dead engine)."""


class EngineUnavailable(EngineError):
    """The engine stopped (or is starting again) and took no part of the request's fault:
    the request may be retried shortly."""


@runtime_checkable
class Engine(Protocol):
    @property
    def ready(self) -> bool: ...

    def info(self) -> EngineInfo: ...

    async def start(self) -> None:
        """Load the base model; `ready` turns true when done. A no-op when already started."""

    async def shutdown(self) -> None: ...

    async def load_version(self, spec: VersionSpec) -> None:
        """Make `spec.name` available to `generate`. Names are never reused."""

    async def unload_version(self, name: str) -> None: ...

    def loaded_versions(self) -> list[str]: ...

    async def set_weights(self, name: str) -> dict[str, float]:
        """Make loaded version `name` the engine's own weights (merged mode).

        Every other loaded version keeps generating exactly as before (as an adapter
        relative to the new weights), and no request fails or mixes versions. Returns
        timings in seconds (`prepare_s`, `pause_s`, ...). A no-op when `name` already is.
        """
        ...

    def weights_version(self) -> str | None:
        """The version whose weights the engine holds merged (None: the base model)."""
        ...

    def generate(
        self, version: str, prompt_ids: list[int], sampling: Sampling, request_id: str
    ) -> AsyncIterator[Delta]:
        """Stream one reply. Closing the iterator early frees the engine slot."""
        ...
