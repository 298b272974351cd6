"""The OpenAPI schema the web app's client is generated from says what the server sends:
the error envelope on every error status, one name per model, the real success statuses,
and times with a UTC offset."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.protocol.errors import ErrorResponse
from service.settings import Settings
from tests.conftest import ADMIN_TOKEN
from tests.dbutil import HI
from tests.fakes import FakeEngine
from tests.test_policies import add_version, notify

ENVELOPE = "#/components/schemas/ErrorResponse"
JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def schema(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    data = tmp_path_factory.mktemp("schema")
    app = create_app(Settings(data_dir=data, admin_token=ADMIN_TOKEN))
    return app.openapi()


def operations(schema: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, op)
        for path, ops in schema["paths"].items()
        for method, op in ops.items()
    ]


def ref(response: dict[str, Any]) -> str | None:
    """The model a JSON response names."""
    found: str | None = (
        response.get("content", {}).get("application/json", {}).get("schema", {}).get("$ref")
    )
    return found


def test_every_error_status_carries_the_envelope(schema: dict[str, Any]) -> None:
    assert "HTTPValidationError" not in str(schema)
    assert "ValidationError" not in schema["components"]["schemas"]
    detail = schema["components"]["schemas"]["ErrorDetail"]
    assert set(detail["required"]) == {"message", "type", "code", "param"}
    for method, path, op in operations(schema):
        if not path.startswith("/v1/"):
            continue
        errors = {int(s): r for s, r in op["responses"].items() if int(s) >= 400}
        assert 500 in errors, (method, path)
        for status, response in errors.items():
            assert ref(response) == ENVELOPE, (method, path, status)
        if "requestBody" in op:
            assert {400, 413, 422} <= set(errors), (method, path)
        if op.get("parameters"):
            assert 422 in errors, (method, path)


@pytest.mark.parametrize(
    ("method", "path", "statuses"),
    [
        ("POST", "/v1/chat/completions", {400, 401, 404, 413, 422, 500, 503}),
        ("GET", "/v1/conversations/{conversation_id}", {401, 404, 422}),
        ("POST", "/v1/feedback", {400, 401, 403, 404, 409, 422, 429}),
        ("POST", "/v1/comparisons/{comparison_id}/vote", {401, 403, 404, 409, 422, 429}),
        ("POST", "/v1/session", {403, 503}),
        ("GET", "/v1/admin/policies", {401, 403}),
        ("POST", "/v1/admin/policies/{ref}/promote", {401, 403, 404, 409, 422}),
        ("GET", "/v1/admin/training-runs/{run_id}", {401, 403, 404, 422}),
    ],
)
def test_routes_declare_the_errors_they_give(
    schema: dict[str, Any], method: str, path: str, statuses: set[int]
) -> None:
    declared = {int(s) for s in schema["paths"][path][method.lower()]["responses"]}
    assert statuses <= declared


def test_retry_after_is_documented(schema: dict[str, Any]) -> None:
    rate = schema["paths"]["/v1/feedback"]["post"]["responses"]["429"]
    assert rate["headers"]["Retry-After"]["schema"]["type"] == "integer"


def test_one_name_per_model(schema: dict[str, Any]) -> None:
    names = schema["components"]["schemas"]
    assert not [n for n in names if "__" in n]
    assert {"RatingOut", "VersionRatingOut", "ErrorResponse", "RunSummary"} <= set(names)
    ratings = names["RatingsOut"]["properties"]["ratings"]["items"]["$ref"]
    assert ratings.endswith("/VersionRatingOut")


@pytest.mark.parametrize(
    ("method", "path", "model"),
    [
        ("POST", "/v1/feedback", "RatingOut"),  # 201 stored, 200 the same vote again
        ("POST", "/v1/session", "SessionOut"),  # 201 new session, 200 a valid one kept
        ("POST", "/v1/admin/training-runs", "RunOut"),  # 201 queued, 200 one already was
    ],
)
def test_both_success_statuses_have_the_model(
    schema: dict[str, Any], method: str, path: str, model: str
) -> None:
    responses = schema["paths"][path][method.lower()]["responses"]
    for status in ("200", "201"):
        assert ref(responses[status]) == f"#/components/schemas/{model}", status


def test_real_error_bodies_match_the_envelope(make_client: Any) -> None:
    client: TestClient = make_client(engine=FakeEngine())
    answers = [
        (422, client.post("/v1/chat/completions", json={"messages": []})),
        (422, client.get("/v1/conversations", params={"limit": 0})),
        (400, client.post("/v1/feedback", content=b"{nope", headers=JSON)),
        (404, client.get("/v1/conversations/conv-nope")),
        (404, client.get("/v1/admin/training-runs/999")),
        (401, client.get("/v1/me", headers={"Authorization": "Bearer lc-wrong"})),
    ]
    for status, r in answers:
        assert r.status_code == status, (status, r.text)
        body = ErrorResponse.model_validate(r.json())
        assert body.model_dump() == r.json()  # nothing beyond the envelope
        assert body.error.message


UTC_OFFSET = re.compile(r"(Z|[+-]\d\d:\d\d)$")


def assert_utc(value: Any, where: str) -> None:
    assert isinstance(value, str) and UTC_OFFSET.search(value), (where, value)
    assert datetime.fromisoformat(value).utcoffset() == timedelta(0), (where, value)


def times(obj: Any, where: str = "") -> list[tuple[str, Any]]:
    """Every (path, value) of a field named like a time in a JSON answer."""
    found: list[tuple[str, Any]] = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k.endswith("_at") or k in {"since", "until"} or k.startswith("data_window"):
                if v is not None:
                    found.append((f"{where}.{k}", v))
            elif k not in ("metrics", "progress", "counts"):
                found += times(v, f"{where}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            found += times(v, f"{where}[{i}]")
    return found


def test_times_read_back_from_sqlite_have_a_utc_offset(make_client: Any, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'times.db'}"
    client: TestClient = make_client(url, FakeEngine("hi"), policy_poll_seconds=3600)
    conv = client.post("/v1/conversations", json={"title": "t"}).json()["id"]
    assert client.post("/v1/admin/keys", json={"name": "k"}).status_code == 201
    assert client.post("/v1/admin/training-runs").status_code == 201
    add_version(url, "v1")
    notify(client, client.app.state.runtime.registry, "v1")  # type: ignore[attr-defined]
    reply = client.post("/v1/chat/completions", json={"messages": HI}).json()["id"]
    assert client.post("/v1/feedback", json={"generation_id": reply, "rating": "up"}).is_success

    answers = {
        path: client.get(path).json()
        for path in (
            "/v1/conversations",
            f"/v1/conversations/{conv}",
            "/v1/admin/keys",
            "/v1/admin/policies",
            "/v1/admin/policies/events",
            "/v1/admin/training-runs",
            "/v1/admin/training-runs/1",
            f"/v1/feedback/{reply}",
            "/v1/admin/stats",
        )
    }
    for path, body in answers.items():
        found = times(body, path)
        assert found, path  # each answer has at least one time to check
        for where, value in found:
            assert_utc(value, where)


def test_the_web_apps_schema_copy_is_current() -> None:
    """The web app's client is generated from frontend/openapi.json: it must be this API's.

    When this fails: `.venv/bin/python -m loopchat openapi -o frontend/openapi.json` and
    `cd frontend && npm run gen:api`.
    """
    import json
    from pathlib import Path

    from service.app import create_app
    from service.settings import load_settings

    committed = Path(__file__).resolve().parent.parent / "frontend" / "openapi.json"
    assert json.loads(committed.read_text()) == create_app(load_settings()).openapi()
