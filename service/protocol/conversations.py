"""Schemas of /v1/conversations: a web user's stored chats."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from service.protocol.types import UtcDatetime


class ConversationIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: str | None = Field(None, min_length=1, max_length=300)


class ConversationRename(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: str = Field(min_length=1, max_length=300)


class ConversationOut(BaseModel):
    id: str
    title: str | None
    created_at: UtcDatetime
    updated_at: UtcDatetime


class ConversationList(BaseModel):
    data: list[ConversationOut]


class MessageOut(BaseModel):
    position: int
    role: str
    content: str
    generation_id: str | None = Field(description="Replies: the id to vote on.")
    model: str | None = Field(description="Replies: the policy version that wrote it.")
    rating: Literal["up", "down"] | None = Field(description="Your live vote on the reply.")
    reason: str | None
    comment: str | None
    finish_reason: Literal["stop", "length"] | None = Field(
        description="Replies: why the model stopped (length: cut at the token limit); "
        "null for user messages and replies that did not finish."
    )
    status: Literal["completed", "cut_off", "error", "streaming"] | None = Field(
        description="Replies: completed, cut_off (stopped before the end), error, or streaming "
        "(not finished yet); null for user messages."
    )


class ConversationDetail(ConversationOut):
    messages: list[MessageOut]
