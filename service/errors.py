"""Error types, the OpenAI error envelope, and the one mapper that builds it.

Every error a caller sees, from a validation failure to an unexpected crash, goes
through `error_body`: `{"error": {"message", "type", "code", "param"}}`. Messages are
ours, never a stack trace. Its schema is `service.protocol.errors.ErrorResponse`, which the
OpenAPI document declares for every error status (`service.api.openapi`).
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any


class LoopchatError(Exception):
    """An error meant for the caller: carries its HTTP status and OpenAI-style type."""

    status: int = HTTPStatus.BAD_REQUEST
    type: str = "invalid_request_error"
    code: str | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code

    @property
    def headers(self) -> dict[str, str]:
        return {}


class BadRequest(LoopchatError):
    code = "bad_request"


class NotFound(LoopchatError):
    status = HTTPStatus.NOT_FOUND
    code = "not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"


class InvalidValue(LoopchatError):
    """Well-formed JSON whose values this server refuses (same status as schema errors)."""

    status = HTTPStatus.UNPROCESSABLE_ENTITY
    code = "invalid_value"


class PayloadTooLarge(LoopchatError):
    status = HTTPStatus.REQUEST_ENTITY_TOO_LARGE
    code = "payload_too_large"


class ContextTooLong(LoopchatError):
    code = "context_length_exceeded"


class Unauthorized(LoopchatError):
    status = HTTPStatus.UNAUTHORIZED
    type = "authentication_error"
    code = "invalid_api_key"


class Forbidden(LoopchatError):
    status = HTTPStatus.FORBIDDEN
    type = "permission_error"
    code = "forbidden"


class Conflict(LoopchatError):
    status = HTTPStatus.CONFLICT
    code = "conflict"


class RateLimited(LoopchatError):
    status = HTTPStatus.TOO_MANY_REQUESTS
    type = "rate_limit_error"
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after_s: int):
        super().__init__(message)
        self.retry_after_s = retry_after_s

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}


class NotReady(LoopchatError):
    status = HTTPStatus.SERVICE_UNAVAILABLE
    type = "service_unavailable"
    code = "engine_not_ready"


class Busy(LoopchatError):
    """The database stayed locked past its busy timeout (SQLite under extreme write load)."""

    status = HTTPStatus.SERVICE_UNAVAILABLE
    type = "service_unavailable"
    code = "database_busy"

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": "1"}


class EngineFailure(LoopchatError):
    status = HTTPStatus.INTERNAL_SERVER_ERROR
    type = "server_error"
    code = "engine_error"


def error_body(
    message: str, *, type: str, code: str | None = None, param: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "code": code, "param": param}}


def from_exception(exc: BaseException) -> tuple[int, dict[str, Any]]:
    """Map any exception to (status, envelope). Unknown errors say nothing internal."""
    if isinstance(exc, LoopchatError):
        return int(exc.status), error_body(
            exc.message, type=exc.type, code=exc.code, param=exc.param
        )
    return 500, error_body(
        "The server had an error while processing your request.",
        type="server_error",
        code="internal_error",
    )


def status_type(status: int) -> str:
    """OpenAI-style error type for a bare HTTP status (404 from routing, 405, ...)."""
    if status == 401:
        return "authentication_error"
    if status == 403:
        return "permission_error"
    if status == 404:
        return "not_found_error"
    if status == 429:
        return "rate_limit_error"
    if status >= 500:
        return "server_error"
    return "invalid_request_error"
