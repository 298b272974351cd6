"""What `loopchat train` runs: one round (`--once`) or the schedule (`--schedule`)."""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
from types import FrameType

from store.db.migrate import upgrade
from store.db.models import RunStatus
from store.db.session import make_engine, make_session_factory
from store.settings import StoreSettings
from trainer.config import PARENT_ENV, TrainConfig
from trainer.lock import LockBusy
from trainer.round import RoundContext, train_once
from trainer.scheduler import Schedule

log = logging.getLogger("loopchat.trainer")

PR_SET_PDEATHSIG = 1

EXIT = {
    RunStatus.SUCCEEDED: 0,
    RunStatus.REJECTED: 0,
    RunStatus.STOPPED: 0,
    RunStatus.FAILED: 1,
}


def run_trainer(settings: StoreSettings, cfg: TrainConfig, *, schedule: bool) -> int:
    """Exit code: 0 when the round ended as designed (candidate, rejected or stopped with a
    reason), 1 when it failed, 3 when another round holds the lock."""
    if not cfg.notify_url:
        cfg.notify_url = settings.server_url
    db = make_engine(settings.resolved_database_url)
    try:
        upgrade(db)
        ctx = RoundContext(
            sessions=make_session_factory(db),
            artifacts=settings.artifacts_dir.resolve(),
            data_dir=settings.data_dir.resolve(),
            admin_token=settings.resolved_admin_token(),
        )
        if not schedule:
            try:
                outcome = train_once(ctx, cfg, "manual")
            except LockBusy as e:
                print(f"loopchat train: {e}", file=sys.stderr)
                return 3
            print(
                f"round {outcome.run_id}: {outcome.status.value}"
                + (f", version {outcome.version}" if outcome.version else "")
                + (f" ({outcome.reason})" if outcome.reason else ""),
                flush=True,
            )
            return EXIT.get(outcome.status, 1)
        sched = Schedule(ctx, cfg)

        def stop(signum: int, _frame: FrameType | None) -> None:
            log.info("signal %d: stopping the schedule", signum)
            sched.stop()

        signal.signal(signal.SIGTERM, stop)
        if not stay_after_parent():
            log.info("the process that started this trainer is gone; not starting")
            return 0
        sched.run_forever()
        return 0
    finally:
        db.dispose()


def stay_after_parent() -> bool:
    """A trainer started by `loopchat run` (which sets PARENT_ENV to its pid) gets SIGTERM
    when that process dies, even by SIGKILL, so no orphan trainer lives on with its memory.
    False when the parent is already gone. Elsewhere (or off Linux) always True."""
    parent = os.environ.get(PARENT_ENV)
    if not parent:
        return True
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
            log.warning("prctl(PR_SET_PDEATHSIG) failed: errno %d", ctypes.get_errno())
    except (OSError, AttributeError):  # not Linux: the parent stops it on a clean exit only
        return True
    return str(os.getppid()) == parent  # it may have died before prctl
