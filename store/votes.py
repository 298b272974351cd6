"""The questions both sides ask of the votes, written once.

The service's export, statistics and canary rule and the trainer's snapshot all read
votes through here, so "a comparison with its two replies and their versions" and
"thumbs per version" mean the same thing everywhere.
"""

from __future__ import annotations

from datetime import UTC, datetime

from store.db.models import GenerationStatus

# Replies that count for training and statistics: finished, or cut off by the client
# (the text the user saw). Failed and still-streaming replies do not.
FINISHED = (GenerationStatus.COMPLETED, GenerationStatus.CUT_OFF)


def as_utc(dt: datetime) -> datetime:
    """`dt` as an aware UTC datetime; naive values (SQLite returns them) are taken as UTC."""
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)
