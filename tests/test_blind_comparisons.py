"""Blind comparisons: a caller who is not an operator cannot find the canary before voting.

Roles are hidden from /v1/models, only keys with the `pin` scope (and the operator) can
name a version other than the serving one, and a comparison's two replies reach the
client in step, so the faster version does not show itself by its speed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from service.chat.service import ChatResult, ChoiceDelta
from service.feedback.comparisons import ComparisonPlan, ComparisonService
from tests.conftest import ADMIN
from tests.dbutil import HI
from tests.fakes import FakeEngine
from tests.test_policies import add_version, notify


def key(client: Any, *scopes: str) -> dict[str, str]:
    r = client.post("/v1/admin/keys", json={"name": "dev", "scopes": list(scopes)}, headers=ADMIN)
    assert r.status_code == 201, r.text
    assert r.json()["scopes"] == list(scopes)
    return {"Authorization": f"Bearer {r.json()['key']}"}


@pytest.fixture
def setup(make_client: Any, db_url: str) -> Any:
    def make(**settings: Any) -> tuple[Any, FakeEngine, Any]:
        engine = FakeEngine()
        client = make_client(db_url, engine, policy_poll_seconds=3600, **settings)
        return client, engine, client.app.state.runtime.registry

    make.db_url = db_url  # type: ignore[attr-defined]
    return make


@contextlib.contextmanager
def as_caller(client: Any, headers: dict[str, str]) -> Iterator[None]:
    """Send exactly `headers` (the client otherwise sends the operator token)."""
    saved = dict(client.headers)
    client.headers.clear()
    client.headers.update(headers)
    try:
        yield
    finally:
        client.headers.clear()
        client.headers.update(saved)


def session(client: Any) -> dict[str, str]:
    with as_caller(client, {}):
        r = client.post("/v1/session")
    assert r.status_code == 201, r.text
    client.cookies.clear()
    return {"Cookie": f"loopchat_session={r.cookies['loopchat_session']}"}


def get(client: Any, headers: dict[str, str], path: str) -> Any:
    with as_caller(client, headers):
        return client.get(path)


def models(client: Any, headers: dict[str, str]) -> dict[str, tuple[str, str | None]]:
    r = get(client, headers, "/v1/models")
    assert r.status_code == 200, r.text
    return {m["id"]: (m["status"], m["kind"]) for m in r.json()["data"]}


def test_roles_and_pinning_are_for_operators_and_pin_keys(setup: Any) -> None:
    client, _, registry = setup(canary_share=0.5)
    add_version(setup.db_url, "v1")
    notify(client, registry, "v1")
    assert registry.canary is not None and registry.canary.name == "v1"

    dev, pinner, anon = key(client), key(client, "pin"), session(client)
    for caller in (dev, anon):
        shown = models(client, caller)
        assert shown == {"loopchat": ("serving", None), "loopchat@v0": ("serving", None)}
        assert "canary" not in get(client, caller, "/v1/models").text
    assert models(client, pinner) == {
        "loopchat": ("serving", None),
        "loopchat@v0": ("serving", None),
        "loopchat@v1": ("available", None),
    }
    operator = models(client, ADMIN)
    assert operator["loopchat@v1"] == ("canary", "lora")

    def chat(headers: dict[str, str], model: str) -> Any:
        with as_caller(client, headers):
            return client.post("/v1/chat/completions", json={"model": model, "messages": HI})

    for caller in (dev, anon):
        assert chat(caller, "loopchat@v0").status_code == 200
        loaded, missing = chat(caller, "loopchat@v1"), chat(caller, "loopchat@v9")
        # The same answer for a loaded canary and a name that does not exist.
        assert loaded.status_code == missing.status_code == 404
        assert loaded.json()["error"]["code"] == missing.json()["error"]["code"]
        assert "canary" not in loaded.text
    assert chat(pinner, "loopchat@v1").json()["model"] == "loopchat@v1"
    assert chat(ADMIN, "loopchat@v1").json()["model"] == "loopchat@v1"


def test_unknown_key_scope_is_refused(setup: Any) -> None:
    client, _, _ = setup()
    r = client.post("/v1/admin/keys", json={"name": "x", "scopes": ["admin"]}, headers=ADMIN)
    assert r.status_code == 422 and r.json()["error"]["param"].startswith("scopes")
    assert client.get("/v1/admin/keys", headers=ADMIN).json() == []


class _StubChat:
    """Streams a scripted list of words per side, each after its side's delay."""

    def __init__(self, words: dict[str, int], delay: dict[str, float]):
        self.words, self.delay = words, delay

    async def stream(self, side: Any) -> AsyncIterator[ChoiceDelta | ChatResult]:
        for i in range(self.words[side]):
            await asyncio.sleep(self.delay[side])
            yield ChoiceDelta(0, f"{side}{i} ", None)
        yield ChatResult(side, [])  # type: ignore[arg-type]


def _stream(words: dict[str, int], delay: dict[str, float]) -> list[tuple[str, str, float]]:
    service = ComparisonService(_StubChat(words, delay), None, None)  # type: ignore[arg-type]
    plan = ComparisonPlan("cmp-x", "a", "b")  # type: ignore[arg-type]

    async def run() -> list[tuple[str, str, float]]:
        out = []
        async for side, ev in service.stream(plan):
            kind = "delta" if isinstance(ev, ChoiceDelta) else "done"
            out.append((side, kind, time.monotonic()))
        return out

    return asyncio.run(run())


def test_a_fast_side_waits_for_the_slow_one() -> None:
    """Side a decodes ten times faster than b; the client still sees a, b, a, b, ..."""
    out = _stream({"a": 6, "b": 6}, {"a": 0.003, "b": 0.05})
    assert [s for s, kind, _ in out if kind == "delta"] == ["a", "b"] * 6
    assert [s for s, kind, _ in out if kind == "done"] == ["a", "b"]
    # Each a-delta goes out together with its b-delta, not at a's own pace.
    deltas = [t for _, kind, t in out if kind == "delta"]
    assert all(deltas[i + 1] - deltas[i] < 0.02 for i in range(0, 12, 2))


def test_the_longer_side_is_held_until_it_ends() -> None:
    out = _stream({"a": 2, "b": 5}, {"a": 0.001, "b": 0.05})
    assert [s for s, kind, _ in out] == ["a", "b", "a", "b", "b", "b", "b", "a", "b"]
    tail = [t for _, _, t in out[4:]]
    assert tail[-1] - tail[0] < 0.02  # b's rest comes at once, after b has finished
