"""Operator API under /v1/admin/ (operator token): API keys, feedback export, statistics."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from service.api.deps import RuntimeDep, operator
from service.api.openapi import OPERATOR, errors
from service.errors import InvalidValue, NotFound
from service.feedback.export import ExportFilter, ExportFormat, export_lines
from service.feedback.stats import feedback_stats
from service.identity import store
from service.identity.store import KeyInfo
from service.protocol.admin import StatsOut
from service.protocol.types import UtcDatetime
from store.db.session import session_scope

router = APIRouter(
    prefix="/v1/admin", tags=["admin"], dependencies=[Depends(operator)], responses=OPERATOR
)


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200, description="Who or what the key is for.")
    scopes: list[Literal["pin"]] = Field(
        default_factory=list,
        max_length=len(store.KEY_SCOPES),
        description="Grants beyond chat and votes. pin: use any loaded version "
        "(`loopchat@v3`), not only the alias and the serving version.",
    )


class KeyOut(BaseModel):
    id: str
    name: str
    prefix: str = Field(description="The first characters of the key, to recognise it.")
    user_id: str
    created_at: UtcDatetime
    revoked_at: UtcDatetime | None
    scopes: list[str]


class KeyCreated(KeyOut):
    key: str = Field(description="The secret. Shown once: store it now.")


def _key_out(k: KeyInfo) -> KeyOut:
    return KeyOut(**k.__dict__)


@router.post("/keys", response_model=KeyCreated, status_code=201)
def create_key(body: KeyCreate, runtime: RuntimeDep) -> KeyCreated:
    with session_scope(runtime.sessions) as s:
        info, secret = store.create_api_key(s, body.name, tuple(body.scopes))
    return KeyCreated(**info.__dict__, key=secret)


@router.get("/keys", response_model=list[KeyOut])
def list_keys(runtime: RuntimeDep) -> list[KeyOut]:
    with session_scope(runtime.read_sessions) as s:
        return [_key_out(k) for k in store.list_api_keys(s)]


@router.delete("/keys/{key_id}", response_model=KeyOut, responses=errors(404))
def revoke_key(key_id: str, runtime: RuntimeDep) -> KeyOut:
    """Revoke a key: requests with it get 401 from now on. Repeating it changes nothing."""
    with session_scope(runtime.sessions) as s:
        info = store.revoke_api_key(s, key_id)
    if info is None:
        raise NotFound(f"no API key with id '{key_id[:80]}'")
    return _key_out(info)


@router.get(
    "/export",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/x-ndjson": {}}}, **errors(422)},
)
def export(
    runtime: RuntimeDep,
    format: ExportFormat = ExportFormat.PAIRS,
    since: Annotated[datetime | None, Query(description="votes at or after (ISO-8601)")] = None,
    until: Annotated[datetime | None, Query(description="votes before (ISO-8601)")] = None,
    version: Annotated[str | None, Query(description="replies of this version (v3)")] = None,
) -> StreamingResponse:
    """Votes as JSONL: pairs (prompt/chosen/rejected), unpaired (prompt/completion/label), raw.

    Streamed from the database in batches; user ids are replaced by stable pseudonyms.
    """
    flt = ExportFilter(since=since, until=until, version=version)
    stack = ExitStack()  # the session lives as long as the stream, not the handler
    session = stack.enter_context(session_scope(runtime.read_sessions))
    try:
        lines = export_lines(
            session,
            format,
            flt,
            runtime.pseudonym_secret,
            runtime.registry.alias,
            runtime.settings.evidence_rules(),
        )
    except ValueError as e:
        stack.close()
        raise InvalidValue(str(e)) from e

    def stream() -> Iterator[str]:
        with stack:
            yield from lines

    filename = f"loopchat-{format.value}.jsonl"
    return StreamingResponse(
        stream(),
        media_type="application/x-ndjson",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


@router.get("/stats", response_model=StatsOut)
def stats(runtime: RuntimeDep, days: Annotated[int, Query(ge=1, le=3650)] = 30) -> StatsOut:
    """Votes per day, thumbs-up rate and A/B win rate per policy version, reason counts,
    and which comparison votes the screen sets aside (the canary rule and the trainer
    leave them out), with the flagged voters (pseudonyms, as in the export)."""
    with session_scope(runtime.read_sessions) as s:
        return feedback_stats(
            s,
            days,
            runtime.registry.alias,
            evidence=runtime.settings.evidence_rules(),
            pseudonym_secret=runtime.pseudonym_secret,
        )
