"""Typed dependencies: the only way routers reach the runtime's objects and the caller."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import Depends, Request
from starlette.requests import HTTPConnection

from service.chat.service import ChatService
from service.feedback.comparisons import ComparisonService
from service.identity.auth import SESSION_COOKIE
from service.identity.store import Identity
from service.runtime import Runtime


def get_runtime(conn: HTTPConnection) -> Runtime:
    runtime: Runtime = conn.app.state.runtime
    return runtime


def get_chat(request: Request) -> ChatService:
    return get_runtime(request).chat_service()


def get_comparisons(request: Request) -> ComparisonService:
    return get_runtime(request).comparison_service()


async def authenticate(conn: HTTPConnection) -> Identity:
    """The caller (API key, operator token or session cookie); 401 otherwise."""
    auth = get_runtime(conn).auth
    return await asyncio.to_thread(
        auth.authenticate, conn.headers.get("authorization"), conn.cookies.get(SESSION_COOKIE)
    )


async def voter(request: Request, user: Annotated[Identity, Depends(authenticate)]) -> Identity:
    """The caller, if their vote rate allows one more vote; 429 with Retry-After otherwise."""
    get_runtime(request).take_vote(user.user_id)
    return user


async def operator(request: Request) -> Identity:
    auth = get_runtime(request).auth
    return await asyncio.to_thread(auth.require_admin, request.headers.get("authorization"))


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
ChatDep = Annotated[ChatService, Depends(get_chat)]
ComparisonsDep = Annotated[ComparisonService, Depends(get_comparisons)]
UserDep = Annotated[Identity, Depends(authenticate)]
VoterDep = Annotated[Identity, Depends(voter)]


def client_address(conn: HTTPConnection, trusted_header: str = "") -> str:
    """The caller's address for per-address limits: the last entry of `trusted_header`
    (the one the trusted proxy appended) when that is set and sent, else the peer."""
    if trusted_header:
        sent = conn.headers.get(trusted_header, "")
        last = sent.rsplit(",", 1)[-1].strip()
        if last:
            return last[:64]
    return conn.client.host if conn.client else "unknown"
