"""WS /v1/ws/chat: replies token by token; two side by side for a comparison.

The connection is authenticated once, at connect, like the HTTP API (session cookie,
or `Authorization: Bearer` from clients that can set headers).

Client frames (JSON):
  {"type": "chat", "messages": [...], "model"?, "temperature"?, ..., "n"?, "conversation_id"?}
      with a conversation id, the conversation is stored as these messages + the reply
  {"type": "compare", "messages": [...], "temperature"?, ...}   two replies, A and B
  {"type": "vote", "comparison_id": "cmp-...", "choice": "a"|"b"|"tie"|"both_bad", "reason"?}
      accepted at any time, also while the two replies are still streaming
  {"type": "stop"}                       stop the reply (or both) being streamed
Server frames:
  {"type": "start", "generation_ids": [...], "model": "loopchat@v0"}
  {"type": "comparison", "id": "cmp-...", "a": {"generation_id"}, "b": {"generation_id"}}
  {"type": "delta", "index": 0, "content": "...", "side"?: "a"|"b"}
  {"type": "done", "choices": [{"index", "generation_id", "finish_reason"}], "usage": {...},
   "side"?: "a"|"b"}                     a comparison sends one per side
  {"type": "voted", "comparison": {...}} the stored vote, with both versions revealed
  {"type": "stopped", "generation_ids": [...]}  stopped and stored as cut off
  {"type": "error", "error": {"message", "type", "code", "param"}}
One connection carries many requests, one stream at a time. Bad frames get an error
frame and the connection stays open.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from pydantic import BaseModel, Field, ValidationError

from service.api.chat import usage_of
from service.api.comparisons import view_out
from service.api.deps import authenticate, get_runtime
from service.chat.service import ChatResult, ChatService, ChoiceDelta, PreparedChat
from service.conversations import store as conversations
from service.errors import (
    BadRequest,
    Forbidden,
    InvalidValue,
    LoopchatError,
    Unauthorized,
    from_exception,
)
from service.feedback import comparisons
from service.feedback.comparisons import ComparisonPlan, ComparisonService
from service.identity.store import Identity
from service.protocol.chat import ChatCompletionRequest
from service.protocol.feedback import ComparisonRequest, VoteRequest
from service.runtime import Lease, Runtime
from service.validation import describe_errors, first_param
from store.db.session import session_scope

router = APIRouter(tags=["chat"])

MAX_FRAME_BYTES = 1_000_000
FRAME_TYPES = ("chat", "compare", "vote", "stop")
POLICY_VIOLATION = 1008
TRY_AGAIN_LATER = 1013
GOING_AWAY = 1001


class VoteFrame(VoteRequest):
    comparison_id: str


class ChatFrame(ChatCompletionRequest):
    conversation_id: str | None = Field(
        None, max_length=64, description="Store the history and the reply in this conversation."
    )


class Sender:
    """Serializes sends: the stream task and vote replies share one socket."""

    def __init__(self, ws: WebSocket):
        self._ws = ws
        self._lock = asyncio.Lock()

    async def send(self, frame: dict[str, Any]) -> None:
        async with self._lock:
            await self._ws.send_json(frame)

    async def error(self, e: BaseException) -> None:
        _, body = from_exception(e)
        await self.send({"type": "error", **body})


@router.websocket("/v1/ws/chat")
async def ws_chat(ws: WebSocket) -> None:
    await ws.accept()
    out = Sender(ws)
    runtime = get_runtime(ws)
    try:
        user = await authenticate(ws)
        if "authorization" not in ws.headers:  # the browser's cookie: whose page is this?
            check_origin(ws, runtime.settings.allowed_origins)
    except LoopchatError as e:
        await out.error(e)
        await ws.close(code=POLICY_VIOLATION, reason="not authenticated")
        return
    try:
        socket = runtime.hold_socket(user.user_id)
    except LoopchatError as e:
        await out.error(e)
        await ws.close(code=TRY_AGAIN_LATER, reason="too many sockets")
        return
    current: asyncio.Task[None] | None = None
    idle = _Idle()
    watcher = asyncio.create_task(
        _watch(ws, out, runtime, idle, lambda: current is not None and not current.done(), socket)
    )
    try:
        while True:
            raw = await ws.receive_text()
            idle.touch()
            try:
                frame = _parse(raw)
                kind = frame.pop("type")
                if kind == "stop":
                    if current is not None:
                        current.cancel()
                    continue
                if kind == "vote":
                    await _vote(out, runtime, user, _model(VoteFrame, frame))
                    continue
                if current is not None and not current.done():
                    if current.cancelling():  # stopped: let it store what it has, then go on
                        with contextlib.suppress(asyncio.CancelledError, Exception):
                            await current
                    else:  # it may have sent its last frame and be returning
                        await asyncio.wait({current}, timeout=0.2)
                if current is not None and not current.done():
                    raise BadRequest("a reply is still streaming; send a stop frame first")
                if kind == "chat":
                    chat = runtime.chat_service()
                    req = _model(ChatFrame, frame)
                    conv = req.conversation_id
                    async with _held(runtime.hold_generations(user.user_id, req.n)) as lease:
                        prepared = chat.prepare(
                            req,
                            source="ws",
                            user_id=user.user_id,
                            conversation_id=conv,
                            may_pin=user.may_pin,
                        )
                        saver = None
                        if conv is not None:
                            saver = _conversation_saver(runtime, user.user_id, conv, req)
                            await saver(None, None)  # the prompt is kept if the reply fails
                        current = lease.run(_stream(out, chat, prepared, saver))
                else:
                    service = runtime.comparison_service()
                    pair = _model(ComparisonRequest, frame)
                    async with _held(runtime.hold_generations(user.user_id, 2)) as lease:
                        plan = await service.start(pair, user.user_id, source="comparison")
                        current = lease.run(_compare(out, service, plan))
            except Exception as e:  # LoopchatErrors say what was wrong; others stay generic
                await out.error(e)
    except WebSocketDisconnect:
        pass
    except RuntimeError:  # the watcher closed the socket while this waited for a frame
        pass
    finally:
        watcher.cancel()
        if current is not None and not current.done():
            current.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await current
        if socket is not None:
            socket.release()


class _Task:
    """Hands a held lease to the task it starts; freed with the task, or here if none ran."""

    def __init__(self, lease: Lease | None):
        self.lease = lease
        self.started = False

    def run(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        lease = self.lease

        async def holding() -> None:
            try:
                await work
            finally:
                if lease is not None:
                    lease.release()

        self.started = True
        return asyncio.create_task(holding())


@contextlib.asynccontextmanager
async def _held(lease: Lease | None) -> AsyncIterator[_Task]:
    task = _Task(lease)
    try:
        yield task
    finally:
        if not task.started and lease is not None:
            lease.release()


class _Idle:
    """When the socket last received a frame (monotonic seconds)."""

    def __init__(self) -> None:
        self.last = time.monotonic()

    def touch(self) -> None:
        self.last = time.monotonic()


async def _watch(
    ws: WebSocket,
    out: Sender,
    runtime: Runtime,
    idle: _Idle,
    busy: Callable[[], bool],
    socket: Lease | None,
) -> None:
    """Close the socket when its credential stops being valid (a revoked key, an ended
    session) or when it has been idle, with no reply streaming, past the idle timeout.
    Checked every `ws_recheck_seconds`; the error frame says which. Each check also
    renews the socket's slot, which lapses on its own if this process dies."""
    settings = runtime.settings
    with contextlib.suppress(Exception):  # the socket may be gone already: nothing to do
        while True:
            await asyncio.sleep(settings.ws_recheck_seconds)
            if socket is not None:
                await asyncio.to_thread(socket.renew, runtime.socket_lease_s)
            if busy():
                idle.touch()
            elif time.monotonic() - idle.last > settings.ws_idle_timeout_seconds:
                await out.error(
                    LoopchatError(
                        f"closed after {settings.ws_idle_timeout_seconds:g} s without a frame",
                        code="idle_timeout",
                    )
                )
                await ws.close(code=GOING_AWAY, reason="idle")
                return
            try:
                await authenticate(ws)
            except Unauthorized as e:
                await out.error(e)
                await ws.close(code=POLICY_VIOLATION, reason="credential revoked")
                return


def check_origin(ws: WebSocket, allowed: str) -> None:
    """Forbidden unless the handshake's Origin is this server's own (the Host it was sent
    to) or one of `allowed` (comma-separated). Browsers send the cookie on a WebSocket
    from any page and the same-origin policy does not cover WebSockets, so without this a
    page on another site could chat and vote as its visitor. A handshake without Origin is
    not from a browser page, and a non-browser client holding the cookie is its owner."""
    origin = ws.headers.get("origin")
    if origin is None:
        return
    own = {f"{scheme}://{ws.headers.get('host', '')}" for scheme in ("http", "https")}
    extra = {o.strip().rstrip("/") for o in allowed.split(",") if o.strip()}
    if origin.rstrip("/") not in own | extra:
        raise Forbidden(
            f"a page from {origin[:100]} may not open this socket with your session; "
            "allowed: this server's own pages (LOOPCHAT_ALLOWED_ORIGINS adds others)",
            code="origin_not_allowed",
        )


def _parse(raw: str) -> dict[str, Any]:
    if len(raw) > MAX_FRAME_BYTES:
        raise BadRequest(f"frames are limited to {MAX_FRAME_BYTES} bytes")
    try:
        frame = json.loads(raw)
    except json.JSONDecodeError as e:
        raise BadRequest(f"frame is not valid JSON: {e.msg}") from e
    if not isinstance(frame, dict) or frame.get("type") not in FRAME_TYPES:
        raise BadRequest(f"frame must be a JSON object with type one of {', '.join(FRAME_TYPES)}")
    return frame


M = TypeVar("M", bound=BaseModel)


def _model(cls: type[M], frame: dict[str, Any]) -> M:
    """Validate a frame like the HTTP API validates a body: 422-style invalid_value."""
    try:
        return cls.model_validate(frame)
    except ValidationError as e:
        errors = e.errors(include_url=False)
        raise InvalidValue(describe_errors(errors), param=first_param(errors)) from e


async def _vote(out: Sender, runtime: Runtime, user: Identity, frame: VoteFrame) -> None:
    runtime.take_vote(user.user_id)

    def store() -> dict[str, Any]:
        with session_scope(runtime.sessions) as s:
            view = comparisons.vote(
                s,
                user.user_id,
                frame.comparison_id,
                frame.choice,
                frame.reason,
                runtime.registry.alias,
            )
        return view_out(view).model_dump(mode="json")

    await out.send({"type": "voted", "comparison": await asyncio.to_thread(store)})


def _done(p: PreparedChat, result: ChatResult) -> dict[str, Any]:
    choices = [
        {"index": i, "generation_id": p.generation_ids[i], "finish_reason": c.finish_reason}
        for i, c in enumerate(result.choices)
    ]
    return {"type": "done", "choices": choices, "usage": usage_of(result).model_dump()}


Finish = Callable[[], Awaitable[None]]


async def _nothing() -> None:
    return None


@contextlib.asynccontextmanager
async def _reporting(
    out: Sender, generation_ids: list[str], finish: Finish = _nothing
) -> AsyncIterator[None]:
    """How a stream task ends: stopped (cancelled), gone (disconnect) or an error frame.

    `finish` runs before the last frame, so a client that sends its next request as soon
    as it sees that frame finds this one completely done.
    """
    try:
        yield
    except asyncio.CancelledError:
        await finish()
        with contextlib.suppress(Exception):
            await out.send({"type": "stopped", "generation_ids": generation_ids})
        raise
    except WebSocketDisconnect:
        await finish()
        return
    except Exception as e:
        await finish()
        with contextlib.suppress(Exception):
            await out.error(e)


Saver = Callable[[str | None, str | None], Awaitable[None]]


def _conversation_saver(
    runtime: Runtime, user_id: str, conversation_id: str, req: ChatCompletionRequest
) -> Saver:
    """Stores the request's history, then (reply, generation id) when it ends."""
    history = [(m.role, m.text()) for m in req.messages]

    async def save(reply: str | None, generation_id: str | None) -> None:
        def write() -> None:
            with session_scope(runtime.sessions) as s:
                conversations.save_turn(s, conversation_id, user_id, history, reply, generation_id)

        await asyncio.to_thread(write)

    return save


async def _stream(
    out: Sender, chat: ChatService, p: PreparedChat, save: Saver | None = None
) -> None:
    text: list[str] = []  # choice 0, for the conversation

    async def finish() -> None:
        # Store the reply in the conversation (a stopped one as far as it got, like its
        # generation row) before the client hears that it ended.
        if save is not None and p.begun:
            with contextlib.suppress(Exception):
                await save("".join(text), p.generation_ids[0])

    async with _reporting(out, p.generation_ids, finish):
        await chat.begin(p)
        await out.send(
            {"type": "start", "generation_ids": p.generation_ids, "model": p.public_model}
        )
        async for ev in chat.stream(p):
            if isinstance(ev, ChoiceDelta):
                if ev.text:
                    if ev.index == 0:
                        text.append(ev.text)
                    await out.send({"type": "delta", "index": ev.index, "content": ev.text})
            else:
                await finish()
                await out.send(_done(p, ev))


async def _compare(out: Sender, service: ComparisonService, plan: ComparisonPlan) -> None:
    async with _reporting(out, [plan.a.id, plan.b.id]):
        await out.send(
            {
                "type": "comparison",
                "id": plan.id,
                "a": {"generation_id": plan.a.id},
                "b": {"generation_id": plan.b.id},
            }
        )
        async for side, ev in service.stream(plan):
            if isinstance(ev, ChoiceDelta):
                if ev.text:
                    await out.send({"type": "delta", "side": side, "index": 0, "content": ev.text})
            else:
                await out.send({**_done(plan.side(side), ev), "side": side})
