"""A pool of v0's own replies to the simulation's prompts, and votes on them.

`loopchat bench reward --replies FILE` measures reward models on what the policy really
writes rather than on canned sentences: the first run samples `per_prompt` replies to each
prompt of `harness/simulation/prompts.jsonl` with the trainer's own sampler (v0, the loop's
reply settings) and keeps them in FILE (JSON lines); later runs read FILE. The votes are
then written as the API would store them: every two replies to a prompt make a voted
comparison, and every reply gets a thumbs rating, judged by a gold (the bench re-votes
them per `--gold` anyway, `harness.bench.relabel`).
"""

from __future__ import annotations

import itertools
import json
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from harness.simulation.gold import Gold
from harness.simulation.prompts import load_prompts
from harness.simulation.users import SimulatedUser
from harness.synthetic import write_votes
from store.db import repository
from store.db.session import session_scope

MAX_NEW_TOKENS = 96  # as long as the closed loop's replies (`simulate --max-tokens 96`)
TEMPERATURE = 0.7  # the server's default


@dataclass(frozen=True)
class PoolPrompt:
    text: str
    replies: tuple[str, ...]


def sample_pool(model_dir: Path, per_prompt: int, seed: int = 0) -> list[PoolPrompt]:
    """`per_prompt` replies of v0 to every prompt of the simulation (train and held-out:
    the trainer splits them again by prompt hash)."""
    from trainer.config import PolicyConfig
    from trainer.policy.model import load_policy
    from trainer.sampling import sample

    prompts = [p.text for p in load_prompts("train") + load_prompts("heldout")]
    policy, tokenizer = load_policy(model_dir, None, PolicyConfig())
    with policy.disable_adapter():
        samples = sample(
            policy,
            tokenizer,
            [(("user", p),) for p in prompts],
            per_prompt,
            max_new_tokens=MAX_NEW_TOKENS,
            temperature=TEMPERATURE,
            batch_size=64,
            seed=seed,
        )
    by_prompt: dict[int, list[str]] = {}
    for s in samples:
        by_prompt.setdefault(s.prompt_index, []).append(s.text)
    return [PoolPrompt(prompts[i], tuple(by_prompt.get(i, ()))) for i in range(len(prompts))]


def load_or_sample(path: Path, model_dir: Path, per_prompt: int, seed: int = 0) -> list[PoolPrompt]:
    """The pool in `path`, sampled and written there first when it is not there yet."""
    if path.is_file():
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        return [PoolPrompt(r["prompt"], tuple(r["replies"])) for r in rows]
    pool = sample_pool(model_dir, per_prompt, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(
        "".join(json.dumps({"prompt": p.text, "replies": list(p.replies)}) + "\n" for p in pool)
    )
    tmp.replace(path)
    return pool


def seed_pool_votes(
    sessions: Any, model_dir: Path, pool: list[PoolPrompt], gold: Gold, seed: int = 0
) -> dict[str, int]:
    """v0 and the pool's votes: a comparison for every two replies to a prompt and a thumbs
    rating for every reply, by a simulated user with taste `gold` (25% flips)."""
    with session_scope(sessions) as s:
        repository.ensure_base_version(s, model_dir)
    user = SimulatedUser(gold, random.Random(seed))
    now = datetime.now(UTC)
    comparisons: list[tuple[str, str, str, str]] = []
    ratings: list[tuple[str, str, int]] = []
    for p in pool:
        for a, b in itertools.combinations(p.replies, 2):
            comparisons.append((p.text, a, b, user.compare(p.text, a, b)))
        for r in p.replies:
            ratings.append((p.text, r, 1 if user.rate(p.text, r).rating == "up" else -1))
    return write_votes(sessions, comparisons, ratings, now - timedelta(hours=1), seed)
