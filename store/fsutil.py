"""Directories that appear whole or not at all: written beside their final place, then
renamed (a rename is atomic on one filesystem). Shared by the trainer's artifacts and
the engine's merged weights and adapters."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

STAGING_PREFIX = ".staging-"


@contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield a staging directory beside `final`; rename it to `final` if the body succeeds."""
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists():
        raise FileExistsError(f"{final} already exists")
    tmp = final.parent / f"{STAGING_PREFIX}{final.name}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
        for f in tmp.rglob("*"):
            if f.is_file():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
