"""A property-based fuzz of the whole HTTP API from its own OpenAPI schema (schemathesis).

Every operation gets generated requests (schema-valid and not) as the operator, as a
developer with an API key, and as a web session. Whatever comes in: no 5xx, every error
is the one envelope, and a refused request stores nothing. The number of examples is
bounded (`FUZZ_EXAMPLES` per operation and caller) so it fits the test command; raise
LOOPCHAT_FUZZ_EXAMPLES to dig deeper.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from store.db.models import (
    ApiKey,
    Comparison,
    Conversation,
    Generation,
    PolicyEvent,
    PolicyVersion,
    Rating,
    User,
)
from store.db.session import make_engine
from tests.conftest import ADMIN
from tests.fakes import FakeEngine
from tests.test_api_errors import assert_error

FUZZ_EXAMPLES = int(os.environ.get("LOOPCHAT_FUZZ_EXAMPLES", "6"))
TABLES = (ApiKey, Comparison, Conversation, Generation, PolicyEvent, PolicyVersion, Rating, User)


def _counts(db_url: str) -> dict[str, int]:
    eng = make_engine(db_url)
    try:
        with Session(eng) as s:
            return {
                t.__tablename__: s.scalar(select(func.count()).select_from(t)) or 0 for t in TABLES
            }
    finally:
        eng.dispose()


@pytest.mark.slow
def test_no_request_the_schema_allows_or_not_gets_a_5xx(
    make_client: Callable[..., Any], tmp_path: Any
) -> None:
    db_url = f"sqlite:///{tmp_path / 'fuzz.db'}"
    client = make_client(
        db_url,
        engine=FakeEngine("a short reply"),
        auth=False,
        policy_poll_seconds=3600,
        # The fuzz sends far more than a person: limits would turn most cases into 429s.
        generation_requests_per_user="100000/minute",
        generation_tokens_per_user="100000000/minute",
        session_mints_per_address="100000/hour",
        session_mints_global="100000/hour",
        vote_rate_per_minute=100000.0,
        vote_burst=100000,
    )
    key = client.post("/v1/admin/keys", json={"name": "fuzz"}, headers=ADMIN).json()["key"]
    cookie = client.post("/v1/session").cookies["loopchat_session"]
    client.cookies.clear()
    callers: dict[str, dict[str, str]] = {
        "operator": dict(ADMIN),
        "key": {"Authorization": f"Bearer {key}"},
        "session": {"Cookie": f"loopchat_session={cookie}"},
    }
    schema = schemathesis.openapi.from_dict(client.app.openapi())
    failures: list[str] = []
    seen = 0

    for result in schema.get_all_operations():
        op = result.ok()
        if op.path == "/v1/session" and op.method.upper() == "DELETE":
            continue  # logging the fuzz's own session out would end the session caller

        @settings(
            max_examples=FUZZ_EXAMPLES * len(callers),
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=op.as_strategy(), caller=st.sampled_from(sorted(callers)))
        def check(case: Any, caller: str) -> None:
            nonlocal seen
            kw = case.as_transport_kwargs(base_url="http://testserver")
            headers = {
                k: v for k, v in (kw.get("headers") or {}).items()
                if k.lower() not in ("authorization", "cookie")
            }  # fmt: skip
            headers.update(callers[caller])
            before = _counts(db_url)
            body = {"json": kw["json"]} if "json" in kw else {}
            r = client.request(
                kw["method"], kw["url"], params=kw.get("params"), headers=headers, **body
            )
            client.cookies.clear()
            seen += 1
            where = f"{caller} {kw['method']} {case.path}"
            if r.status_code >= 500:
                failures.append(f"{where} -> {r.status_code}: {r.text[:200]}")
            elif r.status_code >= 400:
                try:
                    assert_error(r, r.status_code)
                except AssertionError as e:
                    failures.append(f"{where} -> {r.status_code} not in the envelope: {e}")
                if _counts(db_url) != before:
                    failures.append(f"{where} -> {r.status_code} but stored something")

        check()
    assert seen > 100
    assert failures == [], "\n".join(failures[:20])
