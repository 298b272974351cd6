"""Error answers in the OpenAPI schema: every 4xx/5xx carries `ErrorResponse`.

Routers declare the errors a route can give with `errors(...)` (authentication, lookups,
conflicts, rate limits). What follows from a route's shape is added to the finished
schema by `document_errors`: FastAPI's default 422 (`HTTPValidationError`, a body this
server never sends: the app's handler answers validation errors with the envelope) is
replaced, and a route with a JSON body gets 400 (not JSON) and 413 (too large).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from service.protocol.errors import ErrorResponse

REF_TEMPLATE = "#/components/schemas/{model}"
REF = REF_TEMPLATE.format(model=ErrorResponse.__name__)
FASTAPI_422 = REF_TEMPLATE.format(model="HTTPValidationError")

_RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before trying again (sent when known).",
        "schema": {"type": "integer"},
    }
}

DESCRIPTIONS: dict[int, str] = {
    400: "Malformed request: the body is not JSON, or a value the model cannot take "
    "(a prompt over the context limit, max_tokens over the cap; `param` names the field).",
    401: "No valid credentials: an API key, the operator token or a session cookie.",
    403: "Not allowed: not the operator, not your reply or comparison, or anonymous "
    "sessions are turned off on this server.",
    404: "No such object (or not yours), or an unknown model.",
    409: "The object's state does not allow it (already voted, a failed reply, a version "
    "that cannot serve).",
    413: "The request body is over the server's size limit.",
    422: "Validation failed: a field is missing, of the wrong type or out of range "
    "(`param` names the first).",
    429: "Too many requests (votes, new sessions): wait Retry-After seconds.",
    500: "The server (or the model engine) failed; the message says nothing internal.",
    503: "Not available now: the database is busy (see Retry-After), or the model is still "
    "loading.",
}

_HEADERS: dict[int, dict[str, Any]] = {429: _RETRY_AFTER, 503: _RETRY_AFTER}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route or router: these statuses answer with `ErrorResponse`."""
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        entry: dict[str, Any] = {"model": ErrorResponse, "description": DESCRIPTIONS[status]}
        if status in _HEADERS:
            entry["headers"] = _HEADERS[status]
        out[status] = entry
    return out


# Any /v1 route: the caller is resolved from the database (503 when it is busy), and an
# unexpected failure is a 500 envelope.
CALLER = errors(401, 500, 503)
# /v1/admin/*: the operator token; another caller's valid key is 403.
OPERATOR = errors(401, 403, 500, 503)


def _error_response(status: int) -> dict[str, Any]:
    out: dict[str, Any] = {
        "description": DESCRIPTIONS[status],
        "content": {"application/json": {"schema": {"$ref": REF}}},
    }
    if status in _HEADERS:
        out["headers"] = _HEADERS[status]
    return out


def document_errors(schema: dict[str, Any]) -> dict[str, Any]:
    """Rewrite FastAPI's schema (in place) so validation errors and body errors name
    `ErrorResponse`; drop FastAPI's own validation error models."""
    components = schema["components"]["schemas"]
    assert ErrorResponse.__name__ in components, "routers declare their errors with errors()"
    for path in schema.get("paths", {}).values():
        for operation in path.values():
            responses: dict[str, Any] = operation.setdefault("responses", {})
            if _schema_ref(responses.get("422")) == FASTAPI_422:
                responses["422"] = _error_response(422)
            if "requestBody" in operation:
                for status in (400, 413, 422):
                    responses.setdefault(str(status), _error_response(status))
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    return schema


def _schema_ref(response: dict[str, Any] | None) -> str | None:
    if response is None:
        return None
    ref: str | None = (
        response.get("content", {}).get("application/json", {}).get("schema", {}).get("$ref")
    )
    return ref


@dataclass(frozen=True)
class RequestLimits:
    """The server's own caps on a chat request (settings), published in the schema."""

    max_n: int
    max_new_tokens: int
    max_messages: int
    max_stop_sequences: int


def document_limits(schema: dict[str, Any], limits: RequestLimits) -> dict[str, Any]:
    """Write the configured caps into the request schemas (in place), so that what the
    schema allows is what the server takes: a generated client or fuzzer asking for
    n = 10 or max_tokens = 10**6 learns the cap from the schema, not from a 400."""
    components = schema["components"]["schemas"]
    for name in ("ChatCompletionRequest", "ComparisonRequest"):
        props = components[name]["properties"]
        props["messages"]["maxItems"] = limits.max_messages
        for field in ("max_tokens", "max_completion_tokens"):
            for option in props[field]["anyOf"]:
                if option.get("type") == "integer":
                    option["maximum"] = limits.max_new_tokens
    props = components["ChatCompletionRequest"]["properties"]
    props["n"]["maximum"] = limits.max_n
    for option in props["stop"]["anyOf"]:
        if option.get("type") == "array":
            option["maxItems"] = limits.max_stop_sequences
        elif option.get("type") == "string" and limits.max_stop_sequences == 0:
            option["not"] = {}  # no stop sequence at all is allowed
    return schema
