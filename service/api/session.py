"""Web sessions: POST /v1/session starts an anonymous one (signed cookie); GET /v1/me."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from service.api.deps import RuntimeDep, UserDep, authenticate, client_address
from service.api.openapi import CALLER, errors
from service.errors import Forbidden, Unauthorized
from service.identity.auth import SESSION_COOKIE
from service.identity.credentials import pseudonym
from service.protocol.feedback import SessionOut

router = APIRouter(tags=["identity"])


@router.post(
    "/v1/session",
    response_model=SessionOut,
    status_code=201,
    responses={
        200: {"model": SessionOut, "description": "The session cookie sent is valid: kept."},
        201: {"description": "A new anonymous session; its cookie is set."},
        **errors(403, 429, 500, 503),
    },
)
async def start_session(request: Request, runtime: RuntimeDep) -> JSONResponse:
    """Keep a valid session (200), or start a new anonymous one (201) and set its cookie."""
    if request.cookies.get(SESSION_COOKIE):
        try:
            ident = await authenticate(request)
            return JSONResponse(SessionOut(user_id=ident.user_id, kind=ident.kind).model_dump())
        except Unauthorized:
            pass  # expired or foreign cookie: replace it
    if not runtime.settings.anonymous_sessions:
        raise Forbidden("anonymous sessions are turned off on this server; use an API key")
    address = client_address(request, runtime.settings.trusted_proxy_header)
    await asyncio.to_thread(runtime.take_session_mint, address)
    origin = pseudonym(runtime.pseudonym_secret, f"addr:{address}")[:32]
    ident, cookie = await asyncio.to_thread(runtime.auth.new_session, origin)
    response = JSONResponse(
        SessionOut(user_id=ident.user_id, kind=ident.kind).model_dump(), status_code=201
    )
    response.set_cookie(
        SESSION_COOKIE,
        cookie,
        max_age=runtime.settings.session_max_age_days * 86400,
        httponly=True,
        samesite="lax",
        secure=runtime.settings.session_cookie_secure,
    )
    return response


@router.delete("/v1/session", status_code=204, responses=errors(500, 503))
async def end_session(request: Request, response: Response, runtime: RuntimeDep) -> Response:
    """Log out: the session ends on the server (its cookie, and any copy of it, is refused
    from now on, and its open sockets close) and the browser's cookie is cleared."""
    if request.cookies.get(SESSION_COOKIE) and "authorization" not in request.headers:
        try:
            ident = await authenticate(request)
        except Unauthorized:
            ident = None  # already invalid: nothing to end
        if ident is not None:
            await asyncio.to_thread(runtime.auth.end_session, ident.user_id)
    response.delete_cookie(SESSION_COOKIE)
    response.status_code = 204
    return response


@router.get("/v1/me", response_model=SessionOut, responses=CALLER)
async def me(user: UserDep) -> SessionOut:
    return SessionOut(user_id=user.user_id, kind=user.kind)
