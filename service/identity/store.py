"""Users and API keys in the database. Plain functions over a Session."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.identity.credentials import hash_key, new_api_key, shown_prefix
from store.db.models import ApiKey, User, UserKind, utcnow

OPERATOR_USER_ID = "usr-operator"

# What a key may be granted. `pin`: name a policy version other than the serving one
# (`loopchat@v3`); without it a caller cannot choose the canary and so cannot tell a
# comparison's sides apart by reproducing them.
KEY_SCOPES = ("pin",)


@dataclass(frozen=True)
class Identity:
    user_id: str
    kind: UserKind
    key_id: str | None = None
    scopes: frozenset[str] = frozenset()

    @property
    def is_operator(self) -> bool:
        return self.kind is UserKind.OPERATOR

    @property
    def may_pin(self) -> bool:
        """May name any loaded version, not only the alias and the serving version."""
        return self.is_operator or "pin" in self.scopes


@dataclass(frozen=True)
class KeyInfo:
    id: str
    name: str
    prefix: str
    user_id: str
    created_at: datetime
    revoked_at: datetime | None
    scopes: tuple[str, ...] = ()

    @classmethod
    def of(cls, k: ApiKey) -> KeyInfo:
        return cls(k.id, k.name, k.prefix, k.user_id, k.created_at, k.revoked_at, _scopes(k.scopes))


def _scopes(text: str | None) -> tuple[str, ...]:
    return tuple(sorted(set((text or "").split())))


def create_api_key(
    session: Session, name: str, scopes: tuple[str, ...] = ()
) -> tuple[KeyInfo, str]:
    """A new key holder and their key. The secret is returned here and never again."""
    unknown = sorted(set(scopes) - set(KEY_SCOPES))
    if unknown:
        raise ValueError(f"unknown key scope {unknown[0]!r}; known: {', '.join(KEY_SCOPES)}")
    user = User(kind=UserKind.API_KEY, name=name)
    session.add(user)
    session.flush()
    secret = new_api_key()
    key = ApiKey(
        user_id=user.id,
        name=name,
        prefix=shown_prefix(secret),
        key_hash=hash_key(secret),
        scopes=" ".join(sorted(set(scopes))),
    )
    session.add(key)
    session.flush()
    return KeyInfo.of(key), secret


def list_api_keys(session: Session, include_revoked: bool = True) -> list[KeyInfo]:
    stmt = select(ApiKey).order_by(ApiKey.created_at, ApiKey.id)
    if not include_revoked:
        stmt = stmt.where(ApiKey.revoked_at.is_(None))
    return [KeyInfo.of(k) for k in session.scalars(stmt)]


def revoke_api_key(session: Session, key_id: str) -> KeyInfo | None:
    """Revoke a key (idempotent); None if there is no such key."""
    key = session.get(ApiKey, key_id)
    if key is None:
        return None
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        session.flush()
    return KeyInfo.of(key)


def identity_for_key(session: Session, secret: str) -> Identity | None:
    key = session.scalars(select(ApiKey).where(ApiKey.key_hash == hash_key(secret))).first()
    if key is None or key.revoked_at is not None:
        return None
    return Identity(key.user_id, UserKind.API_KEY, key.id, frozenset(_scopes(key.scopes)))


def create_anonymous_user(session: Session, origin: str | None = None) -> Identity:
    user = User(kind=UserKind.ANONYMOUS, origin=origin)
    session.add(user)
    session.flush()
    return Identity(user.id, UserKind.ANONYMOUS)


def session_end(session: Session, user_id: str) -> tuple[UserKind | None, datetime | None]:
    """The user's kind (None: no such user) and when their web sessions were ended."""
    user = session.get(User, user_id)
    return (None, None) if user is None else (user.kind, user.sessions_ended_at)


def end_sessions(session: Session, user_id: str, at: datetime) -> bool:
    """Refuse every session cookie of `user_id` issued up to `at`; False: no such user."""
    user = session.get(User, user_id, with_for_update=True)
    if user is None:
        return False
    user.sessions_ended_at = at
    return True


def user_kind(session: Session, user_id: str) -> UserKind | None:
    user = session.get(User, user_id)
    return None if user is None else user.kind


def ensure_operator(session: Session) -> Identity:
    if session.get(User, OPERATOR_USER_ID) is None:
        session.add(User(id=OPERATOR_USER_ID, kind=UserKind.OPERATOR, name="operator"))
        session.flush()
    return Identity(OPERATOR_USER_ID, UserKind.OPERATOR)
