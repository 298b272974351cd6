"""Read what a test server stored, straight from its database."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.orm import Session

from store.db.models import Generation, GenerationStatus, PolicyVersion
from store.db.session import make_engine
from store.domain import VersionKind, VersionStatus

T = TypeVar("T")


def fetch(db_url: str, model: type[T], *where: Any) -> list[T]:
    eng = make_engine(db_url)
    try:
        with Session(eng) as s:
            out = list(s.scalars(sa.select(model).where(*where)))
            for row in out:
                s.expunge(row)
            return out
    finally:
        eng.dispose()


def count(db_url: str, model: type[Any], *where: Any) -> int:
    eng = make_engine(db_url)
    try:
        with Session(eng) as s:
            return int(s.scalar(sa.select(sa.func.count()).select_from(model).where(*where)) or 0)
    finally:
        eng.dispose()


HI = [{"role": "user", "content": "hi"}]


def generation_row(
    gid: str,
    version_id: int,
    *,
    prompt: list[dict[str, str]] | None = None,
    text: str = "hello",
    user_id: str | None = None,
    status: GenerationStatus = GenerationStatus.COMPLETED,
) -> Generation:
    """A finished-looking generation row for tests that build votes by hand."""
    return Generation(
        id=gid,
        policy_version_id=version_id,
        user_id=user_id,
        prompt=prompt if prompt is not None else HI,
        text=text,
        sampling={"temperature": 1.0},
        status=status,
        finish_reason="stop",
        prompt_tokens=3,
        completion_tokens=2,
        latency_ms=1.0,
        ttft_ms=0.5,
        request_id=gid,
    )


def lora_version(name: str, parent: PolicyVersion, base: Path) -> PolicyVersion:
    """A LoRA child of `parent`, in canary, as the trainer would register one."""
    return PolicyVersion(
        name=name,
        parent_id=parent.id,
        base_model=str(base),
        kind=VersionKind.LORA,
        artifact_uri=str(base / name),
        status=VersionStatus.CANARY,
        metrics={},
    )
