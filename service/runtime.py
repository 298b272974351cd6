"""The objects one server process owns, built once by the app's lifespan.

Routers reach them through the typed dependencies in `service.api.deps`, never through
an untyped `app.state` lookup.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from sqlalchemy import Engine as DbEngine
from sqlalchemy.orm import Session, sessionmaker

from service.chat.engines.base import Engine, Sampling
from service.chat.service import ChatService, Limits, PreparedChat
from service.chat.tokenizer import ChatTokenizer
from service.errors import NotReady, RateLimited
from service.feedback.comparisons import ComparisonService
from service.identity.auth import Authenticator
from service.identity.limits import LimitsStoreError, RateLimits, Rule, parse_rule
from service.identity.ratelimit import RateLimiter, retry_after_seconds
from service.identity.slots import MemorySlots, Slots
from service.identity.store import OPERATOR_USER_ID
from service.metrics import Metrics
from service.policies.registry import PolicyRegistry
from service.settings import Settings
from store.db import repository
from store.db.session import session_scope

log = logging.getLogger(__name__)


# A generation's slot frees itself after this even if its release never ran: longer than
# any reply takes (max_new_tokens at a few tokens a second on a busy CPU).
STREAM_LEASE_S = 900.0


@dataclass
class Lease:
    """Slots a caller holds (generations in flight, an open socket); `release` once."""

    slots: Slots
    key: str
    token: str
    cost: int
    done: bool = False

    def renew(self, ttl_s: float) -> None:
        if not self.done:
            self.slots.renew(self.key, self.token, self.cost, ttl_s)

    def release(self) -> None:
        if not self.done:
            self.done = True
            try:
                self.slots.give_back(self.key, self.token, self.cost)
            except LimitsStoreError as e:  # the lease expires on its own
                log.warning("could not free a slot of %s: %s", self.key, e)


@contextlib.contextmanager
def _limit_store() -> Iterator[None]:
    """A limit store that cannot be reached refuses (503) rather than letting through."""
    try:
        yield
    except LimitsStoreError as e:
        log.error("rate limit store unreachable: %s", e)
        raise NotReady("the rate limit store is unreachable; try again shortly") from None


class Phase(StrEnum):
    STARTING = "starting"
    READY = "ready"
    FAILED = "failed"
    STOPPING = "stopping"


class DbGenerationStore:
    """ChatService's GenerationStore on the database."""

    def __init__(self, sessions: sessionmaker[Session]):
        self._sessions = sessions

    def begin(self, records: Sequence[repository.GenerationRecord]) -> None:
        with session_scope(self._sessions) as s:
            repository.insert_generations(s, records)

    def finish(self, records: Sequence[repository.GenerationRecord]) -> None:
        with session_scope(self._sessions) as s:
            repository.finish_generations(s, records)


@dataclass
class Runtime:
    settings: Settings
    db: DbEngine
    sessions: sessionmaker[Session]
    read_sessions: sessionmaker[Session]  # for queries that write nothing (never block writers)
    engine: Engine
    registry: PolicyRegistry
    metrics: Metrics
    auth: Authenticator
    vote_limiter: RateLimiter
    pseudonym_secret: str
    rate_limits: RateLimits = field(default_factory=RateLimits)
    slots: Slots = field(default_factory=MemorySlots)
    phase: Phase = Phase.STARTING
    error: str | None = None
    chat: ChatService | None = None
    comparisons: ComparisonService | None = None
    _startup: asyncio.Task[None] | None = field(default=None, repr=False)
    _poller: asyncio.Task[None] | None = field(default=None, repr=False)

    def chat_service(self) -> ChatService:
        if self.chat is None:
            if self.phase is Phase.FAILED:
                raise NotReady("the model failed to load; see the server log")
            raise NotReady("the model is still loading; try again shortly")
        return self.chat

    def take_vote(self, user_id: str) -> None:
        """Spend one of the user's votes; RateLimited (429, Retry-After) when none is left."""
        wait = self.vote_limiter.take(user_id)
        if wait > 0:
            seconds = retry_after_seconds(wait)
            raise RateLimited(f"too many votes; try again in {seconds} s", retry_after_s=seconds)

    def charge_generation(self, p: PreparedChat, sides: int = 1) -> None:
        """Count a planned generation (a chat, or a comparison's `sides` at once) against
        its caller's requests and tokens per window: RateLimited (429, Retry-After) when
        either is spent. Tokens are the ones asked for (max_tokens per choice), so the
        budget bounds what a caller can make the engine do before it runs. The operator
        is not limited. Called in the event loop: the memory store answers at once; a
        Redis store adds a round trip per request."""
        if p.user_id is None or p.user_id == OPERATOR_USER_ID:
            return
        s = self.settings
        requests = parse_rule("generation_requests_per_user", s.generation_requests_per_user)
        tokens = parse_rule("generation_tokens_per_user", s.generation_tokens_per_user)
        self._take(requests, p.user_id, "generation requests per caller", sides)
        asked = sides * sum(x.max_tokens for x in p.samplings)
        self._take(tokens, p.user_id, "generation tokens per caller", asked)

    def hold_generations(self, user_id: str, count: int) -> Lease | None:
        """Hold `count` of the caller's generations-at-once (a chat's n choices, a
        comparison's two sides) until `release`: RateLimited (429) when they are taken.
        None for the operator, who is not limited."""
        limit = self.settings.generations_at_once_per_user
        return self._hold(
            "gen", user_id, limit, count, STREAM_LEASE_S,
            f"too many replies at once (at most {limit} generating per caller); "
            "wait for one to finish",
        )  # fmt: skip

    def hold_socket(self, user_id: str) -> Lease | None:
        """One of the caller's open chat WebSockets; renewed by the socket's watcher."""
        limit = self.settings.ws_connections_per_user
        return self._hold(
            "ws", user_id, limit, 1, self.socket_lease_s,
            f"too many open chat sockets (at most {limit} per caller); close one first",
        )  # fmt: skip

    @property
    def socket_lease_s(self) -> float:
        return 3 * self.settings.ws_recheck_seconds + 30.0

    def _hold(
        self, kind: str, user_id: str, limit: int, count: int, ttl_s: float, message: str
    ) -> Lease | None:
        if user_id == OPERATOR_USER_ID:
            return None
        key = f"{kind}:{user_id}"
        with _limit_store():
            token = self.slots.take(key, limit, count, ttl_s)
        if token is None:
            raise RateLimited(message, retry_after_s=1)
        return Lease(self.slots, key, token, count)

    def take_session_mint(self, address: str) -> None:
        """Count a new anonymous session against its client address and the whole service;
        RateLimited (429, Retry-After) when either is spent, NotReady (503) when the limit
        store cannot be reached. Blocking: call in a thread."""
        s = self.settings
        per_address = parse_rule("session_mints_per_address", s.session_mints_per_address)
        self._take(per_address, address, "new sessions from your address")
        service_wide = parse_rule("session_mints_global", s.session_mints_global)
        self._take(service_wide, "*", "new sessions on this server")

    def _take(self, rule: Rule, key: str, what: str, cost: int = 1) -> None:
        """Spend `cost` of `rule` for `key`: RateLimited saying `what` ran out, or NotReady
        when the limit store cannot be reached."""
        with _limit_store():
            wait = self.rate_limits.hit(rule, key, cost)
        if wait > 0:
            seconds = retry_after_seconds(wait)
            raise RateLimited(
                f"too many {what} ({rule.text}); try again in {seconds} s",
                retry_after_s=seconds,
            )

    def comparison_service(self) -> ComparisonService:
        self.chat_service()
        assert self.comparisons is not None  # set together with chat
        return self.comparisons

    def start_in_background(self) -> None:
        self._startup = asyncio.get_running_loop().create_task(self._start())

    async def wait_started(self) -> None:
        if self._startup is not None:
            await asyncio.shield(self._startup)

    async def _start(self) -> None:
        try:
            model_dir = self.settings.resolved_model_dir
            await asyncio.to_thread(self._register_base)
            log.info("loading %s with the %s engine", model_dir, self.engine.info().name)
            await self.engine.start()
            tokenizer = await asyncio.to_thread(ChatTokenizer.from_dir, model_dir)
            await self.registry.start()
            chat = ChatService(
                self.engine,
                tokenizer,
                self.registry,
                DbGenerationStore(self.sessions),
                self._limits(),
                self.metrics,
                charge=self.charge_generation,
            )
            self.comparisons = ComparisonService(
                chat, self.registry, self.sessions, self.settings.comparison_temperature
            )
            self.chat = chat
            self.phase = Phase.READY
            self._poller = asyncio.get_running_loop().create_task(self.registry.run_forever())
            log.info("ready: serving %s", self.registry.public_name(self.registry.serving))
        except Exception as e:
            self.phase = Phase.FAILED
            self.error = str(e)
            log.error("startup failed: %s", e, exc_info=True)

    def _register_base(self) -> None:
        model_dir = self.settings.resolved_model_dir
        if not (model_dir / "config.json").is_file():
            raise FileNotFoundError(
                f"no model at {model_dir}: run `loopchat model prepare` or set LOOPCHAT_MODEL"
            )
        with session_scope(self.sessions) as s:
            repository.ensure_base_version(s, model_dir)

    def _limits(self) -> Limits:
        st = self.settings
        return Limits(
            max_prompt_tokens=st.max_prompt_tokens,
            max_new_tokens=st.max_new_tokens,
            max_model_len=self.engine.info().max_model_len,
            max_messages=st.max_messages,
            max_n=st.max_n,
            max_stop_sequences=st.max_stop_sequences,
            defaults=Sampling(
                temperature=st.default_temperature,
                top_p=st.default_top_p,
                max_tokens=st.default_max_tokens,
            ),
        )

    async def stop(self) -> None:
        self.phase = Phase.STOPPING
        if self._startup is not None and not self._startup.done():
            self._startup.cancel()
        if self._poller is not None:
            self._poller.cancel()
        await self.registry.settle()
        if self.chat is not None:
            await self.chat.drain()
        await self.engine.shutdown()
        self.db.dispose()
