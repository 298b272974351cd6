"""Chat templating and token counting, shared by every engine."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any


class ChatTokenizer:
    """Wraps a Hugging Face tokenizer: messages -> prompt token ids, ids -> text."""

    def __init__(self, hf_tokenizer: Any):
        self._tok = hf_tokenizer

    @classmethod
    def from_dir(cls, model_dir: Path) -> ChatTokenizer:
        from transformers import AutoTokenizer

        return cls(AutoTokenizer.from_pretrained(str(model_dir)))

    @property
    def hf(self) -> Any:
        return self._tok

    def eos_ids(self) -> set[int]:
        ids = {self._tok.eos_token_id} if self._tok.eos_token_id is not None else set()
        return ids

    def render(self, messages: Sequence[dict[str, str]]) -> str:
        text = self._tok.apply_chat_template(
            list(messages), tokenize=False, add_generation_prompt=True
        )
        return str(text)

    def encode_chat(self, messages: Sequence[dict[str, str]]) -> list[int]:
        ids = self._tok.encode(self.render(messages), add_special_tokens=False)
        return list(ids)

    def decode(self, ids: Sequence[int]) -> str:
        return str(self._tok.decode(list(ids), skip_special_tokens=True))
