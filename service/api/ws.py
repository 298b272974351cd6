"""WS /v1/ws/chat: stream replies token by token over a websocket.

Client frames (JSON):
  {"type": "chat", "messages": [...], "model"?, "temperature"?, ..., "n"?}
  {"type": "stop"}                       stop the reply being streamed
Server frames:
  {"type": "start", "generation_ids": [...], "model": "loopchat@v0"}
  {"type": "delta", "index": 0, "content": "..."}
  {"type": "done", "choices": [{"index", "generation_id", "finish_reason"}], "usage": {...}}
  {"type": "stopped", "generation_ids": [...]}  the reply was stopped and stored as cut off
  {"type": "error", "error": {"message", "type", "code", "param"}}
One connection carries many requests, one at a time. Bad frames get an error frame and
the connection stays open.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from pydantic import ValidationError

from service.api.chat import usage_of
from service.api.deps import get_runtime
from service.chat.service import ChatResult, ChatService, ChoiceDelta, PreparedChat
from service.errors import BadRequest, LoopchatError, from_exception
from service.protocol.chat import ChatCompletionRequest
from service.validation import describe_validation_error

router = APIRouter(tags=["chat"])

MAX_FRAME_BYTES = 1_000_000


@router.websocket("/v1/ws/chat")
async def ws_chat(ws: WebSocket) -> None:
    await ws.accept()
    runtime = get_runtime(ws)
    current: asyncio.Task[None] | None = None
    try:
        while True:
            raw = await ws.receive_text()
            try:
                frame = _parse(raw)
                if frame.get("type") == "stop":
                    if current is not None:
                        current.cancel()
                    continue
                if current is not None and not current.done():
                    raise BadRequest("a reply is still streaming; send a stop frame first")
                chat = runtime.chat_service()
                req = ChatCompletionRequest.model_validate(
                    {k: v for k, v in frame.items() if k != "type"}
                )
                prepared = chat.prepare(req, source="ws")
            except LoopchatError as e:
                await _send_error(ws, e)
                continue
            except ValidationError as e:
                await _send_error(ws, BadRequest(describe_validation_error(e)))
                continue
            current = asyncio.create_task(_stream(ws, chat, prepared))
    except WebSocketDisconnect:
        pass
    finally:
        if current is not None and not current.done():
            current.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await current


def _parse(raw: str) -> dict[str, Any]:
    if len(raw) > MAX_FRAME_BYTES:
        raise BadRequest(f"frames are limited to {MAX_FRAME_BYTES} bytes")
    try:
        frame = json.loads(raw)
    except json.JSONDecodeError as e:
        raise BadRequest(f"frame is not valid JSON: {e.msg}") from e
    if not isinstance(frame, dict) or frame.get("type") not in ("chat", "stop"):
        raise BadRequest("frame must be a JSON object with type 'chat' or 'stop'")
    return frame


async def _send_error(ws: WebSocket, e: BaseException) -> None:
    _, body = from_exception(e)
    await ws.send_json({"type": "error", **body})


async def _stream(ws: WebSocket, chat: ChatService, p: PreparedChat) -> None:
    await ws.send_json(
        {"type": "start", "generation_ids": p.generation_ids, "model": p.public_model}
    )
    try:
        async for ev in chat.stream(p):
            if isinstance(ev, ChoiceDelta):
                if ev.text:
                    await ws.send_json({"type": "delta", "index": ev.index, "content": ev.text})
            elif isinstance(ev, ChatResult):
                choices = [
                    {
                        "index": i,
                        "generation_id": p.generation_ids[i],
                        "finish_reason": c.finish_reason,
                    }
                    for i, c in enumerate(ev.choices)
                ]
                usage = usage_of(ev).model_dump()
                await ws.send_json({"type": "done", "choices": choices, "usage": usage})
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await ws.send_json({"type": "stopped", "generation_ids": p.generation_ids})
        raise
    except WebSocketDisconnect:
        return
    except Exception as e:
        with contextlib.suppress(Exception):
            await _send_error(ws, e)
