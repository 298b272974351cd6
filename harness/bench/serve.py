"""`loopchat bench serve`: the same concurrent chat load on the engine and on the HTTP API.

One process, one event loop, one engine. The engine is started once; the app is built
around it (`create_app(settings, engine=engine)`, whose startup finds it started and loads
the serving version into it) and served by uvicorn on a free local port. Every concurrency
level is then measured on the engine directly and right after through streaming
POST /v1/chat/completions, with identical prompts, seeds and `max_tokens`. The app writes
into a throwaway SQLite database, never the configured one.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import secrets
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx
    import uvicorn

    from service.chat.engines.base import Engine
    from service.settings import Settings

log = logging.getLogger(__name__)

PROMPTS: tuple[str, ...] = (
    "Give me three tips for writing clear emails.",
    "What is the difference between a list and a tuple in Python?",
    "Write a haiku about the sea at night.",
    "Explain in simple words why the sky is blue.",
    "Suggest a name for a small bakery and say why.",
)
BASE_SEED = 1234
WARMUP_TOKENS = 8
READY_TIMEOUT_S = 600.0
HTTP_TIMEOUT_S = 600.0
GOAL_THROUGHPUT_RATIO = 0.95
GOAL_TTFT_DELTA_MS = 10.0
COLUMNS = (
    "requests",
    "tokens",
    "wall s",
    "tok/s",
    "TTFT p50",
    "TTFT p90",
    "lat p50",
    "lat p90",
    "lat p99",
)


@dataclass(frozen=True)
class BenchConfig:
    concurrency: tuple[int, ...]
    max_tokens: int
    requests_per_stream: int = 1


@dataclass(frozen=True)
class Job:
    prompt: int  # index into PROMPTS
    seed: int


@dataclass(frozen=True)
class Sample:
    ttft_ms: float | None
    latency_ms: float
    tokens: int


@dataclass(frozen=True)
class LoadResult:
    samples: list[Sample]
    wall_s: float
    errors: list[str]

    @property
    def tokens(self) -> int:
        return sum(s.tokens for s in self.samples)

    @property
    def throughput(self) -> float:
        return self.tokens / self.wall_s if self.wall_s > 0 else math.nan

    def ttft(self, q: float) -> float:
        return percentile([s.ttft_ms for s in self.samples if s.ttft_ms is not None], q)

    def latency(self, q: float) -> float:
        return percentile([s.latency_ms for s in self.samples], q)

    def cells(self) -> list[float]:
        return [
            len(self.samples),
            self.tokens,
            self.wall_s,
            self.throughput,
            self.ttft(0.5),
            self.ttft(0.9),
            self.latency(0.5),
            self.latency(0.9),
            self.latency(0.99),
        ]


@dataclass(frozen=True)
class Level:
    concurrency: int
    engine: LoadResult
    api: LoadResult

    @property
    def throughput_ratio(self) -> float:
        return _ratio(self.api.throughput, self.engine.throughput)

    @property
    def ttft_delta_ms(self) -> float:
        return self.api.ttft(0.5) - self.engine.ttft(0.5)

    @property
    def keeps_throughput(self) -> bool:
        return self.throughput_ratio >= GOAL_THROUGHPUT_RATIO

    @property
    def fast_first_token(self) -> bool:
        return self.ttft_delta_ms < GOAL_TTFT_DELTA_MS


Send = Callable[[Job, int], Awaitable[Sample]]


# -- entry ---------------------------------------------------------------------------------


def run_bench_serve(settings: Settings, cfg: BenchConfig) -> int:
    """Run the benchmark; 0 when every request succeeded, 1 on failures, 2 on bad input."""
    problem = _check(settings, cfg)
    if problem is not None:
        print(f"loopchat bench serve: {problem}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="loopchat-bench-") as tmp:
        try:
            return asyncio.run(_bench(isolated(settings, Path(tmp)), cfg))
        except Exception as e:  # a CLI: report any failure as one line plus the trace
            log.error("bench failed: %s", e, exc_info=True)
            return 1


def _check(settings: Settings, cfg: BenchConfig) -> str | None:
    if not cfg.concurrency or min(cfg.concurrency) < 1:
        return "--concurrency needs one or more levels, each at least 1"
    if cfg.requests_per_stream < 1:
        return "--requests-per-stream must be at least 1"
    if not 1 <= cfg.max_tokens <= settings.max_new_tokens:
        return f"--max-tokens must be between 1 and the API's cap of {settings.max_new_tokens}"
    model_dir = settings.resolved_model_dir
    if not (model_dir / "config.json").is_file():
        return f"no model at {model_dir}: pass --model or run `loopchat model prepare`"
    return None


def isolated(settings: Settings, tmp: Path) -> Settings:
    """The same settings on a throwaway database; the model directory stays pinned."""
    return settings.model_copy(
        update={
            "data_dir": tmp,
            "database_url": f"sqlite:///{tmp / 'bench.db'}",
            "model": settings.resolved_model_dir.resolve(),
            "admin_token": secrets.token_urlsafe(24),  # the bench's client sends it
        }
    )


async def _bench(settings: Settings, cfg: BenchConfig) -> int:
    from service.chat.engines.factory import build_engine

    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per request otherwise
    engine = build_engine(settings)
    _print_header(settings, engine, cfg)
    levels: list[Level] = []
    try:
        await start_engine(engine)
        prompt_ids = await asyncio.to_thread(_encode_prompts, settings.resolved_model_dir)
        async with api_server(settings, engine, max(cfg.concurrency)) as (client, served_model):
            version = served_model.rpartition("@")[2]
            engine_send = _engine_sender(engine, version, prompt_ids)
            api_send = _api_sender(client, served_model)
            print(f"api ready: serving {served_model} (engine version {version!r})", flush=True)
            for c in cfg.concurrency:
                level = Level(
                    c,
                    await _measure("engine", c, engine_send, cfg),
                    await _measure("http api", c, api_send, cfg),
                )
                levels.append(level)
                print("\n".join(_level_report(level, cfg)), flush=True)
    finally:
        await engine.shutdown()  # the app's shutdown did it already when it got that far
    print("\n".join(_summary(levels)), flush=True)
    return 1 if any(lv.engine.errors or lv.api.errors for lv in levels) else 0


async def start_engine(engine: Engine) -> None:
    print(f"starting the {engine.info().name} engine ...", flush=True)
    start = time.perf_counter()
    await engine.start()
    print(f"engine started in {time.perf_counter() - start:.1f} s", flush=True)


def _messages(prompt: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": PROMPTS[prompt]}]


def _encode_prompts(model_dir: Path) -> list[list[int]]:
    from service.chat.tokenizer import ChatTokenizer

    tokenizer = ChatTokenizer.from_dir(model_dir)
    return [tokenizer.encode_chat(_messages(i)) for i in range(len(PROMPTS))]


# -- load ----------------------------------------------------------------------------------


def _streams(concurrency: int, per_stream: int) -> list[list[Job]]:
    """The same jobs for both sides: stream s, request k."""
    return [
        [Job((s + k) % len(PROMPTS), BASE_SEED + s * per_stream + k) for k in range(per_stream)]
        for s in range(concurrency)
    ]


async def _run_load(send: Send, streams: list[list[Job]], max_tokens: int) -> LoadResult:
    samples: list[Sample] = []
    errors: list[str] = []

    async def stream(jobs: list[Job]) -> None:
        for job in jobs:
            try:
                samples.append(await send(job, max_tokens))
            except Exception as e:  # counted and reported, the other streams go on
                errors.append(f"{type(e).__name__}: {e}")

    start = time.perf_counter()
    await asyncio.gather(*(stream(jobs) for jobs in streams))
    return LoadResult(samples, time.perf_counter() - start, errors)


async def _measure(label: str, concurrency: int, send: Send, cfg: BenchConfig) -> LoadResult:
    await send(Job(0, BASE_SEED), min(WARMUP_TOKENS, cfg.max_tokens))  # warm-up, not measured
    n = concurrency * cfg.requests_per_stream
    print(f"{label:<8} C={concurrency:<4} {n} requests ...", end="", flush=True)
    result = await _run_load(send, _streams(concurrency, cfg.requests_per_stream), cfg.max_tokens)
    failed = f", {len(result.errors)} FAILED" if result.errors else ""
    print(f" done in {result.wall_s:.1f} s ({result.tokens} tokens{failed})", flush=True)
    for error in sorted(set(result.errors))[:3]:
        print(f"  error: {error}", flush=True)
    return result


def _ms_since(start: float) -> float:
    return (time.perf_counter() - start) * 1000


def _engine_sender(engine: Engine, version: str, prompt_ids: Sequence[list[int]]) -> Send:
    from service.chat.engines.base import Sampling

    async def send(job: Job, max_tokens: int) -> Sample:
        sampling = Sampling(temperature=0.0, top_p=1.0, max_tokens=max_tokens, seed=job.seed)
        request_id = f"bench-{uuid.uuid4().hex}"
        start = time.perf_counter()
        ttft: float | None = None
        tokens = 0
        async for delta in engine.generate(version, prompt_ids[job.prompt], sampling, request_id):
            if ttft is None and (delta.text or delta.num_tokens):
                ttft = _ms_since(start)
            tokens += delta.num_tokens
        return Sample(ttft, _ms_since(start), tokens)

    return send


def _api_sender(client: httpx.AsyncClient, model: str) -> Send:
    async def send(job: Job, max_tokens: int) -> Sample:
        body = {
            "model": model,
            "messages": _messages(job.prompt),
            "max_tokens": max_tokens,
            "temperature": 0.0,
            "top_p": 1.0,
            "seed": job.seed,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        start = time.perf_counter()
        async with client.stream("POST", "/v1/chat/completions", json=body) as resp:
            if resp.status_code != 200:
                await resp.aread()
                raise RuntimeError(f"HTTP {resp.status_code}: {resp.text[:200]}")
            return await _read_sse(resp.aiter_lines(), start)

    return send


async def _read_sse(lines: AsyncIterator[str], start: float) -> Sample:
    """Time to the first chunk with content; completion tokens from the usage chunk."""
    ttft: float | None = None
    tokens: int | None = None
    async for line in lines:
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            if tokens is None:
                raise RuntimeError("the stream ended without a usage chunk")
            return Sample(ttft, _ms_since(start), tokens)
        chunk: dict[str, Any] = json.loads(data)
        if "error" in chunk:
            raise RuntimeError(f"error event: {chunk['error']}")
        if ttft is None and any(c.get("delta", {}).get("content") for c in chunk["choices"]):
            ttft = _ms_since(start)
        if chunk.get("usage"):
            tokens = int(chunk["usage"]["completion_tokens"])
    raise RuntimeError("the stream ended without [DONE]")


# -- the HTTP server -----------------------------------------------------------------------


@asynccontextmanager
async def api_server(
    settings: Settings, engine: Engine, max_streams: int
) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    """Serve the app on a free local port; yield a client and the served model's name."""
    import httpx
    import uvicorn

    from service.app import create_app

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = int(sock.getsockname()[1])
    app = create_app(settings, engine=engine)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    task = asyncio.create_task(_serve(server, sock))
    try:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}",
            trust_env=False,  # no proxy between us and 127.0.0.1
            headers={"Authorization": f"Bearer {settings.admin_token}"},
            timeout=httpx.Timeout(HTTP_TIMEOUT_S, connect=10.0),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=max_streams + 1),
        ) as client:
            yield client, await _wait_ready(client, task)
    finally:
        server.should_exit = True  # the app's shutdown also shuts the engine down
        await asyncio.gather(task, return_exceptions=True)
        sock.close()


async def _serve(server: uvicorn.Server, sock: socket.socket) -> None:
    try:
        await server.serve(sockets=[sock])
    except SystemExit as e:  # uvicorn exits on a failed startup; keep that inside the bench
        raise RuntimeError(f"the HTTP server failed to start (exit code {e.code})") from None


async def _wait_ready(client: httpx.AsyncClient, server: asyncio.Task[None]) -> str:
    import httpx

    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.done():
            server.result()  # raises the server's own error if it had one
            raise RuntimeError("the HTTP server stopped before it was ready")
        try:
            resp = await client.get("/readyz")
        except httpx.TransportError:
            resp = None
        if resp is not None:
            body = resp.json()
            if resp.status_code == 200:
                return str(body["serving"])
            if body.get("status") == "failed":
                raise RuntimeError(f"the API failed to start: {body.get('error')}")
        await asyncio.sleep(0.1)
    raise TimeoutError(f"GET /readyz was not 200 after {READY_TIMEOUT_S:.0f} s")


# -- report --------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return math.nan
    s = sorted(values)
    pos = (len(s) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def _ratio(x: float, y: float) -> float:
    return x / y if y and not math.isnan(y) else math.nan


def _fmt(value: float, digits: int) -> str:
    return "n/a" if math.isnan(value) else f"{value:.{digits}f}"


def _row(label: str, cells: Sequence[str]) -> str:
    return f"  {label:<10}" + "".join(f"{c:>10}" for c in cells)


def _yes(ok: bool) -> str:
    return "yes" if ok else "no"


def _print_header(settings: Settings, engine: Engine, cfg: BenchConfig) -> None:
    levels = " ".join(str(c) for c in cfg.concurrency)
    print("loopchat bench serve: engine vs HTTP API under the same concurrent load")
    print(f"  engine:        {engine.info().name}")
    print(f"  model:         {settings.resolved_model_dir}")
    print(f"  max_tokens:    {cfg.max_tokens} (no ignore-eos: counts the tokens produced)")
    print(f"  concurrency:   {levels} (streams x {cfg.requests_per_stream} request(s) each)")
    print(f"  prompts:       {len(PROMPTS)} short user prompts, temperature 0, fixed seeds")
    print(f"  database:      {settings.resolved_database_url} (throwaway)", flush=True)


def _level_report(level: Level, cfg: BenchConfig) -> list[str]:
    e, a = level.engine.cells(), level.api.cells()
    digits = (0, 0, 2, 1, 1, 1, 1, 1, 1)
    return [
        "",
        f"C={level.concurrency}: {level.concurrency} streams x {cfg.requests_per_stream} "
        f"request(s), max_tokens {cfg.max_tokens}; TTFT and latency in ms",
        _row("", COLUMNS),
        _row("engine", [_fmt(v, d) for v, d in zip(e, digits, strict=True)]),
        _row("http api", [_fmt(v, d) for v, d in zip(a, digits, strict=True)]),
        _row("ratio", [_fmt(_ratio(x, y), 2) for x, y in zip(a, e, strict=True)]),
        f"  TTFT delta (api p50 - engine p50): {level.ttft_delta_ms:+.1f} ms",
        f"  API keeps >= {GOAL_THROUGHPUT_RATIO} of engine throughput: "
        f"{_yes(level.keeps_throughput)} ({_fmt(level.throughput_ratio, 3)})",
        f"  API adds < {GOAL_TTFT_DELTA_MS:.0f} ms to median TTFT: "
        f"{_yes(level.fast_first_token)} ({level.ttft_delta_ms:+.1f} ms)",
        "",
    ]


def _summary(levels: Sequence[Level]) -> list[str]:
    if not levels:
        return ["no level was measured"]
    lines = ["summary (api / engine):"]
    for lv in levels:
        failed = len(lv.engine.errors) + len(lv.api.errors)
        lines.append(
            f"  C={lv.concurrency:<4} throughput ratio {_fmt(lv.throughput_ratio, 3)}  "
            f"TTFT delta {lv.ttft_delta_ms:+.1f} ms  failed requests {failed}"
        )
    lines.append(
        f"API keeps >= {GOAL_THROUGHPUT_RATIO} of engine throughput: "
        f"{_yes(all(lv.keeps_throughput for lv in levels))}"
    )
    lines.append(
        f"API adds < {GOAL_TTFT_DELTA_MS:.0f} ms to median TTFT: "
        f"{_yes(all(lv.fast_first_token for lv in levels))}"
    )
    return lines
