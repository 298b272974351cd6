"""The live policy registry: maps public model names to loaded engine versions.

Today it loads the `serving` version at start; the hot-swap issue adds canaries,
swaps and rollbacks on top of the same `resolve` contract.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from service.chat.engines.base import Engine, VersionSpec
from service.db import repository
from service.db.session import session_scope
from service.domain import VersionKind, VersionStatus
from service.errors import ModelNotFound, NotReady

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LiveVersion:
    id: int
    name: str
    kind: VersionKind
    status: VersionStatus
    artifact_uri: str
    created_at: datetime


class PolicyRegistry:
    def __init__(self, engine: Engine, sessions: sessionmaker[Session], alias: str):
        self._engine = engine
        self._sessions = sessions
        self._alias = alias
        self._loaded: dict[str, LiveVersion] = {}
        self._serving: LiveVersion | None = None
        self.notified: list[str] = []  # candidates the trainer announced, oldest first

    @property
    def alias(self) -> str:
        return self._alias

    def public_name(self, version: LiveVersion) -> str:
        return f"{self._alias}@{version.name}"

    @property
    def serving(self) -> LiveVersion:
        if self._serving is None:
            raise NotReady("no policy version is serving yet; try again shortly")
        return self._serving

    def loaded(self) -> list[LiveVersion]:
        return list(self._loaded.values())

    async def load_serving(self) -> LiveVersion:
        """Load the database's serving version into the engine and route to it."""
        row = await asyncio.to_thread(self._read_serving)
        if row.name not in self._engine.loaded_versions():
            await self._engine.load_version(VersionSpec(row.name, row.kind, Path(row.artifact_uri)))
        self._loaded[row.name] = row
        self._serving = row
        log.info("serving policy version %s (%s)", row.name, row.kind)
        return row

    def _read_serving(self) -> LiveVersion:
        with session_scope(self._sessions) as s:
            v = repository.serving_version(s)
            if v is None:
                raise RuntimeError(
                    "no policy version has status 'serving'; run `loopchat model prepare` first"
                )
            return LiveVersion(v.id, v.name, v.kind, v.status, v.artifact_uri, v.created_at)

    def candidate_ready(self, name: str) -> bool:
        """The trainer published `name`. Recorded here; the hot-swap issue loads it."""
        if name in self.notified:
            return False
        self.notified.append(name)
        log.info("trainer announced candidate %s", name)
        return True

    def comparison_pair(self) -> tuple[LiveVersion, LiveVersion]:
        """The two versions an A-vs-B comparison pits against each other.

        Today both sides are the serving version (two samples); the hot-swap issue makes
        one side the canary.
        """
        return self.serving, self.serving

    def resolve(self, model: str) -> LiveVersion:
        """`loopchat` (or empty) means the serving version; `loopchat@v3` or `v3` pins one."""
        name = model.strip()
        if name in ("", self._alias):
            return self.serving
        if name.startswith(self._alias + "@"):
            name = name[len(self._alias) + 1 :]
        version = self._loaded.get(name)
        if version is None:
            raise ModelNotFound(
                f"The model '{model}' does not exist or is not loaded. "
                f"GET /v1/models lists the models you can use.",
                param="model",
            )
        return version
