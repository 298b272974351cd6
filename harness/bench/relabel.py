"""Stored votes re-voted by simulated users of another taste, on the same replies.

A closed-loop run stores what its users were shown and how they voted. Re-voting those
same comparisons and thumbs with `SimulatedUser` on another gold gives the votes users
with that taste would have cast on exactly those replies, so reward models can be
compared across preferences without generating anything again. The gold also gives
each held-out pair's true order, for the noise ceiling and the RM's accuracy against the
gold (Gao et al. 2023: judge the gold, not the proxy).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from harness.simulation.gold import Gold
from harness.simulation.users import DEFAULT_FLIP_RATE, SimulatedUser
from trainer.records import Messages, Pair, Snapshot


def prompt_text(prompt: Messages) -> str:
    """The text a gold judges a reply against: the last user message."""
    for role, content in reversed(prompt):
        if role == "user":
            return content
    return ""


def relabel(
    snap: Snapshot,
    gold: Gold,
    seed: int = 0,
    flip_rate: float = DEFAULT_FLIP_RATE,
    temperature: float = 0.0,
) -> Snapshot:
    """The snapshot with every comparison and thumb re-voted by a user with taste `gold`
    (seeded; the same votes in the same order give the same result). At temperature 0
    the user picks the gold winner and then flips `flip_rate` of the choices, as
    AlpacaFarm's annotators and the closed-loop benchmark do, so the noise ceiling is
    1 - flip_rate on pairs the gold orders."""
    user = SimulatedUser(gold, random.Random(seed), flip_rate, temperature=temperature)
    comparisons = tuple(
        replace(c, choice=user.compare(prompt_text(c.a.prompt), c.a.text, c.b.text))
        for c in snap.comparisons
    )
    ratings = tuple(
        replace(
            r,
            value=1 if user.rate(prompt_text(r.reply.prompt), r.reply.text).rating == "up" else -1,
        )
        for r in snap.ratings
    )
    return replace(snap, comparisons=comparisons, ratings=ratings)


@dataclass(frozen=True)
class GoldOrder:
    """How held-out pairs stand against the gold: the share the votes got right (the
    ceiling an RM can reach against the votes) and which pairs the gold orders."""

    ceiling: float | None  # votes agreeing with the gold, over pairs the gold orders
    chosen_better: list[bool | None]  # per pair: the gold prefers chosen; None: a gold tie


def gold_order(pairs: Sequence[Pair], gold: Gold) -> GoldOrder:
    order: list[bool | None] = []
    for p in pairs:
        text = prompt_text(p.prompt)
        c, r = gold(text, p.chosen), gold(text, p.rejected)
        order.append(None if c == r else c > r)
    decided = [o for o in order if o is not None]
    return GoldOrder(sum(decided) / len(decided) if decided else None, order)


def accuracy_against_gold(
    order: GoldOrder, chosen_scores: Sequence[float], rejected_scores: Sequence[float]
) -> float | None:
    """The RM's accuracy at ordering each pair as the gold does (score ties half)."""
    hits = [
        (1.0 if (c > r) == better else 0.0) if c != r else 0.5
        for better, c, r in zip(order.chosen_better, chosen_scores, rejected_scores, strict=True)
        if better is not None
    ]
    return sum(hits) / len(hits) if hits else None


@dataclass(frozen=True)
class GoldProfile:
    """What a gold makes of the snapshot's replies: how much it follows reply length, and
    how often it is met (a gold met by few replies gives few votes any signal)."""

    replies: int
    length_corr: float | None  # Pearson correlation of the gold score with reply words
    base_rate: float | None  # share of replies the gold scores above 0.5
    mean: float | None


def gold_profile(snap: Snapshot, gold: Gold) -> GoldProfile:
    """`GoldProfile` over the snapshot's distinct (prompt, reply) texts, compared or rated."""
    seen = {(prompt_text(r.prompt), r.text) for c in snap.comparisons for r in (c.a, c.b)}
    seen |= {(prompt_text(v.reply.prompt), v.reply.text) for v in snap.ratings}
    if not seen:
        return GoldProfile(0, None, None, None)
    scores = np.array([gold(p, t) for p, t in seen])
    words = np.array([len(t.split()) for _, t in seen], dtype=float)
    varies = scores.std() > 0 and words.std() > 0
    corr = float(np.corrcoef(scores, words)[0, 1]) if varies else None
    return GoldProfile(len(scores), corr, float((scores > 0.5).mean()), float(scores.mean()))
