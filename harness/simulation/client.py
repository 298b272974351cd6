"""One simulated user's connection to a running server, through its public HTTP API only.

Identity: each simulated user starts its own anonymous web session (`POST /v1/session`,
a signed cookie), as a person in the web app does. That needs no operator secret, makes
every simulated user a distinct user to the server (its own vote rate limit, its own
sticky canary draw, votes only on replies served to it, as the server enforces), and
leaves no rows behind except the user's. API keys are the developers' way in: they need
the operator token and leave a key row per user, so they are used only when the server
turns anonymous sessions off (403) and an operator token was given; those keys are
revoked when the run ends.

Waiting: a 429 (vote rate limit) or 503 (engine not ready, database busy) is waited out for
Retry-After seconds (1 s when absent) and retried, up to `max_wait_s` in all. A connection
that could not be opened is retried a few times. Anything else is an `ApiError`, which
the runner counts; nothing here retries a request that may have been processed.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx

SESSION_COOKIE = "loopchat_session"
FORWARDED_FOR = "X-Forwarded-For"
_ID_IN_PATH = re.compile(r"/cmp-[^/]+")
CONNECT_RETRIES = 3


class ApiError(Exception):
    """A request that failed: `status` None when no HTTP answer came back."""

    def __init__(self, path: str, status: int | None, code: str, message: str):
        super().__init__(f"{path}: {status or 'no answer'} {code}: {message}")
        self.path = path
        self.status = status
        self.code = code
        self.message = message

    @property
    def kind(self) -> str:
        """A short key for counting errors: `POST /v1/feedback 422 invalid_value`."""
        return f"{self.path} {self.status or 'transport'} {self.code}"


@dataclass(frozen=True)
class ChatReply:
    generation_id: str
    text: str
    version: str
    finish_reason: str | None


@dataclass(frozen=True)
class Side:
    generation_id: str
    text: str
    version: str | None  # revealed by the vote


@dataclass(frozen=True)
class ComparisonReply:
    id: str
    a: Side
    b: Side


def version_of(model: str | None) -> str | None:
    """`loopchat@v3` -> `v3` (the server names the writing version so)."""
    if not model:
        return None
    return model.rpartition("@")[2] if "@" in model else model


def _retry_after(r: httpx.Response) -> float:
    try:
        return max(0.0, float(r.headers.get("retry-after", "1")))
    except ValueError:
        return 1.0


def _error_of(path: str, r: httpx.Response) -> ApiError:
    code, message = "http_error", r.text[:300]
    try:
        err = r.json().get("error") or {}
        code = str(err.get("code") or err.get("type") or code)
        message = str(err.get("message") or message)
    except (ValueError, AttributeError):
        pass
    return ApiError(path, r.status_code, code, message)


@dataclass
class UserClient:
    """One simulated user's HTTP client (its session cookie or API key inside)."""

    http: httpx.AsyncClient
    name: str
    max_wait_s: float = 300.0
    retries: Counter[str] = field(default_factory=Counter)  # "429", "503", "connect"
    key_id: str | None = None  # set when the user is an API key made for this run

    async def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        label = f"{method} {_ID_IN_PATH.sub('/{id}', path)}"  # one label for every id
        waited = 0.0
        connect_failures = 0
        while True:
            try:
                r = await self.http.request(method, path, json=body)
            except httpx.ConnectError as e:
                # Never sent: safe to retry whatever the method.
                connect_failures += 1
                if connect_failures > CONNECT_RETRIES:
                    raise ApiError(label, None, "connect_error", str(e)) from e
                self.retries["connect"] += 1
                await asyncio.sleep(0.5 * 2**connect_failures)
                continue
            except httpx.HTTPError as e:
                raise ApiError(label, None, type(e).__name__, str(e) or repr(e)) from e
            if r.status_code in (429, 503):
                pause = min(_retry_after(r), 30.0)
                if waited + pause <= self.max_wait_s:
                    self.retries[str(r.status_code)] += 1
                    waited += pause
                    await asyncio.sleep(pause)
                    continue
            if r.status_code >= 400:
                raise _error_of(label, r)
            try:
                return r.json()
            except ValueError:
                raise ApiError(label, r.status_code, "bad_json", r.text[:300]) from None

    async def chat(
        self,
        messages: list[dict[str, str]],
        *,
        model: str = "loopchat",
        max_tokens: int | None = None,
        temperature: float | None = None,
        seed: int | None = None,
    ) -> ChatReply:
        body: dict[str, Any] = {"model": model, "messages": messages}
        for key, value in (
            ("max_tokens", max_tokens),
            ("temperature", temperature),
            ("seed", seed),
        ):
            if value is not None:
                body[key] = value
        data = await self.request("POST", "/v1/chat/completions", body)
        try:
            choice = data["choices"][0]
            return ChatReply(
                generation_id=str(choice.get("generation_id") or data["id"]),
                text=str(choice["message"]["content"]),
                version=version_of(data.get("model")) or "?",
                finish_reason=choice.get("finish_reason"),
            )
        except (KeyError, IndexError, TypeError) as e:
            raise ApiError("POST /v1/chat/completions", 200, "bad_body", repr(e)) from None

    async def rate(self, generation_id: str, rating: str, reason: str | None) -> dict[str, Any]:
        body = {"generation_id": generation_id, "rating": rating, "reason": reason}
        out: dict[str, Any] = await self.request("POST", "/v1/feedback", body)
        return out

    async def compare(
        self, messages: list[dict[str, str]], *, max_tokens: int | None = None
    ) -> ComparisonReply:
        body: dict[str, Any] = {"messages": messages}
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        data = await self.request("POST", "/v1/comparisons", body)
        try:
            return ComparisonReply(
                id=str(data["id"]),
                a=Side(str(data["a"]["generation_id"]), str(data["a"]["content"]), None),
                b=Side(str(data["b"]["generation_id"]), str(data["b"]["content"]), None),
            )
        except (KeyError, TypeError) as e:
            raise ApiError("POST /v1/comparisons", 200, "bad_body", repr(e)) from None

    async def vote(
        self, comparison_id: str, choice: str, reason: str | None
    ) -> tuple[str | None, str | None]:
        """Vote; returns the versions of sides a and b, which the answer reveals."""
        data = await self.request(
            "POST", f"/v1/comparisons/{comparison_id}/vote", {"choice": choice, "reason": reason}
        )
        try:
            return version_of(data["a"].get("model")), version_of(data["b"].get("model"))
        except (KeyError, TypeError, AttributeError):
            return None, None

    async def aclose(self) -> None:
        await self.http.aclose()


def _http(base_url: str, timeout_s: float, **kw: Any) -> httpx.AsyncClient:
    timeout = httpx.Timeout(timeout_s, connect=10.0)
    return httpx.AsyncClient(base_url=base_url.rstrip("/"), timeout=timeout, **kw)


async def open_user(
    base_url: str,
    name: str,
    *,
    admin_token: str | None = None,
    auth: str = "session",
    timeout_s: float = 600.0,
    max_wait_s: float = 300.0,
    address: str | None = None,
) -> UserClient:
    """A new simulated user: a web session, or (auth "key", or sessions refused and an
    operator token given) an API key made through the operator API. `address`: the
    client address a trusting proxy would report for this user."""
    if auth not in ("session", "key"):
        raise ValueError(f"auth must be 'session' or 'key', not {auth!r}")
    # Behind a proxy that the server trusts (`LOOPCHAT_TRUSTED_PROXY_HEADER`), each
    # simulated user comes from an address of its own, as people do; otherwise the header
    # is ignored and every user shares this machine's address and its session limit.
    forwarded = {FORWARDED_FOR: address} if address else {}
    if auth == "session":
        async with _http(base_url, timeout_s, headers=forwarded) as bare:
            try:
                r = await bare.post("/v1/session")
            except httpx.HTTPError as e:
                raise ApiError("POST /v1/session", None, type(e).__name__, str(e)) from e
        if r.status_code in (200, 201) and r.cookies.get(SESSION_COOKIE):
            cookie = r.cookies[SESSION_COOKIE]
            return UserClient(
                _http(base_url, timeout_s, cookies={SESSION_COOKIE: cookie}, headers=forwarded),
                name,
                max_wait_s,
            )
        if r.status_code != 403 or not admin_token:
            raise _error_of("POST /v1/session", r)
    if not admin_token:
        raise ApiError("POST /v1/admin/keys", None, "no_token", "API keys need the operator token")
    admin = UserClient(
        _http(base_url, timeout_s, headers={"Authorization": f"Bearer {admin_token}"}),
        "operator",
        max_wait_s,
    )
    try:
        data = await admin.request("POST", "/v1/admin/keys", {"name": f"simulated {name}"})
    finally:
        await admin.aclose()
    try:
        secret, key_id = str(data["key"]), str(data["id"])
    except (KeyError, TypeError) as e:
        raise ApiError("POST /v1/admin/keys", 201, "bad_body", repr(e)) from None
    headers = {"Authorization": f"Bearer {secret}"}
    return UserClient(_http(base_url, timeout_s, headers=headers), name, max_wait_s, key_id=key_id)


def open_operator(base_url: str, admin_token: str, *, timeout_s: float = 600.0) -> UserClient:
    """A client with the operator token: the benchmark's own measurements (pinned
    versions, many requests at once), which no user's limits should slow or refuse."""
    headers = {"Authorization": f"Bearer {admin_token}"}
    return UserClient(_http(base_url, timeout_s, headers=headers), "operator", 300.0)


async def revoke_key(base_url: str, admin_token: str, key_id: str) -> None:
    async with _http(base_url, 30.0, headers={"Authorization": f"Bearer {admin_token}"}) as c:
        await c.delete(f"/v1/admin/keys/{key_id}")
