"""Generation costs its caller: requests and asked-for tokens per window, per caller, over
chat (HTTP and WebSocket) and comparisons (two generations each). A refusal is a 429 with
Retry-After in the envelope (an error frame on the socket) and stores nothing; the
operator is not limited."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient

from store.db.models import Comparison
from tests.conftest import ADMIN
from tests.dbutil import count
from tests.fakes import FakeEngine
from tests.test_api_chat import CHAT, HELLO, rows
from tests.test_api_errors import assert_error
from tests.test_feedback_api import new_user

MakeClient = Callable[..., TestClient]


def chat(client: TestClient, headers: dict[str, str], **body: object) -> int:
    return client.post(CHAT, json={"messages": HELLO, **body}, headers=headers).status_code


def test_requests_per_caller(make_client: MakeClient, db_url: str) -> None:
    client = make_client(
        db_url, engine=FakeEngine("hi"), auth=False, generation_requests_per_user="2/minute"
    )
    dev, other = new_user(client), new_user(client)
    assert [chat(client, dev), chat(client, dev)] == [200, 200]
    stored = len(rows(db_url))
    r = client.post(CHAT, json={"messages": HELLO, "stream": True}, headers=dev)
    err = assert_error(r, 429, "rate_limit_exceeded")
    assert "requests" in err["message"] and 1 <= int(r.headers["Retry-After"]) <= 60
    assert len(rows(db_url)) == stored  # nothing stored for the refused one
    assert chat(client, other) == 200  # per caller
    assert [chat(client, ADMIN) for _ in range(4)] == [200] * 4  # the operator: no limit


def test_tokens_asked_for_count(make_client: MakeClient) -> None:
    client = make_client(
        engine=FakeEngine("hi"), auth=False, generation_tokens_per_user="100/minute"
    )
    dev = new_user(client)
    assert chat(client, dev, max_tokens=60) == 200
    r = client.post(CHAT, json={"messages": HELLO, "max_tokens": 60}, headers=dev)
    assert "tokens" in assert_error(r, 429, "rate_limit_exceeded")["message"]
    assert chat(client, dev, max_tokens=40) == 200  # 100 of 100
    # a request refused for bad input spends nothing
    bad = client.post(CHAT, json={"messages": HELLO, "max_tokens": 10**6}, headers=dev)
    assert bad.status_code == 400


def test_a_comparison_is_two_generations(make_client: MakeClient, db_url: str) -> None:
    client = make_client(
        db_url, engine=FakeEngine("hi"), auth=False, generation_requests_per_user="3/minute"
    )
    dev = new_user(client)
    assert client.post("/v1/comparisons", json={"messages": HELLO}, headers=dev).status_code == 201
    r = client.post("/v1/comparisons", json={"messages": HELLO}, headers=dev)
    assert_error(r, 429, "rate_limit_exceeded")
    assert count(db_url, Comparison) == 1
    assert chat(client, dev) == 200  # both sides are charged at once: the refused one took none


@pytest.mark.parametrize("kind, generations", [("chat", 1), ("compare", 2)])
def test_the_socket_gets_an_error_frame(
    make_client: MakeClient, kind: str, generations: int
) -> None:
    client = make_client(
        engine=FakeEngine("hi"),
        auth=False,
        generation_requests_per_user=f"{generations}/minute",
    )
    dev = new_user(client)

    def ask(ws: object) -> dict[str, object]:
        ws.send_json({"type": kind, "messages": HELLO})  # type: ignore[attr-defined]
        dones = 0
        while True:
            f = ws.receive_json()  # type: ignore[attr-defined]
            dones += f["type"] == "done"
            if f["type"] == "error" or dones == generations:
                return f  # type: ignore[no-any-return]

    with client.websocket_connect("/v1/ws/chat", headers=dev) as ws:
        assert ask(ws)["type"] == "done"
        refused = ask(ws)
        assert refused["type"] == "error"
        assert refused["error"]["code"] == "rate_limit_exceeded"  # type: ignore[index]
