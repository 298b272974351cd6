"""Thumbs, comparisons and identity over HTTP, on SQLite and PostgreSQL.

Every refusal is checked twice: the caller gets the right status and envelope, and the
database holds exactly what it held before.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from store.db.models import Comparison, Generation, GenerationStatus, Rating, User, UserKind
from tests.conftest import ADMIN
from tests.dbutil import count, fetch
from tests.fakes import FakeEngine
from tests.test_api_chat import CHAT, HELLO
from tests.test_api_errors import assert_error

FEEDBACK = "/v1/feedback"
COMPARE = "/v1/comparisons"
MakeClient = Callable[..., TestClient]


def new_user(client: TestClient) -> dict[str, str]:
    """A developer with their own API key (made through the operator API)."""
    r = client.post("/v1/admin/keys", json={"name": "dev"}, headers=ADMIN)
    assert r.status_code == 201, r.text
    return {"Authorization": f"Bearer {r.json()['key']}"}


def reply(client: TestClient, headers: dict[str, str]) -> str:
    r = client.post(CHAT, json={"messages": HELLO}, headers=headers)
    assert r.status_code == 200, r.text
    return str(r.json()["id"])


@pytest.fixture
def app(make_client: MakeClient, db_url: str) -> tuple[TestClient, str]:
    client = make_client(db_url, engine=FakeEngine("a fine reply"), auth=False)
    return client, db_url


def test_rate_change_and_withdraw_keep_history(app: tuple[TestClient, str]) -> None:
    client, db = app
    alice = new_user(client)
    gid = reply(client, alice)

    r = client.post(FEEDBACK, json={"generation_id": gid, "rating": "up"}, headers=alice)
    assert r.status_code == 201 and r.json()["rating"] == "up" and r.json()["changed"]
    again = client.post(FEEDBACK, json={"generation_id": gid, "rating": "up"}, headers=alice)
    assert again.status_code == 200 and again.json()["changed"] is False  # a retry adds nothing
    assert count(db, Rating) == 1

    body = {"generation_id": gid, "rating": "down", "reason": "too_long", "comment": " long "}
    r = client.post(FEEDBACK, json=body, headers=alice)
    assert r.status_code == 201
    assert (r.json()["reason"], r.json()["comment"]) == ("too_long", "long")
    shown = client.get(f"{FEEDBACK}/{gid}", headers=alice).json()
    assert shown["rating"] == "down" and shown["reason"] == "too_long"

    r = client.delete(f"{FEEDBACK}/{gid}", headers=alice)
    assert r.status_code == 200 and r.json()["rating"] is None and r.json()["changed"]
    assert client.get(f"{FEEDBACK}/{gid}", headers=alice).json()["rating"] is None
    history = sorted(fetch(db, Rating), key=lambda x: x.id)
    assert [(h.value, h.live) for h in history] == [(1, False), (-1, False)]
    assert all(h.superseded_at is not None for h in history)


def test_rating_refusals_change_nothing(app: tuple[TestClient, str]) -> None:
    client, db = app
    alice, bob = new_user(client), new_user(client)
    gid = reply(client, alice)
    client.post(FEEDBACK, json={"generation_id": gid, "rating": "up"}, headers=alice)
    cases: list[tuple[dict[str, Any], dict[str, str], int, str | None]] = [
        ({"generation_id": "chatcmpl-" + "0" * 32, "rating": "up"}, alice, 404, "not_found"),
        ({"generation_id": "not-an-id", "rating": "up"}, alice, 404, "not_found"),
        ({"generation_id": gid, "rating": "up"}, bob, 403, "not_your_reply"),
        ({"generation_id": gid, "rating": "meh"}, alice, 422, None),
        ({"generation_id": gid}, alice, 422, None),
        ({"generation_id": gid, "rating": "up", "reason": "wrong"}, alice, 422, "invalid_value"),
        ({"generation_id": gid, "rating": "down", "reason": "made up"}, alice, 422, None),
        ({"generation_id": gid, "rating": "down", "extra": 1}, alice, 422, None),
        (
            {"generation_id": gid, "rating": "down", "comment": "x" * 2001},
            alice,
            422,
            "comment_too_long",
        ),
        ({"generation_id": gid, "rating": "down"}, {}, 401, "missing_credentials"),
        (
            {"generation_id": gid, "rating": "down"},
            {"Authorization": "Bearer lc-nope"},
            401,
            "invalid_api_key",
        ),
        ({"generation_id": gid, "rating": "down"}, {"Authorization": "Basic x"}, 401, None),
    ]
    for body, headers, status, code in cases:
        assert_error(client.post(FEEDBACK, json=body, headers=headers), status, code)
    assert_error(client.delete(f"{FEEDBACK}/{gid}", headers=bob), 403, "not_your_reply")
    assert_error(client.get(f"{FEEDBACK}/{gid}", headers=bob), 403)
    [only] = fetch(db, Rating)
    assert (only.value, only.live, only.reason) == (1, True, None)


def test_revoked_key_is_refused_at_once(app: tuple[TestClient, str]) -> None:
    client, db = app
    r = client.post("/v1/admin/keys", json={"name": "ci"}, headers=ADMIN)
    key, key_id = r.json()["key"], r.json()["id"]
    dev = {"Authorization": f"Bearer {key}"}
    gid = reply(client, dev)
    listed = client.get("/v1/admin/keys", headers=ADMIN).json()
    assert [k["prefix"] for k in listed if k["id"] == key_id] == [key[:10]]
    assert all("key" not in k for k in listed)  # the secret is never shown again
    assert client.delete(f"/v1/admin/keys/{key_id}", headers=ADMIN).json()["revoked_at"]
    assert_error(client.post(CHAT, json={"messages": HELLO}, headers=dev), 401, "invalid_api_key")
    assert_error(
        client.post(FEEDBACK, json={"generation_id": gid, "rating": "up"}, headers=dev), 401
    )
    assert count(db, Rating) == 0 and count(db, Generation) == 1
    assert_error(client.delete("/v1/admin/keys/key-nope", headers=ADMIN), 404)


def test_operator_api_needs_the_operator_token(app: tuple[TestClient, str]) -> None:
    client, _ = app
    dev = new_user(client)
    assert_error(client.get("/v1/admin/keys"), 401, "missing_credentials")
    assert_error(client.get("/v1/admin/keys", headers=dev), 403, "not_operator")
    assert_error(client.post("/v1/admin/keys", json={"name": "x"}, headers=dev), 403)
    assert client.get("/v1/admin/keys", headers=ADMIN).status_code == 200


def test_vote_rate_limit_says_when_to_retry(make_client: MakeClient, db_url: str) -> None:
    client = make_client(
        db_url, engine=FakeEngine("hi"), auth=False, vote_burst=3, vote_rate_per_minute=1
    )
    dev = new_user(client)
    gid = reply(client, dev)
    for rating in ("up", "down", "up"):
        r = client.post(FEEDBACK, json={"generation_id": gid, "rating": rating}, headers=dev)
        assert r.status_code == 201
    r = client.post(FEEDBACK, json={"generation_id": gid, "rating": "down"}, headers=dev)
    assert_error(r, 429, "rate_limit_exceeded")
    assert 1 <= int(r.headers["Retry-After"]) <= 60
    assert [x.value for x in fetch(db_url, Rating, Rating.live.is_(True))] == [1]
    assert count(db_url, Rating) == 3
    other = new_user(client)  # limits are per user
    gid2 = reply(client, other)
    assert (
        client.post(
            FEEDBACK, json={"generation_id": gid2, "rating": "up"}, headers=other
        ).status_code
        == 201
    )


def test_web_session_cookie(app: tuple[TestClient, str]) -> None:
    client, db = app
    r = client.post("/v1/session")
    assert r.status_code == 201 and r.json()["kind"] == "anonymous"
    user_id = r.json()["user_id"]
    assert client.post("/v1/session").json()["user_id"] == user_id  # kept, not replaced
    assert client.get("/v1/me").json() == {"user_id": user_id, "kind": "anonymous"}
    gid = reply(client, {})
    assert client.post(FEEDBACK, json={"generation_id": gid, "rating": "up"}).status_code == 201
    [u] = fetch(db, User, User.id == user_id)
    assert u.kind is UserKind.ANONYMOUS

    cookie = client.cookies.get("loopchat_session")
    assert cookie is not None
    client.cookies.clear()
    client.cookies.set("loopchat_session", cookie[:-2] + "xx")  # tampered
    assert_error(client.get("/v1/me"), 401, "invalid_session")
    assert_error(client.post(FEEDBACK, json={"generation_id": gid, "rating": "down"}), 401)
    fresh = client.post("/v1/session")  # a bad cookie is replaced by a new session
    assert fresh.status_code == 201 and fresh.json()["user_id"] != user_id
    assert_error(
        client.post(FEEDBACK, json={"generation_id": gid, "rating": "down"}), 403
    )  # the new user was never served that reply
    assert [r.value for r in fetch(db, Rating)] == [1]


def test_anonymous_sessions_can_be_turned_off(make_client: MakeClient) -> None:
    client = make_client(engine=FakeEngine("hi"), auth=False, anonymous_sessions=False)
    assert_error(client.post("/v1/session"), 403)


def test_comparison_vote_reveals_versions_once(app: tuple[TestClient, str]) -> None:
    client, db = app
    alice, bob = new_user(client), new_user(client)
    r = client.post(COMPARE, json={"messages": HELLO, "max_tokens": 8}, headers=alice)
    assert r.status_code == 201, r.text
    cmp = r.json()
    assert cmp["a"]["generation_id"] != cmp["b"]["generation_id"]
    assert cmp["a"]["content"] == "a fine reply" and cmp["a"]["model"] is None
    assert cmp["b"]["model"] is None and cmp["choice"] is None
    gens = {g.id: g for g in fetch(db, Generation)}
    for side in ("a", "b"):
        g = gens[cmp[side]["generation_id"]]
        assert (g.source, g.status, g.text) == (
            "comparison",
            GenerationStatus.COMPLETED,
            "a fine reply",
        )
    hidden = client.get(f"{COMPARE}/{cmp['id']}", headers=alice).json()
    assert hidden["a"]["model"] is None

    vote = f"{COMPARE}/{cmp['id']}/vote"
    assert_error(client.post(vote, json={"choice": "a"}, headers=bob), 403)
    assert_error(client.post(vote, json={"choice": "c"}, headers=alice), 422)
    assert_error(client.post(vote, json={"choice": "a", "reason": "wrong"}, headers=alice), 422)
    assert_error(
        client.post(f"{COMPARE}/cmp-{'0' * 32}/vote", json={"choice": "a"}, headers=alice), 404
    )
    r = client.post(vote, json={"choice": "b", "reason": "more_concise"}, headers=alice)
    assert r.status_code == 200
    voted = r.json()
    assert voted["choice"] == "b" and voted["reason"] == "more_concise"
    assert voted["a"]["model"] == voted["b"]["model"] == "loopchat@v0"
    assert_error(client.post(vote, json={"choice": "a"}, headers=alice), 409, "already_voted")
    [row] = fetch(db, Comparison)
    assert (row.choice, row.reason) == ("b", "more_concise") and row.voted_at is not None
    # Each side of a comparison is a reply served to its voter: thumbs work on it too.
    gid = cmp["a"]["generation_id"]
    assert (
        client.post(
            FEEDBACK, json={"generation_id": gid, "rating": "up"}, headers=alice
        ).status_code
        == 201
    )


def test_comparison_sides_are_shuffled_and_sampled_by_the_server(make_client: MakeClient) -> None:
    """Side a gets the first seed (s) about half the time, never always; the seeds and
    the temperature are the server's, so no caller can reproduce a side."""
    client = make_client(engine=FakeEngine("x"), comparison_temperature=0.9)
    seeds_on_a, firsts = set(), set()
    for _ in range(16):
        r = client.post(COMPARE, json={"messages": HELLO, "max_tokens": 2})
        cmp = r.json()
        gens = {
            g.id: g
            for g in fetch(str(client.app.state.runtime.settings.resolved_database_url), Generation)
        }
        a, b = gens[cmp["a"]["generation_id"]].sampling, gens[cmp["b"]["generation_id"]].sampling
        first = min(a["seed"], b["seed"])
        assert {a["seed"], b["seed"]} == {first, first + 1}
        assert a["temperature"] == b["temperature"] == 0.9
        seeds_on_a.add(a["seed"] == first)
        firsts.add(first)
    assert seeds_on_a == {True, False}
    assert len(firsts) == 16


def test_comparison_request_refusals(app: tuple[TestClient, str]) -> None:
    client, db = app
    dev = new_user(client)
    for body in (
        {"messages": []},
        {"messages": HELLO, "model": "loopchat@v0"},  # versions are hidden: no choosing
        {"messages": HELLO, "n": 2},
        {"messages": HELLO, "temperature": 0},  # sampling is the server's: no reproducing
        {"messages": HELLO, "seed": 7},
        {"messages": HELLO, "top_p": 0.1},
        {"messages": HELLO, "max_tokens": 10**6},
    ):
        assert_error(
            client.post(COMPARE, json=body, headers=dev), 422 if "max_tokens" not in body else 400
        )
    blank = {"messages": [{"role": "user", "content": " "}]}
    assert_error(client.post(COMPARE, json=blank, headers=dev), 400, param="messages")
    assert_error(client.post(COMPARE, json={"messages": HELLO}), 401)
    assert count(db, Comparison) == 0 and count(db, Generation) == 0


def test_export_and_stats_over_the_operator_api(app: tuple[TestClient, str]) -> None:
    client, _ = app
    dev = new_user(client)
    up, down = reply(client, dev), reply(client, dev)
    client.post(FEEDBACK, json={"generation_id": up, "rating": "up"}, headers=dev)
    client.post(
        FEEDBACK, json={"generation_id": down, "rating": "down", "reason": "wrong"}, headers=dev
    )
    cmp = client.post(COMPARE, json={"messages": HELLO}, headers=dev).json()
    client.post(f"{COMPARE}/{cmp['id']}/vote", json={"choice": "a"}, headers=dev)

    def export(**params: str) -> list[dict[str, Any]]:
        r = client.get("/v1/admin/export", params=params, headers=ADMIN)
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith("application/x-ndjson")
        import json

        return [json.loads(line) for line in r.text.splitlines()]

    [pair] = export(format="pairs")
    assert set(pair) == {"prompt", "chosen", "rejected"}
    assert pair["prompt"] == HELLO
    assert sorted(r["label"] for r in export(format="unpaired")) == [False, True]
    raw = export(format="raw")
    assert [r["kind"] for r in raw] == ["rating", "rating", "comparison"]
    me = client.get("/v1/me", headers=dev).json()["user_id"]
    assert all(r["user"] != me and r["user"].startswith("u-") for r in raw)
    assert export(format="raw", version="loopchat@v0") == raw
    assert export(format="raw", version="v7") == []
    assert export(format="raw", since="2999-01-01T00:00:00Z") == []

    assert_error(client.get("/v1/admin/export", params={"format": "csv"}, headers=ADMIN), 422)
    assert_error(
        client.get(
            "/v1/admin/export",
            params={"since": "2026-02-01T00:00:00Z", "until": "2026-01-01T00:00:00Z"},
            headers=ADMIN,
        ),
        422,
    )
    assert_error(client.get("/v1/admin/export", headers=dev), 403)

    stats = client.get("/v1/admin/stats", params={"days": 7}, headers=ADMIN).json()
    [v0] = stats["versions"]
    assert (v0["version"], v0["thumbs_up"], v0["thumbs_down"], v0["up_rate"]) == (
        "loopchat@v0",
        1,
        1,
        0.5,
    )
    assert v0["self_comparisons"] == 1 and v0["win_rate"] is None
    assert sum(d["ratings"] for d in stats["votes_per_day"]) == 2
    assert {"kind": "down", "reason": "wrong", "count": 1} in stats["reasons"]
    assert_error(client.get("/v1/admin/stats", params={"days": 0}, headers=ADMIN), 422)


def test_a_locked_database_is_a_503_with_retry_after(
    app: tuple[TestClient, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past SQLite's busy timeout the caller is told to retry, not shown a 500."""
    import sqlite3

    from sqlalchemy.exc import OperationalError

    from service.feedback import ratings

    client, db = app
    dev = new_user(client)
    gid = reply(client, dev)

    def locked(*_: object, **__: object) -> None:
        raise OperationalError("INSERT", {}, sqlite3.OperationalError("database is locked"))

    monkeypatch.setattr(ratings, "rate", locked)
    r = client.post(FEEDBACK, json={"generation_id": gid, "rating": "up"}, headers=dev)
    assert_error(r, 503, "database_busy")
    assert r.headers["Retry-After"] == "1"
    assert count(db, Rating) == 0
