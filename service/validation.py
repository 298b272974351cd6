"""Turn pydantic validation errors into one readable line that names the parameter."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError


def _loc(loc: Sequence[Any]) -> str:
    parts = [str(p) for p in loc if p not in ("body",)]
    return ".".join(parts)


def first_param(errors: Sequence[Any]) -> str | None:
    for err in errors:
        loc = _loc(err.get("loc", ()))
        if loc:
            return loc
    return None


def describe_errors(errors: Sequence[Any]) -> str:
    lines = []
    for err in errors[:5]:
        loc = _loc(err.get("loc", ()))
        msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
        lines.append(f"{loc}: {msg}" if loc else msg)
    more = len(errors) - 5
    if more > 0:
        lines.append(f"and {more} more")
    return "; ".join(lines)


def describe_validation_error(e: ValidationError) -> str:
    return describe_errors(e.errors(include_url=False))
