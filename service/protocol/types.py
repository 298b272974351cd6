"""Field types shared by the response schemas."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator

from store.votes import as_utc

# Every time the API returns is aware UTC (ISO-8601 with an offset). SQLite hands back
# naive datetimes for timezone-aware columns; they were stored as UTC, so they are read as
# UTC; aware values are converted.
UtcDatetime = Annotated[datetime, AfterValidator(as_utc)]
