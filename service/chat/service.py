"""ChatService: validate a chat request against limits, run it on the engine, record it.

No FastAPI here. Routers call `prepare` (which raises `LoopchatError`s for bad input,
before anything reaches the engine) and then `stream` or `complete`. Every choice is
one generation row whose id the caller gets back. The row is written (status
`streaming`) before the id is first sent, so any id a client has seen exists and can be
voted on, even mid-stream; it is finished with the text, token counts and status when
the reply ends. A stream the caller drops is finished as `cut_off` with the text
produced so far.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Protocol

from service.chat.engines.base import Delta, Engine, EngineUnavailable, Sampling
from service.chat.tokenizer import ChatTokenizer
from service.errors import BadRequest, ContextTooLong, EngineFailure, NotReady
from service.metrics import Metrics
from service.policies.registry import LiveVersion, PolicyRegistry
from service.protocol.chat import ChatCompletionRequest, SamplingFields
from store.db.models import GenerationStatus
from store.db.repository import GenerationRecord

log = logging.getLogger(__name__)

# A prompt longer than this many characters per allowed token is refused before tokenizing.
MAX_CHARS_PER_TOKEN = 32


@dataclass(frozen=True)
class Limits:
    max_prompt_tokens: int
    max_new_tokens: int
    max_model_len: int
    max_messages: int
    max_n: int
    max_stop_sequences: int
    defaults: Sampling = field(default_factory=Sampling)


@dataclass
class PreparedChat:
    request_id: str
    version: LiveVersion
    public_model: str
    messages: list[dict[str, str]]
    prompt_ids: list[int]
    samplings: list[Sampling]
    generation_ids: list[str]
    source: str
    user_id: str | None = None
    conversation_id: str | None = None
    created: int = field(default_factory=lambda: int(time.time()))
    begun: bool = False  # its generation rows are stored (status streaming)

    @property
    def id(self) -> str:
        return self.generation_ids[0]


@dataclass
class ChoiceDelta:
    index: int
    text: str
    finish_reason: str | None = None


@dataclass
class ChoiceResult:
    text: str = ""
    tokens: int = 0
    finish_reason: str | None = None
    ttft_ms: float | None = None
    latency_ms: float = 0.0


@dataclass
class ChatResult:
    prepared: PreparedChat
    choices: list[ChoiceResult]

    @property
    def prompt_tokens(self) -> int:
        return len(self.prepared.prompt_ids)

    @property
    def completion_tokens(self) -> int:
        return sum(c.tokens for c in self.choices)


class GenerationStore(Protocol):
    """Where generation rows go (the runtime writes them to the database)."""

    def begin(self, records: Sequence[GenerationRecord]) -> None: ...

    def finish(self, records: Sequence[GenerationRecord]) -> None: ...


def new_generation_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


class ChatService:
    def __init__(
        self,
        engine: Engine,
        tokenizer: ChatTokenizer,
        registry: PolicyRegistry,
        store: GenerationStore,
        limits: Limits,
        metrics: Metrics,
        charge: Callable[[PreparedChat, int], None] | None = None,
    ):
        self._engine = engine
        # counts a checked request (times its sides) against its caller's generation
        # budget before anything is stored or generated; raises RateLimited when spent
        self._charge = charge or (lambda p, sides: None)
        self._tok = tokenizer
        self._registry = registry
        self._store = store
        self._limits = limits
        self._metrics = metrics
        self._background: set[asyncio.Task[None]] = set()

    # -- validation ---------------------------------------------------------------------

    def prepare(
        self,
        req: ChatCompletionRequest,
        *,
        source: str = "api",
        user_id: str | None = None,
        conversation_id: str | None = None,
        version: LiveVersion | None = None,
        sides: int = 1,
        may_pin: bool = False,
    ) -> PreparedChat:
        """Check `req` and plan it; `version` overrides the one `req.model` names. `sides`:
        how many times it will run (a comparison's two sides are charged together);
        `may_pin`: the caller may name versions other than the serving one."""
        version = version or self._registry.resolve(req.model, user_id, may_pin)
        if not self._engine.ready:
            raise NotReady("the model is still loading; try again shortly")
        lim = self._limits
        if req.n > lim.max_n:
            raise BadRequest(f"n must be at most {lim.max_n}", param="n")
        if len(req.messages) > lim.max_messages:
            raise BadRequest(f"at most {lim.max_messages} messages are allowed", param="messages")
        if len(req.stop_list()) > lim.max_stop_sequences:
            raise BadRequest(f"at most {lim.max_stop_sequences} stop sequences", param="stop")
        self.check_max_tokens(req)
        messages = req.template_messages()
        prompt_ids = self._encode_checked(messages)
        prepared = PreparedChat(
            request_id=f"req-{uuid.uuid4().hex}",
            version=version,
            public_model=self._registry.public_name(version),
            messages=messages,
            prompt_ids=prompt_ids,
            samplings=[req.to_sampling(lim.defaults, i) for i in range(req.n)],
            generation_ids=[new_generation_id() for _ in range(req.n)],
            source=source,
            user_id=user_id,
            conversation_id=conversation_id,
        )
        self._check_context(prepared)
        self._charge(prepared, sides)
        return prepared

    def variant(self, p: PreparedChat, version: LiveVersion, seed_offset: int) -> PreparedChat:
        """The same prompt for another version or seed (the other side of a comparison)."""
        samplings = [
            replace(s, seed=None if s.seed is None else (s.seed + seed_offset) % (2**63))
            for s in p.samplings
        ]
        other = replace(
            p,
            request_id=f"req-{uuid.uuid4().hex}",
            version=version,
            public_model=self._registry.public_name(version),
            samplings=samplings,
            generation_ids=[new_generation_id() for _ in samplings],
            begun=False,
        )
        return other

    def pending_records(self, p: PreparedChat) -> list[GenerationRecord]:
        """The rows `begin` writes; callers that store more in one transaction use these."""
        return self._records(p, [ChoiceResult() for _ in p.samplings], time.perf_counter())

    async def begin(self, p: PreparedChat) -> None:
        """Store the generation rows as `streaming` (before their ids reach the client)."""
        if not p.begun:
            await asyncio.to_thread(self._store.begin, self.pending_records(p))
            p.begun = True

    def check_max_tokens(self, req: SamplingFields) -> None:
        asked = req.requested_max_tokens()
        if asked is not None and asked > self._limits.max_new_tokens:
            raise BadRequest(
                f"max_tokens is {asked}, above this server's cap of {self._limits.max_new_tokens}",
                param="max_tokens",
            )

    def _encode_checked(self, messages: list[dict[str, str]]) -> list[int]:
        lim = self._limits
        if not any(m["content"].strip() for m in messages):
            raise BadRequest("messages must contain some text", param="messages")
        chars = sum(len(m["content"]) for m in messages)
        if chars > lim.max_prompt_tokens * MAX_CHARS_PER_TOKEN:
            raise ContextTooLong(
                f"the prompt is {chars} characters, far over the limit of "
                f"{lim.max_prompt_tokens} tokens",
                param="messages",
            )
        ids = self._tok.encode_chat(messages)
        if len(ids) > lim.max_prompt_tokens:
            raise ContextTooLong(
                f"the prompt is {len(ids)} tokens; the limit is {lim.max_prompt_tokens}",
                param="messages",
            )
        return ids

    def _check_context(self, p: PreparedChat) -> None:
        longest = max(s.max_tokens for s in p.samplings)
        if len(p.prompt_ids) + longest > self._limits.max_model_len:
            raise ContextTooLong(
                f"prompt ({len(p.prompt_ids)} tokens) plus max_tokens ({longest}) exceeds the "
                f"model's context of {self._limits.max_model_len} tokens",
                param="max_tokens",
            )

    # -- generation ---------------------------------------------------------------------

    async def stream(self, p: PreparedChat) -> AsyncGenerator[ChoiceDelta | ChatResult, None]:
        """Yield text deltas of every choice as they come, then one ChatResult.

        The result is yielded only after the generations are finished in storage, so a
        caller that sees the end of the stream reads the final text back.
        """
        await self.begin(p)
        start = time.perf_counter()
        results = [ChoiceResult() for _ in p.samplings]
        queue: asyncio.Queue[tuple[int, Delta | BaseException]] = asyncio.Queue()
        tasks = [asyncio.create_task(self._pump(i, p, s, queue)) for i, s in enumerate(p.samplings)]
        done = 0
        try:
            while done < len(tasks):
                index, item = await queue.get()
                if isinstance(item, EngineUnavailable):
                    raise NotReady(
                        "the model stopped while generating this reply and is starting "
                        "again; try again shortly"
                    ) from item
                if isinstance(item, BaseException):
                    raise EngineFailure("the model failed while generating a reply") from item
                r = results[index]
                now_ms = (time.perf_counter() - start) * 1000
                if r.ttft_ms is None and (item.text or item.num_tokens):
                    r.ttft_ms = now_ms
                r.text += item.text
                r.tokens += item.num_tokens
                if item.finish_reason is not None:
                    r.finish_reason = item.finish_reason
                    r.latency_ms = now_ms
                    done += 1
                if item.text or item.finish_reason:
                    yield ChoiceDelta(index, item.text, item.finish_reason)
        except BaseException as e:
            for t in tasks:
                t.cancel()
            failed = isinstance(e, EngineFailure)
            self._record_later(p, results, start, failed)
            raise
        await asyncio.to_thread(self._store.finish, self._records(p, results, start))
        self._metrics.observe_chat(p.version.name, p.source, results)
        yield ChatResult(p, results)

    async def complete(self, p: PreparedChat) -> ChatResult:
        async with contextlib.aclosing(self.stream(p)) as events:
            async for ev in events:
                if isinstance(ev, ChatResult):
                    return ev
        raise EngineFailure("the model produced no result")

    async def _pump(
        self,
        index: int,
        p: PreparedChat,
        sampling: Sampling,
        queue: asyncio.Queue[tuple[int, Delta | BaseException]],
    ) -> None:
        try:
            gen = self._engine.generate(
                p.version.name, p.prompt_ids, sampling, f"{p.generation_ids[index]}"
            )
            async with contextlib.aclosing(gen):  # type: ignore[type-var]
                async for delta in gen:
                    queue.put_nowait((index, delta))
        except Exception as e:  # EngineError or anything the engine raised: report it
            log.exception("generation %s failed", p.generation_ids[index])
            queue.put_nowait((index, e))

    def _records(
        self,
        p: PreparedChat,
        results: list[ChoiceResult],
        start: float,
        unfinished: GenerationStatus = GenerationStatus.STREAMING,
    ) -> list[GenerationRecord]:
        elapsed = (time.perf_counter() - start) * 1000
        out = []
        for i, r in enumerate(results):
            finished = r.finish_reason is not None
            out.append(
                GenerationRecord(
                    id=p.generation_ids[i],
                    request_id=p.request_id,
                    choice_index=i,
                    policy_version_id=p.version.id,
                    prompt=p.messages,
                    text=r.text,
                    sampling=asdict(p.samplings[i]),
                    status=GenerationStatus.COMPLETED if finished else unfinished,
                    finish_reason=r.finish_reason,
                    prompt_tokens=len(p.prompt_ids),
                    completion_tokens=r.tokens,
                    latency_ms=r.latency_ms if finished else elapsed,
                    ttft_ms=r.ttft_ms,
                    source=p.source,
                    user_id=p.user_id,
                    conversation_id=p.conversation_id,
                )
            )
        return out

    def _record_later(
        self, p: PreparedChat, results: list[ChoiceResult], start: float, failed: bool
    ) -> None:
        """Finish a cut-off request from a background task (the caller's task is cancelled)."""
        unfinished = GenerationStatus.ERROR if failed else GenerationStatus.CUT_OFF
        records = self._records(p, results, start, unfinished)
        self._metrics.observe_cutoff(p.version.name, p.source)

        async def write() -> None:
            try:
                await asyncio.to_thread(self._store.finish, records)
            except Exception:
                log.exception("could not store cut-off generations of %s", p.request_id)

        task = asyncio.get_running_loop().create_task(write())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def drain(self) -> None:
        """Wait for background writes (shutdown, tests)."""
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)
