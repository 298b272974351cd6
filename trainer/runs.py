"""The `training_runs` row of a round: status, progress, per-step metrics and logs.

`RunRecorder` is the only writer of a run row. Its metrics are a `store.runs.RunMetrics`,
the record the server reads them back with. Progress (phase, step / total, ETA) goes to
the log at once and to the row at most every `flush_seconds`, so a dashboard can follow a
round without the trainer hammering the database the server also writes to.
"""

from __future__ import annotations

import logging
import math
import time
import traceback
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from store.db.models import RunStatus, TrainingRun
from store.db.session import session_scope
from store.runs import RunMetrics, RunProgress

log = logging.getLogger("loopchat.trainer")

MAX_LOG_CHARS = 200_000
MAX_STEPS_PER_PHASE = 2000
DONE = (RunStatus.SUCCEEDED, RunStatus.STOPPED, RunStatus.REJECTED, RunStatus.FAILED)


def utcnow() -> datetime:
    return datetime.now(UTC)


def reap_orphans(sessions: sessionmaker[Session]) -> list[int]:
    """Mark runs left `running` by a dead trainer as failed. Call only while holding the
    training lock: then no live process can be running them."""
    with session_scope(sessions) as s:
        rows = s.scalars(select(TrainingRun).where(TrainingRun.status == RunStatus.RUNNING)).all()
        for run in rows:
            run.status = RunStatus.FAILED
            run.finished_at = utcnow()
            run.reason = "the trainer process died during this round (found by the next round)"
            run.logs = (run.logs or "") + f"\n{utcnow().isoformat()} {run.reason}\n"
        return [r.id for r in rows]


def oldest_queued(session: Session) -> int | None:
    """The oldest run an operator queued, if any."""
    stmt = select(TrainingRun.id).where(TrainingRun.status == RunStatus.QUEUED)
    return session.scalars(stmt.order_by(TrainingRun.id)).first()


def claim_queued(sessions: sessionmaker[Session]) -> int | None:
    """`oldest_queued` in a session of its own."""
    with session_scope(sessions) as s:
        return oldest_queued(s)


class RunRecorder:
    """Writes one run row through a round: `start`, `phase`/`progress`/`log`, `finish`."""

    def __init__(self, sessions: sessionmaker[Session], flush_seconds: float = 2.0):
        self._sessions = sessions
        self._flush_seconds = flush_seconds
        self.run_id: int | None = None
        self._logs: list[str] = []
        self._log_chars = 0
        self._steps: dict[str, list[dict[str, float]]] = {}
        self.metrics = RunMetrics()
        self.counts: dict[str, Any] = {}
        self._phase = "starting"
        self._phase_started = time.monotonic()
        self._phase_seconds: dict[str, float] = {}
        self._last_flush = 0.0
        self._progress = RunProgress()

    # -- lifecycle ---------------------------------------------------------------------

    def start(self, trigger: str, config: dict[str, Any], queued_id: int | None = None) -> int:
        with session_scope(self._sessions) as s:
            run = s.get(TrainingRun, queued_id) if queued_id is not None else None
            if run is None:
                run = TrainingRun(status=RunStatus.RUNNING)
                s.add(run)
            self.metrics = RunMetrics(trigger=trigger, config=config)
            run.status = RunStatus.RUNNING
            run.started_at = utcnow()
            run.metrics = self.metrics.to_json()
            s.flush()
            self.run_id = run.id
        self.log(f"round {self.run_id} started ({trigger})")
        return self.run_id

    def window(self, start: datetime | None, end: datetime) -> None:
        with session_scope(self._sessions) as s:
            run = self._row(s)
            run.data_window_start = start
            run.data_window_end = end

    def phase(self, name: str) -> None:
        now = time.monotonic()
        self._phase_seconds[self._phase] = round(now - self._phase_started, 3)
        self._phase = name
        self._phase_started = now
        self._progress = RunProgress(phase=name, step=0, total=0)
        self.log(f"phase {name}")
        self.flush(force=True)

    def progress(self, step: int, total: int, metrics: dict[str, float]) -> None:
        """A ProgressFn for the current phase."""
        elapsed = time.monotonic() - self._phase_started
        eta = elapsed / step * (total - step) if step > 0 and total >= step else None
        self._progress = RunProgress(
            phase=self._phase,
            step=step,
            total=total,
            elapsed_s=round(elapsed, 1),
            eta_s=None if eta is None else round(eta, 1),
        )
        clean = {k: float(v) for k, v in metrics.items() if _finite(v)}
        steps = self._steps.setdefault(self._phase, [])
        if len(steps) < MAX_STEPS_PER_PHASE:
            steps.append({"step": float(step), **clean})
        shown = " ".join(f"{k}={v:.4g}" for k, v in clean.items())
        eta_text = "" if eta is None else f" eta {eta:.0f}s"
        self.log(f"{self._phase} {step}/{total}{eta_text} {shown}".rstrip())
        self.flush(force=step >= total)

    def log(self, message: str) -> None:
        log.info("%s", message)
        line = f"{utcnow().isoformat(timespec='seconds')} {message}\n"
        if self._log_chars + len(line) <= MAX_LOG_CHARS:
            self._logs.append(line)
            self._log_chars += len(line)

    def exception(self, error: BaseException) -> None:
        self.log("".join(traceback.format_exception(error)).rstrip())

    def flush(self, force: bool = False) -> None:
        if self.run_id is None:
            return
        now = time.monotonic()
        if not force and now - self._last_flush < self._flush_seconds:
            return
        self._last_flush = now
        with session_scope(self._sessions) as s:
            run = self._row(s)
            run.metrics = self._metrics_blob()
            run.counts = dict(self.counts)
            run.logs = "".join(self._logs)

    def finish(
        self,
        status: RunStatus,
        reason: str | None,
        *,
        policy_version_id: int | None = None,
        reward_model_id: int | None = None,
        session: Session | None = None,
    ) -> None:
        """Close the run; with `session`, inside the caller's transaction."""
        self._phase_seconds[self._phase] = round(time.monotonic() - self._phase_started, 3)
        self._progress = RunProgress(phase="done", step=0, total=0)
        self.log(f"round {self.run_id} {status.value}" + (f": {reason}" if reason else ""))

        def write(s: Session) -> None:
            run = self._row(s)
            run.status = status
            run.reason = reason
            run.finished_at = utcnow()
            run.metrics = self._metrics_blob()
            run.counts = dict(self.counts)
            run.logs = "".join(self._logs)
            if policy_version_id is not None:
                run.policy_version_id = policy_version_id
            if reward_model_id is not None:
                run.reward_model_id = reward_model_id

        if session is not None:
            write(session)
        else:
            with session_scope(self._sessions) as s:
                write(s)

    # -- internals ---------------------------------------------------------------------

    def _row(self, s: Session) -> TrainingRun:
        run = s.get(TrainingRun, self.run_id)
        if run is None:
            raise RuntimeError(f"training run {self.run_id} vanished")
        return run

    def _metrics_blob(self) -> dict[str, Any]:
        """The sections a round filled in, with where it is and its per-step figures."""
        self.metrics.progress = self._progress
        self.metrics.phase_seconds = dict(self._phase_seconds)
        self.metrics.steps = {k: list(v) for k, v in self._steps.items()}
        return self.metrics.to_json()


def _finite(v: Any) -> bool:
    try:
        return math.isfinite(float(v))
    except (TypeError, ValueError):
        return False
