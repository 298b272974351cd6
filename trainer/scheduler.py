"""`loopchat train --schedule`: start rounds when enough new votes arrive, on APScheduler.

Every `schedule.poll_seconds` a job checks the database and `decide`s:
- an operator queued a run (`POST /v1/admin/training-runs`): run it;
- at least `schedule.min_new_events` votes arrived since the last round: run;
- `schedule.interval_minutes` passed since the last round and at least
  `schedule.min_events` new votes arrived: run.
The job never overlaps itself (max_instances=1), and rounds in other processes are kept
out by the training lock.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from store.db.models import TrainingRun
from store.db.session import session_scope
from trainer.config import ScheduleConfig, TrainConfig
from trainer.lock import LockBusy
from trainer.round import RoundContext, RoundOutcome, train_once
from trainer.runs import oldest_queued
from trainer.snapshot import count_events

log = logging.getLogger("loopchat.trainer")


@dataclass(frozen=True)
class ScheduleState:
    queued_run: int | None
    new_events: int  # votes since the last round started
    last_round_at: datetime | None  # when the last round started


def decide(state: ScheduleState, now: datetime, cfg: ScheduleConfig) -> str | None:
    """Why a round should start now ("operator", "events", "interval"), or None."""
    if state.queued_run is not None:
        return "operator"
    if state.new_events >= cfg.min_new_events:
        return "events"
    due = state.last_round_at is None or now - state.last_round_at >= timedelta(
        minutes=cfg.interval_minutes
    )
    if due and state.new_events >= cfg.min_events:
        return "interval"
    return None


def read_state(session: Session) -> ScheduleState:
    last = session.scalars(
        select(TrainingRun.started_at)
        .where(TrainingRun.started_at.is_not(None))
        .order_by(TrainingRun.id.desc())
    ).first()
    if last is not None and last.tzinfo is None:
        last = last.replace(tzinfo=UTC)
    return ScheduleState(oldest_queued(session), count_events(session, last), last)


class Schedule:
    """Runs `tick` on an APScheduler interval until `stop`."""

    def __init__(self, ctx: RoundContext, cfg: TrainConfig):
        self._ctx = ctx
        self._cfg = cfg
        self.outcomes: list[RoundOutcome] = []
        self._stopped = threading.Event()

    def tick(self) -> RoundOutcome | None:
        with session_scope(self._ctx.sessions) as s:
            state = read_state(s)
        trigger = decide(state, datetime.now(UTC), self._cfg.schedule)
        if trigger is None:
            log.debug("no round: %s", state)
            return None
        log.info("starting a round (%s; %d new votes)", trigger, state.new_events)
        try:
            outcome = train_once(self._ctx, self._cfg, trigger, state.queued_run)
        except LockBusy as e:
            log.info("%s; will look again", e)
            return None
        self.outcomes.append(outcome)
        return outcome

    def run_forever(self) -> None:
        from apscheduler.schedulers.blocking import BlockingScheduler

        scheduler = BlockingScheduler(timezone=UTC)
        scheduler.add_job(
            self._safe_tick,
            "interval",
            seconds=self._cfg.schedule.poll_seconds,
            next_run_time=datetime.now(UTC),
            max_instances=1,
            coalesce=True,
            id="training-round",
        )
        self._scheduler = scheduler
        log.info(
            "trainer schedule: a round per %d new votes, or every %.0f min with %d+ new votes "
            "(checked every %.0f s)",
            self._cfg.schedule.min_new_events,
            self._cfg.schedule.interval_minutes,
            self._cfg.schedule.min_events,
            self._cfg.schedule.poll_seconds,
        )
        scheduler.start()

    def stop(self) -> None:
        self._stopped.set()
        sched = getattr(self, "_scheduler", None)
        if sched is not None and sched.running:
            sched.shutdown(wait=False)

    def _safe_tick(self) -> None:
        try:
            self.tick()
        except Exception:  # the schedule outlives a bad tick (database briefly down, ...)
            log.exception("training schedule tick failed; trying again next time")
