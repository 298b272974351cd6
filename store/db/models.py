"""Tables from DESIGN.md ("Data"). Schemas for the API live in service/protocol, not here."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from store.domain import VersionKind, VersionStatus

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


def _enum(cls: type[StrEnum]) -> Enum:
    # Stored as plain strings (no native PG enum): adding a state is a code change only.
    return Enum(cls, native_enum=False, length=32, values_callable=lambda e: [m.value for m in e])


class UserKind(StrEnum):
    ANONYMOUS = "anonymous"
    API_KEY = "api_key"
    OPERATOR = "operator"


class GenerationStatus(StrEnum):
    STREAMING = "streaming"  # stored when its id is first sent to the client; not final yet
    COMPLETED = "completed"  # finished by the model (stop token, stop string or length)
    CUT_OFF = "cut_off"  # the client went away mid-stream; text is what was produced
    ERROR = "error"


class ComparisonChoice(StrEnum):
    A = "a"
    B = "b"
    TIE = "tie"
    BOTH_BAD = "both_bad"


class RunStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    STOPPED = "stopped"  # ended early with a recorded reason (too little data, weak RM)
    REJECTED = "rejected"  # trained a candidate that the gate refused (reason says why)
    FAILED = "failed"


class User(Base):
    __tablename__ = "users"
    id: Mapped[str] = mapped_column(String(64), primary_key=True, default=lambda: new_id("usr"))
    kind: Mapped[UserKind] = mapped_column(_enum(UserKind))
    name: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # web session cookies issued at or before this are refused (logout, an operator)
    sessions_ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # where a web session was started: a keyed hash of the client address, never the
    # address; the vote screen counts one origin's sessions together
    origin: Mapped[str | None] = mapped_column(String(32))


class ApiKey(Base):
    """A developer's key. Only a SHA-256 of the secret is stored; the prefix identifies it."""

    __tablename__ = "api_keys"
    id: Mapped[str] = mapped_column(String(64), primary_key=True, default=lambda: new_id("key"))
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # Space-separated grants beyond chat and votes; see service.identity.store.KEY_SCOPES.
    scopes: Mapped[str] = mapped_column(String(200), default="", server_default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Conversation(Base):
    __tablename__ = "conversations"
    id: Mapped[str] = mapped_column(String(64), primary_key=True, default=lambda: new_id("conv"))
    user_id: Mapped[str | None] = mapped_column(ForeignKey("users.id"), index=True)
    title: Mapped[str | None] = mapped_column(String(300))
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )


class Message(Base):
    __tablename__ = "messages"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    conversation_id: Mapped[str] = mapped_column(ForeignKey("conversations.id"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    role: Mapped[str] = mapped_column(String(16))
    content: Mapped[str] = mapped_column(Text)
    generation_id: Mapped[str | None] = mapped_column(ForeignKey("generations.id"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class PolicyVersion(Base):
    __tablename__ = "policy_versions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("policy_versions.id"))
    base_model: Mapped[str] = mapped_column(String(500))
    kind: Mapped[VersionKind] = mapped_column(_enum(VersionKind))
    artifact_uri: Mapped[str] = mapped_column(String(1000))
    status: Mapped[VersionStatus] = mapped_column(_enum(VersionStatus), index=True)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )


class Generation(Base):
    __tablename__ = "generations"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    conversation_id: Mapped[str | None] = mapped_column(ForeignKey("conversations.id"), index=True)
    user_id: Mapped[str | None] = mapped_column(ForeignKey("users.id"), index=True)
    policy_version_id: Mapped[int] = mapped_column(ForeignKey("policy_versions.id"), index=True)
    prompt: Mapped[list[Any]] = mapped_column(JSON)  # chat messages as the model saw them
    text: Mapped[str] = mapped_column(Text)
    choice_index: Mapped[int] = mapped_column(Integer, default=0)
    request_id: Mapped[str | None] = mapped_column(String(64), index=True)  # groups n>1
    sampling: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[GenerationStatus] = mapped_column(_enum(GenerationStatus))
    finish_reason: Mapped[str | None] = mapped_column(String(32))
    prompt_tokens: Mapped[int] = mapped_column(Integer)
    completion_tokens: Mapped[int] = mapped_column(Integer)
    latency_ms: Mapped[float] = mapped_column(Float)
    ttft_ms: Mapped[float | None] = mapped_column(Float)
    source: Mapped[str] = mapped_column(String(16), default="api")  # api, ws, comparison
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, index=True
    )


class Rating(Base):
    __tablename__ = "ratings"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    generation_id: Mapped[str] = mapped_column(ForeignKey("generations.id"), index=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    value: Mapped[int] = mapped_column(Integer)  # +1 / -1
    reason: Mapped[str | None] = mapped_column(String(64))
    comment: Mapped[str | None] = mapped_column(Text)
    # False once changed or withdrawn; superseded_at says when. History is never deleted.
    live: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, index=True
    )
    superseded_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        # One live rating per (user, generation); older ones stay as history.
        Index(
            "uq_ratings_live",
            "user_id",
            "generation_id",
            unique=True,
            sqlite_where=text("live"),
            postgresql_where=text("live"),
        ),
    )


class Comparison(Base):
    __tablename__ = "comparisons"
    id: Mapped[str] = mapped_column(String(64), primary_key=True, default=lambda: new_id("cmp"))
    user_id: Mapped[str | None] = mapped_column(ForeignKey("users.id"), index=True)
    prompt: Mapped[list[Any]] = mapped_column(JSON)
    generation_a_id: Mapped[str] = mapped_column(ForeignKey("generations.id"))
    generation_b_id: Mapped[str] = mapped_column(ForeignKey("generations.id"))
    choice: Mapped[ComparisonChoice | None] = mapped_column(_enum(ComparisonChoice))
    reason: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    voted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), index=True)


class RewardModel(Base):
    __tablename__ = "reward_models"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    artifact_uri: Mapped[str] = mapped_column(String(1000))
    heldout_accuracy: Mapped[float | None] = mapped_column(Float)
    data_window_start: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    data_window_end: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class TrainingRun(Base):
    __tablename__ = "training_runs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    status: Mapped[RunStatus] = mapped_column(_enum(RunStatus), index=True)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    data_window_start: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    data_window_end: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    counts: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    logs: Mapped[str] = mapped_column(Text, default="")
    reason: Mapped[str | None] = mapped_column(Text)
    policy_version_id: Mapped[int | None] = mapped_column(ForeignKey("policy_versions.id"))
    reward_model_id: Mapped[int | None] = mapped_column(ForeignKey("reward_models.id"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class PolicyEvent(Base):
    """One change of which version serves: swap, promotion, rollback, retirement, failure."""

    __tablename__ = "policy_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16), index=True)  # lifecycle.EventKind
    version_id: Mapped[int] = mapped_column(ForeignKey("policy_versions.id"), index=True)
    # The version that served before (promote/rollback/swap), if any.
    previous_version_id: Mapped[int | None] = mapped_column(ForeignKey("policy_versions.id"))
    actor: Mapped[str] = mapped_column(String(16))  # lifecycle.Actor
    reason: Mapped[str] = mapped_column(Text, default="")
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, index=True
    )
