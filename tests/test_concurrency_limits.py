"""What a caller may hold at once: generations in flight and open chat sockets.

The slots are leases (`service.identity.slots`): in this process by default, in Redis
when the rate-limit store is Redis, so two replicas share one count. A refusal is a 429
in the envelope (an error frame, and for a socket a 1013 close) and stores nothing.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from service.identity.limits import LimitsStoreError
from service.identity.slots import MemorySlots, RedisSlots, Slots
from store.db.models import Comparison
from tests.conftest import ADMIN
from tests.dbutil import count
from tests.fakes import FakeEngine
from tests.test_api_chat import CHAT, HELLO, rows
from tests.test_api_errors import assert_error
from tests.test_feedback_api import new_user

MakeClient = Callable[..., TestClient]
REDIS = "redis://127.0.0.1:6379"
WS = "/v1/ws/chat"


def redis_or_skip() -> RedisSlots:
    slots = RedisSlots(REDIS)
    try:
        slots.held("probe")
    except Exception:
        pytest.skip("no Redis on 127.0.0.1:6379")
    return slots


@pytest.mark.parametrize("kind", ["memory", "redis"])
def test_leases_count_free_and_lapse(kind: str) -> None:
    slots: Slots = MemorySlots() if kind == "memory" else redis_or_skip()
    key = f"t:{uuid.uuid4().hex}"
    first = slots.take(key, limit=3, cost=2, ttl_s=30)
    assert first is not None and slots.held(key) == 2
    assert slots.take(key, limit=3, cost=2, ttl_s=30) is None  # 2 + 2 > 3: nothing taken
    assert slots.held(key) == 2
    short = slots.take(key, limit=3, cost=1, ttl_s=0.3)
    assert short is not None and slots.held(key) == 3
    slots.give_back(key, first, 2)
    slots.give_back(key, first, 2)  # twice changes nothing
    assert slots.held(key) == 1
    time.sleep(0.5)  # a lease nobody gave back frees itself
    assert slots.held(key) == 0
    renewed = slots.take(key, limit=1, cost=1, ttl_s=0.3)
    assert renewed is not None
    slots.renew(key, renewed, 1, 30)
    time.sleep(0.5)
    assert slots.held(key) == 1
    slots.give_back(key, renewed, 1)


def test_two_processes_share_one_count_in_redis() -> None:
    a, b = redis_or_skip(), RedisSlots(REDIS)
    key = f"t:{uuid.uuid4().hex}"
    assert a.take(key, 2, 1, 30) is not None and b.take(key, 2, 1, 30) is not None
    assert a.take(key, 2, 1, 30) is None and b.take(key, 2, 1, 30) is None


def test_an_unreachable_store_raises() -> None:
    with pytest.raises(LimitsStoreError):
        RedisSlots("redis://127.0.0.1:1").take("k", 1, 1, 1)


def _streaming(client: TestClient, headers: dict[str, str]) -> Any:
    """A socket with a reply streaming on it (the fake engine is slow)."""
    ws = client.websocket_connect(WS, headers=dict(headers))
    ws.__enter__()
    ws.send_json({"type": "chat", "messages": HELLO})
    assert ws.receive_json()["type"] == "start"
    return ws


def test_generations_at_once_per_caller(make_client: MakeClient, db_url: str) -> None:
    client = make_client(
        db_url,
        engine=FakeEngine(" ".join(["w"] * 200), delay=0.05),  # 10 s a reply
        auth=False,
        generations_at_once_per_user=2,
    )
    dev, other = new_user(client), new_user(client)
    one, two = _streaming(client, dev), _streaming(client, dev)
    try:
        stored = len(rows(db_url))
        r = client.post(CHAT, json={"messages": HELLO}, headers=dev)
        err = assert_error(r, 429, "rate_limit_exceeded")
        assert "at once" in err["message"] and r.headers["Retry-After"] == "1"
        r = client.post("/v1/comparisons", json={"messages": HELLO}, headers=dev)
        assert_error(r, 429, "rate_limit_exceeded")
        assert len(rows(db_url)) == stored and count(db_url, Comparison) == 0
        with client.websocket_connect(WS, headers=dict(dev)) as third:
            third.send_json({"type": "compare", "messages": HELLO})
            frame = third.receive_json()
            assert frame["type"] == "error" and frame["error"]["code"] == "rate_limit_exceeded"
        short = {"messages": HELLO, "max_tokens": 2}
        assert client.post(CHAT, json=short, headers=other).status_code == 200
        assert client.post(CHAT, json=short, headers=ADMIN).status_code == 200
    finally:
        for ws in (one, two):
            ws.__exit__(None, None, None)
    # Once the streams are gone, their slots are free again: a comparison takes two.
    deadline = time.monotonic() + 10
    while client.app.state.runtime.slots.held(f"gen:{me(client, dev)}") and (
        time.monotonic() < deadline
    ):
        time.sleep(0.05)
    r = client.post("/v1/comparisons", json={"messages": HELLO, "max_tokens": 2}, headers=dev)
    assert r.status_code == 201


def me(client: TestClient, headers: dict[str, str]) -> str:
    return str(client.get("/v1/me", headers=headers).json()["user_id"])


def _settled(ws: Any) -> Any:
    """A round trip: once the server answers a frame, it has taken the socket's slot."""
    ws.send_text("{}")
    assert ws.receive_json()["type"] == "error"
    return ws


def test_sockets_at_once_per_caller(make_client: MakeClient) -> None:
    client = make_client(engine=FakeEngine("hi"), auth=False, ws_connections_per_user=2)
    dev, other = new_user(client), new_user(client)
    with contextlib.ExitStack() as stack:
        first = stack.enter_context(client.websocket_connect(WS, headers=dict(dev)))
        _settled(first)
        with client.websocket_connect(WS, headers=dict(dev)) as second:
            _settled(second)
            with client.websocket_connect(WS, headers=dict(dev)) as third:
                frame = third.receive_json()
                assert frame["type"] == "error"
                assert frame["error"]["code"] == "rate_limit_exceeded"
                assert "sockets" in frame["error"]["message"]
                with pytest.raises(WebSocketDisconnect) as closed:
                    third.receive_json()
                assert closed.value.code == 1013
            with client.websocket_connect(WS, headers=dict(other)) as ws:  # per caller
                ws.send_json({"type": "chat", "messages": HELLO})
                assert ws.receive_json()["type"] == "start"
    # Both of dev's sockets are closed (their slots freed as the server sees them go):
    # a new one is let in and works.
    slots, key = client.app.state.runtime.slots, f"ws:{me(client, dev)}"
    deadline = time.monotonic() + 10
    while slots.held(key) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert slots.held(key) == 0
    with client.websocket_connect(WS, headers=dict(dev)) as ws:
        ws.send_json({"type": "chat", "messages": HELLO})
        assert ws.receive_json()["type"] == "start"
