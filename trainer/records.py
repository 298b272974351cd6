"""The trainer's data types: votes as read from storage, and the datasets built from them.

Plain frozen dataclasses with no database or torch in them, so the dataset builders in
`trainer.data` are pure functions and tests build these by hand.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

Messages = tuple[tuple[str, str], ...]  # ((role, content), ...): hashable chat messages

# A progress report: (step done, steps in total, metrics of this step).
ProgressFn = Callable[[int, int, dict[str, float]], None]
# replies to prompts -> one reward each (what a policy update is trained on)
ScoreFn = Callable[[Sequence[Messages], Sequence[str]], list[float]]


def no_progress(step: int, total: int, metrics: dict[str, float]) -> None:
    """A ProgressFn that reports nowhere."""


def messages(raw: Sequence[dict[str, str]] | Messages) -> Messages:
    """Chat messages as a hashable tuple of (role, content)."""
    out = []
    for m in raw:
        if isinstance(m, dict):
            out.append((str(m.get("role", "")), str(m.get("content", ""))))
        else:
            out.append((str(m[0]), str(m[1])))
    return tuple(out)


def as_chat(prompt: Messages) -> list[dict[str, str]]:
    """The `[{"role", "content"}]` form tokenizers' chat templates take."""
    return [{"role": role, "content": content} for role, content in prompt]


def prompt_key(prompt: Messages) -> str:
    """A stable hash of a prompt: the same messages give the same key in every round."""
    blob = json.dumps([list(m) for m in prompt], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


@dataclass(frozen=True)
class Reply:
    """A stored generation as the trainer sees it."""

    generation_id: str
    prompt: Messages
    text: str
    version: str  # policy version name, "v0"
    finished: bool  # ended by the model (stop token or string), not cut at a length cap


@dataclass(frozen=True)
class RatingVote:
    """A live thumbs rating."""

    id: int
    user: str
    reply: Reply
    value: int  # +1 up, -1 down
    at: datetime


@dataclass(frozen=True)
class ComparisonVote:
    """A voted A/B comparison."""

    id: str
    user: str | None
    a: Reply
    b: Reply
    choice: str  # "a", "b", "tie", "both_bad"
    at: datetime


@dataclass(frozen=True)
class Snapshot:
    """Everything a round reads from storage, taken once at its start.

    `since`: votes at or after it are new this round (None: every vote is new).
    `prompts`: distinct prompts users sent in the window (voted on or not), newest first;
    the policy samples its rollouts from their training split.
    """

    ratings: tuple[RatingVote, ...]
    comparisons: tuple[ComparisonVote, ...]
    prompts: tuple[Messages, ...]
    window_start: datetime | None
    window_end: datetime
    since: datetime | None
    # Comparison votes of the window the screen set aside, by reason (store.evidence).
    set_aside: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Pair:
    """A preference: `chosen` is better than `rejected` as a reply to `prompt`."""

    prompt: Messages
    chosen: str
    rejected: str
    weight: float
    source: str  # "comparison", "tie", "thumbs"
    at: datetime  # the latest vote behind it

    @property
    def key(self) -> str:
        return prompt_key(self.prompt)


@dataclass(frozen=True)
class Unpaired:
    """One reply judged on its own: label True is good (thumbs up)."""

    prompt: Messages
    completion: str
    label: bool
    source: str  # "thumbs", "both_bad"
    at: datetime


@dataclass(frozen=True)
class RoundData:
    """The datasets of one round, split by prompt hash into train and held-out."""

    train_pairs: tuple[Pair, ...]
    heldout_pairs: tuple[Pair, ...]
    train_unpaired: tuple[Unpaired, ...]
    heldout_unpaired: tuple[Unpaired, ...]
    train_prompts: tuple[Messages, ...]
    heldout_prompts: tuple[Messages, ...]
    since: datetime | None
    counts: dict[str, int] = field(default_factory=dict)
