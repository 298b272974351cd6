"""The reward model on the tiny random model: it learns, saves, warm-starts, survives bad
artifacts; and its held-out metrics, checked against hand-computed values."""

from __future__ import annotations

import json
import math
import random
import shutil
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from trainer.config import RewardConfig
from trainer.records import Messages, Pair, Unpaired
from trainer.reward import (
    RewardNet,
    _chunks,
    metrics_from_scores,
    pair_metrics,
    train_reward_model,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
WORDS = ["the", "a", "river", "stone", "blue", "house", "green", "table", "light", "music", "city"]
QUESTIONS = [
    "What is a river?",
    "Tell me about cities.",
    "Describe a table.",
    "Why is the sky blue?",
    "Name a color.",
    "How do roads work?",
    "What is music?",
    "Where is the house?",
]
MARKER = "excellent"

# Measured on 2 cores: 48 pairs x 4 epochs trains in about 1 s and scores 0.95-1.0 on
# fresh pairs over five seeds; the default lr (2e-4) is too slow for a random tiny model.
CFG = RewardConfig(
    lora_r=8, lora_alpha=16, learning_rate=3e-3, epochs=4, batch_size=8, max_length=128
)


def _reply(rng: random.Random, marker: bool) -> str:
    words = [rng.choice(WORDS) for _ in range(rng.randint(6, 12))]
    if marker:
        words.insert(rng.randint(0, len(words)), MARKER)
    return " ".join(words)


def _prompt(rng: random.Random) -> Messages:
    return (("user", rng.choice(QUESTIONS)),)


def marker_pairs(n: int, seed: int) -> list[Pair]:
    """Pairs where the chosen reply, and only it, contains the marker word."""
    rng = random.Random(seed)
    return [
        Pair(_prompt(rng), _reply(rng, True), _reply(rng, False), 1.0, "comparison", T0)
        for _ in range(n)
    ]


def _params(rm: RewardNet) -> dict[str, Any]:
    return {n: p.detach().clone() for n, p in rm.model.named_parameters() if p.requires_grad}


@dataclass
class Trained:
    rm: RewardNet
    before: dict[str, Any]
    fit: dict[str, float]
    reports: list[tuple[int, int, dict[str, float]]]
    heldout: list[Pair]


@pytest.fixture(scope="module")
def trained(tiny_model_dir: Path) -> Trained:
    rm, note = RewardNet.create(tiny_model_dir, CFG, None, seed=0)
    assert note == "fresh (no previous reward model)" and not rm.warm_started
    before = _params(rm)
    reports: list[tuple[int, int, dict[str, float]]] = []
    fit = train_reward_model(
        rm,
        marker_pairs(48, 1),
        [],
        CFG,
        seed=0,
        progress=lambda step, total, m: reports.append((step, total, dict(m))),
    )
    return Trained(rm, before, fit, reports, marker_pairs(64, 99))


def _scores(rm: RewardNet, pairs: Sequence[Pair]) -> list[float]:
    prompts = [p.prompt for p in pairs]
    return rm.score(prompts + prompts, [p.chosen for p in pairs] + [p.rejected for p in pairs])


# -- learning --------------------------------------------------------------------------------


def test_training_moves_every_trainable_parameter(trained: Trained) -> None:
    after = _params(trained.rm)
    assert after.keys() == trained.before.keys()
    assert any("score" in n for n in after), "the score head must be trained"
    assert any("lora_A" in n for n in after) and any("lora_B" in n for n in after)
    frozen = [n for n, p in trained.rm.model.named_parameters() if not p.requires_grad]
    assert frozen, "the backbone must stay frozen"
    unmoved = [n for n in after if bool((after[n] == trained.before[n]).all())]
    assert unmoved == []
    assert not trained.rm.model.training


def test_training_lowers_the_loss_and_reports_progress(trained: Trained) -> None:
    fit = trained.fit
    assert fit["steps"] == 24  # ceil(48 / 8) * 4 epochs
    assert fit["loss_first"] > 0.5  # about log 2 at the start
    assert fit["loss_last"] < 0.5 * fit["loss_first"]
    assert fit["seconds"] > 0 and fit["pairs_per_second"] > 0
    assert [r[0] for r in trained.reports] == list(range(1, 25))
    assert {r[1] for r in trained.reports} == {24}
    assert all(math.isfinite(r[2]["loss"]) for r in trained.reports)


def test_trained_model_tells_fresh_pairs_apart(trained: Trained) -> None:
    m = pair_metrics(trained.rm, trained.heldout, None)
    assert m["n"] == 64
    assert m["accuracy"] >= 0.8
    # The marker makes chosen replies a word longer: "shorter wins" is mostly wrong here,
    # so the RM did not win by length.
    assert m["length_baseline_accuracy"] < 0.5
    assert m["shorter_loses_accuracy"] >= 0.8
    assert m["mean_margin"] > 0


def test_unpaired_thumbs_alone_set_the_sign_of_the_reward(tiny_model_dir: Path) -> None:
    rng = random.Random(5)
    thumbs = [
        Unpaired(_prompt(rng), _reply(rng, up), up, "thumbs", T0) for up in [True, False] * 24
    ]
    # One reply at a time is a weaker signal than a pair: more steps, a larger lr.
    cfg = replace(CFG, learning_rate=6e-3, epochs=8, batch_size=4, unpaired_weight=1.0)
    rm, _ = RewardNet.create(tiny_model_dir, cfg, None, seed=0)
    reports: list[dict[str, float]] = []
    fit = train_reward_model(
        rm, [], thumbs, cfg, seed=0, progress=lambda s, t, m: reports.append(m)
    )
    assert fit["steps"] == 48  # 48 thumbs, at most 2 * 4 a step, 8 epochs
    assert all("unpaired_loss" in m and "accuracy" not in m for m in reports)
    assert fit["loss_last"] < 0.5 * fit["loss_first"]
    test = [(_prompt(rng), _reply(rng, up), up) for up in [True, False] * 16]
    scores = rm.score([t[0] for t in test], [t[1] for t in test])
    right = sum((s > 0) == up for s, (_, _, up) in zip(scores, test, strict=True))
    assert right / len(test) >= 0.8


def test_lora_targets(tiny_model_dir: Path) -> None:
    def adapted(targets: str) -> set[str]:
        rm, _ = RewardNet.create(tiny_model_dir, replace(CFG, lora_targets=targets), None)
        names = [n for n, p in rm.model.named_parameters() if p.requires_grad]
        assert any("score" in n for n in names)
        return {n.split(".")[-4] for n in names if ".lora_A." in n}

    assert adapted("auto") == {"q_proj", "v_proj"}  # peft's default for Llama
    assert adapted("all-linear") == {
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    }
    assert adapted(" k_proj, o_proj ") == {"k_proj", "o_proj"}


def test_pair_weights_scale_the_loss(tiny_model_dir: Path) -> None:
    pairs = marker_pairs(8, 3)
    cfg = RewardConfig(lora_r=8, lora_alpha=16, learning_rate=0.0, epochs=1, batch_size=8)
    rm, _ = RewardNet.create(tiny_model_dir, cfg, None, seed=0)
    full = train_reward_model(rm, pairs, [], cfg)["loss_first"]
    halved = [Pair(p.prompt, p.chosen, p.rejected, 0.5, p.source, p.at) for p in pairs]
    half = train_reward_model(rm, halved, [], cfg)["loss_first"]
    assert half == pytest.approx(full / 2, rel=1e-4)


def test_batches_cover_every_item_once_and_group_similar_lengths() -> None:
    rng = random.Random(0)
    lengths = [rng.randint(10, 400) for _ in range(100)]
    chunks = _chunks(lengths, 13, random.Random(1), 8)
    assert len(chunks) == 13
    assert sorted(i for c in chunks for i in c) == list(range(100))
    assert {len(c) for c in chunks} <= {7, 8}
    # padding: far less than with a plain shuffle into the same number of batches
    waste = sum(max(lengths[i] for i in c) * len(c) for c in chunks) - sum(lengths)
    assert waste < 0.5 * sum(lengths)
    assert _chunks(lengths, 13, random.Random(1), 8) == chunks  # seeded
    assert _chunks([], 3, random.Random(1), 8) == [[], [], []]
    plain = _chunks(lengths, 13, random.Random(1))
    assert sorted(i for c in plain for i in c) == list(range(100))
    assert sum(max(lengths[i] for i in c) * len(c) for c in plain) - sum(lengths) > 2 * waste


# -- inputs ----------------------------------------------------------------------------------


def test_scores_do_not_depend_on_batching_or_padding(trained: Trained) -> None:
    rm = trained.rm
    prompt: Messages = (("user", "Hi"),)
    short, long = "ok", " ".join(["music"] * 40)
    alone = rm.score([prompt], [short])[0]
    batched = rm.score([prompt, prompt], [long, short], batch_size=2)[1]
    assert batched == pytest.approx(alone, abs=1e-4)


def test_long_prompts_are_cut_from_the_left_and_the_reply_kept(trained: Trained) -> None:
    rm = trained.rm
    prompt: Messages = (("user", " ".join(["stone"] * 400)),)
    reply = "the blue house " + MARKER
    ids = rm.encode(prompt, reply)
    assert len(ids) == rm.max_length == 128
    whole = rm.tokenizer.apply_chat_template(
        [{"role": "user", "content": "x"}, {"role": "assistant", "content": reply}],
        tokenize=False,
    )
    tail = rm.tokenizer(whole[whole.index(reply) :], add_special_tokens=False)["input_ids"]
    assert ids[-len(tail) :] == tail
    # the marker at the end of the reply still decides
    s = rm.score([prompt, prompt], [reply, "the blue house road"])
    assert s[0] > s[1]


# -- artifacts ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def saved(trained: Trained, tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("rm") / "run1"
    trained.rm.save(dest)
    return dest


def test_save_then_load_scores_identically(trained: Trained, saved: Path) -> None:
    meta = json.loads((saved / "reward_model.json").read_text())
    assert meta["max_length"] == 128
    assert Path(meta["base_model"]) == trained.rm.base_dir.resolve()
    loaded = RewardNet.load(saved)
    assert _scores(loaded, trained.heldout) == pytest.approx(
        _scores(trained.rm, trained.heldout), abs=1e-5
    )
    assert not any(p.requires_grad for p in loaded.model.parameters())


def test_warm_start_continues_from_the_saved_model(
    trained: Trained, saved: Path, tiny_model_dir: Path
) -> None:
    rm, note = RewardNet.create(tiny_model_dir, CFG, saved, seed=7)
    assert note == f"warm-started from {saved}" and rm.warm_started
    expected = _scores(trained.rm, trained.heldout)
    assert _scores(rm, trained.heldout) == pytest.approx(expected, abs=1e-5)
    # and it trains on: LoRA and head are trainable again
    names = [n for n, p in rm.model.named_parameters() if p.requires_grad]
    assert any("score" in n for n in names) and any("lora_B" in n for n in names)
    train_reward_model(rm, marker_pairs(8, 4), [], CFG, seed=0)
    assert _scores(rm, trained.heldout) != pytest.approx(expected, abs=1e-5)


def test_warm_start_off_is_fresh(saved: Path, tiny_model_dir: Path) -> None:
    cfg = replace(CFG, warm_start=False)
    _, note = RewardNet.create(tiny_model_dir, cfg, saved)
    assert note.startswith("fresh")


def _fresh_scores(tiny_model_dir: Path, pairs: Sequence[Pair]) -> list[float]:
    rm, _ = RewardNet.create(tiny_model_dir, CFG, None, seed=0)
    return _scores(rm, pairs)


def _broken_copies(saved: Path, tiny_model_dir: Path, root: Path) -> dict[str, Path]:
    from safetensors.torch import load_file, save_file

    out: dict[str, Path] = {"missing dir": root / "nowhere"}

    garbage = root / "garbage"
    shutil.copytree(saved, garbage)
    (garbage / "adapter_model.safetensors").write_bytes(b"\x00not a safetensors file" * 50)
    out["garbage weights"] = garbage

    no_weights = root / "no_weights"
    shutil.copytree(saved, no_weights)
    (no_weights / "adapter_model.safetensors").unlink()
    out["missing weights"] = no_weights

    no_meta = root / "no_meta"
    shutil.copytree(saved, no_meta)
    (no_meta / "reward_model.json").unlink()
    out["missing reward_model.json"] = no_meta

    # weights of a rank-4 adapter under the rank-8 adapter's config
    small_cfg = RewardConfig(lora_r=4, lora_alpha=8)
    small, _ = RewardNet.create(tiny_model_dir, small_cfg, None)
    small.save(root / "rank4")
    shapes = root / "wrong_shapes"
    shutil.copytree(saved, shapes)
    shutil.copy(root / "rank4" / "adapter_model.safetensors", shapes)
    out["wrong shapes"] = shapes

    # an adapter without its score head: peft only warns, we refuse it
    headless = root / "headless"
    shutil.copytree(saved, headless)
    weights = load_file(str(saved / "adapter_model.safetensors"))
    save_file(
        {k: v for k, v in weights.items() if "score" not in k},
        str(headless / "adapter_model.safetensors"),
    )
    out["missing score head"] = headless
    return out


def test_broken_previous_falls_back_to_fresh(
    trained: Trained, saved: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    fresh = _fresh_scores(tiny_model_dir, trained.heldout[:8])
    for what, previous in _broken_copies(saved, tiny_model_dir, tmp_path).items():
        rm, note = RewardNet.create(tiny_model_dir, CFG, previous, seed=0)
        assert note.startswith(
            f"fresh: previous reward model at {previous} could not be loaded ("
        ), what
        assert len(note) < 500, what
        assert not rm.warm_started, what
        assert _scores(rm, trained.heldout[:8]) == pytest.approx(fresh, abs=1e-6), what


# -- metrics ---------------------------------------------------------------------------------


def _pair(chosen: str, rejected: str, at: datetime = T0, source: str = "comparison") -> Pair:
    return Pair((("user", "q"),), chosen, rejected, 1.0, source, at)


def _sig(x: float) -> float:
    return 1 / (1 + math.exp(-x))


T1 = T0 + timedelta(days=1)
HAND = [
    _pair("aa", "bbbb"),  # RM right; shorter chosen
    _pair("cccccc", "dd", T1),  # RM tie; longer chosen
    _pair("eee", "fff", T1),  # RM wrong; same length
    _pair("g", "hhhhhhh", T1, source="tie"),  # left out everywhere
]
HAND_C = [2.0, 1.0, 0.0, -5.0]
HAND_R = [0.0, 1.0, 1.0, 5.0]


def test_metrics_match_hand_computed_values() -> None:
    m = metrics_from_scores(HAND, HAND_C, HAND_R, since=T1)
    assert m["n"] == 3
    assert m["accuracy"] == pytest.approx((1 + 0.5 + 0) / 3)
    assert m["new_n"] == 2
    assert m["new_pair_accuracy"] == pytest.approx(0.25)
    assert m["mean_margin"] == pytest.approx((2 + 0 - 1) / 3)
    assert m["brier"] == pytest.approx(
        ((1 - _sig(2)) ** 2 + (1 - _sig(0)) ** 2 + (1 - _sig(-1)) ** 2) / 3
    )
    assert m["length_baseline_accuracy"] == pytest.approx((1 + 0 + 0.5) / 3)
    assert m["shorter_loses_n"] == 2
    assert m["shorter_loses_accuracy"] == pytest.approx(0.25)
    # chosen longer: 0.5 (the score tie); chosen shorter: 1; equal lengths left out
    assert m["length_controlled_accuracy"] == pytest.approx(0.75)
    assert m["length_corr"] == pytest.approx(
        statistics.correlation([2, 1, 0, 0, 1, 1], [2, 6, 3, 4, 2, 3])
    )


def test_metrics_since_none_and_nothing_new() -> None:
    everything = metrics_from_scores(HAND, HAND_C, HAND_R, since=None)
    assert everything["new_n"] == 3
    assert everything["new_pair_accuracy"] == everything["accuracy"]
    later = metrics_from_scores(HAND, HAND_C, HAND_R, since=T1 + timedelta(days=1))
    assert later["new_n"] == 0
    assert "new_pair_accuracy" not in later


def test_metrics_edge_cases() -> None:
    assert metrics_from_scores([], [], [], None) == {"n": 0, "new_n": 0}
    only_ties = metrics_from_scores([_pair("a", "b", source="tie")], [1.0], [0.0], None)
    assert only_ties["n"] == 0 and "accuracy" not in only_ties
    shorter_wins = metrics_from_scores([_pair("a", "bb"), _pair("c", "ddd")], [1, 1], [0, 0], None)
    assert shorter_wins["length_baseline_accuracy"] == 1.0
    assert "length_controlled_accuracy" not in shorter_wins
    same_scores = metrics_from_scores([_pair("a", "bb")], [0.0], [0.0], None)
    assert same_scores["length_corr"] == 0.0
    with pytest.raises(ValueError):
        metrics_from_scores(HAND, HAND_C[:2], HAND_R, None)


def test_ece_is_zero_when_calibrated_and_positive_when_miscalibrated() -> None:
    pairs = [_pair("x", "y")] * 8
    logit = math.log(3)  # sigmoid = 0.75
    # right 6 times out of 8 saying 0.75: calibrated
    calibrated = metrics_from_scores(pairs, [logit] * 6 + [0.0] * 2, [0.0] * 6 + [logit] * 2, None)
    assert calibrated["ece"] == pytest.approx(0.0, abs=1e-9)
    # right every time saying 0.75: off by 0.25 in both orientations
    under = metrics_from_scores(pairs, [logit] * 8, [0.0] * 8, None)
    assert under["ece"] == pytest.approx(0.25)
    # says 0.99 and is right half the time
    big = math.log(99)
    over = metrics_from_scores(pairs, [big] * 4 + [0.0] * 4, [0.0] * 4 + [big] * 4, None)
    assert over["ece"] == pytest.approx(0.49)


class StubScorer:
    def __init__(self, table: dict[str, float]) -> None:
        self.table = table
        self.seen: list[str] = []

    def score(
        self, prompts: Sequence[Messages], replies: Sequence[str], batch_size: int = 16
    ) -> list[float]:
        assert len(prompts) == len(replies)
        self.seen.extend(replies)
        return [self.table[r] for r in replies]


def test_pair_metrics_scores_non_tie_pairs_once() -> None:
    table = {"aa": 2.0, "bbbb": 0.0, "cccccc": 1.0, "dd": 1.0, "eee": 0.0, "fff": 1.0}
    stub = StubScorer(table)
    m = pair_metrics(stub, HAND, T1)
    assert sorted(stub.seen) == sorted(table)  # the tie pair's replies are not scored
    assert m == metrics_from_scores(HAND[:3], HAND_C[:3], HAND_R[:3], T1)


def test_lora_layers_adapts_only_the_top_layers(tiny_model_dir: Path) -> None:
    rm, _ = RewardNet.create(tiny_model_dir, RewardConfig(lora_layers=1), None)
    names = [n for n, p in rm.model.named_parameters() if p.requires_grad and "lora_" in n]
    assert names and all(".layers.1." in n for n in names)
