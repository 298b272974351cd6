"""One training round at a time, per data directory, with a lock that survives crashes.

The lock is an advisory `flock` on `<data_dir>/trainer.lock`. The kernel drops it when
the holding process dies, however it dies (SIGKILL included), so a stale lock can never
block the next round. The file also records who holds it (pid, host, start time); when
a new holder finds a record whose process is gone it says so in the log, which is how
an operator learns that the previous round was killed.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

log = logging.getLogger(__name__)


class LockBusy(RuntimeError):
    """Another live process holds the training lock."""


@dataclass(frozen=True)
class Holder:
    pid: int
    host: str
    since: str

    def alive(self) -> bool:
        if self.host != socket.gethostname():
            return True  # cannot tell from here; flock is the authority anyway
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


def read_holder(path: Path) -> Holder | None:
    try:
        raw: dict[str, Any] = json.loads(path.read_text())
        return Holder(int(raw["pid"]), str(raw["host"]), str(raw["since"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


class TrainingLock:
    """`with TrainingLock(data_dir):` runs the body as the only round; LockBusy otherwise."""

    def __init__(self, data_dir: Path):
        self.path = data_dir / "trainer.lock"
        self._fd: int | None = None
        self.stale: Holder | None = None  # a dead holder found when acquiring

    def acquire(self) -> TrainingLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = read_holder(self.path)
            who = f"pid {holder.pid} on {holder.host} since {holder.since}" if holder else "?"
            raise LockBusy(f"another training round is running ({who})") from None
        previous = read_holder(self.path)
        if previous is not None and not previous.alive():
            self.stale = previous
            log.warning(
                "took over the training lock from pid %d (%s), which died without releasing it",
                previous.pid,
                previous.since,
            )
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> TrainingLock:
        return self.acquire()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
