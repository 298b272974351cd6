"""Synthetic votes written straight into storage, for benchmarks and end-to-end tests.

Each event is a voted comparison of two replies or a thumbs rating of one, judged by a
gold function `gold(reply) -> score`: the higher-scoring reply wins a comparison (flipped
with probability `flip`), and a reply is rated up when its score exceeds
`thumbs_threshold` (also flipped with `flip`). Rows look exactly like the ones the API
writes, so a training round reads them the same way.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy.orm import Session, sessionmaker

from store.db import repository
from store.db.models import (
    Comparison,
    ComparisonChoice,
    Generation,
    GenerationStatus,
    Rating,
    User,
    UserKind,
)
from store.db.session import session_scope


@dataclass
class _Rows:
    """The rows of one seeding, built in memory. Ids are drawn from the seeded rng, so the
    same arguments write the same votes every run."""

    rng: random.Random
    version_id: int
    flip: float
    counts: dict[str, int] = field(
        default_factory=lambda: {"comparisons": 0, "ratings": 0, "generations": 0}
    )
    generations: list[Generation] = field(default_factory=list)
    votes: list[Comparison | Rating] = field(default_factory=list)

    def rid(self, prefix: str) -> str:
        return f"{prefix}-{self.rng.getrandbits(128):032x}"

    def flipped(self) -> bool:
        return self.rng.random() < self.flip

    def generation(self, prompt: list[dict[str, str]], text: str, at: datetime) -> str:
        gid = self.rid("gen")
        self.generations.append(
            Generation(
                id=gid,
                policy_version_id=self.version_id,
                prompt=prompt,
                text=text,
                sampling={"temperature": 0.7},
                status=GenerationStatus.COMPLETED,
                finish_reason="stop",
                prompt_tokens=len(str(prompt)) // 4,
                completion_tokens=len(text) // 4,
                latency_ms=100.0,
                ttft_ms=10.0,
                source="comparison",
                created_at=at,
            )
        )
        self.counts["generations"] += 1
        return gid

    def comparison(
        self,
        prompt: list[dict[str, str]],
        user: str,
        a: str,
        b: str,
        ga: float,
        gb: float,
        at: datetime,
    ) -> None:
        """A voted comparison: the higher gold wins (unless flipped), equal golds tie."""
        if ga == gb:
            choice = ComparisonChoice.TIE
        else:
            a_wins = (ga > gb) != self.flipped()
            choice = ComparisonChoice.A if a_wins else ComparisonChoice.B
        self.votes.append(
            Comparison(
                id=self.rid("cmp"),
                user_id=user,
                prompt=prompt,
                generation_a_id=self.generation(prompt, a, at),
                generation_b_id=self.generation(prompt, b, at),
                choice=choice,
                created_at=at,
                voted_at=at,
            )
        )
        self.counts["comparisons"] += 1

    def rating(
        self, prompt: list[dict[str, str]], user: str, text: str, gold_up: bool, at: datetime
    ) -> None:
        """A thumbs rating: up when the gold says so, unless flipped."""
        up = gold_up != self.flipped()
        self.votes.append(
            Rating(
                generation_id=self.generation(prompt, text, at),
                user_id=user,
                value=1 if up else -1,
                created_at=at,
            )
        )
        self.counts["ratings"] += 1


def _aged_users(user_ids: Sequence[str], since: datetime) -> list[User]:
    """Voters whose sessions began before their first vote, as real ones did."""
    return [User(id=u, kind=UserKind.ANONYMOUS, created_at=since) for u in user_ids]


def seed_votes(
    sessions: sessionmaker[Session],
    *,
    events: int,
    prompts: Sequence[str],
    reply: Callable[[random.Random], str],
    gold: Callable[[str], float],
    comparison_share: float = 0.6,
    flip: float = 0.0,
    thumbs_threshold: float = 0.5,
    users: int | None = None,
    seed: int = 0,
    now: datetime | None = None,
    version: str = "v0",
) -> dict[str, int]:
    """Write `events` votes on replies of policy `version`; returns what was written.

    `users`: that many voters. By default eight groups of voters, about one voter per 8
    events, so that no one passes the vote screen's cap per voter; the votes themselves
    (prompts, replies, choices) are drawn exactly as with eight voters."""
    rng = random.Random(seed)
    now = now or datetime.now(UTC)
    spread = random.Random(seed + 7919)  # who in a group votes: outside the votes' stream
    per_group = max(1, events // 64) if users is None else 1
    with session_scope(sessions) as s:
        v = repository.version_by_name(s, version)
        if v is None:
            raise LookupError(f"no policy version {version}")
        rows = _Rows(rng, v.id, flip)
        leads = [rows.rid("usr") for _ in range(users or 8)]
        groups = [
            [lead] + [f"usr-{spread.getrandbits(128):032x}" for _ in range(per_group - 1)]
            for lead in leads
        ]
        s.add_all(
            _aged_users([u for g in groups for u in g], now - timedelta(seconds=events * 2 + 3600))
        )
        s.flush()
        for i in range(events):
            at = now - timedelta(seconds=(events - i) * 2 + 1)
            prompt = [{"role": "user", "content": rng.choice(prompts)}]
            user = spread.choice(groups[rng.randrange(len(groups))])
            if rng.random() < comparison_share:
                a, b = reply(rng), reply(rng)
                rows.comparison(prompt, user, a, b, gold(a), gold(b), at)
            else:
                text = reply(rng)
                rows.rating(prompt, user, text, gold(text) > thumbs_threshold, at)
        # Generations first: without ORM relationships the flush does not order by FK.
        s.add_all(rows.generations)
        s.flush()
        s.add_all(rows.votes)
    return rows.counts


# A small stand-in for real traffic: everyday prompts, replies of one to six sentences.
BENCH_PROMPTS: tuple[str, ...] = tuple(
    f"{ask} {topic}"
    for ask in (
        "Explain briefly:",
        "Give me advice on",
        "What should I know about",
        "Write a short note on",
        "Help me understand",
    )
    for topic in (
        "saving money each month.",
        "learning a new language.",
        "how vaccines work.",
        "planning a weekend trip.",
        "writing a cover letter.",
        "keeping houseplants alive.",
        "sleeping better.",
        "the difference between weather and climate.",
        "starting to run.",
        "cooking rice well.",
        "what a reward model is.",
        "reading more books.",
    )
)
SENTENCES: tuple[str, ...] = (
    "Start small and build the habit before you worry about the details.",
    "The most important thing is to be consistent from one week to the next.",
    "Many people find it helps to write the plan down and keep it somewhere visible.",
    "If something does not work, change one thing at a time and see what happens.",
    "There is no single right answer, but a few principles go a long way.",
    "Ask someone with experience; a short conversation can save hours of trial and error.",
    "Set a realistic goal for the first month and review it at the end.",
    "Keep it simple: the fewer steps there are, the more likely you are to follow them.",
    "Track your progress, because seeing it is the best motivation there is.",
    "Be patient with yourself, since most skills take a few months to feel natural.",
    "A good first step is to find out what you already do well.",
    "In short, plan a little, act a little, and adjust as you learn.",
)


def bench_reply(rng: random.Random) -> str:
    """One to six sentences: replies of very different lengths, like a chat model's."""
    return " ".join(rng.sample(SENTENCES, rng.randint(1, 6)))


def concise(text: str) -> float:
    """Gold preference for benchmarks: shorter replies are better."""
    return -float(len(text.split()))


def write_votes(
    sessions: sessionmaker[Session],
    comparisons: Sequence[tuple[str, str, str, str]],
    ratings: Sequence[tuple[str, str, int]],
    start: datetime,
    seed: int = 0,
    users: int | None = None,
    version: str = "v0",
) -> dict[str, int]:
    """Votes already decided, written as the API stores them, a second apart from `start`:
    comparisons as (prompt, reply a, reply b, "a" | "b" | "tie") and thumbs as (prompt,
    reply, +1 | -1), all on replies of policy `version`. `users`: that many voters; by
    default one per 8 votes, so that the vote screen's cap per voter keeps them all."""
    rng = random.Random(seed)
    users = users or max(1, -(-(len(comparisons) + len(ratings)) // 8))
    choices = {"a": ComparisonChoice.A, "b": ComparisonChoice.B, "tie": ComparisonChoice.TIE}
    with session_scope(sessions) as s:
        v = repository.version_by_name(s, version)
        if v is None:
            raise LookupError(f"no policy version {version}")
        rows = _Rows(rng, v.id, 0.0)
        user_ids = [rows.rid("usr") for _ in range(users)]
        s.add_all(_aged_users(user_ids, start - timedelta(hours=1)))
        s.flush()
        at = start
        for prompt, a, b, choice in comparisons:
            at += timedelta(seconds=1)
            msgs = [{"role": "user", "content": prompt}]
            rows.votes.append(
                Comparison(
                    id=rows.rid("cmp"),
                    user_id=rng.choice(user_ids),
                    prompt=msgs,
                    generation_a_id=rows.generation(msgs, a, at),
                    generation_b_id=rows.generation(msgs, b, at),
                    choice=choices[choice],
                    created_at=at,
                    voted_at=at,
                )
            )
            rows.counts["comparisons"] += 1
        for prompt, text, value in ratings:
            at += timedelta(seconds=1)
            msgs = [{"role": "user", "content": prompt}]
            rows.votes.append(
                Rating(
                    generation_id=rows.generation(msgs, text, at),
                    user_id=rng.choice(user_ids),
                    value=value,
                    created_at=at,
                )
            )
            rows.counts["ratings"] += 1
        s.add_all(rows.generations)
        s.flush()
        s.add_all(rows.votes)
    return rows.counts
