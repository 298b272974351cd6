"""The live policy registry: which versions the engine holds, which one serves, which
one is the canary, and every change between them.

The database's `policy_versions.status` is the truth (see `lifecycle` for the legal
changes); the registry keeps the engine and the request routing in step with it:

- `resolve` picks the version for each request: a pinned name, else the canary for a
  configured share of traffic (sticky per user), else the serving version. The choice
  is made once, before the reply starts, so a reply is written by exactly one version.
- `admit` loads a candidate the trainer announced (or that polling found) and makes it
  the canary; a load that fails marks the candidate `failed` and changes nothing else.
- `promote` makes any candidate, canary or retained version serve: routing switches at
  once (the version is already loaded, or is loaded first); in merged mode the engine
  then takes the version into its full weights in the background (`SWAP` event).
- `poll_once` (every `poll_seconds`) adopts changes other processes wrote to the
  database, admits missed candidates, and applies the promotion rule to the canary.
Transitions are serialised by one lock; each writes its status change and its event
in one transaction.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from service.chat.engines.base import Engine, EngineError, VersionSpec
from service.errors import Conflict, ModelNotFound, NotReady
from service.policies import store
from service.policies.lifecycle import Actor, EventKind, promotion_kind
from service.policies.ratings import head_to_head
from service.policies.rules import Decision, PromotionRule, Verdict, decide, screening_metrics
from service.settings import Settings
from store.db.session import in_session
from store.domain import VersionKind, VersionStatus
from store.evidence import EvidenceRules

log = logging.getLogger(__name__)
S = VersionStatus


class SwapMode(StrEnum):
    MERGED = "merged"  # the serving version is merged into the engine's weights
    LORA = "lora"  # every version other than v0 runs as an adapter on each request


@dataclass(frozen=True)
class RegistryConfig:
    swap_mode: SwapMode = SwapMode.MERGED
    canary_share: float = 0.1  # share of unpinned chat traffic the canary serves
    retain: int = 2  # retired versions kept loaded (instant rollback, pinning)
    poll_seconds: float = 10.0
    auto_promote: bool = True  # the rule may promote; it always may retire
    rule: PromotionRule = field(default_factory=PromotionRule)
    evidence: EvidenceRules = field(default_factory=EvidenceRules)


def registry_config(settings: Settings) -> RegistryConfig:
    return RegistryConfig(
        swap_mode=SwapMode(settings.swap_mode),
        canary_share=settings.canary_share,
        retain=settings.retain_versions,
        poll_seconds=settings.policy_poll_seconds,
        auto_promote=settings.auto_promote,
        rule=PromotionRule(
            min_comparisons=settings.promote_min_comparisons,
            win_lower_bound=settings.promote_win_lower_bound,
        ),
        evidence=settings.evidence_rules(),
    )


@dataclass(frozen=True)
class LiveVersion:
    id: int
    name: str
    kind: VersionKind
    status: VersionStatus
    artifact_uri: str
    created_at: datetime

    @staticmethod
    def of(row: store.VersionRow) -> LiveVersion:
        return LiveVersion(row.id, row.name, row.kind, row.status, row.artifact_uri, row.created_at)

    def spec(self) -> VersionSpec:
        return VersionSpec(self.name, self.kind, Path(self.artifact_uri))


class PolicyRegistry:
    def __init__(
        self,
        engine: Engine,
        sessions: sessionmaker[Session],
        alias: str,
        config: RegistryConfig | None = None,
    ):
        self._engine = engine
        self._sessions = sessions
        self._alias = alias
        self.config = config or RegistryConfig()
        self._loaded: dict[str, LiveVersion] = {}
        self._serving: LiveVersion | None = None
        self._canary: LiveVersion | None = None
        self._lock = asyncio.Lock()
        self._rng = random.Random()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.last_decision: Decision | None = None

    # -- reading ------------------------------------------------------------------------

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

    @property
    def canary(self) -> LiveVersion | None:
        return self._canary

    def loaded(self) -> list[LiveVersion]:
        return list(self._loaded.values())

    def weights_version(self) -> str | None:
        """The version merged into the engine's weights (None: the base model)."""
        return self._engine.weights_version()

    def route(self, user_id: str | None = None) -> LiveVersion:
        """The version for an unpinned request: the canary for its share, else serving."""
        serving, canary = self.serving, self._canary
        share = self.config.canary_share
        if canary is None or share <= 0:
            return serving
        if user_id is None:
            draw = self._rng.random()
        else:  # sticky: one user sees one version for the whole canary
            digest = hashlib.sha256(f"{canary.name}:{user_id}".encode()).digest()
            draw = int.from_bytes(digest[:8], "big") / 2**64
        return canary if draw < share else serving

    def resolve(self, model: str, user_id: str | None = None, may_pin: bool = True) -> LiveVersion:
        """`loopchat` (or empty) is routed; `loopchat@v3` or `v3` pins a loaded version.

        Without `may_pin` only the serving version can be named, and every other name
        gets the same answer whether or not it is loaded: a caller who could pin the
        canary could reproduce its replies and tell a comparison's sides apart."""
        name = model.strip()
        if name in ("", self._alias):
            return self.route(user_id)
        if name.startswith(self._alias + "@"):
            name = name[len(self._alias) + 1 :]
        version = self._loaded.get(name)
        if version is not None and (may_pin or version.name == self.serving.name):
            return version
        raise ModelNotFound(
            f"The model '{model[:80]}' does not exist or is not one you may use. "
            f"GET /v1/models lists the models you can use.",
            param="model",
        )

    def comparison_pair(self) -> tuple[LiveVersion, LiveVersion]:
        """A comparison pits the canary against the serving version; without a canary,
        two samples of the serving version (still useful to the reward model)."""
        return self.serving, self._canary or self.serving

    # -- start-up -----------------------------------------------------------------------

    async def start(self) -> LiveVersion:
        """Load the serving version (into the weights in merged mode), the canary and the
        retained versions, then admit the newest waiting candidate."""
        async with self._lock:
            rows = await self._db(lambda s: store.versions(s))
            serving = [r for r in rows if r.status is S.SERVING]
            if not serving:
                raise RuntimeError(
                    "no policy version has status 'serving'; run `loopchat model prepare` first"
                )
            base = next((r for r in rows if r.kind is VersionKind.BASE), serving[-1])
            await self._load(LiveVersion.of(base))
            live = await self._load(LiveVersion.of(serving[-1]))
            self._serving = live
            if self.config.swap_mode is SwapMode.MERGED:
                await self._engine.set_weights(live.name)
            for r in rows:
                if r.status is S.CANARY:
                    try:
                        self._canary = await self._load(LiveVersion.of(r))
                    except EngineError as e:
                        log.error("canary %s did not load at start: %s", r.name, e)
            for r in self._retained(rows):
                try:
                    await self._load(LiveVersion.of(r))
                except EngineError as e:
                    log.warning("retained version %s did not load: %s", r.name, e)
        log.info("serving policy version %s (%s mode)", live.name, self.config.swap_mode)
        await self._admit_waiting(Actor.SYSTEM)
        return live

    def _retained(self, rows: list[store.VersionRow]) -> list[store.VersionRow]:
        retired = [r for r in rows if r.status is S.RETIRED and r.kind is not VersionKind.BASE]
        retired.sort(key=lambda r: r.updated_at, reverse=True)
        return retired[: self.config.retain]

    # -- transitions --------------------------------------------------------------------

    def candidate_ready(self, name: str) -> None:
        """The trainer published `name`: admit it in the background (202 to the trainer)."""
        self._spawn(self.admit(name, Actor.TRAINER))

    async def admit(self, name: str, actor: Actor) -> LiveVersion | None:
        """Load candidate `name` and make it the canary (retiring an older canary)."""
        async with self._lock:
            row = await self._db(lambda s: store.find(s, name))
            if row.status is not S.CANDIDATE:
                return None  # already handled (a repeated notice, or polling got there first)
            version = LiveVersion.of(row)
            try:
                live = await self._load(version)
            except EngineError as e:
                await self._fail(row, str(e), actor)
                return None
            old = self._canary
            if old is not None:
                await self._retire_locked(old, actor, f"superseded by the newer candidate {name}")
            live = await self._commit(
                name, S.CANARY, EventKind.CANARY, actor,
                f"canary for {self.config.canary_share:.0%} of traffic and one side of comparisons",
                previous=self._serving,
            )  # fmt: skip
            self._canary = live
            return live

    async def promote(
        self, ref: str, actor: Actor, reason: str = "", metrics: Mapping[str, Any] | None = None
    ) -> LiveVersion:
        """Make `ref` serve (a candidate, the canary, or a retained version: rollback)."""
        async with self._lock:
            row = await self._db(lambda s: store.find(s, ref))
            if row.status is S.SERVING:
                return self.serving
            kind = promotion_kind(row.status)
            if row.status not in (S.CANDIDATE, S.CANARY, S.RETIRED):
                raise Conflict(f"version {row.name} is {row.status.value}; it cannot serve")
            try:
                await self._load(LiveVersion.of(row))
            except EngineError as e:
                if row.status is S.CANDIDATE:
                    await self._fail(row, str(e), actor)
                raise Conflict(f"version {row.name} could not be loaded: {e}") from e
            previous = self.serving
            reason = reason or f"{actor.value} made {row.name} serve"
            live = await self._commit(
                row.name, S.SERVING, kind, actor, reason, previous=previous, metrics=metrics,
                retire=previous,
            )  # fmt: skip
            self._serving = live
            self._loaded[previous.name] = _with_status(previous, S.RETIRED)
            if self._canary is not None and self._canary.name == live.name:
                self._canary = None
            log.info("%s: %s now serves (was %s): %s", kind, live.name, previous.name, reason)
            await self._trim()
        if self.config.swap_mode is SwapMode.MERGED:
            self._spawn(self._consolidate(live))
        return live

    async def rollback(self, actor: Actor, reason: str = "") -> LiveVersion:
        """Serve again the version that served before the current one."""
        current = self.serving.name
        target = await self._db(lambda s: store.previous_serving(s, current))
        if target is None:
            raise Conflict(f"{current} has no earlier serving version to roll back to")
        return await self.promote(target, actor, reason or f"rollback from {current}")

    async def retire(self, ref: str, actor: Actor, reason: str = "") -> LiveVersion:
        """Stop a candidate or the canary from taking traffic."""
        async with self._lock:
            row = await self._db(lambda s: store.find(s, ref))
            if row.status not in (S.CANDIDATE, S.CANARY):
                raise Conflict(
                    f"version {row.name} is {row.status.value}; only a candidate or the canary "
                    f"can be retired (promote another version to replace the serving one)"
                )
            return await self._retire_locked(
                LiveVersion.of(row), actor, reason or f"{actor.value} retired {row.name}"
            )

    async def _retire_locked(
        self, version: LiveVersion, actor: Actor, reason: str, metrics: Mapping[str, Any] = {}
    ) -> LiveVersion:
        live = await self._commit(
            version.name, S.RETIRED, EventKind.RETIRE, actor, reason, metrics=metrics
        )
        if self._canary is not None and self._canary.name == version.name:
            self._canary = None
        await self._trim()
        log.info("retired %s: %s", version.name, reason)
        return live

    async def _fail(self, row: store.VersionRow, error: str, actor: Actor) -> None:
        log.error(
            "candidate %s failed to load; %s keeps serving: %s", row.name, self.serving.name, error
        )

        def write(s: Session) -> None:
            store.transition(s, row.name, S.FAILED, error=error)
            store.record_event(s, EventKind.FAIL, row.id, actor, error[:2000])

        await self._db(write)

    async def _commit(
        self,
        name: str,
        target: VersionStatus,
        kind: EventKind,
        actor: Actor,
        reason: str,
        *,
        previous: LiveVersion | None = None,
        metrics: Mapping[str, Any] | None = None,
        retire: LiveVersion | None = None,
    ) -> LiveVersion:
        """One transaction: the status change(s) and the event."""

        def write(s: Session) -> store.VersionRow:
            if retire is not None:
                store.transition(s, retire.name, S.RETIRED)
            row = store.transition(s, name, target)
            store.record_event(
                s, kind, row.id, actor, reason,
                previous_version_id=previous.id if previous else None, metrics=metrics,
            )  # fmt: skip
            return row

        live = LiveVersion.of(await self._db(write))
        if name in self._loaded:  # keep the status current; never list an unloaded one
            self._loaded[name] = live
        return live

    async def _consolidate(self, version: LiveVersion) -> None:
        """Merged mode: take the serving version into the engine's weights."""
        try:
            timings = await self._engine.set_weights(version.name)
        except EngineError as e:
            log.error("merging %s into the weights failed (it keeps serving as an adapter): %s",
                      version.name, e)  # fmt: skip
            return
        if not timings:
            return
        async with self._lock:
            await self._trim()

        def write(s: Session) -> None:
            store.record_event(
                s, EventKind.SWAP, version.id, Actor.SYSTEM,
                f"engine weights are now {version.name}",
                metrics={k: round(v, 4) for k, v in timings.items()},
            )  # fmt: skip

        await self._db(write)

    # -- polling and the canary rule ----------------------------------------------------

    async def poll_once(self) -> None:
        """Catch up with the database, admit missed candidates, apply the canary rule."""
        rows = await self._db(lambda s: store.versions(s, [S.SERVING, S.CANDIDATE]))
        serving = [r for r in rows if r.status is S.SERVING]
        if serving and self._serving is not None and serving[-1].name != self._serving.name:
            await self._adopt(serving[-1])
        await self._admit_waiting(Actor.SYSTEM, rows)
        await self.evaluate_canary()

    async def _adopt(self, row: store.VersionRow) -> None:
        """Another process (e.g. `loopchat policy` with the server unreachable) changed
        which version serves in the database; follow it."""
        async with self._lock:
            try:
                live = await self._load(LiveVersion.of(row))
            except EngineError as e:
                log.error("cannot load %s that the database says serves: %s", row.name, e)
                return
            if self._serving is not None:
                self._loaded[self._serving.name] = _with_status(self._serving, S.RETIRED)
            self._serving = live
            if self._canary is not None and self._canary.name == live.name:
                self._canary = None
            log.info("the database says %s serves; following it", live.name)
        if self.config.swap_mode is SwapMode.MERGED:
            self._spawn(self._consolidate(live))

    async def _admit_waiting(
        self, actor: Actor, rows: list[store.VersionRow] | None = None
    ) -> None:
        if rows is None:
            rows = await self._db(lambda s: store.versions(s, [S.CANDIDATE]))
        candidates = [r for r in rows if r.status is S.CANDIDATE]
        if candidates:
            await self.admit(candidates[-1].name, actor)  # the newest; it supersedes the rest
            for r in candidates[:-1]:
                async with self._lock:
                    await self._retire_locked(
                        LiveVersion.of(r), actor, f"superseded by {candidates[-1].name}"
                    )

    async def evaluate_canary(self) -> Decision | None:
        canary, serving = self._canary, self._serving
        if canary is None or serving is None:
            return None
        evidence = self.config.evidence
        (matches, screening), thumb_screening = await self._db(
            lambda s: (store.screened_matches(s, evidence), store.screened_thumbs(s, evidence))
        )
        thumbs = thumb_screening.per_version()
        rule = self.config.rule
        h2h = head_to_head(matches, canary.name, serving.name, rule.level)
        decision = decide(
            rule, h2h, thumbs.get(canary.name, (0, 0)), thumbs.get(serving.name, (0, 0))
        )
        decision.metrics.update(
            screening_metrics(screening, canary.name, serving.name, thumb_screening)
        )
        self.last_decision = decision
        if self._canary is None or self._canary.name != canary.name:
            return decision  # changed while we read the votes
        if decision.verdict is Verdict.PROMOTE and self.config.auto_promote:
            await self.promote(canary.name, Actor.RULE, decision.reason, decision.metrics)
        elif decision.verdict is Verdict.RETIRE:
            async with self._lock:
                if self._canary is not None and self._canary.name == canary.name:
                    await self._retire_locked(canary, Actor.RULE, decision.reason, decision.metrics)
        return decision

    async def run_forever(self) -> None:
        while True:
            await asyncio.sleep(self.config.poll_seconds)
            try:
                await self.poll_once()
            except Exception:  # keep polling; the next tick may succeed
                log.exception("policy poll failed")

    # -- helpers ------------------------------------------------------------------------

    async def _load(self, version: LiveVersion) -> LiveVersion:
        if version.name not in self._engine.loaded_versions():
            await self._engine.load_version(version.spec())
        self._loaded[version.name] = version
        return version

    async def _trim(self) -> None:
        """Unload retired versions beyond the newest `retain` (v0, the serving version, the
        canary and the version in the engine's weights always stay)."""
        keep = {self.serving.name, self._engine.weights_version()}
        if self._canary is not None:
            keep.add(self._canary.name)
        retired = [
            v for v in self._loaded.values()
            if v.kind is not VersionKind.BASE and v.name != self.serving.name
            and (self._canary is None or v.name != self._canary.name)
        ]  # fmt: skip
        retired.sort(key=lambda v: v.id, reverse=True)
        for v in retired[self.config.retain :]:
            if v.name in keep:
                continue
            self._loaded.pop(v.name, None)
            try:
                await self._engine.unload_version(v.name)
            except EngineError as e:
                log.warning("unloading %s: %s", v.name, e)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def settle(self) -> None:
        """Wait for background admissions and weight swaps (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def _db(self, fn: Any) -> Any:
        return await in_session(self._sessions, fn)


def _with_status(v: LiveVersion, status: VersionStatus) -> LiveVersion:
    return LiveVersion(v.id, v.name, v.kind, status, v.artifact_uri, v.created_at)
