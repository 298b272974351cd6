"""One training round, from stored votes to a gated candidate policy.

    data      snapshot votes since the last trained round (+ replay window) -> pairs
    reward    Bradley-Terry RM (LoRA on the policy backbone), warm-started; stop if weak
    policy    on-policy rollouts scored by the RM, KL leash to v0 (RLOO / PPO / online DPO)
    evaluate  candidate vs serving on held-out prompts; gate on win rate, KL and length
    publish   adapter renamed into place, `policy_versions` row, notify the server

Every phase reports progress into the run row (`trainer.runs.RunRecorder`). A round that
stops early records why and changes nothing served; a round killed at any point leaves
no registered artifact (see `trainer.publish`) and its run row is marked failed by the
next round (`reap_orphans`).
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from store.db import repository
from store.db.models import PolicyVersion, RunStatus, TrainingRun
from store.db.session import session_scope
from store.domain import VersionKind, VersionStatus
from store.fsutil import atomic_dir
from trainer import publish
from trainer.config import TrainConfig, as_dict
from trainer.data import build_round_data, split_halves, stop_reason
from trainer.gate import gate
from trainer.lock import TrainingLock
from trainer.records import Pair, RoundData, Unpaired
from trainer.runs import RunRecorder, claim_queued, reap_orphans
from trainer.snapshot import take_snapshot

log = logging.getLogger("loopchat.trainer")


@dataclass
class RoundOutcome:
    run_id: int
    status: RunStatus
    reason: str | None = None
    version: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RoundContext:
    sessions: sessionmaker[Session]
    artifacts: Path
    data_dir: Path
    admin_token: str = ""


class StopRound(Exception):
    """Ends a round early with a recorded reason; nothing served changes."""

    def __init__(self, reason: str, status: RunStatus = RunStatus.STOPPED):
        super().__init__(reason)
        self.reason = reason
        self.status = status


def last_trained_window_end(session: Session) -> datetime | None:
    """Votes after this are new: the data window end of the last round that trained an RM
    and ended as designed (a failed or killed round used up nothing)."""
    done = (RunStatus.SUCCEEDED, RunStatus.REJECTED, RunStatus.STOPPED)
    stmt = (
        select(TrainingRun.data_window_end)
        .where(TrainingRun.reward_model_id.is_not(None), TrainingRun.status.in_(done))
        .order_by(TrainingRun.id.desc())
    )
    end = session.scalars(stmt).first()
    return None if end is None else (end if end.tzinfo else end.replace(tzinfo=UTC))


def limit_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    # Only settable before the first parallel work; fine if already set.
    with contextlib.suppress(RuntimeError):
        torch.set_num_interop_threads(1)


def train_once(
    ctx: RoundContext, cfg: TrainConfig, trigger: str = "manual", queued_id: int | None = None
) -> RoundOutcome:
    """Take the lock, clean up after any dead round, run one round. LockBusy if taken."""
    with TrainingLock(ctx.data_dir) as lock:
        reaped = reap_orphans(ctx.sessions)
        if queued_id is None and trigger == "manual":
            queued_id = claim_queued(ctx.sessions)
        with session_scope(ctx.sessions) as s:
            swept = publish.sweep(s, ctx.artifacts)
        rec = RunRecorder(ctx.sessions)
        rec.start(trigger, as_dict(cfg), queued_id)
        if lock.stale is not None:
            rec.log(f"took over the lock of pid {lock.stale.pid}, which died mid-round")
        if reaped:
            rec.log(f"marked runs {reaped} failed: their trainer process died")
        for p in swept:
            rec.log(f"removed unregistered artifact {p}")
        return _run(ctx, cfg, rec)


def _run(ctx: RoundContext, cfg: TrainConfig, rec: RunRecorder) -> RoundOutcome:
    assert rec.run_id is not None
    started = time.monotonic()
    limit_threads(cfg.threads)
    try:
        outcome = _phases(ctx, cfg, rec)
    except StopRound as stop:
        rec.finish(stop.status, stop.reason)
        outcome = RoundOutcome(rec.run_id, stop.status, stop.reason, metrics=rec.metrics)
    except Exception as e:  # recorded, then the round ends; the scheduler goes on
        rec.exception(e)
        reason = f"{type(e).__name__}: {e}"
        rec.finish(RunStatus.FAILED, reason)
        outcome = RoundOutcome(rec.run_id, RunStatus.FAILED, reason, metrics=rec.metrics)
    log.info("round %d %s in %.1f s", rec.run_id, outcome.status, time.monotonic() - started)
    return outcome


def _phases(ctx: RoundContext, cfg: TrainConfig, rec: RunRecorder) -> RoundOutcome:
    from trainer.evaluate import evaluate_candidate
    from trainer.policy import train_policy
    from trainer.policy.model import load_policy, save_adapter
    from trainer.reward import RewardModel, pair_metrics, train_reward_model

    assert rec.run_id is not None
    # -- data --------------------------------------------------------------------------
    rec.phase("data")
    now = datetime.now(UTC)
    with session_scope(ctx.sessions) as s:
        since = last_trained_window_end(s)
        snap = take_snapshot(
            s,
            since=since,
            replay_days=cfg.data.replay_days,
            now=now,
            max_prompts=cfg.data.max_prompts,
        )
        base = repository.version_by_name(s, "v0")
        serving = repository.serving_version(s)
        if base is None or serving is None:
            raise StopRound("no v0 or serving policy version; run `loopchat model prepare`")
        base_dir = Path(base.artifact_uri)
        serving_id, serving_name = serving.id, serving.name
        serving_adapter = Path(serving.artifact_uri) if serving.kind is VersionKind.LORA else None
        previous_rm = publish.latest_reward_model(s)
    rec.window(snap.window_start, snap.window_end)
    data = build_round_data(snap, cfg.data)
    rec.counts.update(data.counts)
    rec.log("data: " + ", ".join(f"{k}={v}" for k, v in data.counts.items()))
    reason = stop_reason(data, cfg.data)
    if reason is not None:
        raise StopRound(reason)
    if since is not None and data.counts.get("new_pairs", 0) == 0:
        raise StopRound(
            f"no new preference pairs since the last trained round (votes up to "
            f"{since.isoformat(timespec='seconds')}); retraining on the same data would "
            f"change nothing"
        )

    # -- reward model ------------------------------------------------------------------
    rec.phase("reward")
    rm, note = RewardModel.create(base_dir, cfg.reward, previous_rm, seed=cfg.seed)
    rec.log(f"reward model: {note}")
    train_pairs, train_unpaired = rm_training_data(data, cfg, rm.warm_started)
    if len(train_pairs) < len(data.train_pairs):
        rec.log(
            f"reward model trains on the {len(train_pairs)} new pairs of "
            f"{len(data.train_pairs)} (reward.replay_pairs is off)"
        )
    rm_pairs, check_pairs = _rm_split(train_pairs, cfg)
    fit = train_reward_model(
        rm, rm_pairs, train_unpaired, cfg.reward, seed=cfg.seed, progress=rec.progress
    )
    rm_metrics: dict[str, Any] = {
        **pair_metrics(rm, data.heldout_pairs, data.since),
        **{f"train_{k}": v for k, v in fit.items()},
        "train_pairs": len(rm_pairs),
        "start": note,
    }
    rec.metrics["reward"] = rm_metrics
    accuracy = float(rm_metrics.get("accuracy", 0.0))
    rm_uri = ctx.artifacts / publish.REWARD_MODELS / f"run{rec.run_id}"
    with atomic_dir(rm_uri) as tmp:
        rm.save(tmp)
    with session_scope(ctx.sessions) as s:
        rm_row = publish.register_reward_model(
            s, rm_uri, accuracy, (snap.window_start, snap.window_end), rm_metrics
        )
        rm_id = rm_row.id
        s.get_one(TrainingRun, rec.run_id).reward_model_id = rm_id
    rec.log(
        f"reward model {rm_id}: held-out accuracy {accuracy:.3f} on "
        f"{int(rm_metrics.get('n', 0))} pairs"
    )
    if accuracy < cfg.reward.min_heldout_accuracy:
        raise StopRound(
            f"the reward model's held-out accuracy {accuracy:.3f} is below "
            f"{cfg.reward.min_heldout_accuracy:.3f} (reward.min_heldout_accuracy): "
            f"it is no better than chance at telling the replies users preferred"
        )
    check_rm = None
    if not check_pairs and cfg.reward.check_model:
        rec.log("check reward model skipped: too few pairs to split in halves")
    if check_pairs:
        rec.phase("check_reward")
        check_rm, _ = RewardModel.create(base_dir, cfg.reward, None, seed=cfg.seed + 1)
        train_reward_model(
            check_rm, check_pairs, (), cfg.reward, seed=cfg.seed + 1, progress=rec.progress
        )
        rec.metrics["check_reward"] = pair_metrics(check_rm, data.heldout_pairs, data.since)

    # -- policy ------------------------------------------------------------------------
    rec.phase("policy")
    policy, tokenizer = load_policy(base_dir, serving_adapter, cfg.policy)
    rec.log(
        f"policy: {cfg.policy.algorithm} from {serving_name}"
        + (" (its adapter)" if serving_adapter else " (a new adapter on v0)")
    )
    result = train_policy(
        policy,
        tokenizer,
        data.train_prompts,
        rm.score,
        cfg.policy,
        seed=cfg.seed,
        progress=rec.progress,
    )
    rec.metrics["policy"] = {
        "steps": result.steps,
        "rollouts": result.rollouts,
        "kl_moved": result.kl_moved,
        "stopped": result.stopped,
    }
    if result.stopped:
        rec.log(f"policy: stopped {result.stopped}")
    if result.steps == 0 and result.stopped:  # stopped early with no update kept
        raise StopRound(f"policy: stopped {result.stopped}: no update kept, no candidate")

    # -- evaluation --------------------------------------------------------------------
    rec.phase("evaluate")
    ev = evaluate_candidate(
        policy,
        tokenizer,
        serving_adapter,
        data.heldout_prompts,
        rm,
        check_rm,
        cfg.evaluation,
        seed=cfg.seed + 7,
        progress=rec.progress,
    )
    rec.metrics["evaluation"] = ev.metrics
    rec.metrics["examples"] = ev.examples
    reasons = gate(ev.summary, cfg.evaluation)

    # -- publish -----------------------------------------------------------------------
    rec.phase("publish")
    status = VersionStatus.REJECTED if reasons else VersionStatus.CANDIDATE
    reason = "; ".join(reasons) if reasons else None
    version_metrics = {
        "run_id": rec.run_id,
        "algorithm": cfg.policy.algorithm,
        "reward_model_id": rm_id,
        "rm_heldout_accuracy": accuracy,
        **ev.metrics,
    }
    with session_scope(ctx.sessions) as s:
        name = publish.next_version_name(s)
    uri = ctx.artifacts / publish.POLICIES / f"{name}-run{rec.run_id}"
    with atomic_dir(uri) as tmp:
        save_adapter(policy, tmp)
    with session_scope(ctx.sessions) as s:
        parent = s.get_one(PolicyVersion, serving_id)
        row = publish.register_policy(
            s,
            name=name,
            parent=parent,
            base_model=str(base_dir),
            uri=uri,
            status=status,
            metrics=version_metrics,
            error=reason,
        )
        run_status = RunStatus.REJECTED if reasons else RunStatus.SUCCEEDED
        rec.finish(run_status, reason, policy_version_id=row.id, reward_model_id=rm_id, session=s)
    if not reasons:
        err = publish.notify_server(cfg.notify_url, ctx.admin_token, name)
        rec.log(
            f"candidate {name} published"
            + (f"; server not notified: {err}" if err else "; server notified")
        )
        rec.flush(force=True)
    return RoundOutcome(rec.run_id, run_status, reason, name, rec.metrics)


def rm_training_data(
    data: RoundData, cfg: TrainConfig, warm: bool
) -> tuple[list[Pair], list[Unpaired]]:
    """The pairs and single thumbs the RM trains on: all of the window's training data, or
    only what arrived since the last round when the RM warm-started and
    `reward.replay_pairs` is off (it has seen the rest in earlier rounds)."""
    pairs, unpaired = list(data.train_pairs), list(data.train_unpaired)
    if cfg.reward.replay_pairs or not warm or data.since is None:
        return pairs, unpaired
    since = data.since
    return [p for p in pairs if p.at >= since], [u for u in unpaired if u.at >= since]


def _rm_split(pairs: list[Pair], cfg: TrainConfig) -> tuple[list[Pair], list[Pair]]:
    """Pairs for the policy's RM and for the check RM (the other half, by prompt hash)."""
    if not cfg.reward.check_model:
        return pairs, []
    first, second = split_halves(pairs)
    if len(first) < cfg.data.min_train_pairs // 2 or len(second) < cfg.data.min_train_pairs // 2:
        return pairs, []  # too few to halve: no check model this round
    return first, second
