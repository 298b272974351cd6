"""`loopchat bench reward`: reward-model variants trained on the same votes, side by side.

The votes come from a database (a closed-loop run's, say: `--data-dir`) or, without one,
from synthetic votes as in `bench train` (`--events`). With `--gold`, the same replies
are re-voted by simulated users of that taste (`harness.bench.relabel`), one gold after
another, so a variant is measured on several preferences without generating anything
again. With `--sizes`, each variant trains on growing shares of the training pairs: a
learning curve. The window, the held-out split and the pairs are the trainer's own
(`take_snapshot`, `build_round_data`), as a first round would see them.

Each variant is the trainer configuration plus its own `section.field=value` overrides
(`reward.kind=lora` is the LoRA reward model). Each row reports held-out accuracy, the
length-controlled accuracy (0.5 for a length-only model), what "the shorter reply wins"
scores on the same pairs and, with a gold, the RM's agreement with the gold's order and
the noise ceiling (the share of held-out votes that agree with the gold).
"""

from __future__ import annotations

import json
import random
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness.bench.poison import Adversary, poison, screened
from harness.bench.pool import load_or_sample, seed_pool_votes
from harness.bench.relabel import (
    GoldProfile,
    accuracy_against_gold,
    gold_order,
    gold_profile,
    relabel,
)
from harness.bench.train import seed_bench_votes
from harness.simulation.gold import Gold as GoldFn
from harness.simulation.gold import GoldSpecError, concise, load_gold
from harness.tables import cell, pipe_table
from store.db.migrate import upgrade
from store.db.session import make_engine, make_session_factory, session_scope
from trainer.config import ConfigError, TrainConfig, load_config
from trainer.data import build_round_data
from trainer.records import ProgressFn, RoundData, Snapshot, no_progress
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


def parse_sizes(text: str | None) -> tuple[int | None, ...]:
    """`50,100,all` -> (50, 100, None); None or empty: (None,), every pair."""
    if not text:
        return (None,)
    out: list[int | None] = []
    for part in text.split(","):
        part = part.strip().lower()
        if part == "all":
            out.append(None)
        elif part.isdigit() and int(part) > 0:
            out.append(int(part))
        else:
            raise ConfigError(f"--sizes: {part!r} is not a positive number of pairs or 'all'")
    return tuple(out)


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


def snapshot_of(sessions: Any, cfg: TrainConfig, until: datetime | None = None) -> Snapshot:
    """Every vote before `until` (now by default), as a first round would read them."""
    with session_scope(sessions) as s:
        return take_snapshot(
            s,
            since=None,
            replay_days=cfg.data.replay_days,
            now=until or datetime.now(UTC),
            max_prompts=cfg.data.max_prompts,
        )


def round_data(sessions: Any, cfg: TrainConfig, until: datetime | None = None) -> RoundData:
    """Every vote before `until` (now by default) as a first round would see it."""
    return build_round_data(snapshot_of(sessions, cfg, until), cfg.data)


def subset(data: RoundData, pairs: int | None, seed: int) -> RoundData:
    """The first `pairs` training pairs of a seeded shuffle, and the same share of the
    single thumbs (a learning curve's point); None: all of them."""
    if pairs is None or pairs >= len(data.train_pairs):
        return data
    rng = random.Random(seed)
    kept = list(data.train_pairs)
    rng.shuffle(kept)
    thumbs = list(data.train_unpaired)
    rng.shuffle(thumbs)
    share = pairs / max(1, len(data.train_pairs))
    return replace(
        data,
        train_pairs=tuple(kept[:pairs]),
        train_unpaired=tuple(thumbs[: round(share * len(thumbs))]),
    )


@dataclass(frozen=True)
class RewardRow:
    gold: str  # the gold the votes were re-cast with, or "stored" for the votes as they are
    variant: Variant
    train_pairs: int
    train_thumbs: int
    seconds: float
    metrics: dict[str, float]
    ceiling: float | None = None  # held-out votes agreeing with the gold
    vs_gold: float | None = None  # the RM's agreement with the gold's order


def bench_variant(
    base_dir: Path,
    data: RoundData,
    variant: Variant,
    cfg: TrainConfig,
    progress: ProgressFn = no_progress,
    *,
    gold: tuple[str, GoldFn] | None = None,
    cache_file: Path | None = None,
) -> RewardRow:
    """A fresh RM of the variant's kind trained on `data`'s training pairs and thumbs,
    measured on its held-out pairs (and against the gold, when there is one)."""
    import torch

    from trainer.reward import create_reward_model, metrics_from_scores

    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rm, _ = create_reward_model(base_dir, cfg.reward, None, seed=cfg.seed, cache_file=cache_file)
    started = time.monotonic()
    rm.fit(data.train_pairs, data.train_unpaired, cfg.reward, seed=cfg.seed, progress=progress)
    seconds = time.monotonic() - started
    kept = [p for p in data.heldout_pairs if p.source != "tie"]
    prompts = [p.prompt for p in kept]
    scores = rm.score(prompts + prompts, [p.chosen for p in kept] + [p.rejected for p in kept])
    chosen, rejected = scores[: len(kept)], scores[len(kept) :]
    rm.keep_features()
    metrics = metrics_from_scores(kept, chosen, rejected, None)
    row = RewardRow(
        gold[0] if gold else "stored",
        variant,
        len(data.train_pairs),
        len(data.train_unpaired),
        seconds,
        metrics,
    )
    if gold is None:
        return row
    order = gold_order(kept, gold[1])
    return replace(
        row, ceiling=order.ceiling, vs_gold=accuracy_against_gold(order, chosen, rejected)
    )


def render(rows: Sequence[RewardRow]) -> str:
    head = [
        "votes",
        "variant",
        "train pairs",
        "thumbs",
        "held-out n",
        "RM acc",
        "length-controlled acc",
        "RM vs gold",
        "ceiling",
        "shorter wins",
        "length corr",
        "train s",
        "overrides",
    ]
    return "\n".join(pipe_table(head, (_reward_cells(r) for r in rows)))


def _reward_cells(r: RewardRow) -> list[str]:
    m = r.metrics
    return [
        r.gold,
        r.variant.name,
        str(r.train_pairs),
        str(r.train_thumbs),
        str(int(m.get("n", 0))),
        cell(m.get("accuracy")),
        cell(m.get("length_controlled_accuracy")),
        cell(r.vs_gold),
        cell(r.ceiling),
        cell(m.get("length_baseline_accuracy")),
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


@dataclass(frozen=True)
class CurvePlan:
    """What `run_bench_reward` measures: the golds to re-vote with (none: the votes as
    stored), the training-set sizes of the learning curve (None: all pairs), the seed."""

    golds: tuple[str, ...] = ()
    sizes: tuple[int | None, ...] = (None,)
    seed: int = 0
    # With a gold: also train on its votes plus this adversary's, screened and not,
    # measured on the same honest held-out pairs (`harness.bench.poison`).
    adversary: Adversary | None = None


@dataclass(frozen=True)
class VoteSource:
    """Where the votes come from: a database, v0's replies in a pool file (sampled into it
    on first use, `harness.bench.pool`), or `events` canned synthetic votes."""

    database_url: str | None = None
    replies: Path | None = None
    per_prompt: int = 3
    events: int = 0


def _load_snapshot(
    model_dir: Path, cfg: TrainConfig, source: VoteSource, until: datetime | None
) -> Snapshot:
    with tempfile.TemporaryDirectory(prefix="loopchat-bench-reward-") as tmp:
        url = source.database_url or f"sqlite:///{Path(tmp) / 'bench.db'}"
        db = make_engine(url)
        try:
            upgrade(db)
            sessions = make_session_factory(db)
            if source.replies is not None:
                pool = load_or_sample(source.replies, model_dir, source.per_prompt, cfg.seed)
                seed_pool_votes(sessions, model_dir, pool, concise, cfg.seed)
            elif source.database_url is None:
                seed_bench_votes(sessions, model_dir, source.events, cfg.seed)
            return snapshot_of(sessions, cfg, until)
        finally:
            db.dispose()


def _vote_sets(
    snap: Snapshot, cfg: TrainConfig, plan: CurvePlan
) -> list[tuple[tuple[str, GoldFn] | None, RoundData]]:
    """(gold, round data) per gold the votes are re-cast with; the stored votes alone when
    there is no gold. With an adversary, each gold's votes are followed by its attacked
    versions (label `GOLD +adv0.30 screen off|on`), trained on their own training pairs
    and measured on the honest held-out pairs."""
    if not plan.golds:
        return [(None, build_round_data(snap, cfg.data))]
    out: list[tuple[tuple[str, GoldFn] | None, RoundData]] = []
    for spec in plan.golds:
        fn = load_gold(spec)
        honest_snap = relabel(snap, fn, plan.seed)
        honest = build_round_data(honest_snap, cfg.data)
        out.append(((spec, fn), honest))
        adv = plan.adversary
        if adv is None:
            continue
        rules = cfg.data.evidence()
        attacked = poison(honest_snap, fn, adv, rules, plan.seed)
        kept, screening = screened(attacked, rules)
        label = f"{spec} +adv{adv.share:.2f}x{adv.addresses}"
        for name, votes in (("screen off", attacked.snapshot), ("screen on", kept)):
            data = build_round_data(votes, cfg.data)
            adv_pairs = len({c.id for c in votes.comparisons} & attacked.adversary_ids)
            print(
                f"[bench reward] {label} {name}: {adv_pairs} of {len(votes.comparisons)} "
                f"comparisons are the adversary's"
                + (f"; set aside: {screening.summary()}" if name == "screen on" else ""),
                file=sys.stderr,
                flush=True,
            )
            out.append(((f"{label} {name}", fn), replace(data, heldout_pairs=honest.heldout_pairs)))
    return out


def run_bench_reward(
    model_dir: Path,
    configs: Sequence[TrainConfig],
    variants: Sequence[Variant],
    *,
    source: VoteSource,
    until: datetime | None = None,
    plan: CurvePlan = CurvePlan(),
    out_dir: Path | None = None,
) -> int:
    """Votes from `source` (a database, a pool of v0's replies, or synthetic votes in a
    throwaway database), re-cast per gold in `plan`; one fresh RM per variant and
    learning-curve size; the table on stdout (and after each RM on stderr); with
    `out_dir`, rows.json and a plot."""
    if not (model_dir / "config.json").is_file():
        print(f"loopchat bench reward: no model at {model_dir}", file=sys.stderr)
        return 2
    try:
        snap = _load_snapshot(model_dir, configs[0], source, until)
        sets = _vote_sets(snap, configs[0], plan)
    except GoldSpecError as e:
        print(f"loopchat bench reward: {e}", file=sys.stderr)
        return 2
    profiles = {
        spec: gold_profile(snap, load_gold(spec)) for spec in plan.golds
    }  # load_gold succeeded in _vote_sets
    print(render_profiles(profiles), file=sys.stderr, flush=True)
    rows: list[RewardRow] = []
    with tempfile.TemporaryDirectory(prefix="loopchat-bench-features-") as tmp:
        cache = Path(tmp) / "features.npz"  # the same replies under every gold and size
        for gold, data in sets:
            if not data.train_pairs or not data.heldout_pairs:
                print(
                    f"loopchat bench reward: {len(data.train_pairs)} training and "
                    f"{len(data.heldout_pairs)} held-out pairs; it needs some of both",
                    file=sys.stderr,
                )
                return 2
            for size in plan.sizes:
                part = subset(data, size, plan.seed)
                for v, cfg in zip(variants, configs, strict=True):
                    name = f"{gold[0] if gold else 'stored'} {v.name} {len(part.train_pairs)}"
                    print(f"[bench reward] {name} ...", file=sys.stderr, flush=True)
                    rows.append(
                        bench_variant(
                            model_dir, part, v, cfg, _Progress(name), gold=gold, cache_file=cache
                        )
                    )
                    print(render(rows), file=sys.stderr, flush=True)
    print(render(rows))
    if profiles:
        print("\n" + render_profiles(profiles))
    if out_dir is not None:
        write_curves(rows, out_dir)
        (out_dir / "golds.json").write_text(
            json.dumps({g: p.__dict__ for g, p in profiles.items()}, indent=2) + "\n"
        )
    return 0


def render_profiles(profiles: dict[str, GoldProfile]) -> str:
    """Per gold: its correlation with reply length and its base rate on these replies."""
    if not profiles:
        return ""
    head = ["gold", "replies", "corr with reply words", "base rate (gold > 0.5)", "mean gold"]
    body = (
        [g, str(p.replies), cell(p.length_corr), cell(p.base_rate), cell(p.mean)]
        for g, p in profiles.items()
    )
    return "\n".join(pipe_table(head, body))


def write_curves(rows: Sequence[RewardRow], out_dir: Path) -> None:
    """rows.json, and curves.png: held-out accuracy (and against the gold) by training
    pairs, one panel per gold, one line per variant, the ceiling dashed."""

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    records = [
        {
            "votes": r.gold,
            "variant": r.variant.name,
            "overrides": list(r.variant.overrides),
            "train_pairs": r.train_pairs,
            "train_thumbs": r.train_thumbs,
            "seconds": r.seconds,
            "ceiling": r.ceiling,
            "vs_gold": r.vs_gold,
            **r.metrics,
        }
        for r in rows
    ]
    (out_dir / "rows.json").write_text(json.dumps(records, indent=2) + "\n")
    golds = list(dict.fromkeys(r.gold for r in rows))
    fig, axes = plt.subplots(1, len(golds), figsize=(4.5 * len(golds), 3.6), squeeze=False)
    for ax, g in zip(axes[0], golds, strict=True):
        mine = [r for r in rows if r.gold == g]
        for name in dict.fromkeys(r.variant.name for r in mine):
            pts = sorted(
                (r.train_pairs, r.metrics.get("accuracy")) for r in mine if r.variant.name == name
            )
            ax.plot([x for x, _ in pts], [y for _, y in pts], marker="o", label=name)
        ceilings = [r.ceiling for r in mine if r.ceiling is not None]
        if ceilings:
            ax.axhline(max(ceilings), linestyle="--", color="grey", label="noise ceiling")
        ax.axhline(0.5, linestyle=":", color="grey")
        ax.set_title(g)
        ax.set_xlabel("training pairs")
        ax.set_ylabel("held-out accuracy")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_dir / "curves.png", dpi=110)
    plt.close(fig)
