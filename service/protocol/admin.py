"""Schemas of the admin API: feedback statistics."""

from __future__ import annotations

from datetime import date
from typing import Literal

from pydantic import BaseModel, Field

from service.protocol.types import UtcDatetime


class DayVotes(BaseModel):
    day: date = Field(description="A UTC calendar day.")
    ratings: int = Field(
        description="Rating rows created that day, including ones later changed or withdrawn."
    )
    thumbs_up: int
    thumbs_down: int
    comparisons: int = Field(description="Comparisons voted that day.")


class VersionStats(BaseModel):
    version: str = Field(description="Public model name, e.g. loopchat@v1.")
    thumbs_up: int = Field(description="Live ratings created in the window.")
    thumbs_down: int
    up_rate: float | None = Field(description="thumbs_up / (thumbs_up + thumbs_down).")
    up_rate_low: float | None = Field(description="Wilson 95% interval, lower bound.")
    up_rate_high: float | None = Field(description="Wilson 95% interval, upper bound.")
    comparisons: int = Field(description="Voted comparisons with this version on either side.")
    wins: int = Field(description="Against a different version; same for the next three.")
    losses: int
    ties: int
    both_bad: int
    win_rate: float | None = Field(description="wins / (wins + losses).")
    self_comparisons: int = Field(description="Voted comparisons with this version on both sides.")


class ReasonCount(BaseModel):
    kind: Literal["up", "down", "comparison"]
    reason: str
    count: int


class StatsTotals(BaseModel):
    ratings: int = Field(description="Live ratings, all time.")
    comparisons_voted: int = Field(description="All time.")
    comparisons_open: int = Field(description="Created but never voted, all time.")


class FlaggedVoter(BaseModel):
    user_id: str
    reason: str = Field(description="Why their votes are set aside, with the figures.")


class EvidenceOut(BaseModel):
    """The screen the canary rule and the trainer apply to votes (all time)."""

    enabled: bool
    kept: int = Field(description="Voted comparisons that count.")
    set_aside: int
    by_reason: dict[str, int] = Field(
        description="session_too_new (counts once the session is older), over_user_cap, "
        "side_bias, against_consensus."
    )
    flagged_voters: list[FlaggedVoter]
    thumbs_kept: int = Field(description="Live thumbs that count.")
    thumbs_set_aside: int
    thumbs_by_reason: dict[str, int] = Field(
        description="session_too_new, over_user_cap (per voter and per address, per version)."
    )


class StatsOut(BaseModel):
    window_days: int
    since: UtcDatetime = Field(
        description="Start of the window: 00:00 UTC, window_days-1 days ago."
    )
    until: UtcDatetime = Field(description="End of the window (exclusive): the time of the query.")
    votes_per_day: list[DayVotes] = Field(description="Every day of the window, oldest first.")
    versions: list[VersionStats] = Field(description="Versions with a vote in the window.")
    reasons: list[ReasonCount] = Field(description="Reasons of live ratings and voted comparisons.")
    totals: StatsTotals
    evidence: EvidenceOut | None = None
