"""Chat API on the transformers engine with a tiny random model, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from store.db.models import Generation, GenerationStatus, PolicyVersion
from store.db.session import make_engine

CHAT = "/v1/chat/completions"
HELLO = [{"role": "user", "content": "Say hello."}]


def rows(db_url: str) -> list[Generation]:
    eng = make_engine(db_url)
    from sqlalchemy.orm import Session

    with Session(eng) as s:
        out = list(s.scalars(sa.select(Generation).order_by(Generation.created_at)))
        for g in out:
            s.expunge(g)
    eng.dispose()
    return out


def sse_events(text: str) -> list[Any]:
    events = []
    for line in text.splitlines():
        if line.startswith("data: "):
            data = line[len("data: ") :]
            events.append(data if data == "[DONE]" else json.loads(data))
    return events


def test_completion_is_stored_with_its_version(make_client: Any, db_url: str) -> None:
    client: TestClient = make_client(db_url)
    r = client.post(CHAT, json={"messages": HELLO, "max_tokens": 8, "seed": 3, "temperature": 0.8})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == "loopchat@v0"
    assert r.headers["x-policy-version"] == "loopchat@v0"
    assert body["id"].startswith("chatcmpl-")
    assert body["usage"]["completion_tokens"] <= 8
    [g] = rows(db_url)
    assert g.id == body["id"] == body["choices"][0]["generation_id"]
    assert g.text == body["choices"][0]["message"]["content"]
    assert g.status is GenerationStatus.COMPLETED
    assert g.prompt == HELLO
    assert g.sampling["seed"] == 3 and g.sampling["max_tokens"] == 8
    assert g.prompt_tokens == body["usage"]["prompt_tokens"] > 0
    assert g.completion_tokens == body["usage"]["completion_tokens"]
    assert g.latency_ms > 0
    eng = make_engine(db_url)
    with eng.connect() as c:
        assert (
            c.execute(
                sa.select(PolicyVersion.name).where(PolicyVersion.id == g.policy_version_id)
            ).scalar()
            == "v0"
        )
    eng.dispose()


def test_server_sampling_defaults_apply_when_left_out(make_client: Any, db_url: str) -> None:
    client: TestClient = make_client(db_url, default_temperature=0.3, default_top_p=0.8)
    assert client.post(CHAT, json={"messages": HELLO, "max_tokens": 2}).status_code == 200
    body = {"messages": HELLO, "max_tokens": 2, "temperature": 0, "top_p": 1}
    assert client.post(CHAT, json=body).status_code == 200
    first, second = rows(db_url)
    assert (first.sampling["temperature"], first.sampling["top_p"]) == (0.3, 0.8)
    assert (second.sampling["temperature"], second.sampling["top_p"]) == (0.0, 1.0)


def test_same_seed_same_reply(make_client: Any) -> None:
    client: TestClient = make_client()
    req = {"messages": HELLO, "max_tokens": 12, "seed": 42, "temperature": 1.0}
    a = client.post(CHAT, json=req).json()["choices"][0]["message"]["content"]
    b = client.post(CHAT, json=req).json()["choices"][0]["message"]["content"]
    assert a == b


def test_n_choices_each_stored(make_client: Any, db_url: str) -> None:
    client: TestClient = make_client(db_url)
    r = client.post(CHAT, json={"messages": HELLO, "max_tokens": 6, "n": 3, "seed": 1})
    assert r.status_code == 200, r.text
    choices = r.json()["choices"]
    assert [c["index"] for c in choices] == [0, 1, 2]
    stored = {g.id: g for g in rows(db_url)}
    assert set(stored) == {c["generation_id"] for c in choices}
    assert len({g.request_id for g in stored.values()}) == 1
    assert {g.choice_index for g in stored.values()} == {0, 1, 2}


def test_stream_sse_and_done(make_client: Any, db_url: str) -> None:
    client: TestClient = make_client(db_url)
    with client.stream(
        "POST",
        CHAT,
        json={
            "messages": HELLO,
            "max_tokens": 10,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
    ) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["x-policy-version"] == "loopchat@v0"
        events = sse_events(r.read().decode())
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    finishes = [
        c["choices"][0]["finish_reason"]
        for c in chunks
        if c["choices"] and c["choices"][0].get("finish_reason")
    ]
    assert len(finishes) == 1
    usage = chunks[-1]["usage"]
    [g] = rows(db_url)
    assert g.id == chunks[0]["id"]
    assert g.text == text
    assert g.completion_tokens == usage["completion_tokens"]


def test_stop_and_max_tokens_over_http(make_client: Any) -> None:
    client: TestClient = make_client()
    req = {"messages": HELLO, "max_tokens": 30, "seed": 11}
    full = client.post(CHAT, json=req).json()["choices"][0]
    assert full["finish_reason"] == "length"
    text = full["message"]["content"]
    stop = text[len(text) // 2 : len(text) // 2 + 3]
    cut = client.post(CHAT, json={**req, "stop": stop}).json()["choices"][0]
    assert cut["finish_reason"] == "stop"
    assert cut["message"]["content"] == text[: text.index(stop)]


def test_models_lists_alias_and_versions(make_client: Any) -> None:
    client: TestClient = make_client()
    ids = [m["id"] for m in client.get("/v1/models").json()["data"]]
    assert ids == ["loopchat", "loopchat@v0"]
    r = client.post(CHAT, json={"model": "loopchat@v0", "messages": HELLO, "max_tokens": 2})
    assert r.status_code == 200 and r.json()["model"] == "loopchat@v0"
    r = client.post(CHAT, json={"model": "v0", "messages": HELLO, "max_tokens": 2})
    assert r.status_code == 200


def test_health_ready_and_metrics(make_client: Any) -> None:
    client: TestClient = make_client()
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz").json()
    assert ready["status"] == "ready" and ready["serving"] == "loopchat@v0"
    client.post(CHAT, json={"messages": HELLO, "max_tokens": 3})
    text = client.get("/metrics").text
    assert 'loopchat_generations_total{outcome="length",source="api",version="v0"} 1.0' in text
    assert 'loopchat_completion_tokens_total{version="v0"} 3.0' in text


@pytest.mark.parametrize("engine_name", ["fake"])
def test_not_ready_until_engine_loads(tmp_path: Any, tiny_model_dir: Any, engine_name: str) -> None:
    import asyncio

    from service.app import create_app
    from service.settings import Settings
    from tests.fakes import FakeEngine

    class SlowStart(FakeEngine):
        async def start(self) -> None:
            await asyncio.sleep(1.0)
            await super().start()

    from tests.conftest import ADMIN, ADMIN_TOKEN

    st = Settings(
        data_dir=tmp_path, model=tiny_model_dir, engine="transformers", admin_token=ADMIN_TOKEN
    )
    with TestClient(create_app(st, engine=SlowStart()), headers=ADMIN) as client:
        r = client.get("/readyz")
        assert r.status_code == 503 and r.json()["status"] == "starting"
        r = client.post(CHAT, json={"messages": HELLO})
        assert r.status_code == 503
        assert r.json()["error"]["code"] == "engine_not_ready"
        from tests.conftest import wait_ready

        wait_ready(client)
        assert client.post(CHAT, json={"messages": HELLO}).status_code == 200
