"""The simulator's prompt set: `prompts.jsonl`, shipped with the package.

Each line is `{"id": "p0001", "text": ..., "kind": ..., "split": "train"|"heldout"}`.
The prompts were written by hand for this project (not generated at run time). The
held-out split is written in the file, about 20% of each kind: simulated users only ever
send `train` prompts, and the closed loop evaluates on `heldout` ones, so no vote is ever
cast on an evaluation prompt. Never recompute the split from a seed: a held-out prompt
must stay held out in every run and every round.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Literal, cast, get_args

Kind = Literal["question", "instruction", "smalltalk", "multipart", "numeric", "list"]
Split = Literal["train", "heldout"]
KINDS: tuple[Kind, ...] = get_args(Kind)
SPLITS: tuple[Split, ...] = get_args(Split)

_ID = re.compile(r"^p\d{4,}$")
_FIELDS = {"id", "text", "kind", "split"}


class PromptFileError(ValueError):
    """The prompt file is malformed; the message names the file and line."""


@dataclass(frozen=True)
class Prompt:
    id: str
    text: str
    kind: Kind
    split: Split

    def messages(self) -> list[dict[str, str]]:
        """The chat messages of this prompt: one user turn."""
        return [{"role": "user", "content": self.text}]


def default_path() -> Path:
    return Path(str(resources.files("harness.simulation").joinpath("prompts.jsonl")))


def parse_prompts(lines: list[str], source: str = "<prompts>") -> tuple[Prompt, ...]:
    """Parse and check JSONL lines: known fields, kinds and splits, unique ids and texts."""
    out: list[Prompt] = []
    ids: set[str] = set()
    texts: set[str] = set()
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{source}:{n}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise PromptFileError(f"{where}: not JSON ({e.msg})") from None
        if not isinstance(row, dict) or set(row) != _FIELDS:
            got = sorted(row) if isinstance(row, dict) else type(row).__name__
            raise PromptFileError(f"{where}: expected the fields {sorted(_FIELDS)}, got {got}")
        pid, text, kind, split = row["id"], row["text"], row["kind"], row["split"]
        if not isinstance(pid, str) or not _ID.match(pid):
            raise PromptFileError(f"{where}: id {pid!r} is not like 'p0001'")
        if pid in ids:
            raise PromptFileError(f"{where}: duplicate id {pid!r}")
        if not isinstance(text, str) or not text.strip():
            raise PromptFileError(f"{where}: empty text")
        if text in texts:
            raise PromptFileError(f"{where}: duplicate text {text!r}")
        if kind not in KINDS:
            raise PromptFileError(f"{where}: unknown kind {kind!r}; use one of {list(KINDS)}")
        if split not in SPLITS:
            raise PromptFileError(f"{where}: unknown split {split!r}; use one of {list(SPLITS)}")
        ids.add(pid)
        texts.add(text)
        out.append(Prompt(pid, text, cast(Kind, kind), cast(Split, split)))
    if not out:
        raise PromptFileError(f"{source}: no prompts")
    return tuple(out)


@lru_cache(maxsize=8)
def _load(path: str) -> tuple[Prompt, ...]:
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise PromptFileError(f"cannot read the prompt file {p}: {e}") from None
    return parse_prompts(lines, str(p))


def load_prompts(split: Split | None = None, path: Path | str | None = None) -> list[Prompt]:
    """The shipped prompts (or those of `path`), in file order; `split` keeps one split."""
    if split is not None and split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; use one of {list(SPLITS)} or None")
    prompts = _load(str(path if path is not None else default_path()))
    return [p for p in prompts if split is None or p.split == split]
