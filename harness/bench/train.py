"""`loopchat bench train`: one training round timed phase by phase, for several data sizes.

For each size, a throwaway data directory and SQLite database get the configured model
as v0 and that many synthetic votes (`harness.synthetic`: everyday prompts, replies of
one to six sentences, a preference for concise ones). One round then runs with the
trainer's configuration per rollout engine asked for (`rollouts.engine`: the training
model's decode loop, vLLM), on the same votes and seeds, and the seconds of every phase
come from the run row the round wrote, the same figures an operator sees. The policy
phase is split into drawing the rollouts (the sampler alone) and the learner's steps.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from harness.synthetic import BENCH_PROMPTS, bench_reply, concise, seed_votes
from harness.tables import cell, pipe_table
from store.db.migrate import upgrade
from store.db.models import TrainingRun
from store.db.repository import ensure_base_version
from store.db.session import make_engine, make_session_factory, session_scope
from store.hardware import cpu_kind
from trainer.config import TrainConfig
from trainer.rollouts import resolve_engine
from trainer.round import RoundContext, train_once

PHASES = ("data", "reward", "check_reward", "policy", "evaluate", "publish")


@dataclass(frozen=True)
class BenchRow:
    events: int
    engine: str  # the rollout engine
    status: str
    phases: dict[str, float]
    total: float
    counts: dict[str, Any]
    metrics: dict[str, Any]


def seed_bench_votes(sessions: Any, model_dir: Path, events: int, seed: int) -> None:
    """v0 and `events` synthetic votes (everyday prompts, a preference for concise replies,
    25% flips) in a migrated database: what the training benches run on."""
    with session_scope(sessions) as s:
        ensure_base_version(s, model_dir)
    seed_votes(
        sessions,
        events=events,
        prompts=BENCH_PROMPTS,
        reply=bench_reply,
        gold=concise,
        flip=0.25,
        thumbs_threshold=-40.0,
        seed=seed,
    )


def bench_round(model_dir: Path, cfg: TrainConfig, events: int, seed: int = 0) -> BenchRow:
    with tempfile.TemporaryDirectory(prefix="loopchat-bench-train-") as tmp:
        root = Path(tmp)
        db = make_engine(f"sqlite:///{root / 'bench.db'}")
        try:
            upgrade(db)
            sessions = make_session_factory(db)
            seed_bench_votes(sessions, model_dir, events, seed)
            started = time.monotonic()
            outcome = train_once(RoundContext(sessions, root / "artifacts", root), cfg, "bench")
            total = time.monotonic() - started
            with session_scope(sessions) as s:
                run = s.get_one(TrainingRun, outcome.run_id)
                metrics = dict(run.metrics)
                counts = dict(run.counts)
        finally:
            db.dispose()
    phases = {k: float(v) for k, v in metrics.get("phase_seconds", {}).items() if k in PHASES}
    status = outcome.status.value + (f" ({outcome.reason})" if outcome.reason else "")
    engine = (metrics.get("policy") or {}).get("rollout_engine") or resolve_engine(cfg.rollouts)
    return BenchRow(events, str(engine), status, phases, total, counts, metrics)


def _gain(ev: dict[str, Any]) -> float | None:
    if "reward_candidate" not in ev:
        return None
    return float(ev["reward_candidate"]) - float(ev["reward_serving"])


def _train_cells(r: BenchRow) -> list[str]:
    ev = r.metrics.get("evaluation", {})
    rm = r.metrics.get("reward", {})
    pol = r.metrics.get("policy") or {}
    return [
        str(r.events),
        r.engine,
        str(r.counts.get("train_pairs", "-")),
        *(cell(r.phases.get(p), 1) for p in PHASES),
        cell(pol.get("draw_s"), 1),
        cell(pol.get("learn_s"), 1),
        cell(pol.get("engine_start_s"), 1),
        cell(r.total, 1),
        cell(rm.get("accuracy"), 3),
        cell(ev.get("win_rate"), 3),
        cell(ev.get("check_win_rate"), 3),
        cell(_gain(ev), 3),
        cell(ev.get("kl_candidate"), 2),
        cell(ev.get("length_ratio"), 2),
    ]


def render(rows: Sequence[BenchRow], cfg: TrainConfig) -> str:
    head = [
        "events",
        "rollouts",
        "pairs",
        *PHASES,
        "policy: draw",
        "policy: learn",
        "engine start",
        "total s",
        "RM acc",
        "win",
        "check win",
        "reward gain",
        "KL nats",
        "len ratio",
    ]
    lines = pipe_table(head, (_train_cells(r) for r in rows))
    lines.append("")
    for r in rows:
        lines.append(f"{r.events} events, {r.engine}: {r.status}")
    lines.extend(_speedups(rows))
    p = cfg.policy
    lines.append(
        f"config: {p.algorithm}, {p.prompts_per_round} prompts x {p.samples_per_prompt} "
        f"samples, {p.max_new_tokens} new tokens, RM {cfg.reward.epochs} epochs, "
        f"{cfg.threads} threads; CPU {cpu_kind()}"
    )
    return "\n".join(lines)


def _speedups(rows: Sequence[BenchRow]) -> list[str]:
    """transformers / vllm, per size where both ran: the rollout draw and the whole round."""
    out = []
    by = {(r.events, r.engine): r for r in rows}
    for events in dict.fromkeys(r.events for r in rows):
        hf, vl = by.get((events, "transformers")), by.get((events, "vllm"))
        if hf is None or vl is None:
            continue
        draw_hf = (hf.metrics.get("policy") or {}).get("draw_s")
        draw_vl = (vl.metrics.get("policy") or {}).get("draw_s")
        draw = f"{draw_hf / draw_vl:.2f}x" if draw_hf and draw_vl else "-"
        out.append(
            f"{events} events: vLLM rollouts draw {draw} faster, the round "
            f"{hf.total / vl.total:.2f}x faster (transformers / vllm)"
        )
    return out


def run_bench_train(
    model_dir: Path, cfg: TrainConfig, sizes: Sequence[int], engines: Sequence[str] = ()
) -> int:
    """A round per size and rollout engine (`engines`; none: the config's own)."""
    if not (model_dir / "config.json").is_file():
        print(f"loopchat bench train: no model at {model_dir}", file=sys.stderr)
        return 2
    configs = [replace(cfg, rollouts=replace(cfg.rollouts, engine=e)) for e in engines] or [cfg]
    rows = []
    for n in sizes:
        for c in configs:
            print(f"[bench train] {n} events, {c.rollouts.engine} ...", file=sys.stderr, flush=True)
            rows.append(bench_round(model_dir, c, n))
            print(render(rows, cfg), file=sys.stderr, flush=True)
    print(render(rows, cfg))
    return 0
