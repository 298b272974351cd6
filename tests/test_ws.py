"""WS /v1/ws/chat: token-by-token streaming, stop, bad frames keep the socket open."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from store.db.models import GenerationStatus
from tests.conftest import ADMIN
from tests.fakes import FakeEngine
from tests.test_api_chat import HELLO, rows


def frames_until(ws: Any, kinds: set[str]) -> list[dict[str, Any]]:
    out = []
    while True:
        f = ws.receive_json()
        out.append(f)
        if f["type"] in kinds:
            return out


def test_ws_streams_one_reply_token_by_token(make_client: Any, tmp_path: Any) -> None:
    db = f"sqlite:///{tmp_path / 'w.db'}"
    client: TestClient = make_client(db, engine=FakeEngine("one two three"))
    with client.websocket_connect("/v1/ws/chat") as ws:
        ws.send_json({"type": "chat", "messages": HELLO})
        frames = frames_until(ws, {"done", "error"})
    start, *deltas, done = frames
    assert start["type"] == "start" and start["model"] == "loopchat@v0"
    assert [d["content"] for d in deltas] == ["one", " two", " three"]
    assert done["type"] == "done" and done["choices"][0]["finish_reason"] == "stop"
    [g] = rows(db)
    assert g.id == start["generation_ids"][0] and g.text == "one two three" and g.source == "ws"


def test_ws_bad_frames_then_good_one(make_client: Any) -> None:
    client: TestClient = make_client(engine=FakeEngine("ok"))
    with client.websocket_connect("/v1/ws/chat") as ws:
        ws.send_text("{nope")
        assert ws.receive_json()["error"]["message"].startswith("frame is not valid JSON")
        ws.send_json({"type": "chat", "messages": []})
        assert ws.receive_json()["type"] == "error"
        ws.send_json({"type": "chat", "messages": HELLO, "model": "nope"})
        assert ws.receive_json()["error"]["code"] == "model_not_found"
        ws.send_json({"type": "chat", "messages": HELLO})
        assert frames_until(ws, {"done", "error"})[-1]["type"] == "done"


def test_ws_stop_stores_cut_off(make_client: Any, tmp_path: Any) -> None:
    db = f"sqlite:///{tmp_path / 's.db'}"
    engine = FakeEngine(" ".join(f"w{i}" for i in range(300)), delay=0.01)
    client: TestClient = make_client(db, engine=engine, max_new_tokens=400)
    with client.websocket_connect("/v1/ws/chat") as ws:
        ws.send_json({"type": "chat", "messages": HELLO, "max_tokens": 300})
        assert ws.receive_json()["type"] == "start"
        ws.receive_json()
        ws.receive_json()
        ws.send_json({"type": "stop"})
        last = frames_until(ws, {"stopped", "done"})[-1]
        assert last["type"] == "stopped"
        ws.send_json({"type": "chat", "messages": HELLO, "max_tokens": 2})
        assert frames_until(ws, {"done", "error"})[-1]["type"] == "done"
    import time

    for _ in range(50):
        if len(rows(db)) == 2:
            break
        time.sleep(0.05)
    stopped, finished = sorted(rows(db), key=lambda g: g.completion_tokens, reverse=True)
    assert stopped.status is GenerationStatus.CUT_OFF and 2 <= stopped.completion_tokens < 300
    assert finished.status is GenerationStatus.COMPLETED


def test_a_page_from_another_origin_cannot_use_the_visitors_cookie(make_client: Any) -> None:
    client: TestClient = make_client(
        engine=FakeEngine("hi"), auth=False, allowed_origins="https://chat.example.org"
    )
    assert client.post("/v1/session").status_code == 201  # the visitor's cookie is set

    def opens(origin: str | None, **headers: str) -> dict[str, Any]:
        sent = {**headers, **({"origin": origin} if origin else {})}
        with client.websocket_connect("/v1/ws/chat", headers=sent) as ws:
            ws.send_json({"type": "chat", "messages": HELLO})
            return frames_until(ws, {"done", "error"})[-1]

    for evil in ("http://evil.example", "http://testserver.evil.example", "null"):
        refused = opens(evil)
        assert refused["type"] == "error" and refused["error"]["code"] == "origin_not_allowed"
    assert opens("http://testserver")["type"] == "done"  # the server's own page
    assert opens("https://chat.example.org/")["type"] == "done"  # configured
    assert opens(None)["type"] == "done"  # not a browser page: the cookie's owner
    # an API key is not sent by browsers on their own: any origin may use one it holds
    key = client.post("/v1/admin/keys", json={"name": "k"}, headers=ADMIN)
    assert key.status_code == 201, key.text
    bearer = {"authorization": f"Bearer {key.json()['key']}"}
    assert opens("http://evil.example", **bearer)["type"] == "done"


def test_a_revoked_key_or_an_ended_session_closes_its_open_socket(make_client: Any) -> None:
    client: TestClient = make_client(engine=FakeEngine("hi"), auth=False, ws_recheck_seconds=0.1)
    made = client.post("/v1/admin/keys", json={"name": "k"}, headers=ADMIN)
    assert made.status_code == 201, made.text
    bearer = {"authorization": f"Bearer {made.json()['key']}"}
    with client.websocket_connect("/v1/ws/chat", headers=bearer) as ws:
        ws.send_json({"type": "chat", "messages": HELLO})
        assert frames_until(ws, {"done", "error"})[-1]["type"] == "done"
        assert client.delete(f"/v1/admin/keys/{made.json()['id']}", headers=ADMIN).is_success
        closing = ws.receive_json()
        assert closing["type"] == "error" and closing["error"]["code"] == "invalid_api_key"
        with pytest.raises(WebSocketDisconnect) as gone:
            ws.receive_json()
        assert gone.value.code == 1008

    assert client.post("/v1/session").status_code == 201
    with client.websocket_connect("/v1/ws/chat") as ws:
        ws.send_json({"type": "chat", "messages": HELLO})
        assert frames_until(ws, {"done", "error"})[-1]["type"] == "done"
        assert client.delete("/v1/session").status_code == 204  # logout, in another tab
        closing = ws.receive_json()
        assert closing["type"] == "error" and closing["error"]["code"] == "invalid_session"


def test_an_idle_socket_is_closed(make_client: Any) -> None:
    client: TestClient = make_client(
        engine=FakeEngine("hi"), ws_recheck_seconds=0.1, ws_idle_timeout_seconds=0.5
    )
    with client.websocket_connect("/v1/ws/chat") as ws:
        ws.send_json({"type": "chat", "messages": HELLO})
        assert frames_until(ws, {"done", "error"})[-1]["type"] == "done"
        closing = ws.receive_json()  # nothing sent for 0.5 s after the reply
        assert closing["error"]["code"] == "idle_timeout"
        with pytest.raises(WebSocketDisconnect) as gone:
            ws.receive_json()
        assert gone.value.code == 1001
