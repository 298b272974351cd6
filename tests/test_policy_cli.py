"""`loopchat policy ...` in-process: through a running server, and straight to the
database when no server answers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from loopchat.cli import main
from service.settings import Settings
from store.db.models import PolicyVersion
from tests.conftest import ADMIN, ADMIN_TOKEN
from tests.dbutil import fetch
from tests.fakes import FakeEngine
from tests.servers import running_server
from tests.test_policies import add_version, statuses

NO_SERVER = "http://127.0.0.1:9"  # discard port: nothing listens


def cli(db_url: str, *args: str) -> int:
    return main(["policy", *args[:1], "--database-url", db_url, *args[1:]])


@pytest.fixture
def server(tmp_path: Path, tiny_model_dir: Path) -> Any:
    db_url = f"sqlite:///{tmp_path}/cli.db"
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=db_url,
        model=tiny_model_dir,
        admin_token=ADMIN_TOKEN,
        policy_poll_seconds=3600,
    )
    with running_server(settings, FakeEngine()) as base:
        yield base, db_url


def test_promote_rollback_and_listings_through_the_server(
    server: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    base, db_url = server
    monkeypatch.setenv("LOOPCHAT_ADMIN_TOKEN", ADMIN_TOKEN)
    add_version(db_url, "v1")
    assert cli(db_url, "promote", "v1", "--url", base, "--reason", "ship it") == 0
    assert '"status": "serving"' in capsys.readouterr().out
    models = httpx.get(f"{base}/v1/models", headers=ADMIN).json()["data"]
    assert models[0]["id"] == "loopchat" and models[0]["kind"] == "lora"

    assert cli(db_url, "rollback", "--url", base) == 0
    assert statuses(db_url) == {"v0": "serving", "v1": "retired"}
    r = httpx.post(
        f"{base}/v1/chat/completions",
        json={"messages": [{"role": "user", "content": "hi"}]},
        headers=ADMIN,
    )
    assert r.json()["model"] == "loopchat@v0"

    capsys.readouterr()
    assert cli(db_url, "events") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:3] == ["TIME", "KIND", "VERSION"]
    kinds = [line.split()[2] for line in out[1:]]  # newest first; swaps follow changes
    assert [k for k in kinds if k != "swap"] == ["rollback", "promote"]
    assert any("promote" in line and "ship it" in line and "operator" in line for line in out)
    assert cli(db_url, "list") == 0
    listing = capsys.readouterr().out
    assert "v1" in listing and "retired" in listing
    assert cli(db_url, "ratings") == 0

    # Refusals print the server's message and change nothing.
    assert cli(db_url, "promote", "v7", "--url", base) == 1
    assert "no policy version" in capsys.readouterr().err
    assert cli(db_url, "retire", "v0", "--url", base) == 1
    assert statuses(db_url) == {"v0": "serving", "v1": "retired"}


def test_rollback_without_a_server_writes_the_database(
    tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db_url = f"sqlite:///{tmp_path}/offline.db"
    assert main(["model", "prepare", "--model", str(tiny_model_dir), "--database-url", db_url]) == 0
    add_version(db_url, "v1")
    assert cli(db_url, "promote", "v1", "--url", NO_SERVER) == 0
    assert statuses(db_url) == {"v0": "retired", "v1": "serving"}
    assert cli(db_url, "rollback", "--url", NO_SERVER, "--reason", "bad replies") == 0
    assert statuses(db_url) == {"v0": "serving", "v1": "retired"}
    assert "writing the change to the database" in capsys.readouterr().err
    # Nothing served before v0: refused, nothing changes.
    assert cli(db_url, "rollback", "--url", NO_SERVER) == 1
    assert "no earlier serving version" in capsys.readouterr().err
    assert [v.status.value for v in fetch(db_url, PolicyVersion)] == ["serving", "retired"]
