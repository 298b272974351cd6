"""A vLLM engine core that dies is replaced while the server keeps running (tiny model).

The server serves v1 merged into the engine's weights (v0 then runs as an adapter), the
engine core process is killed, and the server must turn not ready, answer requests in the
meantime with a clear error and no stack trace, start a new core on its own, and come back
serving the same versions: the same greedy replies as before the crash.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import psutil
import pytest

from tests.conftest import ADMIN
from tests.test_swap_under_load import (
    admin,
    greedy,
    make_adapter,
    merged_vllm_server,
    register,
    wait_for,
)


def _engine_cores(pid: int) -> list[psutil.Process]:
    kids = psutil.Process(pid).children(recursive=True)
    return [p for p in kids if "EngineCore" in p.name() or "EngineCore" in " ".join(p.cmdline())]


@pytest.mark.vllm
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_dead_engine_core_is_replaced_with_the_same_versions(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("vllm")
    with merged_vllm_server(tiny_model_dir, tmp_path, monkeypatch) as srv:
        base = srv.base
        make_adapter(tiny_model_dir, tmp_path / "adapters" / "v1", seed=0)
        register(srv.db, "v1", tmp_path / "adapters" / "v1")
        admin(base, "POST", "/v1/admin/policies/notify", json={"version": "v1"})
        wait_for(lambda: admin(base, "GET", "/v1/admin/policies")["canary"] == "v1")
        admin(base, "POST", "/v1/admin/policies/v1/promote")
        before = {m: greedy(base, m) for m in ("loopchat", "loopchat@v0")}
        assert before["loopchat"] == greedy(base, "loopchat@v1")
        assert before["loopchat"] != before["loopchat@v0"]  # v0 runs as an adapter now

        cores = _engine_cores(srv.proc.pid)
        assert len(cores) == 1, cores
        cores[0].kill()
        cores[0].wait(30)

        # Requests meanwhile: either answered or refused cleanly, never a 500 / traceback.
        body = {"model": "loopchat", "messages": [{"role": "user", "content": "Hi"}]}
        statuses: list[int] = []
        saw_not_ready = False
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            r = httpx.post(f"{base}/v1/chat/completions", json=body, headers=ADMIN, timeout=60)
            statuses.append(r.status_code)
            assert r.status_code in (200, 503), r.text
            assert "Traceback" not in r.text
            if r.status_code == 503:
                assert r.json()["error"]["message"], r.text
            ready = httpx.get(f"{base}/readyz", timeout=10)
            if ready.status_code == 503:
                saw_not_ready = True
                assert ready.json()["status"] == "engine_restarting"
            elif saw_not_ready:
                break
            time.sleep(0.5)
        assert saw_not_ready, statuses
        assert httpx.get(f"{base}/readyz", timeout=10).status_code == 200, statuses
        assert 503 in statuses
        new_cores = _engine_cores(srv.proc.pid)
        assert len(new_cores) == 1 and new_cores[0].pid != cores[0].pid

        # The same versions, in the same places: v1 in the weights, v0 as an adapter.
        assert {m: greedy(base, m) for m in before} == before
        assert greedy(base, "loopchat@v1") == before["loopchat"]
        policies = admin(base, "GET", "/v1/admin/policies")
        assert policies["serving"] == "v1"
        assert {p["name"]: p["in_weights"] for p in policies["data"]}["v1"] is True
        assert "vLLM engine restarted (1 so far)" in srv.log.read_text()
