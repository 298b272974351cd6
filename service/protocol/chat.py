"""OpenAI-compatible chat completion schemas. Requests own their conversion and checks."""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from service.chat.engines.base import Sampling

Role = Literal["system", "developer", "user", "assistant"]


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Role
    content: str | list[TextPart]
    name: str | None = None

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content)

    def as_template_message(self) -> dict[str, str]:
        # SmolLM2-style templates know system/user/assistant; developer is OpenAI's system.
        role = "system" if self.role == "developer" else self.role
        return {"role": role, "content": self.text()}


# Said in the schema so that generated requests carry some text: somewhere in the
# conversation a message's content (or one of its text parts) is not only whitespace.
# The service refuses a conversation without any (`messages must contain some text`).
_SOME_TEXT = r"\S"
SOME_TEXT_SCHEMA: dict[str, Any] = {
    "contains": {
        "type": "object",
        "required": ["content"],
        "properties": {
            "content": {
                "anyOf": [
                    {"type": "string", "pattern": _SOME_TEXT},
                    {
                        "type": "array",
                        "contains": {
                            "type": "object",
                            "required": ["text"],
                            "properties": {"text": {"type": "string", "pattern": _SOME_TEXT}},
                        },
                    },
                ]
            }
        },
    }
}

StopSequence = Annotated[str, Field(min_length=1)]


class StreamOptions(BaseModel):
    include_usage: bool = False


# Parameters OpenAI defines that we do not implement: refuse them instead of ignoring.
UNSUPPORTED = ("tools", "functions", "tool_choice", "function_call", "logit_bias", "audio")


class SamplingFields(BaseModel):
    """Sampling parameters shared by chat completions, the websocket and comparisons."""

    # None: the server's defaults (settings), as vLLM applies a model's generation config.
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    stop: StopSequence | list[StopSequence] | None = None
    seed: int | None = Field(None, ge=0, le=2**63 - 1)

    def stop_list(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)

    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def to_sampling(self, defaults: Sampling, seed_offset: int = 0) -> Sampling:
        """Sampling for one choice; choice i of n gets seed + i so choices differ."""
        seed = None if self.seed is None else (self.seed + seed_offset) % (2**63)
        return Sampling(
            temperature=defaults.temperature if self.temperature is None else self.temperature,
            top_p=defaults.top_p if self.top_p is None else self.top_p,
            max_tokens=self.requested_max_tokens() or defaults.max_tokens,
            stop=self.stop_list(),
            seed=seed,
        )


class ChatCompletionRequest(SamplingFields):
    model_config = ConfigDict(extra="allow")

    model: str = "loopchat"
    messages: list[ChatMessage] = Field(min_length=1, json_schema_extra=SOME_TEXT_SCHEMA)
    n: int = Field(1, ge=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None

    @model_validator(mode="after")
    def _checks(self) -> ChatCompletionRequest:
        extra = self.model_extra or {}
        for name in UNSUPPORTED:
            if extra.get(name) not in (None, [], {}):
                raise ValueError(f"'{name}' is not supported by this server")
        if extra.get("logprobs"):
            raise ValueError("'logprobs' is not supported by this server")
        rf = extra.get("response_format")
        if isinstance(rf, dict) and rf.get("type") not in (None, "text"):
            raise ValueError("only response_format type 'text' is supported")
        return self

    def template_messages(self) -> list[dict[str, str]]:
        return [m.as_template_message() for m in self.messages]


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class Choice(BaseModel):
    index: int
    message: AssistantMessage
    finish_reason: str | None
    generation_id: str = Field(description="Rate this reply with POST /v1/feedback.")


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[Choice]
    usage: Usage


class DeltaMessage(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(BaseModel):
    index: int
    delta: DeltaMessage
    finish_reason: str | None = None
    generation_id: str | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "loopchat"
    status: str = Field(
        description="serving; for operators the version's role (canary, candidate, "
        "retained, retired); for keys that may pin, available."
    )
    kind: str | None = Field(None, description="base, merged or lora; shown to operators.")


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


def dump(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(mode="json", exclude_none=False)
