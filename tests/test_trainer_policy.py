"""The policy update: sampling, log-probs, KL to v0, saving adapters, and that each algorithm
(RLOO, PPO, online DPO) learns a reward on a tiny model.

The learning tests use a copy of the tiny model with its final norm scaled up ten times.
The fixture's random model has 0.02-std tied embeddings, so whatever the LoRA does to the
(normalised) last hidden state its logits stay within about +-2.6: its replies are close
to uniform over 49k tokens and no reward can move them much (a supervised probe caps the
share of "good" tokens at 0.59 from 0.50). Scaled, the base is about as random (entropy
7.5 nats) but the adapter can concentrate it, as a real model's can.

The reward: the share of reply tokens whose embedding points along a fixed random
direction (half the vocabulary, so the base scores about 0.5 with spread between replies),
which a policy learns by turning its last hidden state towards that direction. Learning
runs use one-token replies: a random model repeats tokens, and a reward that re-encodes
the text sees "\n" + "\n" as the one token "\n\n", so over longer replies it is not a
function of the sampled tokens and learning stalls on some seeds. Multi-token replies are
covered by the sampling and log-prob tests and the hand-computed GAE / RLOO / DPO tests.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import torch

from trainer.config import PolicyConfig
from trainer.policy import PolicyResult, train_policy
from trainer.policy.model import load_policy, save_adapter
from trainer.records import Messages
from trainer.sampling import (
    Sample,
    completion_logprobs,
    encode_prompt,
    kl_per_reply,
    sample,
)

PROMPTS: tuple[Messages, ...] = (
    (("user", "hi"),),
    (("user", "Tell me a story about a long road through the mountains."),),
    (("system", "Be brief."), ("user", "What is 2 + 2?")),
    (("user", "Name a colour."),),
)


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    # Tiny matrices: one thread is as fast, and far faster when other work shares the cores.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def sharp_model_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transformers import AutoModelForCausalLM

    dest = tmp_path_factory.mktemp("sharp") / "model"
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32)
    with torch.no_grad():
        model.model.norm.weight.mul_(10.0)
    model.save_pretrained(str(dest))
    for f in tiny_model_dir.iterdir():
        if f.name.startswith("tokenizer") or f.name == "chat_template.jinja":
            shutil.copy(f, dest / f.name)
    return dest


class DirectionReward:
    """Share of a reply's tokens whose embedding has a positive dot with a fixed direction."""

    def __init__(self, model: Any, tokenizer: Any):
        emb = model.get_input_embeddings().weight.detach()
        u = torch.randn(emb.shape[1], generator=torch.Generator().manual_seed(0))
        self.good = set((emb @ u > 0).nonzero().squeeze(-1).tolist())
        self.tokenizer = tokenizer

    def __call__(self, prompts: Sequence[Messages], texts: Sequence[str]) -> list[float]:
        assert len(prompts) == len(texts)
        out = []
        for text in texts:
            ids = self.tokenizer.encode(text, add_special_tokens=False)
            out.append(sum(i in self.good for i in ids) / max(1, len(ids)))
        return out


def fast_cfg(algorithm: str, **kw: Any) -> PolicyConfig:
    base: dict[str, Any] = dict(
        algorithm=algorithm,
        prompts_per_round=16,
        batch_prompts=2,
        samples_per_prompt=8,
        max_new_tokens=1,
        learning_rate=3e-3,
        kl_coef=0.01,
        micro_batch_size=8,
        dpo_min_margin=0.1,
        # what these tests measure is plain DPO, one pass a batch and no per-round trust
        # region (the product's defaults are RPO, 2 passes and kl_step 1.0; the tests of
        # those set them)
        epochs=1,
        kl_step=0.0,
        dpo_nll_weight=0.0,
    )
    base.update(kw)
    return PolicyConfig(**base)


def lora_params(model: Any) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


class Trained:
    def __init__(self, model: Any, tokenizer: Any, before: dict[str, torch.Tensor]):
        self.model = model
        self.tokenizer = tokenizer
        self.before = before
        self.result = PolicyResult(0, 0)
        self.calls: list[tuple[int, int, dict[str, float]]] = []


def run_training(model_dir: Path, cfg: PolicyConfig) -> Trained:
    # A new adapter's LoRA A matrices come from torch's global RNG: seeded, the trained
    # policy (and the tests that warm-start from it) do not depend on which tests ran before.
    torch.manual_seed(0)
    model, tok = load_policy(model_dir, None, cfg)
    t = Trained(model, tok, lora_params(model))
    reward = DirectionReward(model, tok)
    t.result = train_policy(
        model,
        tok,
        PROMPTS,
        reward,
        cfg,
        seed=0,
        progress=lambda s, n, m: t.calls.append((s, n, m)),
    )
    return t


def assert_learned(t: Trained, steps: int) -> list[dict[str, float]]:
    h = t.result.history
    assert len(h) == steps and len(t.calls) == steps
    assert [c[0] for c in t.calls] == list(range(1, steps + 1))
    assert all(c[1] == steps for c in t.calls)
    for row in h:
        for key in ("loss", "reward_mean", "kl_mean", "objective_mean", "length_mean"):
            assert math.isfinite(row[key]), (key, row)
        assert 0.0 <= row["finished_frac"] <= 1.0
    # Every trainable LoRA weight moved.
    after = lora_params(t.model)
    assert after.keys() == t.before.keys() and after
    unmoved = [n for n in after if torch.equal(after[n], t.before[n])]
    assert not unmoved, unmoved
    # The fresh adapter starts at v0; the reward then climbs well clear of its start.
    assert h[0]["kl_mean"] == pytest.approx(0.0, abs=1e-4)
    first = h[0]["objective_mean"]
    last = sum(r["objective_mean"] for r in h[-3:]) / 3
    assert last > first + 0.2, [r["objective_mean"] for r in h]
    assert sum(r["reward_mean"] for r in h[-3:]) / 3 > 0.7
    assert h[-1]["kl_mean"] > 0.1
    assert not t.model.training
    return h


# Trained once per module: the learning tests check these, the later tests reuse them.
@pytest.fixture(scope="module")
def rloo(sharp_model_dir: Path) -> Trained:
    return run_training(sharp_model_dir, fast_cfg("rloo"))


def test_rloo_learns_the_reward(rloo: Trained) -> None:
    assert_learned(rloo, steps=8)
    assert rloo.result.steps == 8
    assert rloo.result.rollouts == 16 * 8


def test_ppo_learns_the_reward(sharp_model_dir: Path) -> None:
    t = run_training(sharp_model_dir, fast_cfg("ppo", epochs=2))
    h = assert_learned(t, steps=16)
    assert t.result.steps == 16
    # The second pass over a batch is off-policy: its ratios move and some get clipped.
    assert h[0]["clip_frac"] == 0.0
    assert max(r["clip_frac"] for r in h[1::2]) > 0.0
    assert all(math.isfinite(r["value_loss"]) for r in h)


def test_online_dpo_learns_the_reward(sharp_model_dir: Path) -> None:
    t = run_training(sharp_model_dir, fast_cfg("online_dpo"))
    h = assert_learned(t, steps=8)
    stepped = [r for r in h if r["stepped"]]
    assert t.result.steps == len(stepped) >= 2
    # Policy == reference (v0) at the start: every pair's margin is 0, the loss log 2.
    assert stepped[0]["loss"] == pytest.approx(math.log(2), abs=1e-6)
    # Fresh pairs each step make the loss noisy, but the policy gets ahead of v0 on them.
    assert min(r["loss"] for r in stepped[1:]) < math.log(2) - 0.05
    assert max(r["dpo_accuracy"] for r in stepped[1:]) == 1.0
    # A batch whose replies all score alike gives no pair and takes no step.
    assert all(r["pairs"] == 0 for r in h if not r["stepped"])


def test_prompts_cycle_and_steps_count(sharp_model_dir: Path) -> None:
    cfg = fast_cfg("rloo", prompts_per_round=5, batch_prompts=2, samples_per_prompt=2, epochs=2)
    model, tok = load_policy(sharp_model_dir, None, cfg)
    seen: list[Messages] = []

    def reward(prompts: Sequence[Messages], texts: Sequence[str]) -> list[float]:
        seen.extend(prompts)
        return [float(len(t)) for t in texts]

    res = train_policy(model, tok, PROMPTS[:2], reward, cfg, seed=3)
    assert res.steps == math.ceil(5 / 2) * 2 == len(res.history)
    assert res.rollouts == 5 * 2 == len(seen)
    assert set(seen) == set(PROMPTS[:2])
    with pytest.raises(ValueError):
        train_policy(model, tok, (), reward, cfg)


# --- the algorithms' arithmetic --------------------------------------------------------


def _rollout(rm: list[float], logp: list[list[float]], ref: list[list[float]], **kw: Any) -> Any:
    from trainer.policy.common import Rollout

    finished = kw.pop("finished", [True] * len(rm))
    samples = [
        Sample(i, [1], [5] * len(lp), "x", f)
        for i, (lp, f) in enumerate(zip(logp, finished, strict=True))
    ]
    return Rollout(
        samples=samples,
        prompts=[PROMPTS[0]] * len(rm),
        group=kw.pop("group", 2),
        rm=rm,
        logp=[torch.tensor(x) for x in logp],
        ref_logp=[torch.tensor(x) for x in ref],
        kl_coef=kw.pop("kl_coef", 0.1),
        unfinished_penalty=kw.pop("unfinished_penalty", 1.0),
    )


def test_rollout_objective_is_rm_minus_kl_minus_penalty() -> None:
    r = _rollout([2.0, 1.0], [[-1.0, -2.0], [-1.0]], [[-1.5, -1.0], [-3.0]], finished=[False, True])
    assert r.kl() == pytest.approx([0.5 - 1.0, 2.0])
    assert r.score() == pytest.approx([1.0, 1.0])
    assert r.objective() == pytest.approx([1.0 + 0.05, 1.0 - 0.2])
    m = r.metrics()
    assert m["finished_frac"] == 0.5 and m["length_mean"] == 1.5
    assert m["objective_mean"] == pytest.approx((1.05 + 0.8) / 2)


def test_leave_one_out_advantages() -> None:
    from trainer.policy.rloo import leave_one_out_advantages

    adv = leave_one_out_advantages(torch.tensor([1.0, 2.0, 3.0, 6.0]), 4)
    torch.testing.assert_close(adv, torch.tensor([1 - 11 / 3, 2 - 10 / 3, 0.0, 4.0]))
    adv = leave_one_out_advantages(torch.tensor([1.0, 2.0, 5.0, 4.0]), 2)
    torch.testing.assert_close(adv, torch.tensor([-1.0, 1.0, 1.0, -1.0]))
    with pytest.raises(ValueError):
        leave_one_out_advantages(torch.tensor([1.0]), 1)


def test_ppo_token_rewards_and_gae() -> None:
    from trainer.policy.ppo import gae, token_rewards, whiten

    r = _rollout([2.0], [[-1.0, -2.0]], [[-1.5, -1.0]], finished=[False], group=1)
    (rew,) = token_rewards(r)
    # -0.1 * per-token KL everywhere, RM score less the unfinished penalty at the end.
    torch.testing.assert_close(rew, torch.tensor([-0.05, 0.1 + 2.0 - 1.0]))

    rewards, values = [torch.tensor([0.1, 0.2, 1.0])], [torch.tensor([0.5, 0.4, 0.3])]
    (adv,), (ret,) = gae(rewards, values, lam=0.5)
    torch.testing.assert_close(adv, torch.tensor([0.225, 0.45, 0.7]))
    torch.testing.assert_close(ret, torch.tensor([0.725, 0.85, 1.0]))
    (_,), (ret,) = gae(rewards, values, lam=1.0)  # lambda 1: the reward to go
    torch.testing.assert_close(ret, torch.tensor([1.3, 1.2, 1.0]))

    w = torch.cat(whiten([torch.tensor([1.0, 2.0]), torch.tensor([3.0, 10.0])]))
    assert float(w.mean()) == pytest.approx(0.0, abs=1e-6)
    assert float(w.std()) == pytest.approx(1.0, abs=1e-4)


def test_online_dpo_pairs_best_and_worst_past_the_margin() -> None:
    from trainer.policy.online_dpo import best_worst_pairs

    scores = [0.1, 0.9, 0.5, 0.2, 0.3, 0.25, 1.0, 1.0, 1.0]
    assert best_worst_pairs(scores, 3, 0.5) == [(1, 0)]
    assert best_worst_pairs(scores, 3, 0.05) == [(1, 0), (4, 3)]
    assert best_worst_pairs(scores, 3, 0.0) == [(1, 0), (4, 3)]  # all equal: no pair


def test_online_dpo_nll_term_is_the_chosen_mean_token_nll(tiny_model_dir: Path) -> None:
    from trainer.policy.common import collect
    from trainer.policy.online_dpo import OnlineDPOLearner, best_worst_pairs

    def longer(prompts: Sequence[Messages], texts: Sequence[str]) -> list[float]:
        return [float(len(t)) for t in texts]

    def chosen_logp(model: Any, samples: list[Sample]) -> float:
        with torch.no_grad():
            return sum(float(lp.mean()) for lp in completion_logprobs(model, samples)) / len(
                samples
            )

    def first_step(weight: float) -> tuple[dict[str, float], float, float]:
        cfg = PolicyConfig(
            lora_r=4,
            lora_alpha=8,
            samples_per_prompt=2,
            max_new_tokens=6,
            dpo_min_margin=0.0,
            dpo_nll_weight=weight,
            learning_rate=1e-2,
        )
        model, tok = load_policy(tiny_model_dir, None, cfg)
        rollout = collect(model, tok, PROMPTS[:2], longer, cfg, seed=3)
        pairs = best_worst_pairs(rollout.score(), rollout.group, 0.0)
        chosen = [rollout.samples[c] for c, _ in pairs]
        before = chosen_logp(model, chosen)
        model.train()
        metrics, stepped = next(iter(OnlineDPOLearner(model, cfg).update(rollout)))
        model.eval()
        assert stepped and metrics["pairs"] == len(pairs) > 0
        return metrics, before, chosen_logp(model, chosen)

    plain, _, _ = first_step(0.0)
    rpo, before, after = first_step(1.0)
    # At the first step the policy is v0: the DPO part is log 2 and the chosen NLL is the
    # mean per-token NLL of the chosen replies, measured here independently.
    assert plain["loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert rpo["chosen_nll"] == pytest.approx(-before, rel=1e-4)
    assert rpo["loss"] == pytest.approx(math.log(2) + rpo["chosen_nll"], rel=1e-4)
    # The step makes the chosen replies more likely.
    assert after > before


# --- sampling ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fresh(tiny_model_dir: Path) -> tuple[Any, Any]:
    return load_policy(tiny_model_dir, None, PolicyConfig(lora_r=4, lora_alpha=8))


def test_sample_is_seeded_and_prompt_major(fresh: tuple[Any, Any]) -> None:
    model, tok = fresh
    kw: dict[str, Any] = dict(max_new_tokens=5, temperature=1.0, batch_size=4)
    a = sample(model, tok, PROMPTS[:3], 3, seed=7, **kw)
    b = sample(model, tok, PROMPTS[:3], 3, seed=7, **kw)
    c = sample(model, tok, PROMPTS[:3], 3, seed=8, **kw)
    assert a == b
    assert [s.completion_ids for s in a] != [s.completion_ids for s in c]
    assert [s.prompt_index for s in a] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    for s in a:
        assert s.prompt_ids == encode_prompt(tok, PROMPTS[s.prompt_index])
        assert len(s.completion_ids) == 5 and not s.finished  # a random model never ends
        assert s.text == tok.decode(s.completion_ids, skip_special_tokens=True)
    assert len({tuple(s.completion_ids) for s in a}) > 1


class Recorder:
    """Passes calls to a model and keeps the last-position logits each decode step saw."""

    def __init__(self, model: Any):
        self.model = model
        self.generation_config = model.generation_config
        self.seen: list[torch.Tensor] = []

    def eval(self) -> Recorder:
        self.model.eval()
        return self

    def __call__(self, **kw: Any) -> Any:
        out = self.model(**kw)
        self.seen.append(out.logits[:, -1].clone())
        return out


@pytest.mark.parametrize("temperature", [1.0, 0.0])
def test_batched_decoding_sees_the_unpadded_logits(
    fresh: tuple[Any, Any], temperature: float
) -> None:
    model, tok = fresh
    rec = Recorder(model)
    got = sample(rec, tok, PROMPTS, 1, max_new_tokens=5, temperature=temperature, batch_size=4)
    # Prompts of different lengths share one left-padded batch: padding must not leak, and
    # the cached steps must see what a plain forward over prompt + reply so far sees.
    assert len({len(s.prompt_ids) for s in got}) > 1
    assert len(rec.seen) == 5
    with torch.no_grad():
        for row, s in enumerate(got):
            for t in range(5):
                ids = torch.tensor([s.prompt_ids + s.completion_ids[:t]])
                want = model(input_ids=ids).logits[0, -1]
                torch.testing.assert_close(rec.seen[t][row], want, atol=1e-4, rtol=1e-4)
                if temperature == 0.0:
                    assert s.completion_ids[t] == int(want.argmax())
    if temperature == 0.0:
        nucleus = sample(model, tok, PROMPTS, 1, max_new_tokens=5, temperature=1.0, top_p=1e-9)
        assert [s.completion_ids for s in nucleus] == [s.completion_ids for s in got]


def test_finished_replies_end_at_their_stop_token(tiny_model_dir: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # A plain (non-peft) model. Make a token one reply samples (and its neighbour in the
    # batch does not) a stop token, then sample again with the same seed.
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    kw: dict[str, Any] = dict(max_new_tokens=8, temperature=1.0, seed=4)
    free = sample(model, tok, PROMPTS[1:3], 1, **kw)
    assert not any(s.finished for s in free)
    assert [len(s.completion_ids) for s in free] == [8, 8]
    stop = next(t for t in free[0].completion_ids[2:6] if t not in free[1].completion_ids)
    cut = free[0].completion_ids.index(stop) + 1
    model.generation_config.eos_token_id = [tok.eos_token_id, stop]
    done = sample(model, tok, PROMPTS[1:3], 1, **kw)
    assert done[0].finished and cut < 8
    assert done[0].completion_ids == free[0].completion_ids[:cut]  # EOS kept, nothing after
    assert done[0].text == tok.decode(free[0].completion_ids[:cut], skip_special_tokens=True)
    assert done[1] == free[1]  # its neighbour ran on to the cap, unfinished


def test_encode_prompt_keeps_the_end() -> None:
    class Tok:
        def apply_chat_template(
            self, chat: Any, tokenize: bool, add_generation_prompt: bool
        ) -> str:
            assert not tokenize and add_generation_prompt
            return " ".join(m["content"] for m in chat) + " <assistant>"

        def encode(self, text: str, add_special_tokens: bool) -> list[int]:
            assert not add_special_tokens
            return [len(w) for w in text.split(" ")]

    prompt: Messages = (("user", "a bb ccc dddd"),)
    assert encode_prompt(Tok(), prompt) == [1, 2, 3, 4, 11]
    assert encode_prompt(Tok(), prompt, max_prompt_tokens=2) == [4, 11]


def test_completion_logprobs_batched_equal_single_and_unpadded(fresh: tuple[Any, Any]) -> None:
    model, tok = fresh
    samples = sample(model, tok, PROMPTS, 2, max_new_tokens=4, temperature=1.0, seed=1)
    short = Sample(0, samples[0].prompt_ids, samples[0].completion_ids[:1], "", False)
    samples.append(short)  # ragged completion lengths in one batch
    with torch.no_grad():
        batched = completion_logprobs(model, samples, batch_size=len(samples))
        for s, lp in zip(samples, batched, strict=True):
            ids = torch.tensor([s.prompt_ids + s.completion_ids])
            logits = model(input_ids=ids).logits[0].log_softmax(-1)
            n = len(s.completion_ids)
            want = logits[-n - 1 : -1].gather(-1, torch.tensor(s.completion_ids)[:, None])
            assert lp.shape == (n,)
            torch.testing.assert_close(lp, want.squeeze(-1), atol=1e-4, rtol=1e-4)
    # Under grad the log-probs carry the graph into the adapter.
    graph = completion_logprobs(model, samples[:2])
    graph[0].sum().backward()  # type: ignore[no-untyped-call]
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert any(g is not None and bool(g.abs().sum() > 0) for g in grads)
    model.zero_grad(set_to_none=True)


def test_kl_is_zero_for_a_fresh_adapter_and_positive_after_training(
    fresh: tuple[Any, Any], rloo: Trained
) -> None:
    model, tok = fresh
    samples = sample(model, tok, PROMPTS, 2, max_new_tokens=4, temperature=1.0)
    assert all(abs(k) < 1e-5 for k in kl_per_reply(model, samples))
    trained = sample(rloo.model, rloo.tokenizer, PROMPTS, 2, max_new_tokens=2, temperature=1.0)
    kls = kl_per_reply(rloo.model, trained)
    assert len(kls) == len(trained)
    assert sum(kls) / len(kls) > 0.5


# --- saving and loading adapters ---------------------------------------------------------


def _logits(model: Any, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        out: torch.Tensor = model(input_ids=torch.tensor([ids])).logits[0]
    return out


def test_saved_adapter_reloads_with_identical_logits(
    rloo: Trained, sharp_model_dir: Path, tmp_path: Path
) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    dest = tmp_path / "v1"
    save_adapter(rloo.model, dest)
    names = {p.name for p in dest.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json"} <= names
    assert not any(n.endswith(".bin") or n == "model.safetensors" for n in names)

    ids = encode_prompt(rloo.tokenizer, PROMPTS[2])
    base = AutoModelForCausalLM.from_pretrained(str(sharp_model_dir), dtype=torch.float32)
    base_logits = _logits(base, ids)
    loaded = PeftModel.from_pretrained(base, str(dest)).eval()
    torch.testing.assert_close(_logits(loaded, ids), _logits(rloo.model, ids))
    assert not torch.allclose(_logits(loaded, ids), base_logits, atol=1e-3)


async def test_saved_adapter_serves_in_the_transformers_engine(
    rloo: Trained, sharp_model_dir: Path, tmp_path: Path
) -> None:
    from service.chat.engines.base import Sampling, VersionSpec
    from service.chat.engines.transformers_engine import TransformersEngine
    from store.domain import VersionKind

    save_adapter(rloo.model, tmp_path / "v1")
    want = sample(rloo.model, rloo.tokenizer, PROMPTS[:1], 1, max_new_tokens=6, temperature=0)[0]
    engine = TransformersEngine(sharp_model_dir)
    await engine.start()
    try:
        await engine.load_version(VersionSpec("v1", VersionKind.LORA, tmp_path / "v1"))
        text = ""
        async for d in engine.generate(
            "v1", want.prompt_ids, Sampling(temperature=0.0, max_tokens=6), "r"
        ):
            text += d.text
    finally:
        await engine.shutdown()
    assert text == want.text


def test_warm_start_trains_on_and_keeps_v0_as_reference(
    rloo: Trained, sharp_model_dir: Path, tmp_path: Path
) -> None:
    # The `longer` reward below ranks one-token replies by their characters: whether two
    # replies differ in length, and so make a DPO pair, depends on the adapter and the RNG.
    # Both are seeded (the rloo fixture in run_training, the rest here), whatever ran before.
    torch.manual_seed(0)
    save_adapter(rloo.model, tmp_path / "v1", rloo.tokenizer)
    cfg = fast_cfg("online_dpo", prompts_per_round=2)
    model, tok = load_policy(sharp_model_dir, tmp_path / "v1", cfg)
    assert tok.padding_side == "left" and tok.pad_token is not None
    before = lora_params(model)
    assert before and before.keys() == lora_params(rloo.model).keys()
    for name, value in lora_params(rloo.model).items():
        torch.testing.assert_close(before[name], value)
    # The KL is to v0, not to the adapter training starts from...
    replies = sample(model, tok, PROMPTS, 2, max_new_tokens=2, temperature=1.0)
    assert sum(kl_per_reply(model, replies)) / len(replies) > 0.5

    # ...and so is DPO's reference: at the first step policy != reference, loss != log 2.
    def longer(prompts: Sequence[Messages], texts: Sequence[str]) -> list[float]:
        return [float(len(t)) for t in texts]

    res = train_policy(model, tok, PROMPTS, longer, cfg)
    assert res.steps == 1
    assert res.history[0]["kl_mean"] > 0.5
    assert abs(res.history[0]["loss"] - math.log(2)) > 1e-3
    after = lora_params(model)
    assert all(not torch.equal(after[n], before[n]) for n in before)


def test_kl_step_ends_the_round_once_the_policy_has_moved_that_far(
    rloo: Trained, sharp_model_dir: Path, tmp_path: Path
) -> None:
    from dataclasses import replace

    from trainer.policy.common import StartPoint, collect

    cfg = fast_cfg("rloo", prompts_per_round=6, kl_step=1e-3)
    # Warm-started, the policy is far from v0 but has not moved from where the round
    # starts; measuring swaps the start weights in and puts the trained ones back.
    save_adapter(rloo.model, tmp_path / "v1", rloo.tokenizer)
    warm, tok = load_policy(sharp_model_dir, tmp_path / "v1", cfg)
    start, before = StartPoint(warm), lora_params(warm)
    rollout = collect(warm, tok, PROMPTS[:2], DirectionReward(warm, tok), cfg, seed=1)
    assert rollout.metrics()["kl_mean"] > 0.5
    assert start.kl(rollout) == pytest.approx(0.0, abs=1e-5)
    for name, value in lora_params(warm).items():
        assert torch.equal(value, before[name])

    def train(kl_step: float) -> PolicyResult:
        model, tok = load_policy(sharp_model_dir, None, cfg)
        return train_policy(
            model, tok, PROMPTS, DirectionReward(model, tok), replace(cfg, kl_step=kl_step), seed=2
        )

    res = train(cfg.kl_step)
    assert res.stopped is not None and res.stopped.startswith("before batch 2 of 3")
    assert res.steps == 1 and res.rollouts == 2 * 2 * 8  # two batches sampled, one trained
    last = res.history[-1]
    assert last["stepped"] == 0.0 and last["kl_moved"] == res.kl_moved
    assert res.kl_moved is not None and res.kl_moved >= cfg.kl_step
    # A new adapter starts at v0, so the distance moved is the KL to v0 of the same replies.
    assert res.kl_moved == pytest.approx(last["kl_mean"], rel=1e-4, abs=1e-6)

    off = train(0.0)
    assert off.steps == 3 and off.stopped is None and off.kl_moved is None


def test_an_update_past_a_hard_edge_is_undone(sharp_model_dir: Path) -> None:
    """kl_budget (to v0) and kl_step_max (to the round's start) undo the update that the
    next rollouts find past them: the candidate is the policy from before that update."""
    from dataclasses import replace

    cfg = fast_cfg("rloo", prompts_per_round=6)

    def train(**kw: float) -> tuple[PolicyResult, dict[str, torch.Tensor]]:
        torch.manual_seed(0)  # the same random LoRA A matrices in every run
        model, tok = load_policy(sharp_model_dir, None, cfg)
        res = train_policy(
            model, tok, PROMPTS, DirectionReward(model, tok), replace(cfg, **kw), seed=2
        )
        return res, lora_params(model)

    free, _ = train()  # three batches, three steps; the KL to v0 each batch's rollouts saw
    k = [row["kl_mean"] for row in free.history]
    assert free.steps == 3 and len(k) == 3 and k[0] < k[1] < k[2], k
    after_one, params_one = train(kl_step=1e-9)  # stops before batch 2: one update kept
    assert after_one.steps == 1 and after_one.undone == 0

    budget = (k[1] + k[2]) / 2  # batch 2's update takes the rollouts past it
    res, params = train(kl_budget=budget)
    assert res.stopped is not None and res.stopped.startswith("before batch 3 of 3")
    assert f"kl_budget {budget:g}; batch 2's update undone" in res.stopped
    assert res.steps == 1 and res.undone == 1
    for name, value in params_one.items():  # the policy after batch 1, exactly
        assert torch.equal(params[name], value), name

    edge, params = train(kl_step_max=1e-9)  # batch 1's update already moved it too far
    assert edge.stopped is not None and "kl_step_max 1e-09; batch 1's update undone" in edge.stopped
    assert edge.steps == 0 and edge.undone == 1
    torch.manual_seed(0)
    model, _ = load_policy(sharp_model_dir, None, cfg)  # back at the start: a fresh adapter
    for name, value in lora_params(model).items():
        assert torch.equal(params[name], value), name
