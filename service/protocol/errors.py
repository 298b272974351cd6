"""The one error envelope every 4xx/5xx answer of the HTTP API carries (see
`service.errors.error_body`), as a schema the generated clients can read."""

from __future__ import annotations

from pydantic import BaseModel, Field


class ErrorDetail(BaseModel):
    message: str = Field(description="What went wrong, for people; never a stack trace.")
    type: str = Field(
        description="OpenAI-style class: invalid_request_error, authentication_error, "
        "permission_error, not_found_error, rate_limit_error, service_unavailable, server_error."
    )
    code: str | None = Field(
        description="Machine-readable reason (invalid_value, model_not_found, already_voted, ...)."
    )
    param: str | None = Field(description="The request field at fault, when one is.")


class ErrorResponse(BaseModel):
    """`{"error": {"message", "type", "code", "param"}}`, as OpenAI's API answers errors."""

    error: ErrorDetail
