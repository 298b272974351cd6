"""`loopchat keys create|list|revoke` and `loopchat export`, run in-process on a SQLite file."""

from __future__ import annotations

import json
import stat
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from loopchat.cli import main
from service.identity import store
from service.identity.credentials import hash_key, pseudonym
from store.db import repository
from store.db.migrate import upgrade
from store.db.models import (
    ApiKey,
    Comparison,
    ComparisonChoice,
    GenerationStatus,
    Rating,
    User,
    UserKind,
)
from store.db.session import make_engine, make_session_factory, session_scope
from tests.dbutil import fetch, generation_row, lora_version
from tests.fakes import FakeEngine
from tests.test_api_chat import CHAT, HELLO
from tests.test_feedback_api import new_user

T = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
H = timedelta(hours=1)
D = timedelta(days=1)
P_MATH = [{"role": "user", "content": "What is 2+2?"}]
P_HI = [
    {"role": "system", "content": "Be brief.", "name": "sys"},
    {"role": "user", "content": "hi"},
]
U1, U2 = "usr-" + "1" * 32, "usr-" + "2" * 32


@pytest.fixture(autouse=True)
def _no_env_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings come from the command line only, whatever the environment holds."""
    for name in ("SESSION_SECRET", "ADMIN_TOKEN", "MODEL_ALIAS", "DATABASE_URL", "DATA_DIR"):
        monkeypatch.delenv(f"LOOPCHAT_{name}", raising=False)


@pytest.fixture
def where(tmp_path: Path) -> list[str]:
    """The --data-dir and --database-url every command of a test gets."""
    return ["--data-dir", str(tmp_path / "data"), "--database-url", _url(tmp_path)]


def _url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'cli.db'}"


Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str], where: list[str]) -> Run:
    """Run the CLI; returns (exit status, stdout, stderr) of that command alone."""

    def go(*argv: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main([*argv, *where])
        out, err = capsys.readouterr()
        return code, out, err

    return go


def _listed(out: str) -> list[dict[str, str]]:
    header, *lines = out.splitlines()
    assert header.split() == ["ID", "PREFIX", "CREATED", "STATE", "SCOPES", "NAME"]
    rows = []
    for line in lines:
        key_id, prefix, day, clock, state, scopes, name = line.split(maxsplit=6)
        rows.append(
            {"id": key_id, "prefix": prefix, "created": f"{day} {clock}", "state": state,
             "scopes": scopes, "name": name}
        )  # fmt: skip
    return rows


# -- keys -------------------------------------------------------------------------------


def test_keys_create_prints_only_the_secret(run: Run, tmp_path: Path) -> None:
    code, out, err = run("keys", "create", "--name", "ci")
    assert code == 0
    secret = out.removesuffix("\n")
    assert out == secret + "\n" and "\n" not in secret  # KEY=$(loopchat keys create ...)
    assert secret.startswith("lc-") and len(secret) == 46
    [key] = fetch(_url(tmp_path), ApiKey)
    assert f"created {key.id} (ci); the key is shown once:" in err
    assert secret not in err
    assert (key.name, key.prefix, key.key_hash, key.revoked_at) == (
        "ci",
        secret[:10],
        hash_key(secret),
        None,
    )
    [holder] = fetch(_url(tmp_path), User, User.id == key.user_id)
    assert (holder.kind, holder.name) == (UserKind.API_KEY, "ci")
    # The printed secret is the key the service accepts.
    eng = make_engine(_url(tmp_path))
    try:
        with session_scope(make_session_factory(eng)) as s:
            ident = store.identity_for_key(s, secret)
    finally:
        eng.dispose()
    assert ident is not None and (ident.user_id, ident.key_id) == (key.user_id, key.id)


def test_keys_create_with_the_pin_scope(run: Run, tmp_path: Path) -> None:
    code, out, err = run("keys", "create", "--name", "eval", "--scope", "pin")
    assert code == 0 and "(eval, scopes: pin)" in err
    [key] = fetch(_url(tmp_path), ApiKey)
    assert key.scopes == "pin"
    eng = make_engine(_url(tmp_path))
    try:
        with session_scope(make_session_factory(eng)) as s:
            ident = store.identity_for_key(s, out.strip())
    finally:
        eng.dispose()
    assert ident is not None and ident.may_pin and not ident.is_operator
    [row] = _listed(run("keys", "list")[1])
    assert row["scopes"] == "pin"
    with pytest.raises(SystemExit):  # argparse: "invalid choice: 'admin'"
        run("keys", "create", "--name", "x", "--scope", "admin")
    assert len(fetch(_url(tmp_path), ApiKey)) == 1


def test_keys_list_and_revoke(run: Run, tmp_path: Path) -> None:
    code, out, _ = run("keys", "list")
    assert code == 0 and _listed(out) == []
    _, ci, _ = run("keys", "create", "--name", "ci")
    _, laptop, _ = run("keys", "create", "--name", "my laptop")
    ci, laptop = ci.strip(), laptop.strip()
    keys = {k.name: k for k in fetch(_url(tmp_path), ApiKey)}

    code, out, err = run("keys", "list")
    assert code == 0
    listed = _listed(out)
    assert [(k["id"], k["prefix"], k["state"], k["name"]) for k in listed] == [
        (keys["ci"].id, ci[:10], "active", "ci"),
        (keys["my laptop"].id, laptop[:10], "active", "my laptop"),
    ]
    created = datetime.strptime(listed[0]["created"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
    assert abs(datetime.now(UTC) - created) < timedelta(minutes=5)
    assert ci not in out and laptop not in out  # secrets are never shown again

    assert [k["scopes"] for k in listed] == ["-", "-"]

    code, out, err = run("keys", "revoke", keys["ci"].id)
    assert (code, out) == (0, "")
    assert f"revoked {keys['ci'].id} (ci)" in err
    _, out, _ = run("keys", "list")
    assert [k["name"] for k in _listed(out)] == ["my laptop"]  # revoked keys are hidden
    _, out, _ = run("keys", "list", "--all")
    assert [(k["name"], k["state"]) for k in _listed(out)] == [
        ("ci", "revoked"),
        ("my laptop", "active"),
    ]
    [row] = fetch(_url(tmp_path), ApiKey, ApiKey.name == "ci")
    revoked_at = row.revoked_at
    assert revoked_at is not None

    # Revoking again is harmless and keeps the first revocation time.
    assert run("keys", "revoke", keys["ci"].id)[0] == 0
    [row] = fetch(_url(tmp_path), ApiKey, ApiKey.name == "ci")
    assert row.revoked_at == revoked_at

    code, out, err = run("keys", "revoke", "key-doesnotexist")
    assert (code, out) == (1, "")
    assert "no API key with id key-doesnotexist" in err
    assert [k.revoked_at is None for k in fetch(_url(tmp_path), ApiKey)].count(True) == 1


def test_keys_create_needs_a_name(where: list[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["keys", "create", *where])
    assert e.value.code == 2


def test_revoked_key_is_refused_by_the_server(
    run: Run, tmp_path: Path, make_client: Callable[..., TestClient]
) -> None:
    _, out, _ = run("keys", "create", "--name", "ci")
    dev = {"Authorization": f"Bearer {out.strip()}"}
    client = make_client(_url(tmp_path), engine=FakeEngine("ok"), auth=False)
    assert client.post(CHAT, json={"messages": HELLO}, headers=dev).status_code == 200
    [key] = fetch(_url(tmp_path), ApiKey)
    assert run("keys", "revoke", key.id)[0] == 0
    r = client.post(CHAT, json={"messages": HELLO}, headers=dev)
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"


# -- export -----------------------------------------------------------------------------


@pytest.fixture
def votes(tmp_path: Path) -> None:
    """v0 and v1; four replies; four rating rows (one superseded); two voted comparisons."""
    eng = make_engine(_url(tmp_path))
    try:
        upgrade(eng)
        with session_scope(make_session_factory(eng)) as s:
            v0 = repository.ensure_base_version(s, tmp_path)
            v1 = lora_version("v1", v0, tmp_path)
            s.add(v1)
            aged = T - timedelta(days=30)  # their sessions began before they voted
            s.add_all(
                [
                    User(id=U1, kind=UserKind.ANONYMOUS, created_at=aged),
                    User(id=U2, kind=UserKind.ANONYMOUS, created_at=aged),
                ]
            )
            s.flush()
            s.add_all(
                [
                    generation_row("chatcmpl-1", v0.id, prompt=P_MATH, text="4", user_id=U1),
                    generation_row("chatcmpl-2", v1.id, prompt=P_MATH, text="Four.", user_id=U1),
                    generation_row("chatcmpl-3", v0.id, prompt=P_HI, text="Grüß dich", user_id=U2),
                    generation_row(
                        "chatcmpl-4",
                        v1.id,
                        prompt=P_HI,
                        text="hey",
                        user_id=U2,
                        status=GenerationStatus.CUT_OFF,
                    ),
                ]
            )
            s.flush()
            s.add_all(
                [
                    Rating(generation_id="chatcmpl-1", user_id=U1, value=1, reason="accurate",
                           live=False, created_at=T, superseded_at=T + H),
                    Rating(generation_id="chatcmpl-1", user_id=U1, value=-1, reason="wrong",
                           comment="too terse", created_at=T + H),
                    Rating(generation_id="chatcmpl-2", user_id=U1, value=1, created_at=T + 2 * H),
                    Rating(generation_id="chatcmpl-4", user_id=U2, value=1, created_at=T + D),
                ]
            )  # fmt: skip
            s.add_all(
                [
                    Comparison(id="cmp-1", user_id=U1, prompt=P_MATH, generation_a_id="chatcmpl-1",
                               generation_b_id="chatcmpl-2", choice=ComparisonChoice.B,
                               reason="more_helpful", created_at=T + 3 * H - H,
                               voted_at=T + 3 * H),
                    Comparison(id="cmp-2", user_id=U2, prompt=P_HI, generation_a_id="chatcmpl-4",
                               generation_b_id="chatcmpl-3", choice=ComparisonChoice.B,
                               created_at=T + D, voted_at=T + D + H),
                    Comparison(id="cmp-3", user_id=U2, prompt=P_HI, generation_a_id="chatcmpl-3",
                               generation_b_id="chatcmpl-4", created_at=T + D),  # not voted
                ]
            )  # fmt: skip
    finally:
        eng.dispose()


def _reply(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def _read(path: Path) -> list[dict[str, Any]]:
    text = path.read_text(encoding="utf-8")
    assert text == "" or text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def _secret(tmp_path: Path) -> str:
    return (tmp_path / "data" / "session_secret").read_text().strip()


P_HI_PLAIN = [{"role": m["role"], "content": m["content"]} for m in P_HI]


def test_export_pairs_and_unpaired(run: Run, votes: None, tmp_path: Path) -> None:
    pairs = tmp_path / "pairs.jsonl"
    code, out, err = run("export", "--format", "pairs", "-o", str(pairs))
    assert (code, out) == (0, "")
    assert "exported 2 pairs rows" in err
    assert _read(pairs) == [
        {"prompt": P_MATH, "chosen": _reply("Four."), "rejected": _reply("4")},
        # a cut-off reply is final; prompt messages keep role and content only
        {"prompt": P_HI_PLAIN, "chosen": _reply("Grüß dich"), "rejected": _reply("hey")},
    ]
    assert "Grüß dich" in pairs.read_text(encoding="utf-8")  # unicode is kept, not escaped

    unpaired = tmp_path / "unpaired.jsonl"
    code, _, err = run("export", "--format", "unpaired", "--output", str(unpaired))
    assert code == 0 and "exported 3 unpaired rows" in err
    assert _read(unpaired) == [
        {"prompt": P_MATH, "completion": _reply("4"), "label": False},  # the changed vote
        {"prompt": P_MATH, "completion": _reply("Four."), "label": True},
        {"prompt": P_HI_PLAIN, "completion": _reply("hey"), "label": True},
    ]

    # pairs is the default format, and stdout the default output.
    code, out, _ = run("export")
    assert code == 0
    assert out == pairs.read_text(encoding="utf-8")
    code, out, _ = run("export", "-o", "-")
    assert code == 0 and out == pairs.read_text(encoding="utf-8")


def test_export_raw_by_version(run: Run, votes: None, tmp_path: Path) -> None:
    raw = tmp_path / "raw.jsonl"
    code, _, err = run("export", "--format", "raw", "--version", "v0", "-o", str(raw))
    assert code == 0 and "exported 4 raw rows" in err
    rows = _read(raw)
    # The secret the export used is the session secret in the data directory (0600).
    secret_file = tmp_path / "data" / "session_secret"
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    p1, p2 = pseudonym(_secret(tmp_path), U1), pseudonym(_secret(tmp_path), U2)
    assert [(r["kind"], r["id"] if r["kind"] == "comparison" else r["generation_id"],
             r["user"]) for r in rows] == [
        ("rating", "chatcmpl-1", p1),
        ("rating", "chatcmpl-1", p1),
        ("comparison", "cmp-1", p1),
        ("comparison", "cmp-2", p2),
    ]  # fmt: skip
    assert U1 not in raw.read_text() and U2 not in raw.read_text()
    first, second = rows[0], rows[1]
    assert {k: first[k] for k in ("value", "reason", "live", "created_at", "superseded_at")} == {
        "value": "up",
        "reason": "accurate",
        "live": False,
        "created_at": "2026-11-20T10:00:00+00:00",
        "superseded_at": "2026-11-20T11:00:00+00:00",
    }
    assert (second["value"], second["comment"], second["live"]) == ("down", "too terse", True)
    assert second["policy_version"] == "loopchat@v0" and second["text"] == "4"
    cmp2 = rows[3]
    assert cmp2 == {
        "kind": "comparison",
        "id": "cmp-2",
        "user": p2,
        "prompt": P_HI,  # raw keeps the prompt verbatim
        "choice": "b",
        "reason": None,
        "created_at": "2026-11-21T10:00:00+00:00",
        "voted_at": "2026-11-21T11:00:00+00:00",
        "generation_a_id": "chatcmpl-4",
        "generation_b_id": "chatcmpl-3",
        "policy_version_a": "loopchat@v1",
        "policy_version_b": "loopchat@v0",
        "generation_status_a": "cut_off",
        "generation_status_b": "completed",
        "text_a": "hey",
        "text_b": "Grüß dich",
        "set_aside": None,
    }

    # The same with the public name, and the same pseudonyms on a second run.
    again = tmp_path / "again.jsonl"
    assert run("export", "--format", "raw", "--version", "loopchat@v0", "-o", str(again))[0] == 0
    assert _read(again) == rows
    everything = tmp_path / "all.jsonl"
    assert run("export", "--format", "raw", "-o", str(everything))[0] == 0
    assert [r.get("generation_id", r["id"]) for r in _read(everything)] == [
        "chatcmpl-1", "chatcmpl-1", "chatcmpl-2", "cmp-1", "chatcmpl-4", "cmp-2",
    ]  # fmt: skip
    none = tmp_path / "none.jsonl"
    code, _, err = run("export", "--format", "raw", "--version", "v9", "-o", str(none))
    assert code == 0 and none.read_text() == "" and "exported 0 raw rows" in err


def test_export_time_window(run: Run, votes: None, tmp_path: Path) -> None:
    for fmt in ("pairs", "unpaired", "raw"):
        out_file = tmp_path / f"future-{fmt}.jsonl"
        code, _, err = run("export", "--format", fmt, "--since", "2999-01-01", "-o", str(out_file))
        assert code == 0 and f"exported 0 {fmt} rows" in err
        assert out_file.read_text() == ""
    day2 = tmp_path / "day2.jsonl"
    code, _, _ = run("export", "--format", "raw", "--since", "2026-11-21", "-o", str(day2))
    assert code == 0
    assert [r.get("generation_id", r["id"]) for r in _read(day2)] == ["chatcmpl-4", "cmp-2"]
    day1 = tmp_path / "day1.jsonl"  # naive times are UTC; other offsets are converted
    code, _, _ = run(
        "export", "--format", "raw", "--since", "2026-11-20T11:30:00+01:00",
        "--until", "2026-11-20T13:00", "-o", str(day1),
    )  # fmt: skip
    assert code == 0
    assert [r.get("generation_id", r["id"]) for r in _read(day1)] == ["chatcmpl-1", "chatcmpl-2"]


@pytest.mark.parametrize(
    "args",
    [
        ["--since", "nonsense"],
        ["--until", "2026-13-01"],
        ["--format", "csv"],
    ],
)
def test_export_bad_arguments_exit_2(
    args: list[str], where: list[str], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out_file = tmp_path / "never.jsonl"
    with pytest.raises(SystemExit) as e:
        main(["export", *args, "-o", str(out_file), *where])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "usage: loopchat export" in err
    if "--since" in args:
        assert "not an ISO-8601 date or time: 'nonsense'" in err
    assert not out_file.exists()


def test_export_reads_what_the_server_stored(
    run: Run, tmp_path: Path, make_client: Callable[..., TestClient]
) -> None:
    """Votes cast through the API export with the server's own pseudonym secret."""
    client = make_client(_url(tmp_path), engine=FakeEngine("fine thanks"), auth=False)
    dev = new_user(client)
    r = client.post(CHAT, json={"messages": HELLO}, headers=dev)
    gid = r.json()["id"]
    r = client.post("/v1/feedback", json={"generation_id": gid, "rating": "up"}, headers=dev)
    assert r.status_code == 201, r.text
    cmp = client.post("/v1/comparisons", json={"messages": HELLO}, headers=dev).json()
    r = client.post(f"/v1/comparisons/{cmp['id']}/vote", json={"choice": "a"}, headers=dev)
    assert r.status_code == 200, r.text
    user_id = client.get("/v1/me", headers=dev).json()["user_id"]

    raw = tmp_path / "raw.jsonl"
    assert run("export", "--format", "raw", "-o", str(raw))[0] == 0
    rows = _read(raw)
    assert [(x["kind"], x["user"]) for x in rows] == [
        ("rating", pseudonym(_secret(tmp_path), user_id)),
        ("comparison", pseudonym(_secret(tmp_path), user_id)),
    ]
    assert rows[0]["generation_id"] == gid and rows[0]["text"] == "fine thanks"
    assert rows[1]["id"] == cmp["id"] and rows[1]["choice"] == "a"
    pairs = tmp_path / "pairs.jsonl"
    assert run("export", "-o", str(pairs))[0] == 0
    assert _read(pairs) == [
        {"prompt": HELLO, "chosen": _reply("fine thanks"), "rejected": _reply("fine thanks")}
    ]


@pytest.mark.parametrize(
    "args",
    [["--since", "2026-02-01", "--until", "2026-01-01"], ["--version", "other@v1"]],
    ids=["since-after-until", "foreign-alias"],
)
def test_export_refuses_bad_filters_cleanly(args: list[str], run: Run, tmp_path: Path) -> None:
    out_file = tmp_path / "previous.jsonl"
    out_file.write_text('{"kept": true}\n')
    try:
        code, _, _ = run("export", *args, "-o", str(out_file))
    except SystemExit as e:
        code = int(e.code or 0)
    assert code != 0
    assert out_file.read_text() == '{"kept": true}\n'  # an earlier export is not clobbered
