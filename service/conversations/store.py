"""Conversations and their messages in the database. Plain functions over a Session.

A conversation belongs to one user; another user's id is a 404, as if it did not exist.
The stored history is always "the messages of the last chat request plus its reply":
`save_turn` keeps the stored rows that match the request's history position by
position (so earlier replies keep their generation ids and votes) and replaces the
rest, which makes regenerate and edit-and-resend the same operation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from service.errors import NotFound
from store.db.models import Conversation, Generation, Message, PolicyVersion, Rating, utcnow

TITLE_CHARS = 60


@dataclass(frozen=True)
class ConversationInfo:
    id: str
    title: str | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class StoredMessage:
    position: int
    role: str
    content: str
    generation_id: str | None
    model: str | None  # the policy version that wrote it: loopchat@v3
    rating: str | None  # this user's live vote: up, down
    reason: str | None
    comment: str | None
    finish_reason: str | None  # replies: stop or length; None while unfinished or cut off
    status: str | None  # replies: the generation's status (completed, cut_off, ...)


# Finish reasons the API reports; anything else an engine might store reads as None.
FINISH_REASONS = ("stop", "length")


def _info(c: Conversation) -> ConversationInfo:
    return ConversationInfo(c.id, c.title, c.created_at, c.updated_at)


def _owned(session: Session, conversation_id: str, user_id: str) -> Conversation:
    c = session.get(Conversation, conversation_id)
    if c is None or c.deleted or c.user_id != user_id:
        raise NotFound(f"no conversation '{conversation_id[:80]}'", param="conversation_id")
    return c


def create(session: Session, user_id: str, title: str | None = None) -> ConversationInfo:
    c = Conversation(user_id=user_id, title=title)
    session.add(c)
    session.flush()
    return _info(c)


def list_for(session: Session, user_id: str, limit: int = 100) -> list[ConversationInfo]:
    stmt = (
        select(Conversation)
        .where(Conversation.user_id == user_id, Conversation.deleted.is_(False))
        .order_by(Conversation.updated_at.desc(), Conversation.id)
        .limit(limit)
    )
    return [_info(c) for c in session.scalars(stmt)]


def rename(session: Session, conversation_id: str, user_id: str, title: str) -> ConversationInfo:
    c = _owned(session, conversation_id, user_id)
    c.title = title
    session.flush()
    return _info(c)


def remove(session: Session, conversation_id: str, user_id: str) -> None:
    """Hide it from its user. Messages stay: their replies may carry votes."""
    _owned(session, conversation_id, user_id).deleted = True


def check_owner(session: Session, conversation_id: str, user_id: str) -> None:
    _owned(session, conversation_id, user_id)


def messages(
    session: Session, conversation_id: str, user_id: str, alias: str
) -> tuple[ConversationInfo, list[StoredMessage]]:
    c = _owned(session, conversation_id, user_id)
    stmt = (
        select(Message, PolicyVersion.name, Generation.status, Generation.finish_reason, Rating)
        .outerjoin(Generation, Generation.id == Message.generation_id)
        .outerjoin(PolicyVersion, PolicyVersion.id == Generation.policy_version_id)
        .outerjoin(
            Rating,
            (Rating.generation_id == Message.generation_id)
            & (Rating.user_id == user_id)
            & Rating.live,
        )
        .where(Message.conversation_id == c.id)
        .order_by(Message.position)
    )
    out = [
        StoredMessage(
            m.position,
            m.role,
            m.content,
            m.generation_id,
            f"{alias}@{version}" if version else None,
            None if r is None else ("up" if r.value > 0 else "down"),
            None if r is None else r.reason,
            None if r is None else r.comment,
            finish if finish in FINISH_REASONS else None,
            None if status is None else status.value,
        )
        for m, version, status, finish, r in session.execute(stmt)
    ]
    return _info(c), out


def save_turn(
    session: Session,
    conversation_id: str,
    user_id: str,
    history: Sequence[tuple[str, str]],
    reply: str | None = None,
    generation_id: str | None = None,
) -> None:
    """Store `history` (role, content) and, when given, the assistant `reply` after it."""
    c = _owned(session, conversation_id, user_id)
    stored = list(
        session.scalars(
            select(Message).where(Message.conversation_id == c.id).order_by(Message.position)
        )
    )
    keep = 0
    for row, (role, content) in zip(stored, history, strict=False):
        if (row.role, row.content) != (role, content):
            break
        keep += 1
    session.execute(
        delete(Message).where(Message.conversation_id == c.id, Message.position >= keep)
    )
    rows: list[tuple[str, str, str | None]] = [(r, c, None) for r, c in history[keep:]]
    if reply is not None:
        rows.append(("assistant", reply, generation_id))
    for i, (role, content, gid) in enumerate(rows, start=keep):
        session.add(
            Message(conversation_id=c.id, position=i, role=role, content=content, generation_id=gid)
        )
    if c.title is None:
        first = next((content for role, content in history if role == "user"), None)
        if first:
            c.title = " ".join(first.split())[:TITLE_CHARS] or None
    c.updated_at = utcnow()
    session.flush()
