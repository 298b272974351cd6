"""`simulate()`: a population of simulated users casts N votes on a running server.

Each vote is one attempt: a chat reply rated with a thumb, or a comparison (two replies)
voted on. The share of comparisons is exact (attempt i is a comparison when
floor((i+1) * share) > floor(i * share)). The plan of attempt i (its user, prompt and
judgment noise) comes from `random.Random(f"{seed}/{i}")`, so a run is reproducible
up to what the server samples. A failed attempt is counted by kind and replaced by a new
one until `votes` votes are stored or `max_errors` attempts failed (then `stopped_early`).

Per policy version it records what users saw and said: replies, thumbs up/down, the mean
gold score of its replies, and head-to-head comparison wins, losses and ties against
*other* versions (a comparison of a version with itself, which is what comparisons are
while no canary runs, counts replies only). That is what the closed loop reports as live
thumbs-up per version.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from harness.simulation.client import ApiError, UserClient, open_user, revoke_key
from harness.simulation.gold import Gold, gold_spec, load_gold
from harness.simulation.prompts import Prompt, Split, load_prompts
from harness.simulation.users import (
    DEFAULT_FLIP_RATE,
    DEFAULT_TEMPERATURE,
    DEFAULT_THUMBS_NOISE,
    DEFAULT_THUMBS_THRESHOLD,
    DEFAULT_TIE_EPSILON,
    SimulatedUser,
)


class SimulationError(RuntimeError):
    """The run could not start (no server, no session); the message says why."""


@dataclass
class VersionStats:
    replies: int = 0
    thumbs_up: int = 0
    thumbs_down: int = 0
    wins: int = 0  # comparison votes won against another version
    losses: int = 0
    ties: int = 0
    gold_sum: float = 0.0

    @property
    def gold_mean(self) -> float | None:
        return self.gold_sum / self.replies if self.replies else None

    @property
    def thumbs_up_rate(self) -> float | None:
        n = self.thumbs_up + self.thumbs_down
        return self.thumbs_up / n if n else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "replies": self.replies,
            "thumbs_up": self.thumbs_up,
            "thumbs_down": self.thumbs_down,
            "thumbs_up_rate": self.thumbs_up_rate,
            "wins": self.wins,
            "losses": self.losses,
            "ties": self.ties,
            "gold_mean": self.gold_mean,
        }


@dataclass
class SimulationResult:
    votes_target: int
    config: dict[str, Any]
    votes: int = 0  # stored votes: thumbs + comparison votes
    chats: int = 0
    thumbs_up: int = 0
    thumbs_down: int = 0
    comparisons: int = 0  # comparisons created (voted or not)
    comparison_votes: dict[str, int] = field(default_factory=lambda: {"a": 0, "b": 0, "tie": 0})
    flipped: int = 0  # comparison votes the user's label noise flipped
    # Non-tie comparison votes on replies of different gold: how many picked the gold
    # winner, and the sum of each vote's probability of doing so (expected_agreement).
    gold_decided: int = 0
    gold_agreed: int = 0
    agree_expected_sum: float = 0.0
    errors: int = 0  # failed attempts
    error_kinds: Counter[str] = field(default_factory=Counter)
    retries: Counter[str] = field(default_factory=Counter)  # waited-out 429 / 503 / connect
    per_version: dict[str, VersionStats] = field(default_factory=dict)
    elapsed_s: float = 0.0
    stopped_early: bool = False

    @property
    def ratings(self) -> int:
        return self.thumbs_up + self.thumbs_down

    @property
    def voted_comparisons(self) -> int:
        return sum(self.comparison_votes.values())

    @property
    def gold_agreement(self) -> float | None:
        """Share of the comparison votes that picked the gold winner."""
        return self.gold_agreed / self.gold_decided if self.gold_decided else None

    @property
    def accuracy_ceiling(self) -> float | None:
        """The accuracy a reward model that knew the gold exactly would expect on these
        votes: 1 - flip_rate on clearly different pairs, nearer 0.5 on close ones."""
        return self.agree_expected_sum / self.gold_decided if self.gold_decided else None

    def version(self, name: str) -> VersionStats:
        return self.per_version.setdefault(name, VersionStats())

    def to_dict(self) -> dict[str, Any]:
        return {
            "votes_target": self.votes_target,
            "votes": self.votes,
            "chats": self.chats,
            "thumbs_up": self.thumbs_up,
            "thumbs_down": self.thumbs_down,
            "comparisons": self.comparisons,
            "comparison_votes": dict(self.comparison_votes),
            "flipped": self.flipped,
            "gold_decided": self.gold_decided,
            "gold_agreement": self.gold_agreement,
            "accuracy_ceiling": self.accuracy_ceiling,
            "errors": self.errors,
            "error_kinds": dict(self.error_kinds),
            "retries": dict(self.retries),
            "per_version": {k: v.to_dict() for k, v in sorted(self.per_version.items())},
            "elapsed_s": round(self.elapsed_s, 3),
            "stopped_early": self.stopped_early,
            "config": self.config,
        }


@dataclass(frozen=True)
class Progress:
    votes: int
    target: int
    errors: int
    elapsed_s: float
    result: SimulationResult


@dataclass(frozen=True)
class _Judging:
    gold: Gold
    flip_rate: float
    temperature: float
    tie_epsilon: float
    thumbs_threshold: float
    thumbs_noise: float

    def user(self, rng: random.Random) -> SimulatedUser:
        return SimulatedUser(
            self.gold,
            rng,
            self.flip_rate,
            temperature=self.temperature,
            tie_epsilon=self.tie_epsilon,
            thumbs_threshold=self.thumbs_threshold,
            thumbs_noise=self.thumbs_noise,
        )


def is_comparison(i: int, share: float) -> bool:
    return math.floor((i + 1) * share + 1e-9) > math.floor(i * share + 1e-9)


async def _chat_vote(
    client: UserClient,
    user: SimulatedUser,
    prompt: Prompt,
    max_tokens: int | None,
    result: SimulationResult,
) -> None:
    reply = await client.chat(prompt.messages(), max_tokens=max_tokens)
    result.chats += 1
    thumbs = user.rate(prompt.text, reply.text)
    stats = result.version(reply.version)
    stats.replies += 1
    stats.gold_sum += thumbs.gold
    await client.rate(reply.generation_id, thumbs.rating, thumbs.reason)
    if thumbs.rating == "up":
        result.thumbs_up += 1
        stats.thumbs_up += 1
    else:
        result.thumbs_down += 1
        stats.thumbs_down += 1


async def _comparison_vote(
    client: UserClient,
    user: SimulatedUser,
    prompt: Prompt,
    max_tokens: int | None,
    result: SimulationResult,
) -> None:
    cmp = await client.compare(prompt.messages(), max_tokens=max_tokens)
    result.comparisons += 1
    verdict = user.judge(prompt.text, cmp.a.text, cmp.b.text)
    va, vb = await client.vote(cmp.id, verdict.choice, verdict.reason)
    result.comparison_votes[verdict.choice] += 1
    result.flipped += verdict.flipped
    if verdict.choice != "tie" and verdict.gold_a != verdict.gold_b:
        result.gold_decided += 1
        result.gold_agreed += (verdict.choice == "a") == (verdict.gold_a > verdict.gold_b)
        result.agree_expected_sum += user.expected_agreement(verdict.gold_a, verdict.gold_b)
    for version, gold in ((va, verdict.gold_a), (vb, verdict.gold_b)):
        stats = result.version(version or "?")
        stats.replies += 1
        stats.gold_sum += gold
    if va is None or vb is None or va == vb:
        return
    if verdict.choice == "tie":
        result.version(va).ties += 1
        result.version(vb).ties += 1
    else:
        winner, loser = (va, vb) if verdict.choice == "a" else (vb, va)
        result.version(winner).wins += 1
        result.version(loser).losses += 1


async def simulate_async(
    base_url: str,
    *,
    votes: int,
    gold: Gold | str,
    flip_rate: float = DEFAULT_FLIP_RATE,
    comparison_share: float = 0.5,
    users: int = 20,
    split: Split | None = "train",
    seed: int = 0,
    max_tokens: int | None = None,
    progress: Callable[[Progress], None] | None = None,
    concurrency: int = 4,
    admin_token: str | None = None,
    auth: str = "session",
    temperature: float = DEFAULT_TEMPERATURE,
    tie_epsilon: float = DEFAULT_TIE_EPSILON,
    thumbs_threshold: float = DEFAULT_THUMBS_THRESHOLD,
    thumbs_noise: float = DEFAULT_THUMBS_NOISE,
    max_errors: int | None = None,
    prompts: Sequence[Prompt] | None = None,
    timeout_s: float = 600.0,
) -> SimulationResult:
    """`simulate()` in a running event loop."""
    if votes < 0 or users < 1 or concurrency < 1:
        raise ValueError("votes must be >= 0, users and concurrency >= 1")
    if not 0.0 <= comparison_share <= 1.0:
        raise ValueError(f"comparison_share must be in [0, 1], not {comparison_share}")
    gold_fn = load_gold(gold) if isinstance(gold, str) else gold
    judging = _Judging(gold_fn, flip_rate, temperature, tie_epsilon, thumbs_threshold, thumbs_noise)
    judging.user(random.Random(0)).rate("Hello?", "Hello there.")  # a broken gold fails here
    pool = list(prompts) if prompts is not None else load_prompts(split)
    if not pool:
        raise ValueError("no prompts to send")
    budget = max_errors if max_errors is not None else max(10, votes // 5)
    result = SimulationResult(
        votes_target=votes,
        config={
            "base_url": base_url,
            "gold": gold if isinstance(gold, str) else gold_spec(gold_fn),
            "flip_rate": flip_rate,
            "comparison_share": comparison_share,
            "users": users,
            "split": split,
            "seed": seed,
            "max_tokens": max_tokens,
            "concurrency": concurrency,
            "auth": auth,
            "temperature": temperature,
            "tie_epsilon": tie_epsilon,
            "thumbs_threshold": thumbs_threshold,
            "thumbs_noise": thumbs_noise,
            "prompts": len(pool),
        },
    )
    start = time.monotonic()
    clients: list[UserClient] = []
    try:
        for u in range(users):
            try:
                clients.append(
                    await open_user(
                        base_url,
                        f"user {u} (seed {seed})",
                        admin_token=admin_token,
                        auth=auth,
                        timeout_s=timeout_s,
                    )
                )
            except ApiError as e:
                raise SimulationError(f"cannot start simulated user {u}: {e}") from e

        next_attempt = 0
        in_flight = 0

        async def attempt(i: int) -> None:
            rng = random.Random(f"{seed}/{i}")
            client = clients[rng.randrange(users)]
            prompt = rng.choice(pool)
            user = judging.user(rng)
            run = _comparison_vote if is_comparison(i, comparison_share) else _chat_vote
            await run(client, user, prompt, max_tokens, result)

        async def worker() -> None:
            nonlocal next_attempt, in_flight
            while result.votes + in_flight < votes and result.errors < budget:
                i = next_attempt
                next_attempt += 1
                in_flight += 1
                try:
                    await attempt(i)
                    result.votes += 1
                except ApiError as e:
                    result.errors += 1
                    result.error_kinds[e.kind] += 1
                finally:
                    in_flight -= 1
                if progress is not None:
                    progress(
                        Progress(
                            result.votes, votes, result.errors, time.monotonic() - start, result
                        )
                    )

        try:
            async with asyncio.TaskGroup() as tg:
                for _ in range(min(concurrency, max(votes, 1))):
                    tg.create_task(worker())
        except ExceptionGroup as group:  # a bug (e.g. in a plug-in gold), not a bad answer
            raise group.exceptions[0] from None
        result.stopped_early = result.votes < votes
    finally:
        for c in clients:
            result.retries.update(c.retries)
            if c.key_id is not None and admin_token:
                with contextlib.suppress(Exception):
                    await revoke_key(base_url, admin_token, c.key_id)
            await c.aclose()
        result.elapsed_s = time.monotonic() - start
    return result


def simulate(
    base_url: str,
    *,
    votes: int,
    gold: Gold | str,
    flip_rate: float = DEFAULT_FLIP_RATE,
    comparison_share: float = 0.5,
    users: int = 20,
    split: Split | None = "train",
    seed: int = 0,
    max_tokens: int | None = None,
    progress: Callable[[Progress], None] | None = None,
    **options: Any,
) -> SimulationResult:
    """Cast `votes` votes on the server at `base_url` through its HTTP API, as `users`
    simulated users judging by `gold` (a function or a `module:function` spec) with
    `flip_rate` label noise. Keyword options are those of `simulate_async` (concurrency,
    admin_token, auth, temperature, tie_epsilon, thumbs_threshold, thumbs_noise,
    max_errors, prompts, timeout_s). Call it outside an event loop."""
    return asyncio.run(
        simulate_async(
            base_url,
            votes=votes,
            gold=gold,
            flip_rate=flip_rate,
            comparison_share=comparison_share,
            users=users,
            split=split,
            seed=seed,
            max_tokens=max_tokens,
            progress=progress,
            **options,
        )
    )
