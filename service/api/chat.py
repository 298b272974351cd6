"""POST /v1/chat/completions (JSON or SSE)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from service.api.cancellation import cancel_on_disconnect
from service.api.deps import ChatDep, RuntimeDep, UserDep
from service.api.openapi import CALLER, errors
from service.chat.service import ChatResult, ChatService, ChoiceDelta, PreparedChat
from service.errors import from_exception
from service.protocol.chat import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    Choice,
    ChunkChoice,
    DeltaMessage,
    Usage,
)
from service.runtime import Lease

router = APIRouter(tags=["chat"], responses=CALLER)


def usage_of(result: ChatResult) -> Usage:
    return Usage(
        prompt_tokens=result.prompt_tokens,
        completion_tokens=result.completion_tokens,
        total_tokens=result.prompt_tokens + result.completion_tokens,
    )


@router.post("/v1/chat/completions", response_model=ChatCompletion, responses=errors(400, 404, 429))
async def chat_completions(
    body: ChatCompletionRequest,
    user: UserDep,
    chat: ChatDep,
    runtime: RuntimeDep,
    request: Request,
) -> JSONResponse | StreamingResponse:
    lease = runtime.hold_generations(user.user_id, body.n)
    try:
        prepared = chat.prepare(body, source="api", user_id=user.user_id, may_pin=user.may_pin)
        headers = {"X-Policy-Version": prepared.public_model}
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            stream = StreamingResponse(
                sse_stream(chat, prepared, include_usage, lease),
                media_type="text/event-stream",
                headers={**headers, "Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
            lease = None  # the stream holds it now
            return stream
        result = await cancel_on_disconnect(request, chat.complete(prepared))
    finally:
        if lease is not None:
            lease.release()
    completion = ChatCompletion(
        id=prepared.id,
        created=prepared.created,
        model=prepared.public_model,
        choices=[
            Choice(
                index=i,
                message=AssistantMessage(content=c.text),
                finish_reason=c.finish_reason,
                generation_id=prepared.generation_ids[i],
            )
            for i, c in enumerate(result.choices)
        ],
        usage=usage_of(result),
    )
    return JSONResponse(completion.model_dump(mode="json"), headers=headers)


def _event(payload: dict[str, object] | str) -> str:
    data = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
    return f"data: {data}\n\n"


async def sse_stream(
    chat: ChatService, p: PreparedChat, include_usage: bool, lease: Lease | None = None
) -> AsyncIterator[str]:
    """OpenAI's chunk stream. Errors travel as a `data:` event; `[DONE]` always ends it.
    `lease`: the caller's generation slots, freed when the stream ends however it ends."""

    def chunk(choices: list[ChunkChoice], usage: Usage | None = None) -> str:
        c = ChatCompletionChunk(
            id=p.id, created=p.created, model=p.public_model, choices=choices, usage=usage
        )
        return _event(c.model_dump(mode="json", exclude_none=True))

    # Content deltas are most of the stream: render them from a prefix built once, not
    # through a pydantic model per token (same JSON as `chunk` would give).
    head = json.dumps(
        {
            "id": p.id,
            "object": "chat.completion.chunk",
            "created": p.created,
            "model": p.public_model,
        },
        separators=(",", ":"),
    )[:-1]

    def content(index: int, text: str) -> str:
        delta = json.dumps({"content": text}, separators=(",", ":"))
        return f'data: {head},"choices":[{{"index":{index},"delta":{delta}}}]}}\n\n'

    try:
        await chat.begin(p)  # the ids in the first chunk exist before the client sees them
        yield chunk(
            [
                ChunkChoice(
                    index=i, delta=DeltaMessage(role="assistant", content=""), generation_id=g
                )
                for i, g in enumerate(p.generation_ids)
            ]
        )
        async for ev in chat.stream(p):
            if isinstance(ev, ChoiceDelta):
                if ev.text:
                    yield content(ev.index, ev.text)
                if ev.finish_reason is not None:
                    yield chunk(
                        [
                            ChunkChoice(
                                index=ev.index, delta=DeltaMessage(), finish_reason=ev.finish_reason
                            )
                        ]
                    )
            elif include_usage:
                yield chunk([], usage_of(ev))
    except Exception as e:  # the status line is sent: the error becomes an event
        _, body = from_exception(e)
        yield _event(body)
    finally:
        if lease is not None:
            lease.release()
    yield _event("[DONE]")
