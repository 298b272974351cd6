"""Queries the service and CLI share. Plain functions over a Session; no web code here."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from store.db.models import Generation, GenerationStatus, PolicyVersion
from store.domain import VersionKind, VersionStatus


class BaseModelMismatch(RuntimeError):
    """The database's v0 was registered from another base model than the one configured."""


@dataclass(frozen=True)
class GenerationRecord:
    id: str
    request_id: str
    choice_index: int
    policy_version_id: int
    prompt: list[dict[str, str]]
    text: str
    sampling: dict[str, Any]
    status: GenerationStatus
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    latency_ms: float
    ttft_ms: float | None
    source: str
    user_id: str | None = None
    conversation_id: str | None = None


def insert_generations(session: Session, records: Sequence[GenerationRecord]) -> None:
    session.add_all(Generation(**r.__dict__) for r in records)
    session.flush()


FINAL_FIELDS = ("text", "status", "finish_reason", "completion_tokens", "latency_ms", "ttft_ms")


def finish_generations(session: Session, records: Sequence[GenerationRecord]) -> None:
    """Write the outcome of generations stored earlier by `insert_generations`."""
    rows = [{"id": r.id, **{f: getattr(r, f) for f in FINAL_FIELDS}} for r in records]
    if rows:
        session.execute(update(Generation), rows)


def serving_version(session: Session) -> PolicyVersion | None:
    stmt = select(PolicyVersion).where(PolicyVersion.status == VersionStatus.SERVING)
    return session.scalars(stmt.order_by(PolicyVersion.updated_at.desc())).first()


def version_by_name(session: Session, name: str) -> PolicyVersion | None:
    return session.scalars(select(PolicyVersion).where(PolicyVersion.name == name)).first()


def list_versions(session: Session) -> list[PolicyVersion]:
    return list(session.scalars(select(PolicyVersion).order_by(PolicyVersion.id)))


def ensure_base_version(session: Session, model_dir: Path, name: str = "v0") -> PolicyVersion:
    """Register `model_dir` as the base version `v0` (serving), once.

    Fails fast when the database already has a v0 from a different model directory:
    every later version is trained against v0, so mixing bases would be silent damage.
    """
    model_dir = model_dir.resolve()
    existing = version_by_name(session, name)
    if existing is not None:
        if Path(existing.base_model).resolve() != model_dir:
            raise BaseModelMismatch(
                f"this database registered {name} from {existing.base_model}, but the configured "
                f"model is {model_dir}. Point LOOPCHAT_DATA_DIR or LOOPCHAT_DATABASE_URL at a "
                f"fresh database to serve another base model."
            )
        return existing
    version = PolicyVersion(
        name=name,
        base_model=str(model_dir),
        kind=VersionKind.BASE,
        artifact_uri=str(model_dir),
        status=VersionStatus.SERVING,
        metrics={},
    )
    session.add(version)
    session.flush()
    return version
