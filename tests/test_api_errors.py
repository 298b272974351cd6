"""Bad input gets a clear OpenAI-shaped 4xx, changes nothing, and never shows a stack trace."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.conftest import ADMIN, ADMIN_TOKEN
from tests.fakes import FakeEngine
from tests.servers import running_server
from tests.test_api_chat import CHAT, HELLO, rows


def assert_error(
    r: httpx.Response, status: int, code: str | None = None, param: str | None = None
) -> dict[str, Any]:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "code", "param"}
    assert err["message"] and "Traceback" not in err["message"]
    if code is not None:
        assert err["code"] == code
    if param is not None:
        assert err["param"] == param
    return err


BAD_BODIES: list[tuple[str, dict[str, Any], int, str | None]] = [
    ("missing messages", {"model": "loopchat"}, 422, "messages"),
    ("empty messages", {"messages": []}, 422, "messages"),
    ("unknown role", {"messages": [{"role": "wizard", "content": "hi"}]}, 422, None),
    ("content wrong type", {"messages": [{"role": "user", "content": 5}]}, 422, None),
    ("temperature wrong type", {"messages": HELLO, "temperature": "hot"}, 422, "temperature"),
    ("temperature out of range", {"messages": HELLO, "temperature": 3}, 422, "temperature"),
    ("top_p zero", {"messages": HELLO, "top_p": 0}, 422, "top_p"),
    ("max_tokens zero", {"messages": HELLO, "max_tokens": 0}, 422, "max_tokens"),
    ("n zero", {"messages": HELLO, "n": 0}, 422, "n"),
    ("stream wrong type", {"messages": HELLO, "stream": "yes please"}, 422, "stream"),
    ("empty stop", {"messages": HELLO, "stop": [""]}, 422, "stop"),
    ("tools unsupported", {"messages": HELLO, "tools": [{"type": "function"}]}, 422, None),
    ("whitespace only", {"messages": [{"role": "user", "content": " \n"}]}, 400, "messages"),
]


def test_a_conversation_ending_with_the_assistant_gets_the_next_reply(
    client: TestClient,
) -> None:
    """As OpenAI's and vLLM's servers do: the model answers after the last message,
    whoever wrote it (the schema could not say "not the assistant last")."""
    r = client.post(CHAT, json={"messages": [*HELLO, {"role": "assistant", "content": "hi"}]})
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"]


@pytest.fixture
def client(make_client: Any) -> TestClient:
    c: TestClient = make_client(
        engine=FakeEngine(), max_new_tokens=64, max_prompt_tokens=64, max_n=2
    )
    return c


@pytest.mark.parametrize(
    ("name", "body", "status", "param"), BAD_BODIES, ids=[b[0] for b in BAD_BODIES]
)
def test_bad_bodies(
    client: TestClient, name: str, body: dict[str, Any], status: int, param: str | None
) -> None:
    err = assert_error(client.post(CHAT, json=body), status)
    if param is not None:
        assert err["param"] is not None and err["param"].startswith(param), err


def test_malformed_json(client: TestClient) -> None:
    r = client.post(CHAT, content=b'{"messages": [', headers={"content-type": "application/json"})
    assert_error(r, 400, "invalid_json")


def test_blank_messages(client: TestClient) -> None:
    assert_error(
        client.post(CHAT, json={"messages": [{"role": "user", "content": "   "}]}),
        400,
        param="messages",
    )


def test_prompt_over_token_limit(client: TestClient) -> None:
    long = " ".join(["word"] * 200)
    err = assert_error(
        client.post(CHAT, json={"messages": [{"role": "user", "content": long}]}), 400
    )
    assert err["code"] == "context_length_exceeded" and "limit is 64" in err["message"]


def test_max_tokens_over_cap(client: TestClient) -> None:
    err = assert_error(
        client.post(CHAT, json={"messages": HELLO, "max_tokens": 65}), 400, param="max_tokens"
    )
    assert "cap of 64" in err["message"]


def test_n_over_cap(client: TestClient) -> None:
    assert_error(client.post(CHAT, json={"messages": HELLO, "n": 3}), 400, param="n")


def test_unknown_model(client: TestClient) -> None:
    err = assert_error(
        client.post(CHAT, json={"model": "gpt-9", "messages": HELLO}),
        404,
        "model_not_found",
        "model",
    )
    assert "gpt-9" in err["message"]


def test_oversize_body(make_client: Any) -> None:
    c: TestClient = make_client(engine=FakeEngine(), max_request_bytes=2048)
    body = {"messages": [{"role": "user", "content": "x" * 5000}]}
    assert_error(c.post(CHAT, json=body), 413, "payload_too_large")

    def chunks():  # no Content-Length: chunked upload
        yield b'{"messages": [{"role": "user", "content": "'
        for _ in range(10):
            yield b"x" * 500
        yield b'"}]}'

    assert_error(c.post(CHAT, content=chunks(), headers={"content-type": "application/json"}), 413)


def test_unknown_route_and_method(client: TestClient) -> None:
    assert_error(client.get("/v1/nothing"), 404)
    assert_error(client.get(CHAT), 405)


def test_refusals_store_nothing(make_client: Any, tmp_path: Any) -> None:
    db = f"sqlite:///{tmp_path / 'r.db'}"
    c: TestClient = make_client(db, engine=FakeEngine(), max_new_tokens=64)
    for body in (
        {"messages": []},
        {"messages": HELLO, "max_tokens": 999},
        {"model": "x", "messages": HELLO},
    ):
        assert c.post(CHAT, json=body).status_code >= 400
    assert rows(db) == []


def test_engine_failure_mid_stream_is_an_event_then_done(make_client: Any, tmp_path: Any) -> None:
    engine = FakeEngine("a b c d e")
    engine.fail_after = 2
    db = f"sqlite:///{tmp_path / 'f.db'}"
    c: TestClient = make_client(db, engine=engine)
    with c.stream("POST", CHAT, json={"messages": HELLO, "stream": True}) as r:
        assert r.status_code == 200
        body = r.read().decode()
    assert '"error"' in body and "Traceback" not in body
    assert body.rstrip().endswith("data: [DONE]")
    r = c.post(CHAT, json={"messages": HELLO})
    assert_error(r, 500, "engine_error")


@contextlib.asynccontextmanager
async def live_server(
    tmp_path: Any, model: Any, engine: FakeEngine
) -> AsyncIterator[tuple[str, str]]:
    """A real uvicorn server on a free port around `engine`; yields (base url, db url)."""
    from service.settings import Settings

    db = f"sqlite:///{tmp_path / 'd.db'}"
    st = Settings(
        data_dir=tmp_path,
        database_url=db,
        model=model,
        max_new_tokens=512,
        admin_token=ADMIN_TOKEN,
    )
    with running_server(st, engine) as base:
        yield base, db


async def _wait_stored(engine: FakeEngine, db: str) -> None:
    for _ in range(100):
        if engine.active == 0 and rows(db):
            return
        await asyncio.sleep(0.05)


async def test_client_disconnect_mid_stream_stores_cut_off(
    tmp_path: Any, tiny_model_dir: Any
) -> None:
    """The client drops an SSE stream: the row says cut_off and the engine slot is free."""
    from store.db.models import GenerationStatus

    engine = FakeEngine(" ".join(f"w{i}" for i in range(200)), delay=0.02)
    async with live_server(tmp_path, tiny_model_dir, engine) as (base, db):
        async with httpx.AsyncClient(base_url=base, timeout=10, headers=ADMIN) as http:
            body = {"messages": HELLO, "stream": True, "max_tokens": 200}
            async with http.stream("POST", CHAT, json=body) as r:
                seen = 0
                async for line in r.aiter_lines():
                    seen += line.startswith("data: ")
                    if seen >= 5:
                        break
        await _wait_stored(engine, db)
        [g] = rows(db)
        assert g.status is GenerationStatus.CUT_OFF
        assert 0 < g.completion_tokens < 200
        assert g.text.startswith("w0 w1")
        assert engine.active == 0


async def test_client_disconnect_without_streaming_cancels_the_work(
    tmp_path: Any, tiny_model_dir: Any
) -> None:
    from store.db.models import GenerationStatus

    engine = FakeEngine(" ".join(f"w{i}" for i in range(200)), delay=0.02)
    async with live_server(tmp_path, tiny_model_dir, engine) as (base, db):
        async with httpx.AsyncClient(base_url=base, timeout=0.5, headers=ADMIN) as http:
            with pytest.raises(httpx.ReadTimeout):
                await http.post(CHAT, json={"messages": HELLO, "max_tokens": 200})
        await _wait_stored(engine, db)
        [g] = rows(db)
        assert g.status is GenerationStatus.CUT_OFF
        assert 0 < g.completion_tokens < 200
        assert engine.active == 0
