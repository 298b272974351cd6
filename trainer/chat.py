"""Chat-template encoding shared by the reward models, and quiet model loading."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

from trainer.records import Messages, as_chat


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence the 'newly initialized score.weight' chatter and progress bars of from_pretrained."""
    from transformers.utils import logging as hf_logging_module

    hf_logging: Any = hf_logging_module
    before = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity(logging.ERROR)
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(before)
        if bars:
            hf_logging.enable_progress_bar()


def chat_head(tokenizer: Any, prompt: Messages) -> tuple[str, list[int]]:
    """The prompt rendered up to the assistant's turn, and its token ids."""
    text: str = tokenizer.apply_chat_template(
        as_chat(prompt), tokenize=False, add_generation_prompt=True
    )
    ids: list[int] = tokenizer(text, add_special_tokens=False)["input_ids"]
    return text, ids


def encode_chat(
    tokenizer: Any,
    prompt: Messages,
    reply: str,
    max_length: int,
    head: tuple[str, list[int]] | None = None,
) -> tuple[list[int], int]:
    """Token ids of prompt + reply in the chat template, at most max_length, and the index
    where the reply's tokens start.

    Too long: the prompt loses tokens from its start; a reply longer than max_length on
    its own keeps its first max_length tokens.
    """
    head_text, head_ids = head if head is not None else chat_head(tokenizer, prompt)
    chat = [*as_chat(prompt), {"role": "assistant", "content": reply}]
    full: str = tokenizer.apply_chat_template(chat, tokenize=False)
    if not full.startswith(head_text):  # an unusual template: cut the whole from the left
        ids: list[int] = tokenizer(full, add_special_tokens=False)["input_ids"]
        kept_ids = ids[-max_length:]
        return kept_ids, max(0, len(kept_ids) - max(1, len(ids) - len(head_ids)))
    reply_ids: list[int] = tokenizer(full[len(head_text) :], add_special_tokens=False)["input_ids"]
    room = max_length - len(reply_ids)
    kept = head_ids[-room:] if room > 0 else []
    return (kept + reply_ids)[:max_length], len(kept)
