"""Scripted comparison votes mixed into a round's votes: how far do they move the RM?

The canary rule is not the only thing votes decide: the trainer learns its reward model
from them. An adversary that knows the honest users' taste casts a share of all
comparison votes for the reply those users would rank lower (the worst case for the
reward model), on the same kind of comparisons they see (here: the same pairs of v0's
replies). Like `bench attack`'s adversary, it mints `mints_per_hour` sessions an hour per
address (the product's limit) and votes only from sessions old enough to count, spread
over all it has.

`screened` puts every comparison, honest and scripted, through the product's own
screen (`store.evidence.screen`), as the trainer's snapshot does: honest voters are
aged sessions, each from their own address; the adversary's sessions carry their mint
time and address. The reward model is then trained on what is kept (or on everything,
with the screen off) and measured on the honest held-out pairs only.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from harness.bench.relabel import prompt_text
from harness.simulation.gold import Gold
from store.evidence import Ballot, EvidenceRules, Screening, screen
from trainer.records import ComparisonVote, Snapshot

HONEST_AGE = timedelta(days=1)


@dataclass(frozen=True)
class Adversary:
    share: float  # of all comparison votes cast
    addresses: int = 1
    mints_per_hour: int = 20

    def __post_init__(self) -> None:
        if not 0.0 <= self.share < 1.0:
            raise ValueError("the adversary's share must be in [0, 1)")
        if self.addresses < 1 or self.mints_per_hour < 1:
            raise ValueError("addresses and mints_per_hour must be at least 1")


@dataclass(frozen=True)
class Session:
    since: datetime
    origin: str


@dataclass(frozen=True)
class Poisoned:
    snapshot: Snapshot  # the honest votes and the adversary's
    adversary_ids: frozenset[str]
    sessions: dict[str, Session]  # the adversary's users


def poison(snap: Snapshot, gold: Gold, adv: Adversary, rules: EvidenceRules, seed: int) -> Poisoned:
    """`snap` with the adversary's comparisons added, against `gold` on every one."""
    honest = [c for c in snap.comparisons if c.choice in ("a", "b")]
    if not honest or adv.share == 0.0:
        return Poisoned(snap, frozenset(), {})
    rng = random.Random(seed)
    start = min(c.at for c in snap.comparisons)
    end = max(c.at for c in snap.comparisons)
    span = max(1.0, (end - start).total_seconds())
    n = round(len(snap.comparisons) * adv.share / (1.0 - adv.share))
    mint_every = 3600.0 / adv.mints_per_hour
    trust = rules.trust_age_s
    sessions: dict[str, Session] = {}
    votes: list[ComparisonVote] = []
    # Mints run from `trust` seconds before the honest votes begin, so that the first
    # session counts when they do: the adversary is ready when the round's votes start.
    for i in range(n):
        at = start + timedelta(seconds=rng.uniform(0.0, span))
        minted = int((at - start).total_seconds() // mint_every) + 1  # per address, by `at`
        k = rng.randrange(minted * adv.addresses)
        name = f"adv-{k}"
        sessions.setdefault(
            name,
            Session(
                start
                - timedelta(seconds=trust)
                + timedelta(seconds=(k // adv.addresses) * mint_every),
                f"adv-addr-{k % adv.addresses}",
            ),
        )
        c = rng.choice(honest)
        ga = gold(prompt_text(c.a.prompt), c.a.text)
        gb = gold(prompt_text(c.b.prompt), c.b.text)
        worse = rng.choice("ab") if ga == gb else ("b" if ga > gb else "a")
        votes.append(replace(c, id=f"adv-cmp-{i}", user=name, choice=worse, at=at))
    out = replace(snap, comparisons=tuple(sorted((*snap.comparisons, *votes), key=lambda c: c.at)))
    return Poisoned(out, frozenset(v.id for v in votes), sessions)


def screened(p: Poisoned, rules: EvidenceRules) -> tuple[Snapshot, Screening]:
    """The poisoned snapshot with the comparisons the screen sets aside left out."""
    snap = p.snapshot
    now = snap.window_end
    ballots = []
    for c in snap.comparisons:
        session = p.sessions.get(c.user or "")
        user = c.user or c.id
        since, origin = (
            (session.since, session.origin)
            if session is not None
            else (now - HONEST_AGE, f"honest-{user}")
        )
        ballots.append(Ballot(c.id, user, since, c.a.version, c.b.version, c.choice, c.at, origin))
    s = screen(ballots, rules, now)
    kept = {b.id for b in s.kept}
    return replace(snap, comparisons=tuple(c for c in snap.comparisons if c.id in kept)), s
