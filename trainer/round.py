"""One training round, from stored votes to a gated candidate policy.

    data      snapshot votes since the last trained round (+ replay window) -> pairs
    reward    Bradley-Terry RM (LoRA on the policy backbone), warm-started; stop if weak
    policy    on-policy rollouts scored by the RM, KL leash to v0 (RLOO / PPO / online DPO)
    evaluate  candidate vs serving on held-out prompts; gate on win rate, KL and length
    publish   adapter renamed into place, `policy_versions` row, notify the server

`_phases` is the outline, with a function per step of each phase below it in this order.
Every phase reports progress into the run row (`trainer.runs.RunRecorder`). A round that
stops early records why and changes nothing served; a round killed at any point leaves
no registered artifact (see `trainer.publish`) and its run row is marked failed by the
next round (`reap_orphans`).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from store.db import repository
from store.db.models import PolicyVersion, RunStatus, TrainingRun
from store.db.session import session_scope
from store.domain import VersionKind, VersionStatus
from store.fsutil import atomic_dir
from store.lengthcontrol import LengthPreference, length_preference
from store.runs import EvaluationFigures, PairFigures, PolicyFigures, RewardFigures, RunMetrics
from trainer import publish
from trainer.config import TrainConfig, as_dict
from trainer.data import build_round_data, split_halves, stop_reason
from trainer.device import Placement, PlacementError, placement_for
from trainer.gate import gate
from trainer.lock import TrainingLock
from trainer.records import Pair, RoundData, ScoreFn, Snapshot, Unpaired
from trainer.reward import RewardModel, create_reward_model, pair_metrics
from trainer.rollouts import Sampler, VllmSampler, adapter_rank, make_sampler
from trainer.runs import RunRecorder, claim_queued, reap_orphans
from trainer.snapshot import take_snapshot

if TYPE_CHECKING:
    from trainer.evaluate import Evaluation

log = logging.getLogger("loopchat.trainer")


@dataclass
class RoundOutcome:
    run_id: int
    status: RunStatus
    reason: str | None = None
    version: str | None = None
    metrics: RunMetrics = field(default_factory=RunMetrics)


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


@dataclass(frozen=True)
class _Inputs:
    """What a round reads from storage at its start, in one transaction."""

    snapshot: Snapshot
    since: datetime | None  # the last trained round's window end: later votes are new
    base_dir: Path  # v0: the reference, and the backbone of every adapter and RM
    serving_id: int
    serving_name: str
    serving_adapter: Path | None  # None while v0 itself serves
    previous_rm: Path | None  # the latest reward model, to warm-start from
    placement: Placement  # where the models run (`trainer.device`)


@dataclass(frozen=True)
class _Reward:
    """The round's registered reward model, and the check model when one was trained."""

    model: RewardModel
    id: int
    accuracy: float  # held-out
    check: RewardModel | None
    length: LengthPreference  # what the training votes say about reply length


def _phases(ctx: RoundContext, cfg: TrainConfig, rec: RunRecorder) -> RoundOutcome:
    """The round, phase by phase. Each records its figures in `rec.metrics`, and any of
    them may end the round early with StopRound."""
    rec.phase("data")
    inputs = _read_inputs(ctx, cfg, rec)
    data = _round_data(inputs, cfg, rec)
    rec.phase("reward")
    reward = _reward_model(ctx, cfg, rec, inputs, data)
    rec.phase("policy")
    if not reward.length.rewards_length:
        rec.log("policy: rewarded without the RM's length term (the votes do not reward length)")
    with _rollout_sampler(cfg, rec, inputs) as sampler:
        policy, tokenizer = _update_policy(
            cfg,
            rec,
            inputs,
            data,
            reward.model.policy_scorer(reward.length.rewards_length),
            sampler,
        )
        rec.phase("evaluate")
        ev = _evaluate(cfg, rec, inputs, data, reward, policy, tokenizer, sampler)
    reasons = gate(ev.summary, cfg.evaluation, votes_reward_length=reward.length.rewards_length)
    rec.phase("publish")
    return _publish(ctx, cfg, rec, inputs, reward, policy, ev, reasons)


# -- data ------------------------------------------------------------------------------


def _read_inputs(ctx: RoundContext, cfg: TrainConfig, rec: RunRecorder) -> _Inputs:
    """Snapshot the votes since the last trained round (plus the replay window) and the
    versions the round builds on; the run row gets the snapshot's data window."""
    now = datetime.now(UTC)
    placement = _placement(cfg, rec)
    with session_scope(ctx.sessions) as s:
        since = last_trained_window_end(s)
        snap = take_snapshot(
            s,
            since=since,
            replay_days=cfg.data.replay_days,
            now=now,
            max_prompts=cfg.data.max_prompts,
            evidence=cfg.data.evidence(),
        )
        base = repository.version_by_name(s, "v0")
        serving = repository.serving_version(s)
        if base is None or serving is None:
            raise StopRound("no v0 or serving policy version; run `loopchat model prepare`")
        inputs = _Inputs(
            snapshot=snap,
            since=since,
            base_dir=Path(base.artifact_uri),
            serving_id=serving.id,
            serving_name=serving.name,
            serving_adapter=(
                Path(serving.artifact_uri) if serving.kind is VersionKind.LORA else None
            ),
            previous_rm=publish.latest_reward_model(s),
            placement=placement,
        )
    rec.window(snap.window_start, snap.window_end)
    return inputs


def _placement(cfg: TrainConfig, rec: RunRecorder) -> Placement:
    """Where this round's models run; a device the machine lacks fails the round."""
    try:
        placement = placement_for(cfg.device, cfg.precision)
    except PlacementError as e:
        raise StopRound(str(e), RunStatus.FAILED) from None
    rec.log(f"device: {placement.describe()}")
    return placement


def _round_data(inputs: _Inputs, cfg: TrainConfig, rec: RunRecorder) -> RoundData:
    """The round's datasets, counted into the run row. Stops the round when they are too
    few to learn from, or hold nothing voted since the last trained round."""
    data = build_round_data(inputs.snapshot, cfg.data)
    rec.counts.update(data.counts)
    rec.counts.update({f"set_aside_{r}": n for r, n in inputs.snapshot.set_aside.items()})
    rec.log("data: " + ", ".join(f"{k}={v}" for k, v in data.counts.items()))
    reason = stop_reason(data, cfg.data)
    if reason is not None:
        raise StopRound(reason)
    since = inputs.since
    if since is not None and data.counts.get("new_pairs", 0) == 0:
        raise StopRound(
            f"no new preference pairs since the last trained round (votes up to "
            f"{since.isoformat(timespec='seconds')}); retraining on the same data would "
            f"change nothing"
        )
    return data


# -- reward model ----------------------------------------------------------------------


def _reward_model(
    ctx: RoundContext, cfg: TrainConfig, rec: RunRecorder, inputs: _Inputs, data: RoundData
) -> _Reward:
    """Fit and register the round's reward model; stop the round when it cannot tell the
    replies users preferred, else train the check model on the pairs kept back."""
    rm, figures, check_pairs = _fit_reward_model(ctx, cfg, rec, inputs, data)
    length = votes_length_preference(data)
    figures.votes_longer_won = length.longer_won
    figures.votes_reward_length = length.rewards_length
    rec.metrics.reward = figures
    accuracy = figures.accuracy or 0.0  # no held-out pair scored: no evidence it learned
    rm_id = _register_reward_model(ctx, rec, inputs.snapshot, rm, figures, accuracy)
    if accuracy < cfg.reward.min_heldout_accuracy:
        raise StopRound(
            f"the reward model's held-out accuracy {accuracy:.3f} is below "
            f"{cfg.reward.min_heldout_accuracy:.3f} (reward.min_heldout_accuracy): "
            f"it is no better than chance at telling the replies users preferred"
        )
    check = _check_reward_model(ctx, cfg, rec, inputs, data, check_pairs)
    return _Reward(rm, rm_id, accuracy, check, length)


def votes_length_preference(data: RoundData) -> LengthPreference:
    """How often the longer reply won among the round's decided training pairs."""
    decided = [p for p in data.train_pairs if p.source != "tie"]
    return length_preference([len(p.chosen) for p in decided], [len(p.rejected) for p in decided])


def _features_cache(ctx: RoundContext) -> Path:
    """Where reply features of the frozen base model are kept between rounds."""
    return ctx.artifacts / "reward_features.npz"


def _fit_reward_model(
    ctx: RoundContext, cfg: TrainConfig, rec: RunRecorder, inputs: _Inputs, data: RoundData
) -> tuple[RewardModel, RewardFigures, list[Pair]]:
    """The RM trained this round (a head refitted on the window, or a LoRA model
    warm-started from the last one when that loads), its held-out figures, and the
    training pairs kept back for the check model."""
    rm, note = create_reward_model(
        inputs.base_dir,
        cfg.reward,
        inputs.previous_rm,
        seed=cfg.seed,
        cache_file=_features_cache(ctx),
        placement=inputs.placement,
    )
    rec.log(f"reward model: {note}")
    train_pairs, train_unpaired = rm_training_data(data, cfg, rm.warm_started)
    if len(train_pairs) < len(data.train_pairs):
        rec.log(
            f"reward model trains on the {len(train_pairs)} new pairs of "
            f"{len(data.train_pairs)} (reward.replay_pairs is off)"
        )
    rm_pairs, check_pairs = _rm_split(train_pairs, cfg)
    fit = rm.fit(rm_pairs, train_unpaired, cfg.reward, seed=cfg.seed, progress=rec.progress)
    heldout = pair_metrics(rm, data.heldout_pairs, data.since)
    rm.keep_features()
    return rm, RewardFigures.of(heldout, fit, len(rm_pairs), note), check_pairs


def _register_reward_model(
    ctx: RoundContext,
    rec: RunRecorder,
    snap: Snapshot,
    rm: RewardModel,
    figures: RewardFigures,
    accuracy: float,
) -> int:
    """Save the RM into place and register it. The run row points at it at once, so the
    next round counts this window's votes as used even if this round stops later."""
    assert rec.run_id is not None
    uri = ctx.artifacts / publish.REWARD_MODELS / f"run{rec.run_id}"
    with atomic_dir(uri) as tmp:
        rm.save(tmp)
    window = (snap.window_start, snap.window_end)
    with session_scope(ctx.sessions) as s:
        row = publish.register_reward_model(s, uri, accuracy, window, figures.to_json())
        rm_id = row.id
        s.get_one(TrainingRun, rec.run_id).reward_model_id = rm_id
    rec.log(
        f"reward model {rm_id}: held-out accuracy {accuracy:.3f} on {int(figures.n or 0)} pairs"
    )
    return rm_id


def _check_reward_model(
    ctx: RoundContext,
    cfg: TrainConfig,
    rec: RunRecorder,
    inputs: _Inputs,
    data: RoundData,
    pairs: list[Pair],
) -> RewardModel | None:
    """A second RM, fresh, on the other half of the pairs: the evaluation's check on the
    policy over-optimizing the first. None when off or the halves were too small."""
    if not pairs:
        if cfg.reward.check_model:
            rec.log("check reward model skipped: too few pairs to split in halves")
        return None
    rec.phase("check_reward")
    check_rm, _ = create_reward_model(
        inputs.base_dir,
        cfg.reward,
        None,
        seed=cfg.seed + 1,
        cache_file=_features_cache(ctx),
        placement=inputs.placement,
    )
    check_rm.fit(pairs, (), cfg.reward, seed=cfg.seed + 1, progress=rec.progress)
    heldout = pair_metrics(check_rm, data.heldout_pairs, data.since)
    rec.metrics.check_reward = PairFigures.model_validate(heldout)
    return check_rm


# -- policy ----------------------------------------------------------------------------


@contextlib.contextmanager
def _rollout_sampler(cfg: TrainConfig, rec: RunRecorder, inputs: _Inputs) -> Iterator[Sampler]:
    """The round's sampler (`trainer.rollouts`), stopped when the round has drawn its last
    replies; its engine and timings go into the run's policy figures."""
    rank = max(cfg.policy.lora_r, adapter_rank(inputs.serving_adapter))
    sampler = make_sampler(inputs.base_dir, cfg.rollouts, lora_rank=rank, seed=cfg.seed)
    rec.log(f"rollouts: drawn with {sampler.name}")
    try:
        yield sampler
    finally:
        figures = rec.metrics.policy = rec.metrics.policy or PolicyFigures()
        figures.rollout_engine = sampler.name
        if isinstance(sampler, VllmSampler):
            figures.rollout_dtype = sampler.dtype or None
            figures.engine_start_s = sampler.start_s
            figures.sync_s = sampler.sync_s
        sampler.close()


def _update_policy(
    cfg: TrainConfig,
    rec: RunRecorder,
    inputs: _Inputs,
    data: RoundData,
    reward_fn: ScoreFn,
    sampler: Sampler,
) -> tuple[Any, Any]:
    """(policy, tokenizer): the serving version's adapter, or a new one on v0, trained on
    rollouts `reward_fn` scores (the RM, without its length term where the votes do not
    reward length). Stops the round when the update kept no step."""
    from trainer.policy import train_policy
    from trainer.policy.model import load_policy

    policy, tokenizer = load_policy(
        inputs.base_dir, inputs.serving_adapter, cfg.policy, inputs.placement
    )
    rec.log(
        f"policy: {cfg.policy.algorithm} from {inputs.serving_name}"
        + (" (its adapter)" if inputs.serving_adapter else " (a new adapter on v0)")
    )
    result = train_policy(
        policy,
        tokenizer,
        data.train_prompts,
        reward_fn,
        cfg.policy,
        seed=cfg.seed,
        progress=rec.progress,
        sampler=sampler,
    )
    rec.metrics.policy = PolicyFigures(
        steps=result.steps,
        rollouts=result.rollouts,
        kl_moved=result.kl_moved,
        stopped=result.stopped,
        draw_s=result.draw_s,
        learn_s=result.learn_s,
    )
    if result.stopped:
        rec.log(f"policy: stopped {result.stopped}")
    if result.steps == 0 and result.stopped:  # stopped early with no update kept
        raise StopRound(f"policy: stopped {result.stopped}: no update kept, no candidate")
    return policy, tokenizer


# -- evaluation ------------------------------------------------------------------------


def _evaluate(
    cfg: TrainConfig,
    rec: RunRecorder,
    inputs: _Inputs,
    data: RoundData,
    reward: _Reward,
    policy: Any,
    tokenizer: Any,
    sampler: Sampler,
) -> Evaluation:
    """The candidate against the serving version on the held-out prompts."""
    from trainer.evaluate import evaluate_candidate

    ev = evaluate_candidate(
        policy,
        tokenizer,
        inputs.serving_adapter,
        data.heldout_prompts,
        reward.model,
        reward.check,
        cfg.evaluation,
        seed=cfg.seed + 7,
        progress=rec.progress,
        sampler=sampler,
    )
    rec.metrics.evaluation = EvaluationFigures.model_validate(ev.metrics)
    rec.metrics.examples = ev.examples
    return ev


# -- publish ---------------------------------------------------------------------------


def _publish(
    ctx: RoundContext,
    cfg: TrainConfig,
    rec: RunRecorder,
    inputs: _Inputs,
    reward: _Reward,
    policy: Any,
    ev: Evaluation,
    reasons: list[str],
) -> RoundOutcome:
    """Save the candidate's adapter into place, then register it (rejected, with the gate's
    reasons, when it failed the gate) and close the run in one transaction; a candidate
    is announced to the server."""
    from trainer.policy.model import save_adapter

    assert rec.run_id is not None
    reason = "; ".join(reasons) if reasons else None
    with session_scope(ctx.sessions) as s:
        name = publish.next_version_name(s)
    uri = ctx.artifacts / publish.POLICIES / f"{name}-run{rec.run_id}"
    with atomic_dir(uri) as tmp:
        save_adapter(policy, tmp)
    run_status = RunStatus.REJECTED if reasons else RunStatus.SUCCEEDED
    with session_scope(ctx.sessions) as s:
        row = publish.register_policy(
            s,
            name=name,
            parent=s.get_one(PolicyVersion, inputs.serving_id),
            base_model=str(inputs.base_dir),
            uri=uri,
            status=VersionStatus.REJECTED if reasons else VersionStatus.CANDIDATE,
            metrics=_version_metrics(cfg, rec.run_id, reward, ev),
            error=reason,
        )
        rec.finish(
            run_status, reason, policy_version_id=row.id, reward_model_id=reward.id, session=s
        )
    if not reasons:
        _announce(ctx, cfg, rec, name)
    return RoundOutcome(rec.run_id, run_status, reason, name, rec.metrics)


def _version_metrics(
    cfg: TrainConfig, run_id: int, reward: _Reward, ev: Evaluation
) -> dict[str, Any]:
    """The new version's `policy_versions.metrics`: how it was made, and its evaluation."""
    return {
        "run_id": run_id,
        "algorithm": cfg.policy.algorithm,
        "reward_model_id": reward.id,
        "rm_heldout_accuracy": reward.accuracy,
        **ev.metrics,
    }


def _announce(ctx: RoundContext, cfg: TrainConfig, rec: RunRecorder, name: str) -> None:
    """Tell the server a candidate is ready: best effort, as a server that misses it finds
    the candidate when it next polls."""
    err = publish.notify_server(cfg.notify_url, ctx.admin_token, name)
    rec.log(
        f"candidate {name} published"
        + (f"; server not notified: {err}" if err else "; server notified")
    )
    rec.flush(force=True)


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
    """Pairs for the policy's RM (all of them) and for the check RM (half, by prompt hash).

    The check RM is not optimized against, so sharing pairs with the policy's RM does not
    spoil it as a check; halving the policy's RM's pairs instead would cost it accuracy
    where votes are fewest."""
    if not cfg.reward.check_model:
        return pairs, []
    _, second = split_halves(pairs)
    if len(second) < cfg.data.min_train_pairs // 2:
        return pairs, []  # too few for a check model this round
    return pairs, second
