"""Web sessions: minting is limited per client address and for the whole service, so a
script cannot mint users to get fresh vote budgets (with Redis as the limit store, two
server processes share one count; every refusal is a 429 in the envelope and stores no
user), and logging out ends a session on the server, not only in the browser."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient

from service.identity.limits import LimitsStoreError, RateLimits, parse_rule
from service.settings import Settings
from store.db.models import User, UserKind
from tests.dbutil import count
from tests.fakes import FakeEngine
from tests.test_api_errors import assert_error

MakeClient = Callable[..., TestClient]
REDIS = "redis://127.0.0.1:6379"
XFF = "X-Forwarded-For"


def anonymous_users(db_url: str) -> int:
    return count(db_url, User, User.kind == UserKind.ANONYMOUS)


def mint(client: TestClient, address: str | None = None) -> int:
    """POST /v1/session as a fresh browser (no cookie); the status."""
    client.cookies.clear()
    headers = {XFF: address} if address else None
    return client.post("/v1/session", headers=headers).status_code


def test_one_address_gets_429_after_its_count(make_client: MakeClient, db_url: str) -> None:
    client = make_client(
        db_url, engine=FakeEngine("hi"), auth=False, session_mints_per_address="3/hour"
    )
    assert [mint(client) for _ in range(3)] == [201, 201, 201]
    client.cookies.clear()
    r = client.post("/v1/session")
    assert_error(r, 429, "rate_limit_exceeded")
    assert "your address" in r.json()["error"]["message"]
    assert 3000 <= int(r.headers["Retry-After"]) <= 3600
    assert anonymous_users(db_url) == 3  # the refused one stored nothing
    # a session already held is kept without counting again
    client.cookies.clear()
    assert mint(client) == 429


def test_the_proxy_header_is_trusted_only_when_configured(make_client: MakeClient) -> None:
    plain = make_client(engine=FakeEngine("hi"), auth=False, session_mints_per_address="2/hour")
    # not configured: a client cannot pick its own address
    assert [mint(plain, f"10.0.0.{i}") for i in range(3)] == [201, 201, 429]


def test_behind_a_proxy_each_client_address_has_its_own_count(make_client: MakeClient) -> None:
    client = make_client(
        engine=FakeEngine("hi"),
        auth=False,
        trusted_proxy_header=XFF,
        session_mints_per_address="2/hour",
        session_mints_global="5/hour",
    )
    # the last entry is the one the proxy appended; what the client sent before it is not
    assert [mint(client, f"6.6.6.6, 10.0.0.{i % 2}") for i in range(4)] == [201] * 4
    assert mint(client, "6.6.6.6, 10.0.0.0") == 429
    assert mint(client, "10.0.0.9") == 201  # global: 5 of 5
    client.cookies.clear()
    r = client.post("/v1/session", headers={XFF: "10.0.0.11"})
    assert_error(r, 429, "rate_limit_exceeded")  # a new address: the service's own limit
    assert "this server" in r.json()["error"]["message"]


@pytest.fixture
def redis_uri() -> Iterator[str]:
    redis = pytest.importorskip("redis")
    try:
        redis.Redis.from_url(REDIS, socket_connect_timeout=2).ping()
    except redis.RedisError:
        pytest.skip("no Redis on 127.0.0.1:6379")
    yield REDIS


def test_two_servers_on_one_redis_share_the_count(make_client: MakeClient, redis_uri: str) -> None:
    # a per-run namespace of addresses: Redis outlives the test, and other runs share it
    address = f"10.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}.7"
    shared = dict(
        engine=FakeEngine("hi"),
        auth=False,
        rate_limit_storage=redis_uri,
        trusted_proxy_header=XFF,
        session_mints_per_address="3/hour",
    )
    a, b = make_client(**shared), make_client(**shared)
    try:
        assert [mint(a, address), mint(b, address), mint(a, address)] == [201, 201, 201]
        assert mint(b, address) == 429  # 3 across the two, not 3 each
    finally:
        RateLimits(redis_uri).clear(parse_rule("session_mints_per_address", "3/hour"), address)


def test_an_unreachable_store_refuses_rather_than_counting_nothing() -> None:
    limits = RateLimits("redis://127.0.0.1:1")  # nothing listens there
    with pytest.raises(LimitsStoreError):
        limits.hit(parse_rule("x", "1/minute"), "k")


@pytest.mark.parametrize(
    "field, value",
    [
        ("session_mints_per_address", "lots"),
        ("session_mints_global", ""),
        ("rate_limit_storage", "carrier-pigeon://x"),
    ],
)
def test_bad_limit_settings_are_refused_at_start(field: str, value: str) -> None:
    with pytest.raises(ValueError, match=field if field != "rate_limit_storage" else "storage"):
        Settings(**{field: value})  # type: ignore[arg-type]


def test_windows_move_and_every_window_must_have_room() -> None:
    limits = RateLimits()
    rule = parse_rule("t", "2/second;3/hour")
    assert [limits.hit(rule, "k") == 0 for _ in range(3)] == [True, True, False]
    assert 0 < limits.hit(rule, "k") <= 1.0  # the second's window
    assert limits.hit(rule, "other") == 0  # per key
    time.sleep(1.1)
    assert limits.hit(rule, "k") == 0  # the refused hits counted nothing: 3 of 3 an hour
    time.sleep(1.1)
    assert limits.hit(rule, "k") > 3000  # the hour's window now


def test_logout_ends_the_session_on_the_server(make_client: MakeClient, db_url: str) -> None:
    client = make_client(db_url, engine=FakeEngine("hi"), auth=False)
    assert client.post("/v1/session").status_code == 201
    stolen = client.cookies.get("loopchat_session")
    assert stolen is not None and client.get("/v1/me").status_code == 200
    assert client.delete("/v1/session").status_code == 204
    assert client.cookies.get("loopchat_session") is None  # the browser's copy is gone
    client.cookies.set("loopchat_session", stolen)  # ... and a copy kept elsewhere is refused
    assert_error(client.get("/v1/me"), 401, "invalid_session")
    assert_error(client.post("/v1/feedback", json={"generation_id": "x", "rating": "up"}), 401)
    client.cookies.clear()
    assert client.delete("/v1/session").status_code == 204  # no session: nothing to end
    assert client.post("/v1/session").status_code == 201  # a new one starts as before
    assert client.get("/v1/me").status_code == 200
