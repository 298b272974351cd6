"""Read what a test server stored, straight from its database."""

from __future__ import annotations

from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.orm import Session

from service.db.session import make_engine

T = TypeVar("T")


def fetch(db_url: str, model: type[T], *where: Any) -> list[T]:
    eng = make_engine(db_url)
    try:
        with Session(eng) as s:
            out = list(s.scalars(sa.select(model).where(*where)))
            for row in out:
                s.expunge(row)
            return out
    finally:
        eng.dispose()


def count(db_url: str, model: type[Any], *where: Any) -> int:
    eng = make_engine(db_url)
    try:
        with Session(eng) as s:
            return int(s.scalar(sa.select(sa.func.count()).select_from(model).where(*where)) or 0)
    finally:
        eng.dispose()
