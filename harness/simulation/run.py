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
    pick = user.judge(prompt.text, cmp.a.text, cmp.b.text)
    va, vb = await client.vote(cmp.id, pick.choice, pick.reason)
    result.comparison_votes[pick.choice] += 1
    result.flipped += pick.flipped
    if pick.choice != "tie" and pick.gold_a != pick.gold_b:
        result.gold_decided += 1
        result.gold_agreed += (pick.choice == "a") == (pick.gold_a > pick.gold_b)
        result.agree_expected_sum += user.expected_agreement(pick.gold_a, pick.gold_b)
    for version, gold in ((va, pick.gold_a), (vb, pick.gold_b)):
        stats = result.version(version or "?")
        stats.replies += 1
        stats.gold_sum += gold
    if va is None or vb is None or va == vb:
        return
    if pick.choice == "tie":
        result.version(va).ties += 1
        result.version(vb).ties += 1
    else:
        winner, loser = (va, vb) if pick.choice == "a" else (vb, va)
        result.version(winner).wins += 1
        result.version(loser).losses += 1


@dataclass(frozen=True)
class _Plan:
    """What decides attempt i: its user, prompt, kind and judgment noise all come from
    `random.Random(f"{seed}/{i}")`, so a run is reproducible up to what the server samples."""

    pool: list[Prompt]
    judging: _Judging
    seed: int
    comparison_share: float
    max_tokens: int | None

    async def attempt(
        self, i: int, clients: Sequence[UserClient], result: SimulationResult
    ) -> None:
        rng = random.Random(f"{self.seed}/{i}")
        client = clients[rng.randrange(len(clients))]
        prompt = rng.choice(self.pool)
        user = self.judging.user(rng)
        run = _comparison_vote if is_comparison(i, self.comparison_share) else _chat_vote
        await run(client, user, prompt, self.max_tokens, result)


def simulated_address(user: int, seed: int) -> str:
    """A private address per simulated user and run (the seed changes every round)."""
    return f"10.{seed % 250}.{user // 250 % 250}.{user % 250 + 1}"


@dataclass(frozen=True)
class _Accounts:
    """How the simulated users sign in (a session or an API key) and out (the key revoked)."""

    base_url: str
    admin_token: str | None
    auth: str
    timeout_s: float

    async def open(self, u: int, seed: int) -> UserClient:
        try:
            return await open_user(
                self.base_url,
                f"user {u} (seed {seed})",
                admin_token=self.admin_token,
                auth=self.auth,
                timeout_s=self.timeout_s,
                address=simulated_address(u, seed),
            )
        except ApiError as e:
            raise SimulationError(f"cannot start simulated user {u}: {e}") from e

    async def close(self, client: UserClient) -> None:
        if client.key_id is not None and self.admin_token:
            with contextlib.suppress(Exception):
                await revoke_key(self.base_url, self.admin_token, client.key_id)
        await client.aclose()


@dataclass
class _VoteRun:
    """One run's shared state: its workers take attempts in turn until the votes are
    stored or the error budget is spent."""

    plan: _Plan
    result: SimulationResult
    budget: int  # failed attempts allowed before the run stops early
    progress: Callable[[Progress], None] | None
    start: float  # time.monotonic() at the start
    clients: list[UserClient] = field(default_factory=list)
    next_attempt: int = 0
    in_flight: int = 0

    def more(self) -> bool:
        """Whether a worker should take another attempt: the attempts under way count
        towards the votes, so the run does not overshoot its target."""
        result = self.result
        return result.votes + self.in_flight < result.votes_target and result.errors < self.budget

    async def worker(self) -> None:
        result = self.result
        while self.more():
            i = self.next_attempt
            self.next_attempt += 1
            self.in_flight += 1
            try:
                await self.plan.attempt(i, self.clients, result)
                result.votes += 1
            except ApiError as e:
                result.errors += 1
                result.error_kinds[e.kind] += 1
            finally:
                self.in_flight -= 1
            if self.progress is not None:
                elapsed = time.monotonic() - self.start
                self.progress(
                    Progress(result.votes, result.votes_target, result.errors, elapsed, result)
                )


async def _cast_votes(
    run: _VoteRun, accounts: _Accounts, *, users: int, concurrency: int
) -> SimulationResult:
    """Sign the users in, let `concurrency` workers cast the votes, and sign them out
    (revoking their API keys) whatever happened."""
    result = run.result
    try:
        for u in range(users):
            run.clients.append(await accounts.open(u, run.plan.seed))
        try:
            async with asyncio.TaskGroup() as tg:
                for _ in range(min(concurrency, max(result.votes_target, 1))):
                    tg.create_task(run.worker())
        except ExceptionGroup as group:  # a bug (e.g. in a plug-in gold), not a bad answer
            raise group.exceptions[0] from None
        result.stopped_early = result.votes < result.votes_target
    finally:
        for c in run.clients:
            result.retries.update(c.retries)
            await accounts.close(c)
        result.elapsed_s = time.monotonic() - run.start
    return result


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
    config: dict[str, Any] = {
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
    }
    run = _VoteRun(
        plan=_Plan(pool, judging, seed, comparison_share, max_tokens),
        result=SimulationResult(votes_target=votes, config=config),
        budget=max_errors if max_errors is not None else max(10, votes // 5),
        progress=progress,
        start=time.monotonic(),
    )
    accounts = _Accounts(base_url, admin_token, auth, timeout_s)
    return await _cast_votes(run, accounts, users=users, concurrency=concurrency)


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
