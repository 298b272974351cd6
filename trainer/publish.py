"""Artifacts and registration: how a round's outputs become visible, atomically.

Every artifact is written into a staging directory and renamed into place when complete;
its database row is inserted only after the rename. So a round killed at any point leaves
at most an unregistered directory, which the next round deletes (`sweep`), and never a
registered half-written one. Artifacts are owned by the trainer, which holds the training
lock whenever it writes or sweeps them.
"""

from __future__ import annotations

import logging
import re
import shutil
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.orm import Session

from store.db.models import PolicyVersion, RewardModel
from store.domain import VersionKind, VersionStatus

log = logging.getLogger(__name__)

POLICIES = "policies"
REWARD_MODELS = "reward_models"


def sweep(session: Session, artifacts: Path) -> list[Path]:
    """Delete staging leftovers and artifact directories no row refers to."""
    used = {Path(u).resolve() for u in session.scalars(select(PolicyVersion.artifact_uri))}
    used |= {Path(u).resolve() for u in session.scalars(select(RewardModel.artifact_uri))}
    removed: list[Path] = []
    for kind in (POLICIES, REWARD_MODELS):
        folder = artifacts / kind
        if not folder.is_dir():
            continue
        for child in folder.iterdir():
            if child.is_dir() and child.resolve() not in used:
                shutil.rmtree(child, ignore_errors=True)
                removed.append(child)
    return removed


def next_version_name(session: Session) -> str:
    numbers = [
        int(m.group(1))
        for name in session.scalars(select(PolicyVersion.name))
        if (m := re.fullmatch(r"v(\d+)", name))
    ]
    return f"v{max(numbers, default=0) + 1}"


def register_reward_model(
    session: Session,
    uri: Path,
    heldout_accuracy: float,
    window: tuple[datetime | None, datetime],
    metrics: dict[str, Any],
) -> RewardModel:
    row = RewardModel(
        artifact_uri=str(uri.resolve()),
        heldout_accuracy=heldout_accuracy,
        data_window_start=window[0],
        data_window_end=window[1],
        metrics=metrics,
    )
    session.add(row)
    session.flush()
    return row


def latest_reward_model(session: Session) -> Path | None:
    uri = session.scalars(select(RewardModel.artifact_uri).order_by(RewardModel.id.desc())).first()
    return None if uri is None else Path(uri)


def register_policy(
    session: Session,
    *,
    name: str,
    parent: PolicyVersion,
    base_model: str,
    uri: Path,
    status: VersionStatus,
    metrics: dict[str, Any],
    error: str | None = None,
) -> PolicyVersion:
    row = PolicyVersion(
        name=name,
        parent_id=parent.id,
        base_model=base_model,
        kind=VersionKind.LORA,
        artifact_uri=str(uri.resolve()),
        status=status,
        metrics=metrics,
        error=error,
    )
    session.add(row)
    session.flush()
    return row


def notify_server(url: str, admin_token: str, version: str, timeout: float = 5.0) -> str | None:
    """Tell the server a candidate is ready. Returns an error text, or None on success.

    Best effort: a server that is down or busy finds the candidate by polling later.
    """
    if not url:
        return "no server to notify (notify_url is empty)"
    try:
        r = httpx.post(
            url.rstrip("/") + "/v1/admin/policies/notify",
            json={"version": version},
            headers={"Authorization": f"Bearer {admin_token}"},
            timeout=timeout,
        )
    except httpx.HTTPError as e:
        return f"could not reach {url}: {e}"
    if r.status_code >= 300:
        return f"{url} answered {r.status_code}: {r.text[:200]}"
    return None
