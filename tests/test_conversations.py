"""/v1/conversations and the WS chat frame that fills them: history, regenerate, votes
shown on reload, stop, ownership."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from tests.fakes import FakeEngine
from tests.test_ws import frames_until

Q1 = {"role": "user", "content": "What is   a   cat?\nTell me."}


def chat(ws: Any, conv: str, messages: list[dict[str, str]]) -> list[dict[str, Any]]:
    ws.send_json({"type": "chat", "messages": messages, "conversation_id": conv})
    return frames_until(ws, {"done", "error", "stopped"})


def web_user(client: TestClient) -> TestClient:
    """A second, anonymous browser user (its own cookie) on the same running app (not
    entered: entering would run the app's startup again, with a new engine to load)."""
    other = TestClient(client.app)
    assert other.post("/v1/session").status_code in (200, 201)
    return other


def test_a_conversation_keeps_history_replies_and_votes(db_url: str, make_client: Any) -> None:
    client: TestClient = make_client(db_url, engine=FakeEngine("A small animal."))
    conv = client.post("/v1/conversations", json={}).json()
    assert conv["title"] is None
    with client.websocket_connect("/v1/ws/chat") as ws:
        first = chat(ws, conv["id"], [Q1])
        gid1 = first[0]["generation_ids"][0]
        history = [Q1, {"role": "assistant", "content": "A small animal."}]
        second = chat(ws, conv["id"], [*history, {"role": "user", "content": "And a dog?"}])
    gid2 = second[0]["generation_ids"][0]
    r = client.post(
        "/v1/feedback", json={"generation_id": gid1, "rating": "down", "reason": "too_short"}
    )
    assert r.status_code == 201, r.text

    detail = client.get(f"/v1/conversations/{conv['id']}").json()
    assert detail["title"] == "What is a cat? Tell me."  # from the first message, whitespace folded
    got = [(m["role"], m["content"], m["generation_id"]) for m in detail["messages"]]
    assert got == [
        ("user", Q1["content"], None),
        ("assistant", "A small animal.", gid1),
        ("user", "And a dog?", None),
        ("assistant", "A small animal.", gid2),
    ]
    votes = [(m["rating"], m["reason"], m["model"]) for m in detail["messages"][1::2]]
    assert votes == [("down", "too_short", "loopchat@v0"), (None, None, "loopchat@v0")]

    listing = client.get("/v1/conversations").json()["data"]
    assert [c["id"] for c in listing] == [conv["id"]]
    r = client.patch(f"/v1/conversations/{conv['id']}", json={"title": "Pets"})
    assert r.status_code == 200 and r.json()["title"] == "Pets"


def test_regenerate_replaces_the_last_reply_and_keeps_earlier_ones(make_client: Any) -> None:
    client: TestClient = make_client(engine=FakeEngine("Reply."))
    conv = client.post("/v1/conversations").json()["id"]
    with client.websocket_connect("/v1/ws/chat") as ws:
        gid1 = chat(ws, conv, [Q1])[0]["generation_ids"][0]
        q2 = [Q1, {"role": "assistant", "content": "Reply."}, {"role": "user", "content": "More"}]
        old = chat(ws, conv, q2)[0]["generation_ids"][0]
        new = chat(ws, conv, q2)[0]["generation_ids"][0]  # regenerate: the same history again
    msgs = client.get(f"/v1/conversations/{conv}").json()["messages"]
    assert [m["generation_id"] for m in msgs] == [None, gid1, None, new]
    assert old != new


def test_a_stopped_reply_is_kept_as_far_as_it_got(make_client: Any) -> None:
    engine = FakeEngine(" ".join(f"w{i}" for i in range(300)), delay=0.01)
    client: TestClient = make_client(engine=engine, max_new_tokens=400)
    conv = client.post("/v1/conversations").json()["id"]
    with client.websocket_connect("/v1/ws/chat") as ws:
        ws.send_json({"type": "chat", "messages": [Q1], "conversation_id": conv, "max_tokens": 300})
        assert ws.receive_json()["type"] == "start"
        ws.receive_json()
        ws.send_json({"type": "stop"})
        assert frames_until(ws, {"stopped", "done"})[-1]["type"] == "stopped"
    [_, reply] = client.get(f"/v1/conversations/{conv}").json()["messages"]
    assert reply["content"].startswith("w0") and len(reply["content"].split()) < 300


def test_each_reply_says_how_it_finished(make_client: Any) -> None:
    engine = FakeEngine(" ".join(f"w{i}" for i in range(300)), delay=0.01)
    client: TestClient = make_client(engine=engine, max_new_tokens=400)
    conv = client.post("/v1/conversations").json()["id"]
    with client.websocket_connect("/v1/ws/chat") as ws:
        ws.send_json({"type": "chat", "messages": [Q1], "conversation_id": conv, "max_tokens": 3})
        frames_until(ws, {"done"})
        history = [
            Q1,
            {"role": "assistant", "content": "w0 w1 w2"},
            {"role": "user", "content": "On"},
        ]
        ws.send_json({"type": "chat", "messages": history, "conversation_id": conv})
        assert ws.receive_json()["type"] == "start"
        ws.receive_json()
        ws.send_json({"type": "stop"})
        assert frames_until(ws, {"stopped", "done"})[-1]["type"] == "stopped"
    client.portal.call(client.app.state.runtime.chat_service().drain)  # type: ignore[attr-defined]
    messages = client.get(f"/v1/conversations/{conv}").json()["messages"]
    got = [(m["role"], m["status"], m["finish_reason"]) for m in messages]
    assert got == [
        ("user", None, None),
        ("assistant", "completed", "length"),  # cut at max_tokens
        ("user", None, None),
        ("assistant", "cut_off", None),  # stopped
    ]


def test_other_users_and_bad_input_change_nothing(make_client: Any) -> None:
    client: TestClient = make_client(engine=FakeEngine("ok"))
    conv = client.post("/v1/conversations", json={"title": "mine"}).json()["id"]
    other = web_user(client)
    try:
        for method, path in [("get", ""), ("patch", ""), ("delete", "")]:
            kw = {"json": {"title": "x"}} if method == "patch" else {}
            r = getattr(other, method)(f"/v1/conversations/{conv}{path}", **kw)
            assert r.status_code == 404, (method, r.text)
        assert other.get("/v1/conversations").json()["data"] == []
        with other.websocket_connect("/v1/ws/chat") as ws:
            ws.send_json({"type": "chat", "messages": [Q1], "conversation_id": conv})
            err = ws.receive_json()
            assert err["type"] == "error" and err["error"]["param"] == "conversation_id", err
    finally:
        other.close()
    assert client.get(f"/v1/conversations/{conv}").json()["messages"] == []
    for bad in ({"title": ""}, {"title": "x" * 301}, {"nope": 1}):
        assert client.patch(f"/v1/conversations/{conv}", json=bad).status_code == 422
    assert client.get(f"/v1/conversations/{conv}").json()["title"] == "mine"
    assert client.delete(f"/v1/conversations/{conv}").status_code == 204
    assert client.get(f"/v1/conversations/{conv}").status_code == 404
    assert client.get("/v1/conversations").json()["data"] == []


def test_a_chat_right_after_stop_waits_for_the_stopped_reply(make_client: Any) -> None:
    engine = FakeEngine(" ".join(f"w{i}" for i in range(300)), delay=0.01)
    client: TestClient = make_client(engine=engine, max_new_tokens=400)
    conv = client.post("/v1/conversations").json()["id"]
    with client.websocket_connect("/v1/ws/chat") as ws:
        ws.send_json({"type": "chat", "messages": [Q1], "conversation_id": conv, "max_tokens": 300})
        assert ws.receive_json()["type"] == "start"
        ws.send_json({"type": "stop"})
        ws.send_json({"type": "chat", "messages": [Q1], "conversation_id": conv, "max_tokens": 2})
        kinds = [f["type"] for f in frames_until(ws, {"done", "error"})]
    assert "error" not in kinds and kinds[-1] == "done" and "stopped" in kinds
