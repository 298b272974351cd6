"""Storage on SQLite and PostgreSQL: migrations, constraints, the base version."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.exc import IntegrityError

from store.db import repository
from store.db.migrate import downgrade, upgrade
from store.db.models import Base, Generation, Rating, User, UserKind
from store.db.session import make_engine, make_session_factory, session_scope
from store.domain import VersionStatus
from tests.dbutil import generation_row

TABLES = {
    "users",
    "conversations",
    "messages",
    "generations",
    "ratings",
    "comparisons",
    "policy_versions",
    "training_runs",
    "reward_models",
    "api_keys",
}


def test_migrations_create_every_table_and_match_models(db_url: str) -> None:
    eng = make_engine(db_url)
    upgrade(eng)
    names = set(sa.inspect(eng).get_table_names())
    assert names >= TABLES
    with eng.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == [], f"models and migrations disagree: {diff}"
    downgrade(eng)
    assert not (TABLES & set(sa.inspect(eng).get_table_names()))
    eng.dispose()


def test_sqlite_runs_in_wal_with_foreign_keys(tmp_path: Path) -> None:
    eng = make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    with eng.connect() as c:
        assert c.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert c.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    eng.dispose()


def test_generation_needs_a_real_policy_version(db_url: str) -> None:
    eng = make_engine(db_url)
    upgrade(eng)
    sessions = make_session_factory(eng)
    with pytest.raises(IntegrityError), session_scope(sessions) as s:
        s.add(generation_row("chatcmpl-1", 999))
    with session_scope(sessions) as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(Generation)) == 0
    eng.dispose()


def test_one_live_rating_per_user_and_generation(db_url: str, tmp_path: Path) -> None:
    eng = make_engine(db_url)
    upgrade(eng)
    sessions = make_session_factory(eng)
    with session_scope(sessions) as s:
        v0 = repository.ensure_base_version(s, tmp_path)
        s.add(User(id="u1", kind=UserKind.ANONYMOUS))
        s.add(generation_row("chatcmpl-1", v0.id))
    with session_scope(sessions) as s:
        s.add(Rating(generation_id="chatcmpl-1", user_id="u1", value=1, live=False))
        s.add(Rating(generation_id="chatcmpl-1", user_id="u1", value=-1, live=True))
    with pytest.raises(IntegrityError), session_scope(sessions) as s:
        s.add(Rating(generation_id="chatcmpl-1", user_id="u1", value=1, live=True))
    eng.dispose()


def test_base_version_is_registered_once_and_guards_its_model(db_url: str, tmp_path: Path) -> None:
    eng = make_engine(db_url)
    upgrade(eng)
    sessions = make_session_factory(eng)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with session_scope(sessions) as s:
        first = repository.ensure_base_version(s, tmp_path / "a")
    with session_scope(sessions) as s:
        again = repository.ensure_base_version(s, tmp_path / "a")
        assert again.id == first.id
        assert repository.serving_version(s).name == "v0"  # type: ignore[union-attr]
        assert again.status is VersionStatus.SERVING
    with (
        pytest.raises(repository.BaseModelMismatch, match="fresh database"),
        session_scope(sessions) as s,
    ):
        repository.ensure_base_version(s, tmp_path / "b")
    eng.dispose()
