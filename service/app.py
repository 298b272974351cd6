"""create_app(settings): lifespan, middleware, routers, and the one error mapper."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.api import (
    admin,
    chat,
    comparisons,
    conversations,
    feedback,
    health,
    models,
    policies,
    session,
    training,
    ws,
)
from service.api.openapi import RequestLimits, document_errors, document_limits
from service.api.ws import MAX_FRAME_BYTES
from service.chat.engines.base import Engine
from service.chat.engines.factory import build_engine
from service.errors import Busy, LoopchatError, error_body, from_exception, status_type
from service.identity.auth import Authenticator, resolve_secrets
from service.identity.credentials import CookieSigner
from service.identity.limits import RateLimits
from service.identity.ratelimit import RateLimiter
from service.identity.slots import slots_for
from service.metrics import Metrics
from service.middleware import BodyLimit, RequestMetrics
from service.policies.registry import PolicyRegistry, registry_config
from service.runtime import Runtime
from service.settings import Settings
from service.validation import describe_errors, first_param
from service.web import default_dist, mount_web
from store.db.migrate import upgrade
from store.db.session import make_engine, make_session_factory

log = logging.getLogger(__name__)


class LoopchatApp(FastAPI):
    """FastAPI whose schema documents the error envelope the handlers below send and the
    configured caps on requests."""

    request_limits: RequestLimits | None = None

    def openapi(self) -> dict[str, Any]:
        if self.openapi_schema is None:
            schema = document_errors(super().openapi())
            if self.request_limits is not None:
                schema = document_limits(schema, self.request_limits)
            self.openapi_schema = schema
        return self.openapi_schema


def server_options() -> dict[str, Any]:
    """uvicorn's settings for this app, wherever it is served. The WebSocket frame cap is
    the protocol's own: a frame announcing more is refused (close 1009) from its header,
    before its payload is read, where uvicorn would otherwise buffer up to 16 MiB."""
    return {"ws": "websockets-sansio", "ws_max_size": MAX_FRAME_BYTES}


def create_app(settings: Settings, engine: Engine | None = None) -> FastAPI:
    """Build the app. `engine` overrides the configured one (tests pass fakes or tiny models)."""
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        db = make_engine(settings.resolved_database_url)
        await asyncio.to_thread(upgrade, db)
        sessions = make_session_factory(db)
        read_sessions = make_session_factory(db, read_only=True)
        secrets = await asyncio.to_thread(resolve_secrets, settings)
        eng = engine if engine is not None else build_engine(settings)
        runtime = Runtime(
            settings=settings,
            db=db,
            sessions=sessions,
            read_sessions=read_sessions,
            engine=eng,
            registry=PolicyRegistry(eng, sessions, settings.model_alias, registry_config(settings)),
            metrics=metrics,
            auth=Authenticator(
                sessions,
                read_sessions,
                CookieSigner(secrets.session_secret, settings.session_max_age_days * 86400),
                secrets.admin_token,
            ),
            vote_limiter=RateLimiter(settings.vote_rate_per_minute, settings.vote_burst),
            rate_limits=RateLimits(settings.rate_limit_storage),
            slots=slots_for(settings.rate_limit_storage),
            pseudonym_secret=secrets.session_secret,
        )
        app.state.runtime = runtime
        runtime.start_in_background()
        try:
            yield
        finally:
            await runtime.stop()

    app = LoopchatApp(title="loopchat", version="0.1.0", lifespan=lifespan)
    app.request_limits = RequestLimits(
        max_n=settings.max_n,
        max_new_tokens=settings.max_new_tokens,
        max_messages=settings.max_messages,
        max_stop_sequences=settings.max_stop_sequences,
    )
    for module in (
        chat,
        models,
        ws,
        session,
        conversations,
        feedback,
        comparisons,
        admin,
        training,
        policies,
        health,
    ):
        app.include_router(module.router)
    mount_web(app, settings.web_dir or default_dist())
    _install_error_handlers(app)
    app.add_middleware(RequestMetrics, metrics=metrics)
    app.add_middleware(BodyLimit, max_bytes=settings.max_request_bytes)
    return app


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def on_validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            body = error_body(
                "the request body is not valid JSON",
                type="invalid_request_error",
                code="invalid_json",
            )
            return JSONResponse(body, status_code=400)
        body = error_body(
            describe_errors(errors),
            type="invalid_request_error",
            code="invalid_value",
            param=first_param(errors),
        )
        return JSONResponse(body, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def on_http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else "request failed"
        body = error_body(message, type=status_type(exc.status_code), code=None)
        return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(LoopchatError)
    async def on_ours(_: Request, exc: LoopchatError) -> JSONResponse:
        status, body = from_exception(exc)
        return JSONResponse(body, status_code=status, headers=exc.headers)

    @app.exception_handler(OperationalError)
    async def on_database(request: Request, exc: OperationalError) -> JSONResponse:
        if "database is locked" in str(exc):
            log.warning("database busy: %s", exc)
            return await on_ours(request, Busy("the database is busy; retry shortly"))
        log.error("database error: %s", exc, exc_info=exc)
        status, body = from_exception(exc)
        return JSONResponse(body, status_code=status)

    @app.exception_handler(Exception)
    async def on_any(_: Request, exc: Exception) -> JSONResponse:
        status, body = from_exception(exc)
        if status >= 500:
            log.error("request failed: %s", exc, exc_info=exc)
        return JSONResponse(body, status_code=status)
