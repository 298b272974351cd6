"""Secrets and tokens: API keys, signed session cookies, pseudonyms. Pure functions.

API keys are `lc-` plus 43 URL-safe characters (256 random bits); only their SHA-256 is
stored, so a leaked database does not leak keys. A session cookie is
`<user id>.<issued at>.<HMAC-SHA256>`: the server can trust the user id without storing
sessions, and a changed secret logs every web session out. One user's sessions end when
the user row says so (`users.sessions_ended_at`, checked by `Authenticator`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time

KEY_PREFIX = "lc-"
SHOWN_PREFIX_CHARS = 10  # "lc-" and 7 more: enough to tell keys apart in a list


def new_api_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def shown_prefix(key: str) -> str:
    return key[:SHOWN_PREFIX_CHARS]


def _mac(secret: str, message: str) -> str:
    digest = hmac.new(secret.encode(), message.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


class CookieSigner:
    """Signs and checks session cookie values; no server-side session state."""

    def __init__(self, secret: str, max_age_s: int):
        self._secret = secret
        self._max_age_s = max_age_s

    def sign(self, user_id: str, now: float | None = None) -> str:
        issued = int(time.time() if now is None else now)
        payload = f"{user_id}.{issued}"
        return f"{payload}.{_mac(self._secret, 'session:' + payload)}"

    def verify(self, value: str, now: float | None = None) -> str | None:
        """The user id in a valid, unexpired cookie value; None for anything else."""
        checked = self.verify_issued(value, now)
        return None if checked is None else checked[0]

    def verify_issued(self, value: str, now: float | None = None) -> tuple[str, int] | None:
        """(user id, issued at) of a valid, unexpired cookie value; None for anything else."""
        parts = value.split(".")
        if len(parts) != 3 or not parts[1].isdigit():
            return None
        user_id, issued, mac = parts
        expected = _mac(self._secret, f"session:{user_id}.{issued}")
        # As bytes: compare_digest refuses non-ASCII str, and a cookie may hold anything.
        if not hmac.compare_digest(mac.encode(), expected.encode()):
            return None
        if (time.time() if now is None else now) - int(issued) > self._max_age_s:
            return None
        return user_id, int(issued)


def pseudonym(secret: str, user_id: str) -> str:
    """A stable stand-in for a user id in exports: same user, same pseudonym; not reversible."""
    return "u-" + _mac(secret, "pseudonym:" + user_id)[:16]
