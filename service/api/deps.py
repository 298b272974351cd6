"""Typed dependencies: the only way routers reach the runtime's objects."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from starlette.requests import HTTPConnection

from service.chat.service import ChatService
from service.runtime import Runtime


def get_runtime(conn: HTTPConnection) -> Runtime:
    runtime: Runtime = conn.app.state.runtime
    return runtime


def get_chat(request: Request) -> ChatService:
    return get_runtime(request).chat_service()


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
ChatDep = Annotated[ChatService, Depends(get_chat)]
