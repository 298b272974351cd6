"""The fixed reason tags a vote may carry (GET /v1/feedback/reasons lists them).

Fixed lists, not free text, so they can be counted and learned from; the free comment
carries anything else. Tags are snake_case and never renamed (exports keep them).
"""

from __future__ import annotations

from service.errors import InvalidValue

POSITIVE: tuple[str, ...] = (
    "accurate",
    "helpful",
    "followed_instructions",
    "well_written",
    "concise",
    "creative",
    "other",
)
NEGATIVE: tuple[str, ...] = (
    "wrong",
    "not_helpful",
    "ignored_instructions",
    "off_topic",
    "refused",
    "too_long",
    "too_short",
    "badly_written",
    "repetitive",
    "unsafe",
    "other",
)
COMPARISON: tuple[str, ...] = (
    "more_accurate",
    "more_helpful",
    "followed_instructions",
    "better_written",
    "more_concise",
    "safer",
    "other",
)


def check_rating_reason(rating: str, reason: str | None) -> None:
    if reason is None:
        return
    allowed = POSITIVE if rating == "up" else NEGATIVE
    if reason not in allowed:
        raise InvalidValue(
            f"reason '{reason}' is not a tag for a thumbs-{rating}; "
            f"use one of: {', '.join(allowed)}",
            param="reason",
        )


def check_comparison_reason(reason: str | None) -> None:
    if reason is not None and reason not in COMPARISON:
        raise InvalidValue(
            f"reason '{reason}' is not a comparison tag; use one of: {', '.join(COMPARISON)}",
            param="reason",
        )
