"""Votes to datasets: preference pairs, single-reply labels and the train/held-out split.

Pure functions over `trainer.records` types (no database, no torch), so every rule about
which vote becomes which training example is tested by hand-built records:

- a comparison voted ``a`` or ``b`` is one pair, winner over loser (source "comparison");
- a ``tie`` is two half-pairs (a over b and b over a, each `tie_weight`, source "tie") or
  nothing when `tie_weight` is 0;
- ``both_bad`` is no pair but two replies labelled bad (source "both_bad");
- thumbs make pairs only within one prompt: every up-rated reply over every down-rated
  reply with a different text (source "thumbs"), capped per prompt; and every live rating
  is one labelled reply (source "thumbs");
- a pair whose two texts are the same (after stripping) teaches nothing and is dropped.

Prompts are split into train and held-out by a stable hash of the prompt, so a prompt is
on the same side in every round and no held-out prompt leaks into training. A second,
independent hash splits the training pairs in halves for the check reward model.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TypeVar

from trainer.config import DataConfig
from trainer.records import (
    ComparisonVote,
    Messages,
    Pair,
    RatingVote,
    Reply,
    RoundData,
    Snapshot,
    Unpaired,
    prompt_key,
)

SOURCE_COMPARISON = "comparison"
SOURCE_TIE = "tie"
SOURCE_THUMBS = "thumbs"
SOURCE_BOTH_BAD = "both_bad"

_T = TypeVar("_T")


def _same_text(a: str, b: str) -> bool:
    return a.strip() == b.strip()


# --- comparisons -------------------------------------------------------------------------


@dataclass
class _ComparisonStats:
    identical: int = 0
    ties_dropped: int = 0


def _comparison_pairs(
    votes: Iterable[ComparisonVote], tie_weight: float, stats: _ComparisonStats
) -> list[Pair]:
    out: list[Pair] = []
    for v in votes:
        if v.choice not in ("a", "b", "tie"):
            continue  # both_bad (and anything unknown) makes no pair
        if _same_text(v.a.text, v.b.text):
            stats.identical += 1
            continue
        if v.choice == "tie":
            if tie_weight <= 0:
                stats.ties_dropped += 1
                continue
            out.append(Pair(v.a.prompt, v.a.text, v.b.text, tie_weight, SOURCE_TIE, v.at))
            out.append(Pair(v.a.prompt, v.b.text, v.a.text, tie_weight, SOURCE_TIE, v.at))
            continue
        win, lose = (v.a, v.b) if v.choice == "a" else (v.b, v.a)
        out.append(Pair(win.prompt, win.text, lose.text, 1.0, SOURCE_COMPARISON, v.at))
    return out


def comparison_pairs(votes: Iterable[ComparisonVote], tie_weight: float) -> list[Pair]:
    """Pairs from voted comparisons, in vote order.

    "a"/"b": the winner over the loser, weight 1. "tie": both ways, each `tie_weight`,
    or nothing when `tie_weight` <= 0. "both_bad": nothing (see `unpaired`). A comparison
    of two replies with the same text (after stripping) makes nothing.
    """
    return _comparison_pairs(votes, tie_weight, _ComparisonStats())


# --- thumbs ------------------------------------------------------------------------------


@dataclass
class _Side:
    reply: Reply
    at: datetime  # its latest vote on this side


def _thumb_pairs(
    ratings: Iterable[RatingVote], weight: float, max_per_prompt: int
) -> tuple[list[Pair], int]:
    """The thumb pairs and how many up/down reply pairs were dropped for equal texts."""
    groups: dict[Messages, tuple[dict[str, _Side], dict[str, _Side]]] = {}
    for r in ratings:
        if r.value == 0:
            continue
        ups, downs = groups.setdefault(r.reply.prompt, ({}, {}))
        side = ups if r.value > 0 else downs
        seen = side.get(r.reply.generation_id)
        if seen is None:
            side[r.reply.generation_id] = _Side(r.reply, r.at)
        elif r.at > seen.at:
            seen.at = r.at

    out: list[Pair] = []
    identical = 0
    for ups, downs in groups.values():
        candidates: list[tuple[_Side, _Side]] = []
        for uid in sorted(ups):
            for did in sorted(downs):
                if uid == did:
                    continue  # one reply voted up by one user and down by another
                up, down = ups[uid], downs[did]
                if _same_text(up.reply.text, down.reply.text):
                    identical += 1
                    continue
                candidates.append((up, down))
        for up, down in _spread(candidates, max_per_prompt):
            out.append(
                Pair(
                    up.reply.prompt,
                    up.reply.text,
                    down.reply.text,
                    weight,
                    SOURCE_THUMBS,
                    max(up.at, down.at),
                )
            )
    return out, identical


def _spread(candidates: list[tuple[_Side, _Side]], cap: int) -> list[tuple[_Side, _Side]]:
    """At most `cap` candidates, preferring replies used least so far (then by ids).

    Deterministic, and under the cap it covers as many distinct replies as it can instead
    of pairing the first up-rated reply with every down-rated one.
    """
    if cap <= 0:
        return []
    if len(candidates) <= cap:
        return candidates
    uses: dict[str, int] = {}
    left = list(candidates)
    chosen: list[tuple[_Side, _Side]] = []
    while left and len(chosen) < cap:

        def cost(c: tuple[_Side, _Side]) -> tuple[int, int, str, str]:
            u, d = c[0].reply.generation_id, c[1].reply.generation_id
            nu, nd = uses.get(u, 0), uses.get(d, 0)
            return (max(nu, nd), nu + nd, u, d)

        best = min(left, key=cost)
        left.remove(best)
        chosen.append(best)
        for side in best:
            gid = side.reply.generation_id
            uses[gid] = uses.get(gid, 0) + 1
    return chosen


def thumb_pairs(ratings: Iterable[RatingVote], weight: float, max_per_prompt: int) -> list[Pair]:
    """Pairs from thumbs: within each prompt, an up-rated reply over a down-rated one.

    A reply is up-rated (down-rated) if any live rating of it is up (down); a reply never
    pairs with itself, nor with another reply of the same text. Each pair has `weight`,
    source "thumbs" and the later of the two replies' latest votes as its time. Prompts come
    in the order of their first rating; within a prompt at most `max_per_prompt` pairs are
    kept, chosen deterministically to cover as many distinct replies as possible.
    """
    return _thumb_pairs(ratings, weight, max_per_prompt)[0]


# --- single replies ----------------------------------------------------------------------


def unpaired(
    ratings: Iterable[RatingVote], comparisons: Iterable[ComparisonVote]
) -> list[Unpaired]:
    """Replies judged on their own: one per rating (up is True), two bad ones per both_bad."""
    out = [
        Unpaired(r.reply.prompt, r.reply.text, r.value > 0, SOURCE_THUMBS, r.at)
        for r in ratings
        if r.value != 0
    ]
    for c in comparisons:
        if c.choice == "both_bad":
            out.append(Unpaired(c.a.prompt, c.a.text, False, SOURCE_BOTH_BAD, c.at))
            out.append(Unpaired(c.b.prompt, c.b.text, False, SOURCE_BOTH_BAD, c.at))
    return out


# --- dedupe ------------------------------------------------------------------------------


def dedupe_pairs(pairs: Iterable[Pair]) -> list[Pair]:
    """Identical (prompt, chosen, rejected, source) pairs merged, first-seen order.

    The merged pair's weight is the sum of the weights and its time the latest.
    """
    merged: dict[tuple[Messages, str, str, str], Pair] = {}
    for p in pairs:
        key = (p.prompt, p.chosen, p.rejected, p.source)
        old = merged.get(key)
        merged[key] = (
            p if old is None else replace(old, weight=old.weight + p.weight, at=max(old.at, p.at))
        )
    return list(merged.values())


def dedupe_unpaired(items: Iterable[Unpaired]) -> list[Unpaired]:
    """Identical (prompt, completion, label, source) items merged into one with the latest time."""
    merged: dict[tuple[Messages, str, bool, str], Unpaired] = {}
    for u in items:
        key = (u.prompt, u.completion, u.label, u.source)
        old = merged.get(key)
        merged[key] = u if old is None else replace(old, at=max(old.at, u.at))
    return list(merged.values())


# --- splits ------------------------------------------------------------------------------


def _unit(hexdigest: str) -> float:
    return int(hexdigest[:8], 16) / 16**8


def is_heldout(prompt: Messages, fraction: float) -> bool:
    """Whether `prompt` is held out: stable across rounds and processes (a hash, no RNG)."""
    return _unit(prompt_key(prompt)) < fraction


def half(prompt: Messages) -> int:
    """0 or 1: which half of the training pairs `prompt` belongs to.

    From a hash independent of `is_heldout`'s, so both halves have the same mix of prompts.
    """
    digest = hashlib.sha256(("half:" + prompt_key(prompt)).encode()).hexdigest()
    return int(digest[:8], 16) % 2


def split_halves(pairs: Iterable[Pair]) -> tuple[list[Pair], list[Pair]]:
    """Pairs split by `half` of their prompt: (half 0, half 1); order kept within each."""
    halves: tuple[list[Pair], list[Pair]] = ([], [])
    for p in pairs:
        halves[half(p.prompt)].append(p)
    return halves


def _distinct_prompts(
    given: Sequence[Messages], voted: Sequence[Messages], cap: int
) -> list[Messages]:
    """`given` (newest first) then voted prompts it lacks, distinct, at most `cap`.

    Over the cap, voted prompts are kept before prompts nobody voted on.
    """
    order: list[Messages] = []
    seen: set[Messages] = set()
    for p in (*given, *voted):
        if p not in seen:
            seen.add(p)
            order.append(p)
    if len(order) <= cap:
        return order
    voted_set = set(voted)
    n_voted = sum(1 for p in order if p in voted_set)
    room = max(0, cap - n_voted)  # for prompts without votes
    out: list[Messages] = []
    for p in order:
        if len(out) >= cap:
            break
        if p in voted_set:
            out.append(p)
        elif room > 0:
            out.append(p)
            room -= 1
    return out


# --- a round -----------------------------------------------------------------------------


def _vote_counts(snapshot: Snapshot) -> dict[str, int]:
    """The votes a round read, by kind."""
    ratings, comparisons = snapshot.ratings, snapshot.comparisons
    return {
        "ratings": len(ratings),
        "ratings_up": sum(1 for r in ratings if r.value > 0),
        "ratings_down": sum(1 for r in ratings if r.value < 0),
        "comparisons": len(comparisons),
        "ties": sum(1 for c in comparisons if c.choice == "tie"),
        "both_bad": sum(1 for c in comparisons if c.choice == "both_bad"),
    }


@dataclass(frozen=True)
class _Examples:
    """The pairs and single replies made from a round's votes, deduped, and counts of how
    many each rule made or dropped."""

    pairs: list[Pair]
    singles: list[Unpaired]
    counts: dict[str, int]


def _make_examples(snapshot: Snapshot, cfg: DataConfig) -> _Examples:
    """Every vote through the rules of the module docstring, then dedupe."""
    ratings, comparisons = snapshot.ratings, snapshot.comparisons
    cstats = _ComparisonStats()
    from_comparisons = _comparison_pairs(comparisons, cfg.tie_weight, cstats)
    from_thumbs, thumbs_identical = _thumb_pairs(
        ratings, cfg.thumb_pair_weight, cfg.max_thumb_pairs_per_prompt
    )
    raw_pairs = from_comparisons + from_thumbs
    pairs = dedupe_pairs(raw_pairs)
    raw_unpaired = unpaired(ratings, comparisons)
    singles = dedupe_unpaired(raw_unpaired)
    counts = {
        "comparison_pairs": sum(1 for p in from_comparisons if p.source == SOURCE_COMPARISON),
        "tie_pairs": sum(1 for p in from_comparisons if p.source == SOURCE_TIE),
        "thumb_pairs": len(from_thumbs),
        "ties_dropped": cstats.ties_dropped,
        "identical_dropped": cstats.identical + thumbs_identical,
        "duplicates_merged": len(raw_pairs) - len(pairs),
        "unpaired_merged": len(raw_unpaired) - len(singles),
        "pairs": len(pairs),
        "unpaired": len(singles),
    }
    return _Examples(pairs, singles, counts)


def _round_prompts(snapshot: Snapshot, cap: int) -> list[Messages]:
    """The prompts for rollouts and evaluation: the snapshot's, then the voted ones it
    lacks, most recently voted first (`_distinct_prompts` caps them)."""
    votes: list[tuple[datetime, Messages]] = [(r.at, r.reply.prompt) for r in snapshot.ratings]
    for c in snapshot.comparisons:
        votes += [(c.at, c.a.prompt), (c.at, c.b.prompt)]
    voted = [p for _, p in sorted(votes, key=lambda v: v[0], reverse=True)]
    return _distinct_prompts(snapshot.prompts, voted, cap)


def _split(
    items: Iterable[_T], prompt_of: Callable[[_T], Messages], fraction: float
) -> tuple[list[_T], list[_T]]:
    """(train, held-out) by `is_heldout` of each item's prompt; order kept within each."""
    train: list[_T] = []
    heldout: list[_T] = []
    for item in items:
        (heldout if is_heldout(prompt_of(item), fraction) else train).append(item)
    return train, heldout


def build_round_data(snapshot: Snapshot, cfg: DataConfig) -> RoundData:
    """The datasets of one round from its snapshot; see the module docstring for the rules.

    `counts` (all ints):
    ratings, ratings_up, ratings_down, comparisons, ties, both_bad: the votes read;
    comparison_pairs, tie_pairs, thumb_pairs: pairs made, before dedupe;
    ties_dropped: ties that made nothing because data.tie_weight is 0;
    identical_dropped: comparisons and up/down reply pairs whose two texts were the same;
    duplicates_merged, unpaired_merged: pairs and single replies merged into an identical one;
    pairs, unpaired: after dedupe; train_pairs, heldout_pairs, train_unpaired,
    heldout_unpaired: their split; new_pairs: pairs whose latest vote is at or after
    `snapshot.since` (all when it is None); prompts, train_prompts, heldout_prompts:
    distinct prompts kept for rollouts and evaluation.
    """
    made = _make_examples(snapshot, cfg)
    prompts = _round_prompts(snapshot, cfg.max_prompts)
    frac, since = cfg.heldout_fraction, snapshot.since
    train_pairs, heldout_pairs = _split(made.pairs, lambda p: p.prompt, frac)
    train_unpaired, heldout_unpaired = _split(made.singles, lambda u: u.prompt, frac)
    train_prompts, heldout_prompts = _split(prompts, lambda p: p, frac)
    counts = {
        **_vote_counts(snapshot),
        **made.counts,
        "train_pairs": len(train_pairs),
        "heldout_pairs": len(heldout_pairs),
        "train_unpaired": len(train_unpaired),
        "heldout_unpaired": len(heldout_unpaired),
        "new_pairs": sum(1 for p in made.pairs if since is None or p.at >= since),
        "prompts": len(prompts),
        "train_prompts": len(train_prompts),
        "heldout_prompts": len(heldout_prompts),
    }
    return RoundData(
        train_pairs=tuple(train_pairs),
        heldout_pairs=tuple(heldout_pairs),
        train_unpaired=tuple(train_unpaired),
        heldout_unpaired=tuple(heldout_unpaired),
        train_prompts=tuple(train_prompts),
        heldout_prompts=tuple(heldout_prompts),
        since=since,
        counts=counts,
    )


def _n(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def stop_reason(data: RoundData, cfg: DataConfig) -> str | None:
    """Why the round must stop before the reward model, as a sentence; None when it may go on.

    Reads `data.counts` as `build_round_data` fills them.
    """
    c = data.counts
    ratings, comparisons = c.get("ratings", 0), c.get("comparisons", 0)
    ups, downs = c.get("ratings_up", 0), c.get("ratings_down", 0)
    ties, both_bad = c.get("ties", 0), c.get("both_bad", 0)
    won = c.get("comparison_pairs", 0)
    thumbs = c.get("thumb_pairs", 0)
    n_train, n_heldout = len(data.train_pairs), len(data.heldout_pairs)

    if ratings == 0 and comparisons == 0:
        return (
            "no feedback in the window: 0 ratings and 0 comparisons were voted "
            f"(data.replay_days = {cfg.replay_days:g} days of older votes are replayed)."
        )
    if comparisons > 0 and ties == comparisons and won + thumbs == 0:
        return (
            f"every comparison was a tie; {_n(ties, 'tie')} and no other pairs "
            f"({_n(ratings, 'rating')} made no up-vs-down pair), so there is no preference "
            f"to learn (data.tie_weight = {cfg.tie_weight:g})."
        )
    if ratings > 0 and won == 0 and (downs == 0 or ups == 0):
        way, n = ("up", ups) if downs == 0 else ("down", downs)
        which = f"all {n} ratings are" if n > 1 else "the only rating is"
        return (
            f"{which} {way}; a reward model needs both good and bad "
            f"replies, and the {_n(comparisons, 'comparison')} picked no winner "
            f"({_n(ties, 'tie')}, {both_bad} both_bad)."
        )
    if won + thumbs == 0:
        return (
            f"no preference pairs: {_n(comparisons, 'comparison')} picked no winner "
            f"({_n(ties, 'tie')}, {both_bad} both_bad, "
            f"{c.get('identical_dropped', 0)} with identical texts) and the {ups} up and "
            f"{downs} down ratings share no prompt with different replies."
        )
    if n_train < cfg.min_train_pairs:
        return (
            f"only {_n(n_train, 'training pair')} ({won} from comparisons, {thumbs} from "
            f"thumbs, {c.get('tie_pairs', 0)} from ties, before the held-out split); "
            f"data.min_train_pairs is {cfg.min_train_pairs}."
        )
    if n_heldout < cfg.min_heldout_pairs:
        return (
            f"only {_n(n_heldout, 'held-out pair')} against {n_train} training pairs; "
            f"data.min_heldout_pairs is {cfg.min_heldout_pairs} "
            f"(data.heldout_fraction = {cfg.heldout_fraction:g} of prompts are held out)."
        )
    return None
