"""Authenticator: turns request credentials into an Identity, or refuses with 401.

Order: `Authorization: Bearer` (the operator token or an API key) wins over the session
cookie. A bearer token that is present but unknown or revoked is refused even if a
cookie is also sent, so a developer never silently acts as someone else.
"""

from __future__ import annotations

import hmac
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.orm import Session, sessionmaker

from service.errors import Forbidden, Unauthorized
from service.identity import store
from service.identity.credentials import CookieSigner
from service.identity.store import Identity
from service.settings import Settings
from store.db.models import UserKind
from store.db.session import session_scope
from store.secrets import load_or_create_secret

SESSION_COOKIE = "loopchat_session"
KNOWN_USERS_CACHE = 100_000  # cookie user ids remembered as existing, to skip a query
SESSION_RECHECK_S = 5.0  # how stale a process's view of an ended session may be

NO_CREDENTIALS = (
    "no credentials: send 'Authorization: Bearer <key>' (create a key with "
    "`loopchat keys create`) or start a web session with POST /v1/session"
)


class Authenticator:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        read_sessions: sessionmaker[Session],
        signer: CookieSigner,
        admin_token: str,
    ):
        self._sessions = sessions
        self._read = read_sessions
        self.signer = signer
        self._admin_token = admin_token
        # cookie users seen in the database: (when looked up, when their sessions ended)
        self._known_users: dict[str, tuple[float, float | None]] = {}
        self._operator: Identity | None = None
        self._lock = threading.Lock()  # guards _known_users
        self._operator_lock = threading.Lock()

    def is_admin_token(self, token: str) -> bool:
        return bool(self._admin_token) and hmac.compare_digest(
            token.encode(), self._admin_token.encode()
        )

    def authenticate(self, authorization: str | None, cookie: str | None) -> Identity:
        """The caller's identity; raises Unauthorized. Blocking (database): call in a thread."""
        if authorization is not None:
            return self._bearer(authorization)
        if cookie:
            checked = self.signer.verify_issued(cookie)
            if checked is not None and self._session_live(*checked):
                return Identity(checked[0], UserKind.ANONYMOUS)
            raise Unauthorized(
                "your session is invalid or has expired; start a new one with POST /v1/session",
                code="invalid_session",
            )
        raise Unauthorized(NO_CREDENTIALS, code="missing_credentials")

    def require_admin(self, authorization: str | None) -> Identity:
        token = _bearer_token(authorization)
        if token is None:
            raise Unauthorized(
                "the operator API needs 'Authorization: Bearer <admin token>'",
                code="missing_credentials",
            )
        if not self.is_admin_token(token):
            raise Forbidden("this token may not use the operator API", code="not_operator")
        return self._operator_identity()

    def new_session(self, origin: str | None = None) -> tuple[Identity, str]:
        """A new anonymous user and the cookie value that names them. `origin`: a keyed
        hash of the address it came from (the vote screen groups sessions by it)."""
        with session_scope(self._sessions) as s:
            ident = store.create_anonymous_user(s, origin)
        with self._lock:
            self._known_users[ident.user_id] = (time.monotonic(), None)
        return ident, self.signer.sign(ident.user_id)

    def _bearer(self, authorization: str) -> Identity:
        token = _bearer_token(authorization)
        if token is None:
            raise Unauthorized(
                "the Authorization header must be 'Bearer <key>'", code="invalid_api_key"
            )
        if self.is_admin_token(token):
            return self._operator_identity()
        with session_scope(self._read) as s:
            ident = store.identity_for_key(s, token)
        if ident is None:
            raise Unauthorized(
                "this API key is unknown or has been revoked", code="invalid_api_key"
            )
        return ident

    def _operator_identity(self) -> Identity:
        with self._operator_lock:  # the first operator requests may come at once: one insert
            if self._operator is None:
                with session_scope(self._sessions) as s:
                    self._operator = store.ensure_operator(s)
            return self._operator

    def end_session(self, user_id: str) -> None:
        """End every web session of `user_id` now, in every process: their cookies are
        refused from here on (other processes notice within `SESSION_RECHECK_S`)."""
        at = datetime.now(UTC)
        with session_scope(self._sessions) as s:
            store.end_sessions(s, user_id, at)
        with self._lock:
            self._known_users[user_id] = (time.monotonic(), at.timestamp())

    def _session_live(self, user_id: str, issued: int) -> bool:
        """The cookie's user is an anonymous user whose sessions were not ended after
        `issued`. Looked up at most every `SESSION_RECHECK_S` per user and process."""
        now = time.monotonic()
        with self._lock:
            known = self._known_users.get(user_id)
        if known is None or now - known[0] > SESSION_RECHECK_S:
            with session_scope(self._read) as s:
                kind, ended = store.session_end(s, user_id)
            if kind is not UserKind.ANONYMOUS:
                return False
            known = (now, None if ended is None else _aware(ended).timestamp())
            with self._lock:
                if len(self._known_users) >= KNOWN_USERS_CACHE:
                    self._known_users.clear()
                self._known_users[user_id] = known
        ended_at = known[1]
        return ended_at is None or issued > ended_at


def _aware(t: datetime) -> datetime:
    """SQLite gives back naive datetimes; they were stored in UTC."""
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def _bearer_token(authorization: str | None) -> str | None:
    if authorization is None:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


@dataclass(frozen=True)
class Secrets:
    admin_token: str
    session_secret: str


def resolve_secrets(settings: Settings) -> Secrets:
    """Settings win; otherwise secrets are generated once into the data directory."""
    admin = settings.resolved_admin_token()
    session = settings.session_secret or load_or_create_secret(settings.data_dir / "session_secret")
    return Secrets(admin, session)
