"""Shared fixtures: tiny model, databases (SQLite file and a throwaway PostgreSQL database)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.fakes import build_tiny_model, build_tiny_talker

if TYPE_CHECKING:
    from trainer.round import RoundContext

ADMIN_TOKEN = "test-admin-token"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

PG_ADMIN_URL = os.environ.get(
    "LOOPCHAT_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny")


def _pg_available() -> bool:
    import sqlalchemy as sa

    try:
        eng = sa.create_engine(PG_ADMIN_URL)
        with eng.connect():
            pass
        eng.dispose()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def pg_server() -> str:
    if not _pg_available():
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is not reachable at {PG_ADMIN_URL}; CI requires it")
        pytest.skip("PostgreSQL is not reachable on 127.0.0.1:5432")
    return PG_ADMIN_URL


@pytest.fixture
def pg_url(pg_server: str) -> Iterator[str]:
    """A fresh PostgreSQL database for one test, dropped afterwards."""
    import sqlalchemy as sa

    name = f"loopchat_t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(pg_server, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = sa.engine.make_url(pg_server).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with admin.connect() as c:
            c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'loopchat.db'}"
    url: str = request.getfixturevalue("pg_url")
    return url


def wait_ready(client: object, timeout: float = 60.0) -> None:
    import time

    from fastapi.testclient import TestClient

    assert isinstance(client, TestClient)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = client.get("/readyz")
        if r.status_code == 200:
            return
        if r.json().get("status") == "failed":
            raise AssertionError(f"server failed to start: {r.json()}")
        time.sleep(0.05)
    raise AssertionError("server did not become ready")


@pytest.fixture
def make_client(tmp_path: Path, tiny_model_dir: Path) -> Iterator[object]:
    """Build a started TestClient for (db_url, engine); closed at teardown.

    The client sends the operator token unless `auth=False`: tests about identity make
    their own credentials.
    """
    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.settings import Settings

    opened: list[TestClient] = []

    def make(
        db_url: str | None = None,
        engine: object | None = None,
        auth: bool = True,
        **settings: object,
    ) -> TestClient:
        st = Settings(
            data_dir=tmp_path / "data",
            database_url=db_url or "",
            model=tiny_model_dir,
            engine="transformers",
            admin_token=ADMIN_TOKEN,
            **settings,  # type: ignore[arg-type]
        )
        client = TestClient(
            create_app(st, engine=engine),  # type: ignore[arg-type]
            headers=ADMIN if auth else None,
        )
        client.__enter__()
        opened.append(client)
        wait_ready(client)
        return client

    yield make
    for c in opened:
        c.__exit__(None, None, None)


@pytest.fixture(scope="session")
def talker_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny talker (tests/fakes.py): a tiny model that ends its replies, for rounds."""
    return build_tiny_talker(tmp_path_factory.mktemp("models") / "talker")


@pytest.fixture
def ctx(tmp_path: Path, talker_dir: Path) -> Iterator[RoundContext]:
    """A training round's context on a fresh SQLite database with the talker as v0."""
    from store.db.migrate import upgrade
    from store.db.repository import ensure_base_version
    from store.db.session import make_engine, make_session_factory, session_scope
    from trainer.round import RoundContext

    engine = make_engine(f"sqlite:///{tmp_path / 'loopchat.db'}")
    upgrade(engine)
    sessions = make_session_factory(engine)
    with session_scope(sessions) as s:
        ensure_base_version(s, talker_dir)
    yield RoundContext(sessions, tmp_path / "artifacts", tmp_path)
    engine.dispose()
