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
    snap: Snapshot, gold: Gold, seed: int = 0, flip_rate: float = DEFAULT_FLIP_RATE
) -> Snapshot:
    """The snapshot with every comparison and thumb re-voted by a user with taste `gold`
    (seeded; the same votes in the same order give the same result)."""
    user = SimulatedUser(gold, random.Random(seed), flip_rate)
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
