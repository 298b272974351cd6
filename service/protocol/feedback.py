"""Schemas of the feedback API: ratings, comparisons, sessions, reasons."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.config import JsonDict

from service.feedback.reasons import COMPARISON, NEGATIVE, POSITIVE
from service.protocol.chat import SOME_TEXT_SCHEMA, ChatCompletionRequest, ChatMessage
from service.protocol.types import UtcDatetime

Choice = Literal["a", "b", "tie", "both_bad"]

# Far above any real comment; the configured cap (settings.max_comment_chars) is checked
# in the service, this only stops a huge string from being parsed into a model.
COMMENT_HARD_CAP = 100_000


class FeedbackRequest(BaseModel):
    generation_id: str = Field(max_length=200, description="From a chat reply or a comparison.")
    rating: Literal["up", "down"]
    reason: str | None = Field(
        None,
        max_length=64,
        description="A tag from /v1/feedback/reasons, of the rating's own list.",
        json_schema_extra={"enum": [*POSITIVE, *[t for t in NEGATIVE if t not in POSITIVE], None]},
    )
    comment: str | None = Field(None, max_length=COMMENT_HARD_CAP)

    # The tag list depends on the rating; the schema says so, the service checks it.
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "allOf": [
                {
                    "if": {"properties": {"rating": {"const": rating}}},
                    "then": {"properties": {"reason": {"enum": [*tags, None]}}},
                }
                for rating, tags in (("up", POSITIVE), ("down", NEGATIVE))
            ]
        },
    )


class RatingOut(BaseModel):
    object: Literal["rating"] = "rating"
    generation_id: str
    rating: Literal["up", "down"] | None = Field(description="None: not rated, or withdrawn.")
    reason: str | None
    comment: str | None
    updated_at: UtcDatetime | None
    changed: bool = Field(description="False when the request repeated the stored vote.")


def _tags(tags: tuple[str, ...]) -> JsonDict:
    return {"items": {"type": "string", "enum": list(tags)}}


class ReasonsOut(BaseModel):
    up: list[str] = Field(json_schema_extra=_tags(POSITIVE))
    down: list[str] = Field(json_schema_extra=_tags(NEGATIVE))
    comparison: list[str] = Field(json_schema_extra=_tags(COMPARISON))


class ComparisonRequest(BaseModel):
    """A chat request answered twice (A and B) for the caller to judge.

    Sampling is the server's (temperature, seed): a caller who could ask for
    temperature 0 could reproduce one side by pinning a version and so tell the sides
    apart before voting. Only the length of the replies may be capped."""

    model_config = ConfigDict(extra="forbid")

    messages: list[ChatMessage] = Field(min_length=1, json_schema_extra=SOME_TEXT_SCHEMA)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)

    def to_chat(self, temperature: float, seed: int) -> ChatCompletionRequest:
        return ChatCompletionRequest.model_validate(
            {
                "messages": self.messages,
                "max_tokens": self.max_tokens,
                "max_completion_tokens": self.max_completion_tokens,
                "temperature": temperature,
                "seed": seed,
            }
        )


class ComparisonSideOut(BaseModel):
    generation_id: str
    content: str
    finish_reason: str | None
    model: str | None = Field(description="The policy version; only after the vote.")


class ComparisonOut(BaseModel):
    id: str
    object: Literal["comparison"] = "comparison"
    a: ComparisonSideOut
    b: ComparisonSideOut
    choice: Choice | None
    reason: str | None
    created_at: UtcDatetime
    voted_at: UtcDatetime | None


class VoteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    choice: Choice
    reason: str | None = Field(
        None,
        max_length=64,
        description="A comparison reason tag.",
        json_schema_extra={"enum": [*COMPARISON, None]},
    )


class SessionOut(BaseModel):
    user_id: str
    kind: str
