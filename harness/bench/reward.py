"""`loopchat bench reward`: reward-model variants trained on the same votes, side by side.

The votes come from a database (a closed-loop run's, say: `--data-dir`) or, without one,
from synthetic votes as in `bench train` (`--events`). The window, the held-out split and
the pairs are the trainer's own (`take_snapshot`, `build_round_data`), as a first round
would see them. Each variant is the trainer configuration plus its own
`section.field=value` overrides; it gets a fresh RM trained on the window's training pairs
and single thumbs and is measured on the held-out pairs with `pair_metrics`: accuracy, what
"the shorter reply wins" scores on the same pairs, the RM's accuracy where that rule is
wrong, and the seconds training took.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness.bench.train import seed_bench_votes
from harness.tables import cell, pipe_table
from store.db.migrate import upgrade
from store.db.session import make_engine, make_session_factory, session_scope
from trainer.config import ConfigError, TrainConfig, load_config
from trainer.data import build_round_data
from trainer.records import ProgressFn, RoundData, no_progress
from trainer.snapshot import take_snapshot


@dataclass(frozen=True)
class Variant:
    name: str
    overrides: tuple[str, ...]


def parse_variant(text: str) -> Variant:
    """`NAME [section.field=value ...]`: a name, then the overrides, split on whitespace."""
    name, *overrides = text.split() or [""]
    if not name or "=" in name:
        raise ConfigError(f"variant {text!r}: start with a name, then section.field=value items")
    shared = [o for o in overrides if o.startswith("data.")]
    if shared:
        raise ConfigError(
            f"variant {name}: {', '.join(shared)}: every variant trains on the same votes; "
            f"give data settings with --set"
        )
    return Variant(name, tuple(overrides))


def variant_configs(
    path: Path | None, common: Sequence[str], variants: Sequence[Variant]
) -> list[TrainConfig]:
    """Each variant's config: the file, the overrides all share, then its own. A bad one
    raises ConfigError before anything trains."""
    names = [v.name for v in variants]
    if len(set(names)) != len(names):
        raise ConfigError(f"variant names repeat: {', '.join(names)}")
    out = []
    for v in variants:
        try:
            out.append(load_config(path, [*common, *v.overrides]))
        except ConfigError as e:
            raise ConfigError(f"variant {v.name}: {e}") from None
    return out


def round_data(sessions: Any, cfg: TrainConfig, until: datetime | None = None) -> RoundData:
    """Every vote before `until` (now by default) as a first round would see it."""
    with session_scope(sessions) as s:
        snap = take_snapshot(
            s,
            since=None,
            replay_days=cfg.data.replay_days,
            now=until or datetime.now(UTC),
            max_prompts=cfg.data.max_prompts,
        )
    return build_round_data(snap, cfg.data)


@dataclass(frozen=True)
class RewardRow:
    variant: Variant
    train_pairs: int
    train_thumbs: int
    seconds: float
    metrics: dict[str, float]


def bench_variant(
    base_dir: Path,
    data: RoundData,
    variant: Variant,
    cfg: TrainConfig,
    progress: ProgressFn = no_progress,
) -> RewardRow:
    import torch

    from trainer.reward import RewardNet, pair_metrics, train_reward_model

    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rm, _ = RewardNet.create(base_dir, cfg.reward, None, seed=cfg.seed)
    started = time.monotonic()
    train_reward_model(
        rm, data.train_pairs, data.train_unpaired, cfg.reward, seed=cfg.seed, progress=progress
    )
    seconds = time.monotonic() - started
    metrics = pair_metrics(rm, data.heldout_pairs, None)
    return RewardRow(variant, len(data.train_pairs), len(data.train_unpaired), seconds, metrics)


def render(rows: Sequence[RewardRow]) -> str:
    head = [
        "variant",
        "train pairs",
        "thumbs",
        "held-out n",
        "RM acc",
        "shorter wins",
        "RM acc where shorter loses (n)",
        "length corr",
        "train s",
        "overrides",
    ]
    return "\n".join(pipe_table(head, (_reward_cells(r) for r in rows)))


def _reward_cells(r: RewardRow) -> list[str]:
    m = r.metrics
    n_controlled = int(m.get("length_controlled_n", 0))
    controlled = f"{cell(m.get('length_controlled_accuracy'))} ({n_controlled})"
    return [
        r.variant.name,
        str(r.train_pairs),
        str(r.train_thumbs),
        str(int(m.get("n", 0))),
        cell(m.get("accuracy")),
        cell(m.get("length_baseline_accuracy")),
        controlled,
        cell(m.get("length_corr")),
        cell(r.seconds, 1),
        " ".join(r.variant.overrides) or "(the config as given)",
    ]


class _Progress:
    """A line on stderr per training step: the step, its total and the batch accuracy."""

    def __init__(self, name: str):
        self.name = name
        self.started = time.monotonic()

    def __call__(self, done: int, total: int, metrics: dict[str, float]) -> None:
        acc = metrics.get("accuracy")
        print(
            f"[bench reward] {self.name}: step {done}/{total}, "
            f"{time.monotonic() - self.started:.0f} s"
            + ("" if acc is None else f", batch accuracy {acc:.2f}"),
            file=sys.stderr,
            flush=True,
        )


def run_bench_reward(
    model_dir: Path,
    configs: Sequence[TrainConfig],
    variants: Sequence[Variant],
    *,
    database_url: str | None,
    events: int,
    until: datetime | None = None,
) -> int:
    """Votes from `database_url`, or `events` synthetic votes in a throwaway database; one
    fresh RM per variant; the table on stdout (and after each variant on stderr)."""
    if not (model_dir / "config.json").is_file():
        print(f"loopchat bench reward: no model at {model_dir}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="loopchat-bench-reward-") as tmp:
        url = database_url or f"sqlite:///{Path(tmp) / 'bench.db'}"
        db = make_engine(url)
        try:
            upgrade(db)
            sessions = make_session_factory(db)
            if database_url is None:
                seed_bench_votes(sessions, model_dir, events, configs[0].seed)
            data = round_data(sessions, configs[0], until)
        finally:
            db.dispose()
    if not data.train_pairs or not data.heldout_pairs:
        print(
            f"loopchat bench reward: {len(data.train_pairs)} training and "
            f"{len(data.heldout_pairs)} held-out pairs; it needs some of both",
            file=sys.stderr,
        )
        return 2
    rows: list[RewardRow] = []
    for v, cfg in zip(variants, configs, strict=True):
        print(f"[bench reward] {v.name} ...", file=sys.stderr, flush=True)
        rows.append(bench_variant(model_dir, data, v, cfg, _Progress(v.name)))
        print(render(rows), file=sys.stderr, flush=True)
    print(render(rows))
    return 0
