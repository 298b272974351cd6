"""Policy lifecycle on a running app (fake engine): canary, routing, promotion by rule and
by operator, rollback, retirement, failed loads, polling, the event log."""

from __future__ import annotations

import itertools
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session

from service.policies import lifecycle
from service.policies.lifecycle import IllegalTransition
from store.db.models import Comparison, ComparisonChoice, PolicyVersion, Rating
from store.db.session import make_engine
from store.domain import VersionKind, VersionStatus
from tests.dbutil import HI, fetch, generation_row
from tests.fakes import FakeEngine

S = VersionStatus

# The lifecycle as the docs describe it, written out independently of the code's table.
EXPECTED_LEGAL = {
    (S.CANDIDATE, S.CANARY),
    (S.CANDIDATE, S.SERVING),
    (S.CANDIDATE, S.RETIRED),
    (S.CANDIDATE, S.FAILED),
    (S.CANARY, S.SERVING),
    (S.CANARY, S.RETIRED),
    (S.SERVING, S.RETIRED),
    (S.RETIRED, S.SERVING),
}


@pytest.mark.parametrize(("current", "target"), list(itertools.product(S, S)))
def test_every_transition_is_legal_or_refused(current: S, target: S) -> None:
    if (current, target) in EXPECTED_LEGAL:
        lifecycle.check("v1", current, target)
    else:
        with pytest.raises(IllegalTransition) as err:
            lifecycle.check("v1", current, target)
        assert err.value.status == 409 and "v1" in err.value.message


# -- helpers --------------------------------------------------------------------------------


def add_version(db_url: str, name: str, status: S = S.CANDIDATE) -> int:
    eng = make_engine(db_url)
    try:
        with Session(eng) as s, s.begin():
            v0 = s.query(PolicyVersion).filter_by(name="v0").one()
            v = PolicyVersion(
                name=name,
                parent_id=v0.id,
                base_model=v0.base_model,
                kind=VersionKind.LORA,
                artifact_uri=str(Path(v0.base_model) / name),
                status=status,
                metrics={"win_rate": 0.6},
            )
            s.add(v)
            s.flush()
            return v.id
    finally:
        eng.dispose()


def add_votes(db_url: str, first: str, second: str, wins: int, losses: int) -> None:
    """`wins` comparisons that `first` won against `second` and `losses` it lost."""
    eng = make_engine(db_url)
    try:
        with Session(eng) as s, s.begin():
            ids = {v.name: v.id for v in s.query(PolicyVersion)}
            for i in range(wins + losses):
                ga, gb = f"g-{uuid.uuid4().hex}", f"g-{uuid.uuid4().hex}"
                s.add_all([generation_row(ga, ids[first]), generation_row(gb, ids[second])])
                s.flush()
                choice = ComparisonChoice.A if i < wins else ComparisonChoice.B
                s.add(
                    Comparison(
                        prompt=HI,
                        generation_a_id=ga,
                        generation_b_id=gb,
                        choice=choice,
                    )
                )
    finally:
        eng.dispose()


def statuses(db_url: str) -> dict[str, str]:
    return {v.name: v.status.value for v in fetch(db_url, PolicyVersion)}


def events(client: Any, **params: Any) -> list[dict[str, Any]]:
    r = client.get("/v1/admin/policies/events", params=params)
    assert r.status_code == 200, r.text
    return list(r.json())


def chat(client: Any, model: str = "loopchat") -> str:
    r = client.post("/v1/chat/completions", json={"model": model, "messages": HI})
    assert r.status_code == 200, r.text
    assert r.headers["X-Policy-Version"] == r.json()["model"]
    return str(r.json()["model"])


@pytest.fixture
def setup(make_client: Any, db_url: str) -> Any:
    """A started app on a fake engine, on SQLite and on PostgreSQL."""

    def make(**settings: Any) -> tuple[Any, FakeEngine, Any]:
        engine = FakeEngine()
        settings.setdefault("policy_poll_seconds", 3600)  # tests poll by hand
        client = make_client(db_url, engine, **settings)
        registry = client.app.state.runtime.registry
        return client, engine, registry

    make.db_url = db_url  # type: ignore[attr-defined]
    return make


def notify(client: Any, registry: Any, name: str) -> dict[str, Any]:
    r = client.post("/v1/admin/policies/notify", json={"version": name})
    assert r.status_code == 202, r.text
    client.portal.call(registry.settle)
    return dict(r.json())


# -- canary ---------------------------------------------------------------------------------


def test_notified_candidate_becomes_the_canary_and_takes_its_share(setup: Any) -> None:
    client, engine, registry = setup(canary_share=0.3)
    add_version(setup.db_url, "v1")
    assert notify(client, registry, "v1") == {
        "version": "v1",
        "status": "candidate",
        "accepted": True,
    }
    assert statuses(setup.db_url) == {"v0": "serving", "v1": "canary"}
    assert "v1" in engine.versions and engine.weights is None  # canary runs as an adapter
    [ev] = events(client)
    assert (ev["kind"], ev["version"], ev["actor"], ev["previous_version"]) == (
        "canary", "v1", "trainer", "v0"
    )  # fmt: skip
    # A repeated notice is not admitted twice.
    assert notify(client, registry, "v1")["accepted"] is False
    assert len(events(client)) == 1

    # Unpinned traffic: ~30% to the canary; the draw is sticky per user.
    draws = Counter(registry.route(None).name for _ in range(4000))
    assert 0.27 < draws["v1"] / 4000 < 0.33
    per_user = Counter(registry.route(f"user-{i}").name for i in range(4000))
    assert 0.27 < per_user["v1"] / 4000 < 0.33
    assert {registry.route("user-7").name for _ in range(20)} == {registry.route("user-7").name}
    # Over HTTP every reply names the one version that wrote it: one user, one version.
    assert len({chat(client) for _ in range(20)}) == 1
    assert chat(client, "loopchat@v0") == "loopchat@v0"
    assert chat(client, "loopchat@v1") == "loopchat@v1"
    # Comparisons put the canary on one side and the serving version on the other.
    for _ in range(4):
        r = client.post("/v1/comparisons", json={"messages": HI})
        assert r.status_code == 201, r.text
        r = client.post(f"/v1/comparisons/{r.json()['id']}/vote", json={"choice": "a"})
        assert r.status_code == 200, r.text
        models = {r.json()["a"]["model"], r.json()["b"]["model"]}
        assert models == {"loopchat@v0", "loopchat@v1"}


def test_share_zero_keeps_unpinned_traffic_on_serving(setup: Any) -> None:
    client, _, registry = setup(canary_share=0.0)
    add_version(setup.db_url, "v1")
    notify(client, registry, "v1")
    assert {chat(client) for _ in range(10)} == {"loopchat@v0"}
    assert registry.comparison_pair()[1].name == "v1"  # comparisons still rate it


def test_a_newer_candidate_supersedes_the_canary(setup: Any) -> None:
    client, _, registry = setup()
    add_version(setup.db_url, "v1")
    notify(client, registry, "v1")
    add_version(setup.db_url, "v2")
    notify(client, registry, "v2")
    assert statuses(setup.db_url) == {"v0": "serving", "v1": "retired", "v2": "canary"}
    kinds = [(e["kind"], e["version"]) for e in events(client)]
    assert kinds == [("canary", "v2"), ("retire", "v1"), ("canary", "v1")]
    assert "superseded" in events(client, kind="retire")[0]["reason"]


def test_a_corrupt_candidate_fails_and_nothing_else_changes(setup: Any) -> None:
    client, engine, registry = setup()
    add_version(setup.db_url, "v1")
    notify(client, registry, "v1")
    engine.broken.add("v2")
    add_version(setup.db_url, "v2")
    notify(client, registry, "v2")
    assert statuses(setup.db_url) == {"v0": "serving", "v1": "canary", "v2": "failed"}
    [row] = fetch(setup.db_url, PolicyVersion, PolicyVersion.name == "v2")
    assert row.error and "corrupt" in row.error
    fail = events(client, kind="fail")[0]
    assert fail["version"] == "v2" and "corrupt" in fail["reason"]
    assert registry.canary.name == "v1" and registry.serving.name == "v0"
    assert chat(client, "loopchat@v0") == "loopchat@v0"
    r = client.post("/v1/admin/policies/v2/promote")
    assert r.status_code == 409 and "failed" in r.json()["error"]["message"]


def test_polling_admits_a_candidate_whose_notice_never_came(setup: Any) -> None:
    client, _, registry = setup()
    add_version(setup.db_url, "v1")
    client.portal.call(registry.poll_once)
    assert statuses(setup.db_url)["v1"] == "canary"
    assert events(client)[0]["actor"] == "system"


# -- promotion, rollback, retirement ---------------------------------------------------------


def test_operator_promotes_and_rolls_back(setup: Any) -> None:
    client, engine, registry = setup()
    add_version(setup.db_url, "v1")
    notify(client, registry, "v1")
    r = client.post("/v1/admin/policies/v1/promote", json={"reason": "looks good"})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "serving"
    client.portal.call(registry.settle)
    assert engine.weights == "v1"  # merged mode: the serving version is in the weights
    assert statuses(setup.db_url) == {"v0": "retired", "v1": "serving"}
    assert chat(client) == "loopchat@v1"
    models = client.get("/v1/models").json()["data"]
    assert models[0]["id"] == "loopchat" and models[0]["kind"] == "lora"
    promote = events(client, kind="promote")[0]
    assert (promote["actor"], promote["reason"], promote["previous_version"]) == (
        "operator", "looks good", "v0"
    )  # fmt: skip
    assert events(client, kind="swap")[0]["version"] == "v1"

    r = client.post("/v1/admin/policies/rollback")
    assert r.status_code == 200 and r.json()["name"] == "v0"
    client.portal.call(registry.settle)
    assert statuses(setup.db_url) == {"v0": "serving", "v1": "retired"}
    assert chat(client) == "loopchat@v0" and engine.weights is None
    back = events(client, kind="rollback")[0]
    assert (back["version"], back["previous_version"], back["actor"]) == ("v0", "v1", "operator")
    # A retained version can be promoted again by name or id (a roll forward).
    v1_id = fetch(setup.db_url, PolicyVersion, PolicyVersion.name == "v1")[0].id
    assert client.post(f"/v1/admin/policies/{v1_id}/promote").json()["name"] == "v1"
    listing = client.get("/v1/admin/policies").json()
    assert listing["serving"] == "v1" and listing["canary"] is None
    assert {p["name"]: p["loaded"] for p in listing["data"]} == {"v0": True, "v1": True}


def test_lora_mode_never_touches_the_weights(setup: Any) -> None:
    client, engine, registry = setup(swap_mode="lora")
    add_version(setup.db_url, "v1")
    notify(client, registry, "v1")
    assert client.post("/v1/admin/policies/v1/promote").status_code == 200
    client.portal.call(registry.settle)
    assert engine.weights is None and chat(client) == "loopchat@v1"
    assert events(client, kind="swap") == []


def test_refused_changes_are_clear_and_change_nothing(setup: Any) -> None:
    client, _, _ = setup()
    add_version(setup.db_url, "v1", S.REJECTED)
    before = statuses(setup.db_url)
    for path, code in [
        ("/v1/admin/policies/v1/promote", 409),  # rejected by the gate: final
        ("/v1/admin/policies/v0/retire", 409),  # serving: replace it instead
        ("/v1/admin/policies/v9/promote", 404),
        ("/v1/admin/policies/rollback", 409),  # nothing served before v0
    ]:
        r = client.post(path)
        assert r.status_code == code, (path, r.text)
        assert r.json()["error"]["message"]
    r = client.post("/v1/admin/policies/v0/promote", json={"reason": "x" * 501})
    assert r.status_code == 422
    assert statuses(setup.db_url) == before and events(client) == []
    anon = client.post("/v1/admin/policies/v0/promote", headers={"Authorization": ""})
    assert anon.status_code == 401


def test_the_rule_promotes_a_canary_that_wins_with_confidence(setup: Any) -> None:
    client, _, registry = setup(promote_min_comparisons=30)
    add_version(setup.db_url, "v1")
    notify(client, registry, "v1")
    add_votes(setup.db_url, "v1", "v0", wins=8, losses=2)  # too few votes yet
    client.portal.call(registry.poll_once)
    assert statuses(setup.db_url)["v1"] == "canary"
    assert "more" in registry.last_decision.reason
    add_votes(setup.db_url, "v1", "v0", wins=32, losses=8)  # 40 of 50 now
    client.portal.call(registry.poll_once)
    client.portal.call(registry.settle)
    assert statuses(setup.db_url) == {"v0": "retired", "v1": "serving"}
    ev = events(client, kind="promote")[0]
    assert ev["actor"] == "rule" and ev["metrics"]["comparisons"] == 50
    assert ev["metrics"]["win_low"] > 0.5
    ratings = client.get("/v1/admin/policies/ratings").json()
    by_name = {r["version"]: r for r in ratings["ratings"]}
    assert by_name["v1"]["elo"] > by_name["v0"]["elo"]
    assert by_name["v1"]["comparisons"] == 50


def test_the_rule_retires_a_canary_that_loses_and_serving_stays(setup: Any) -> None:
    client, _, registry = setup(auto_promote=False)
    add_version(setup.db_url, "v1")
    notify(client, registry, "v1")
    add_votes(setup.db_url, "v1", "v0", wins=10, losses=40)
    client.portal.call(registry.poll_once)
    assert statuses(setup.db_url) == {"v0": "serving", "v1": "retired"}
    ev = events(client, kind="retire")[0]
    assert ev["actor"] == "rule" and "win rate 0.20" in ev["reason"]
    assert {chat(client) for _ in range(10)} == {"loopchat@v0"}


def test_auto_promote_off_leaves_the_winner_to_the_operator(setup: Any) -> None:
    client, _, registry = setup(auto_promote=False)
    add_version(setup.db_url, "v1")
    notify(client, registry, "v1")
    add_votes(setup.db_url, "v1", "v0", wins=45, losses=5)
    client.portal.call(registry.poll_once)
    assert statuses(setup.db_url)["v1"] == "canary"
    canary = client.get("/v1/admin/policies/ratings").json()["canary"]
    assert canary["version"] == "v1" and canary["verdict"] == "promote"


def test_thumbs_feed_the_ratings(setup: Any) -> None:
    client, _, registry = setup()
    add_version(setup.db_url, "v1")
    notify(client, registry, "v1")
    r = client.post("/v1/chat/completions", json={"model": "loopchat@v1", "messages": HI})
    gid = r.json()["id"]
    assert (
        client.post("/v1/feedback", json={"generation_id": gid, "rating": "up"}).status_code == 201
    )
    by_name = {r["version"]: r for r in client.get("/v1/admin/policies/ratings").json()["ratings"]}
    assert (by_name["v1"]["thumbs_up"], by_name["v1"]["thumbs_down"]) == (1, 0)
    assert by_name["v1"]["thumbs_interval"]["low"] < 1.0
    assert len(fetch(setup.db_url, Rating)) == 1


def test_the_server_follows_a_serving_change_written_by_another_process(setup: Any) -> None:
    client, _, registry = setup()
    add_version(setup.db_url, "v1", S.RETIRED)
    eng = make_engine(setup.db_url)
    with Session(eng) as s, s.begin():
        for v in s.query(PolicyVersion):
            v.status = S.SERVING if v.name == "v1" else S.RETIRED
    eng.dispose()
    client.portal.call(registry.poll_once)
    client.portal.call(registry.settle)
    assert registry.serving.name == "v1" and chat(client) == "loopchat@v1"


def test_retired_versions_beyond_retain_are_unloaded(setup: Any) -> None:
    client, engine, registry = setup(retain_versions=1)
    for name in ("v1", "v2", "v3"):
        add_version(setup.db_url, name)
        notify(client, registry, name)
        assert client.post(f"/v1/admin/policies/{name}/promote").status_code == 200
        client.portal.call(registry.settle)
    # v3 serves; v2 is the one retained; v1 is unloaded; v0 (the reference) always stays.
    assert set(engine.versions) == {"v0", "v2", "v3"}
    r = client.post("/v1/chat/completions", json={"model": "loopchat@v1", "messages": HI})
    assert r.status_code == 404
    # Rolling back to an unloaded retained version loads it again.
    assert client.post("/v1/admin/policies/v1/promote").status_code == 200
    assert chat(client) == "loopchat@v1"


def test_polling_admits_the_newest_of_several_candidates(setup: Any) -> None:
    client, engine, registry = setup()
    add_version(setup.db_url, "v1")
    add_version(setup.db_url, "v2")
    client.portal.call(registry.poll_once)
    assert statuses(setup.db_url) == {"v0": "serving", "v1": "retired", "v2": "canary"}
    assert "v1" not in engine.versions  # never loaded, so it cannot be pinned
    r = client.post("/v1/chat/completions", json={"model": "loopchat@v1", "messages": HI})
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
