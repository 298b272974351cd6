"""Markdown tables for the trainer's benchmarks and reports (one cell format)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any


def cell(value: Any, digits: int = 3) -> str:
    """A float to `digits` places, None as "-", anything else as its str()."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def pipe_table(head: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """The header, its rule and one line per row, cells joined by " | "."""
    return [" | ".join(head), " | ".join("---" for _ in head), *(" | ".join(r) for r in rows)]
