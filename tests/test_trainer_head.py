"""The reward head on the tiny random model: it learns a preference that is not length,
puts a length preference in its length term, caches features, saves and loads, and
refits to the same model."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from tests.test_trainer_reward import T0, WORDS, _prompt, _reply, marker_pairs
from trainer.config import RewardConfig
from trainer.head import LAMBDAS, HeadRewardModel
from trainer.records import Pair, Unpaired
from trainer.reward import RewardNet, create_reward_model, pair_metrics

CFG = RewardConfig(kind="head", max_length=128)


def _length_pairs(n: int, seed: int) -> list[Pair]:
    """Pairs where the chosen reply is the longer one, and nothing else sets them apart."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        short = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 6)))
        long_ = " ".join(rng.choice(WORDS) for _ in range(rng.randint(14, 20)))
        out.append(Pair(_prompt(rng), long_, short, 1.0, "comparison", T0))
    return out


@pytest.fixture(scope="module")
def fitted(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> HeadRewardModel:
    cache = tmp_path_factory.mktemp("features") / "features.npz"
    rm = HeadRewardModel.fresh(tiny_model_dir, CFG, cache)
    rm.fit(marker_pairs(96, seed=1), [], CFG)
    return rm


def test_the_head_learns_a_preference_that_is_not_length(fitted: HeadRewardModel) -> None:
    m = pair_metrics(fitted, marker_pairs(64, seed=2), None)
    assert m["accuracy"] >= 0.8
    assert m["length_controlled_accuracy"] >= 0.8
    assert fitted.last_fit is not None and fitted.last_fit.lam in LAMBDAS
    assert set(fitted.last_fit.cv) == set(LAMBDAS)


def test_a_length_preference_goes_to_the_length_term(tiny_model_dir: Path) -> None:
    rm = HeadRewardModel.fresh(tiny_model_dir, CFG)
    fit = rm.fit(_length_pairs(80, seed=3), [], CFG)
    assert fit["length_coef"] > 0.5
    m = pair_metrics(rm, _length_pairs(40, seed=4), None)
    assert m["accuracy"] >= 0.9


def test_the_policy_is_rewarded_without_length_where_votes_do_not_ask_for_it(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    rm = HeadRewardModel.fresh(tiny_model_dir, CFG)
    rm.fit(_length_pairs(80, seed=3), [], CFG)
    test = _length_pairs(40, seed=4)
    prompts = [p.prompt for p in test]

    def longer_wins(score: object) -> float:
        long_ = score(prompts, [p.chosen for p in test])  # type: ignore[operator]
        short = score(prompts, [p.rejected for p in test])  # type: ignore[operator]
        return float(np.mean([a > b for a, b in zip(long_, short, strict=True)]))

    assert rm.policy_scorer(reward_length=True) == rm.score
    assert longer_wins(rm.policy_scorer(reward_length=True)) >= 0.9
    assert 0.2 <= longer_wins(rm.policy_scorer(reward_length=False)) <= 0.8
    rm.save(tmp_path / "rm")
    loaded = HeadRewardModel.load(tmp_path / "rm")
    q = rm.policy_scorer(reward_length=False)
    assert loaded.policy_scorer(reward_length=False)(prompts, [p.chosen for p in test]) == (
        pytest.approx(q(prompts, [p.chosen for p in test]))
    )


def test_features_are_computed_once_and_kept_on_disk(tiny_model_dir: Path, tmp_path: Path) -> None:
    cache = tmp_path / "features.npz"
    pairs = marker_pairs(24, seed=5)
    rm = HeadRewardModel.fresh(tiny_model_dir, CFG, cache)
    first = rm.fit(pairs, [], CFG)
    assert first["features_computed"] == 48
    again = rm.fit(pairs, [], CFG)
    assert again["features_computed"] == 0
    reloaded = HeadRewardModel.fresh(tiny_model_dir, CFG, cache)
    assert reloaded.fit(pairs, [], CFG)["features_computed"] == 0
    assert np.allclose(reloaded.head.w, rm.head.w)  # type: ignore[union-attr]
    # replies scored (held-out ones, say) are kept too when asked
    fresh = marker_pairs(4, seed=9)
    reloaded.score([p.prompt for p in fresh], [p.chosen for p in fresh])
    reloaded.keep_features()
    third = HeadRewardModel.fresh(tiny_model_dir, CFG, cache)
    third.fit(fresh, [], CFG)
    assert third.features.computed == 4  # the rejected replies only


def test_save_load_scores_the_same(fitted: HeadRewardModel, tmp_path: Path) -> None:
    fitted.save(tmp_path / "rm")
    loaded = HeadRewardModel.load(tmp_path / "rm")
    pairs = marker_pairs(8, seed=6)
    prompts = [p.prompt for p in pairs]
    replies = [p.chosen for p in pairs]
    assert loaded.score(prompts, replies) == pytest.approx(fitted.score(prompts, replies))


def test_scores_stay_within_what_the_training_replies_scored(
    fitted: HeadRewardModel, tmp_path: Path
) -> None:
    head = fitted.head
    assert head is not None and head.low < head.high
    odd = ["zzzz qqqq " * 40, "\u00e9\u00e9\u00e9 ###### @@@@ " * 12, "a"]
    prompts = [marker_pairs(1, seed=8)[0].prompt] * len(odd)
    rows = fitted.features.features(prompts, odd)
    raw = head.raw(rows)[0]
    scores = fitted.score(prompts, odd)
    assert (raw < head.low).any() or (raw > head.high).any(), (raw, head.low, head.high)
    assert all(head.low <= s <= head.high for s in scores)
    assert scores == pytest.approx(np.clip(raw, head.low, head.high).tolist())
    fitted.save(tmp_path / "rm")
    loaded = HeadRewardModel.load(tmp_path / "rm").head
    assert loaded is not None and (loaded.low, loaded.high) == (head.low, head.high)


def test_thumbs_alone_fit_and_an_unfitted_head_refuses_to_score(tiny_model_dir: Path) -> None:
    rng = random.Random(7)
    thumbs = [
        Unpaired(_prompt(rng), _reply(rng, up), up, "thumbs", T0) for up in [True, False] * 20
    ]
    rm = HeadRewardModel.fresh(tiny_model_dir, CFG)
    with pytest.raises(ValueError, match="not fitted"):
        rm.score([thumbs[0].prompt], ["x"])
    fit = rm.fit([], thumbs, CFG)
    assert fit["pairs"] == 0 and fit["unpaired"] == 40
    ups = rm.score([t.prompt for t in thumbs if t.label], [t.completion for t in thumbs if t.label])
    downs = rm.score(
        [t.prompt for t in thumbs if not t.label], [t.completion for t in thumbs if not t.label]
    )
    assert np.mean(ups) > np.mean(downs)


def test_the_kind_setting_picks_the_model(tiny_model_dir: Path) -> None:
    head, note = create_reward_model(tiny_model_dir, CFG, None)
    assert isinstance(head, HeadRewardModel) and "head" in note
    lora_cfg = RewardConfig(kind="lora", lora_r=4, lora_alpha=8, max_length=64)
    lora, note = create_reward_model(tiny_model_dir, lora_cfg, None)
    assert isinstance(lora, RewardNet) and note.startswith("fresh")
