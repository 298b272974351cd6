"""Votes to datasets (trainer.data): every vote shape, dedupe, splits and stop reasons."""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest

from trainer.config import DataConfig
from trainer.data import (
    build_round_data,
    comparison_pairs,
    dedupe_pairs,
    dedupe_unpaired,
    half,
    is_heldout,
    split_halves,
    stop_reason,
    thumb_pairs,
    unpaired,
)
from trainer.records import (
    ComparisonVote,
    Messages,
    Pair,
    RatingVote,
    Reply,
    Snapshot,
    Unpaired,
)

T = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
H = timedelta(hours=1)

P1: Messages = (("user", "What is 2+2?"),)
P2: Messages = (("system", "Be brief."), ("user", "Name a colour"))


def prompt(i: int) -> Messages:
    return (("user", f"question {i}"),)


def prompts_on(heldout: bool, n: int, fraction: float = 0.2) -> list[Messages]:
    """The first `n` prompts `question i` on the given side of the split."""
    out = [p for p in (prompt(i) for i in range(10_000)) if is_heldout(p, fraction) == heldout]
    return out[:n]


def reply(gid: str, text: str, p: Messages = P1, version: str = "v0") -> Reply:
    return Reply(gid, p, text, version, True)


_ids = iter(range(1, 1_000_000))


def rate(r: Reply, value: int, at: datetime = T, user: str = "u1") -> RatingVote:
    return RatingVote(next(_ids), user, r, value, at)


def cmp(
    a: Reply, b: Reply, choice: str, at: datetime = T, user: str | None = "u1"
) -> ComparisonVote:
    return ComparisonVote(f"cmp-{next(_ids)}", user, a, b, choice, at)


A = reply("g-a", "4")
B = reply("g-b", "Four.")


# --- comparisons -------------------------------------------------------------------------


def test_a_wins_and_b_wins_put_the_winner_in_chosen() -> None:
    pairs = comparison_pairs([cmp(A, B, "a", T), cmp(A, B, "b", T + H)], tie_weight=0.0)
    assert pairs == [
        Pair(P1, "4", "Four.", 1.0, "comparison", T),
        Pair(P1, "Four.", "4", 1.0, "comparison", T + H),
    ]


def test_tie_is_dropped_when_tie_weight_is_zero() -> None:
    assert comparison_pairs([cmp(A, B, "tie")], tie_weight=0.0) == []


def test_tie_is_two_weighted_pairs_both_ways() -> None:
    pairs = comparison_pairs([cmp(A, B, "tie", T)], tie_weight=0.5)
    assert pairs == [
        Pair(P1, "4", "Four.", 0.5, "tie", T),
        Pair(P1, "Four.", "4", 0.5, "tie", T),
    ]


def test_both_bad_is_no_pair_but_two_negatives() -> None:
    vote = cmp(A, B, "both_bad", T + H)
    assert comparison_pairs([vote], tie_weight=1.0) == []
    assert unpaired([], [vote]) == [
        Unpaired(P1, "4", False, "both_bad", T + H),
        Unpaired(P1, "Four.", False, "both_bad", T + H),
    ]


@pytest.mark.parametrize("choice", ["a", "b", "tie"])
def test_identical_texts_make_no_pair(choice: str) -> None:
    same = reply("g-c", "  4\n")  # equal to A's "4" once stripped
    assert comparison_pairs([cmp(A, same, choice)], tie_weight=1.0) == []


# --- thumbs ------------------------------------------------------------------------------


def test_thumbs_pair_up_over_down_on_the_same_prompt() -> None:
    up, down = reply("g-1", "Four."), reply("g-2", "5")
    pairs = thumb_pairs([rate(up, 1, T), rate(down, -1, T + H, user="u2")], 0.7, 4)
    assert pairs == [Pair(P1, "Four.", "5", 0.7, "thumbs", T + H)]  # at: the later vote


def test_thumbs_make_no_pair_across_prompts() -> None:
    up, down = reply("g-1", "Four.", P1), reply("g-2", "Red", P2)
    assert thumb_pairs([rate(up, 1), rate(down, -1)], 1.0, 4) == []


def test_thumbs_of_one_side_make_no_pair() -> None:
    r1, r2 = reply("g-1", "Four."), reply("g-2", "4")
    assert thumb_pairs([rate(r1, 1), rate(r2, 1, user="u2")], 1.0, 4) == []
    assert thumb_pairs([rate(r1, -1), rate(r2, -1, user="u2")], 1.0, 4) == []


def test_thumbs_skip_replies_with_the_same_text() -> None:
    up, down = reply("g-1", "Four."), reply("g-2", "Four. ")
    assert thumb_pairs([rate(up, 1), rate(down, -1)], 1.0, 4) == []


def test_one_reply_rated_up_and_down_by_two_users_never_pairs_with_itself() -> None:
    mixed = reply("g-1", "Four.")
    votes = [rate(mixed, 1, T, "u1"), rate(mixed, -1, T + H, "u2")]
    assert thumb_pairs(votes, 1.0, 4) == []
    # With a third reply it still pairs with that one, on the side each vote puts it.
    bad, good = reply("g-2", "5"), reply("g-3", "4")
    votes += [rate(bad, -1, T, "u3"), rate(good, 1, T, "u3")]
    pairs = thumb_pairs(votes, 1.0, 10)
    assert {(p.chosen, p.rejected) for p in pairs} == {
        ("Four.", "5"),  # mixed (up by u1) over bad
        ("4", "Four."),  # good over mixed (down by u2)
        ("4", "5"),
    }
    assert all(p.chosen != p.rejected for p in pairs)


def test_thumb_pairs_are_capped_per_prompt_deterministically() -> None:
    ups = [reply(f"g-u{i}", f"good {i}") for i in range(3)]
    downs = [reply(f"g-d{i}", f"bad {i}") for i in range(3)]
    other_up, other_down = reply("g-x", "yes", P2), reply("g-y", "no", P2)
    votes = [rate(r, 1) for r in ups] + [rate(r, -1) for r in downs]
    votes += [rate(other_up, 1), rate(other_down, -1)]
    pairs = thumb_pairs(votes, 1.0, 4)
    on_p1 = [p for p in pairs if p.prompt == P1]
    assert len(on_p1) == 4  # of 9 possible
    assert len(set(on_p1)) == 4
    # The cap spreads over replies: every one of the six appears in some kept pair.
    assert {p.chosen for p in on_p1} == {"good 0", "good 1", "good 2"}
    assert {p.rejected for p in on_p1} == {"bad 0", "bad 1", "bad 2"}
    assert [p for p in pairs if p.prompt == P2] == [Pair(P2, "yes", "no", 1.0, "thumbs", T)]
    # Same votes in another order: the same pairs on each prompt.
    shuffled = list(votes)
    random.Random(7).shuffle(shuffled)
    again = thumb_pairs(shuffled, 1.0, 4)
    assert sorted(again, key=repr) == sorted(pairs, key=repr)
    assert thumb_pairs(votes, 1.0, 0) == []


def test_unpaired_has_one_labelled_reply_per_rating() -> None:
    up, down = reply("g-1", "Four."), reply("g-2", "5", P2)
    items = unpaired([rate(up, 1, T), rate(down, -1, T + H)], [cmp(A, B, "a")])
    assert items == [
        Unpaired(P1, "Four.", True, "thumbs", T),
        Unpaired(P2, "5", False, "thumbs", T + H),
    ]  # a decided comparison adds no single reply


# --- dedupe ------------------------------------------------------------------------------


def test_dedupe_pairs_sums_weights_and_keeps_latest_time_in_first_seen_order() -> None:
    pairs = [
        Pair(P1, "x", "y", 1.0, "comparison", T + H),
        Pair(P2, "r", "s", 1.0, "comparison", T),
        Pair(P1, "x", "y", 1.0, "comparison", T),
        Pair(P1, "x", "y", 0.5, "thumbs", T),  # another source: kept apart
        Pair(P1, "x", "y", 1.0, "comparison", T + 2 * H),
    ]
    assert dedupe_pairs(pairs) == [
        Pair(P1, "x", "y", 3.0, "comparison", T + 2 * H),
        Pair(P2, "r", "s", 1.0, "comparison", T),
        Pair(P1, "x", "y", 0.5, "thumbs", T),
    ]


def test_dedupe_unpaired_merges_identical_keeping_latest_time() -> None:
    items = [
        Unpaired(P1, "x", True, "thumbs", T),
        Unpaired(P1, "x", False, "thumbs", T),
        Unpaired(P1, "x", True, "thumbs", T + H),
        Unpaired(P1, "x", False, "both_bad", T),
    ]
    assert dedupe_unpaired(items) == [
        Unpaired(P1, "x", True, "thumbs", T + H),
        Unpaired(P1, "x", False, "thumbs", T),
        Unpaired(P1, "x", False, "both_bad", T),
    ]


# --- splits ------------------------------------------------------------------------------


def test_heldout_split_is_stable_and_close_to_the_fraction() -> None:
    rng = random.Random(1234)
    prompts = [
        (("user", "".join(rng.choices("abcdefghij ", k=rng.randint(1, 40)))),) for _ in range(1000)
    ]
    sides = [is_heldout(p, 0.2) for p in prompts]
    assert sides == [is_heldout(p, 0.2) for p in prompts]  # same answer every call
    copy = [tuple((r, c) for r, c in p) for p in prompts]  # equal, not identical, tuples
    assert sides == [is_heldout(p, 0.2) for p in copy]
    assert 0.15 < sum(sides) / len(sides) < 0.25
    assert not any(is_heldout(p, 0.0) for p in prompts)
    assert all(is_heldout(p, 1.0) for p in prompts)
    # A larger fraction only adds prompts to the held-out side.
    assert all(is_heldout(p, 0.5) for p, h in zip(prompts, sides, strict=True) if h)


def test_halves_are_disjoint_stable_and_balanced() -> None:
    prompts = [prompt(i) for i in range(1000)]
    halves = [half(p) for p in prompts]
    assert set(halves) == {0, 1}
    assert halves == [half(p) for p in prompts]
    assert 400 < sum(halves) < 600
    # Independent of the held-out hash: both halves hold held-out and training prompts.
    held = {h for p, h in zip(prompts, halves, strict=True) if is_heldout(p, 0.2)}
    assert held == {0, 1}

    pairs = [Pair(p, "good", "bad", 1.0, "comparison", T) for p in prompts[:200]]
    first, second = split_halves(pairs)
    assert len(first) + len(second) == len(pairs)
    assert {p.prompt for p in first}.isdisjoint({p.prompt for p in second})
    assert all(half(p.prompt) == 0 for p in first)
    assert all(half(p.prompt) == 1 for p in second)
    assert first == [p for p in pairs if half(p.prompt) == 0]  # order kept
    assert split_halves(pairs) == (first, second)


# --- a round -----------------------------------------------------------------------------


def snapshot(
    ratings: Sequence[RatingVote] = (),
    comparisons: Sequence[ComparisonVote] = (),
    prompts: Sequence[Messages] = (),
    since: datetime | None = None,
) -> Snapshot:
    return Snapshot(tuple(ratings), tuple(comparisons), tuple(prompts), None, T + 100 * H, since)


def decided(p: Messages, n: int, at: datetime = T, tag: str = "") -> list[ComparisonVote]:
    """`n` comparisons on prompt `p`, each a different pair of texts, voted a."""
    return [
        cmp(reply(f"{p}-a{tag}{i}", f"good {tag}{i}", p),
            reply(f"{p}-b{tag}{i}", f"bad {tag}{i}", p), "a", at)
        for i in range(n)
    ]  # fmt: skip


def test_round_data_splits_by_prompt_and_counts_every_shape() -> None:
    train_p, held_p = prompts_on(False, 3), prompts_on(True, 2)
    cfg = DataConfig(tie_weight=0.5, heldout_fraction=0.2)
    ra, rb = reply("t-a", "alpha", train_p[0]), reply("t-b", "beta", train_p[0])
    ha, hb = reply("h-a", "uno", held_p[0]), reply("h-b", "dos", held_p[0])
    same_a, same_b = reply("s-a", "same", train_p[1]), reply("s-b", " same ", train_p[1])
    comparisons = [
        cmp(ra, rb, "a", T),
        cmp(ra, rb, "a", T + H, user="u2"),  # the same pair again: merged, weight 2
        cmp(ha, hb, "b", T),
        cmp(ra, rb, "tie", T),
        cmp(ha, hb, "both_bad", T),
        cmp(same_a, same_b, "a", T),  # identical texts
    ]
    up, down = reply("t-up", "yes", train_p[2]), reply("t-down", "no", train_p[2])
    ratings = [rate(up, 1, T), rate(down, -1, T + 2 * H, user="u2"), rate(up, 1, T, user="u3")]
    unvoted = prompts_on(False, 5)[4]
    snap = snapshot(ratings, comparisons, [unvoted, train_p[0]])
    data = build_round_data(snap, cfg)

    train_keys = {p.prompt for p in data.train_pairs}
    held_keys = {p.prompt for p in data.heldout_pairs}
    assert train_keys == {train_p[0], train_p[2]}
    assert held_keys == {held_p[0]}
    assert {u.prompt for u in data.heldout_unpaired} == {held_p[0]}
    assert all(not is_heldout(u.prompt, 0.2) for u in data.train_unpaired)
    assert Pair(train_p[0], "alpha", "beta", 2.0, "comparison", T + H) in data.train_pairs
    assert Pair(train_p[2], "yes", "no", 1.0, "thumbs", T + 2 * H) in data.train_pairs
    # Snapshot prompts first (newest first), then voted prompts it lacked, each once.
    assert data.train_prompts == (unvoted, train_p[0], train_p[2], train_p[1])
    assert data.heldout_prompts == (held_p[0],)
    assert data.counts == {
        "ratings": 3,
        "ratings_up": 2,
        "ratings_down": 1,
        "comparisons": 6,
        "ties": 1,
        "both_bad": 1,
        "comparison_pairs": 3,
        "tie_pairs": 2,
        "thumb_pairs": 1,
        "ties_dropped": 0,
        "identical_dropped": 1,
        "duplicates_merged": 1,
        "unpaired_merged": 1,  # two users' thumbs up on one reply
        "pairs": 5,
        "unpaired": 4,
        "train_pairs": 4,
        "heldout_pairs": 1,
        "train_unpaired": 2,
        "heldout_unpaired": 2,
        "new_pairs": 5,
        "prompts": 5,
        "train_prompts": 4,
        "heldout_prompts": 1,
    }
    assert build_round_data(snap, DataConfig(tie_weight=0.0)).counts["ties_dropped"] == 1


def test_new_pairs_counts_pairs_voted_since_the_last_round() -> None:
    p = prompts_on(False, 1)[0]
    old, new = decided(p, 3, T, "old"), decided(p, 2, T + 5 * H, "new")
    again = cmp(old[0].a, old[0].b, "a", T + 6 * H)  # an old pair voted again: new
    snap = snapshot(comparisons=[*old, *new, again], since=T + 5 * H)
    assert build_round_data(snap, DataConfig()).counts["new_pairs"] == 3
    everything = snapshot(comparisons=[*old, *new, again], since=None)
    assert build_round_data(everything, DataConfig()).counts["new_pairs"] == 5


def test_prompts_are_capped_keeping_voted_ones() -> None:
    given = [prompt(i) for i in range(10)]
    voted_p = (("user", "voted"),)
    snap = snapshot(comparisons=decided(voted_p, 1), prompts=given)
    data = build_round_data(snap, DataConfig(max_prompts=4))
    kept = [*data.train_prompts, *data.heldout_prompts]
    assert data.counts["prompts"] == len(kept) == 4
    assert voted_p in kept
    assert set(kept) - {voted_p} == set(given[:3])  # newest unvoted ones


# --- stop reasons ------------------------------------------------------------------------


def enough(cfg: DataConfig) -> tuple[list[ComparisonVote], list[ComparisonVote]]:
    train = [v for p in prompts_on(False, cfg.min_train_pairs) for v in decided(p, 1)]
    held = [v for p in prompts_on(True, cfg.min_heldout_pairs) for v in decided(p, 1)]
    return train, held


def test_no_stop_reason_with_enough_pairs() -> None:
    cfg = DataConfig()
    train, held = enough(cfg)
    assert stop_reason(build_round_data(snapshot(comparisons=train + held), cfg), cfg) is None


def test_stop_when_there_is_no_feedback() -> None:
    cfg = DataConfig()
    reason = stop_reason(build_round_data(snapshot(prompts=[P1]), cfg), cfg)
    assert reason is not None and reason.startswith("no feedback in the window")
    assert "data.replay_days" in reason


@pytest.mark.parametrize("tie_weight", [0.0, 0.5])
def test_stop_when_every_comparison_is_a_tie(tie_weight: float) -> None:
    cfg = DataConfig(tie_weight=tie_weight)
    ties = [cmp(v.a, v.b, "tie") for v in decided(P1, 20)]
    reason = stop_reason(build_round_data(snapshot(comparisons=ties), cfg), cfg)
    assert reason is not None and reason.startswith("every comparison was a tie; 20 ties")
    assert "data.tie_weight" in reason


@pytest.mark.parametrize(("value", "way"), [(1, "up"), (-1, "down")])
def test_stop_when_thumbs_are_one_sided(value: int, way: str) -> None:
    cfg = DataConfig()
    ratings = [rate(reply(f"g-{i}", f"text {i}", prompt(i % 3)), value) for i in range(12)]
    reason = stop_reason(build_round_data(snapshot(ratings), cfg), cfg)
    assert reason is not None
    assert reason.startswith(f"all 12 ratings are {way}; a reward model needs both good and bad")


def test_stop_when_no_vote_makes_a_pair() -> None:
    cfg = DataConfig()
    bad = [cmp(v.a, v.b, "both_bad") for v in decided(P1, 3)]
    ratings = [rate(reply("g-u", "yes", P1), 1), rate(reply("g-d", "no", P2), -1)]
    reason = stop_reason(build_round_data(snapshot(ratings, bad), cfg), cfg)
    assert reason is not None and reason.startswith("no preference pairs")
    assert "3 both_bad" in reason


def test_stop_with_too_few_training_pairs() -> None:
    cfg = DataConfig(min_train_pairs=8, min_heldout_pairs=1)
    train, held = enough(cfg)
    data = build_round_data(snapshot(comparisons=train[:7] + held), cfg)
    reason = stop_reason(data, cfg)
    assert reason is not None and reason.startswith("only 7 training pairs")
    assert "data.min_train_pairs is 8" in reason


def test_stop_with_too_few_heldout_pairs() -> None:
    cfg = DataConfig(min_train_pairs=2, min_heldout_pairs=4)
    train, held = enough(cfg)
    data = build_round_data(snapshot(comparisons=train + held[:3]), cfg)
    reason = stop_reason(data, cfg)
    assert reason is not None and reason.startswith("only 3 held-out pairs")
    assert "data.min_heldout_pairs is 4" in reason
    # Thumb pairs count too: one more held-out prompt with an up and a down reply is enough.
    p = prompts_on(True, 4)[3]
    ratings = [rate(reply("h-u", "yes", p), 1), rate(reply("h-d", "no", p), -1)]
    data = build_round_data(snapshot(ratings, train + held[:3]), cfg)
    assert stop_reason(data, cfg) is None
