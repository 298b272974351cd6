"""Trainer configuration: dataclasses whose fields carry their own help text.

A config comes from defaults, then a TOML file (one table per section), then command-line
overrides `section.field=value`. `describe()` prints every field with its help, which is
what `loopchat train --show-config` shows.

    [policy]
    algorithm = "rloo"
    samples_per_prompt = 4
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, get_type_hints

from store.evidence import EvidenceRules

T = TypeVar("T")


def opt(default: Any, help: str) -> Any:
    """A dataclass field with a default and a help text."""
    return field(default=default, metadata={"help": help})


# `loopchat run` sets this to its pid in its trainer's environment (trainer.entry).
PARENT_ENV = "LOOPCHAT_TRAINER_PARENT"


@dataclass
class DataConfig:
    replay_days: float = opt(
        30.0, "Older votes (before the last round) replayed each round, in days."
    )
    heldout_fraction: float = opt(
        0.2, "Share of prompts (by stable prompt hash) held out for evaluation, every round."
    )
    tie_weight: float = opt(0.0, "Weight of a tie as a half-win pair both ways; 0 drops ties.")
    thumb_pair_weight: float = opt(
        1.0, "Weight of a pair made from an up- and a down-rated reply to the same prompt."
    )
    max_thumb_pairs_per_prompt: int = opt(4, "Cap on up-vs-down pairs made from one prompt.")
    min_train_pairs: int = opt(8, "A round with fewer training pairs stops before the RM.")
    min_heldout_pairs: int = opt(4, "A round with fewer held-out pairs stops before the RM.")
    max_prompts: int = opt(2000, "Most distinct prompts kept from the window (newest first).")
    # Which comparison votes count (store.evidence), as the server's canary rule counts.
    screen_votes: bool = opt(True, "Screen comparison votes before training on them.")
    trust_age_s: float = opt(
        EvidenceRules.trust_age_s, "A web session's votes count once it is this old (seconds)."
    )
    max_per_user_pair: int = opt(
        EvidenceRules.max_per_user_pair, "Comparisons one voter adds per version pair (0: any)."
    )
    max_per_origin_pair: int = opt(
        EvidenceRules.max_per_origin_pair,
        "Comparisons all sessions from one address add per version pair (0: any)...",
    )
    max_origin_share: float = opt(
        EvidenceRules.max_origin_share, "...or this share of the pair's counted votes if more."
    )
    anomaly_min_votes: int = opt(
        EvidenceRules.anomaly_min_votes, "Decisive votes before a voter's choices are tested."
    )
    anomaly_p: float = opt(EvidenceRules.anomaly_p, "A voter this unlikely is set aside.")

    def evidence(self) -> EvidenceRules:
        return EvidenceRules(
            trust_age_s=self.trust_age_s,
            max_per_user_pair=self.max_per_user_pair,
            max_per_origin_pair=self.max_per_origin_pair,
            max_origin_share=self.max_origin_share,
            anomaly_min_votes=self.anomaly_min_votes,
            anomaly_p=self.anomaly_p,
            enabled=self.screen_votes,
        )


@dataclass
class RewardConfig:
    kind: str = opt(
        "head",
        "head: a linear Bradley-Terry head on the frozen base model's features, with reply "
        "length as a separate term and its L2 strength chosen by cross-validation each "
        "round (trainer/head.py); lora: a LoRA adapter and score head trained by AdamW for "
        "fixed epochs (trainer/reward.py). docs/trainer.md says why head is the default.",
    )
    lora_r: int = opt(16, "LoRA rank of the reward model's adapter on the policy backbone.")
    lora_alpha: int = opt(32, "LoRA alpha of the reward model.")
    lora_targets: str = opt(
        "auto",
        "Modules the reward model's LoRA adapts (new adapters only): auto (peft's default for "
        "the architecture: q_proj,v_proj on Llama), all-linear (about 1.6x slower per step "
        "on 2 cores), or module names separated by commas.",
    )
    lora_layers: int = opt(
        8,
        "Adapt only the top N transformer layers (0: all). The layers below run forward "
        "only, so a training step needs a fraction of the backward pass.",
    )
    learning_rate: float = opt(1e-3, "AdamW learning rate (lora).")
    epochs: int = opt(2, "Passes over the training pairs (lora).")
    warm_epochs: int = opt(
        1, "Passes when warm-started from the last round's RM (lora; 0: the same as epochs)."
    )
    batch_size: int = opt(8, "Pairs per optimizer step.")
    max_length: int = opt(384, "Tokens per (prompt, reply); the prompt is cut from the left.")
    unpaired_weight: float = opt(
        0.5, "Weight of the logistic loss on single thumbs (reward > 0 means up); 0 disables."
    )
    warm_start: bool = opt(True, "Start from the last round's reward model when it loads.")
    replay_pairs: bool = opt(
        True,
        "A warm-started RM trains on the replayed (older) votes too; false trains it on the "
        "votes since the last round only, so its cost stays flat as votes pile up (held-out "
        "accuracy is still measured on the whole window).",
    )
    min_heldout_accuracy: float = opt(
        0.55, "The round stops unless held-out pair accuracy reaches this (0.5 is chance)."
    )
    check_model: bool = opt(
        True,
        "Train a second RM on half of the pairs (split by prompt hash) to check the "
        "candidate for over-optimization; the policy's RM trains on all of them.",
    )


@dataclass
class PolicyConfig:
    algorithm: str = opt(
        "online_dpo", "rloo, ppo or online_dpo (the default measured best per CPU-minute)."
    )
    prompts_per_round: int = opt(
        48, "Prompts sampled for on-policy rollouts each round (kl_step usually ends it sooner)."
    )
    samples_per_prompt: int = opt(4, "Replies sampled per prompt (k).")
    batch_prompts: int = opt(8, "Prompts per optimizer step.")
    max_new_tokens: int = opt(128, "Reply length cap in rollouts.")
    temperature: float = opt(1.0, "Sampling temperature in rollouts.")
    top_p: float = opt(1.0, "Nucleus sampling in rollouts.")
    learning_rate: float = opt(2e-4, "AdamW learning rate for the LoRA adapter.")
    kl_coef: float = opt(0.05, "beta in r = r_RM - beta * KL(policy || v0), per reply in nats.")
    unfinished_penalty: float = opt(
        1.0, "Subtracted from the reward of a rollout that hit max_new_tokens unfinished."
    )
    lora_r: int = opt(16, "LoRA rank of the policy adapter (new adapters only).")
    lora_alpha: int = opt(32, "LoRA alpha of the policy adapter.")
    epochs: int = opt(2, "Optimization passes over each batch of rollouts (PPO epochs).")
    clip_range: float = opt(0.2, "PPO policy ratio clip.")
    value_coef: float = opt(0.1, "PPO value loss weight.")
    gae_lambda: float = opt(0.95, "PPO GAE lambda (gamma is 1).")
    dpo_beta: float = opt(0.1, "Online DPO beta.")
    dpo_min_margin: float = opt(
        0.5, "Online DPO: skip a prompt whose best and worst RM scores differ by less."
    )
    dpo_nll_weight: float = opt(
        1.0,
        "Online DPO: weight of the chosen reply's per-token negative log-likelihood added to "
        "the loss (RPO, Pang et al. 2024); it keeps the chosen reply from losing likelihood "
        "along with the rejected one. 0: plain DPO.",
    )
    kl_step: float = opt(
        1.0,
        "Trust region per round: stop taking steps once a rollout batch measures the "
        "policy's KL to where this round started (the serving adapter) at this many nats "
        "per reply or more; the candidate is the policy that batch measured. 0: off.",
    )
    kl_step_max: float = opt(
        0.0,
        "Hard edge of the trust region: a batch whose update took the policy this far or "
        "farther from the round's start (as the next rollouts measure it) is undone, and "
        "the candidate is the policy before that batch. 0: off.",
    )
    kl_budget: float = opt(
        0.0,
        "Hard cap on the rollouts' KL to the reference (v0), nats per reply: a batch whose "
        "update took the policy past it is undone, and the round stops there. Set it below "
        "evaluation.max_kl so a round stays inside the gate's budget. 0: off.",
    )
    max_grad_norm: float = opt(1.0, "Gradient clipping.")
    micro_batch_size: int = opt(
        4,
        "Replies per forward/backward pass when training; gradients accumulate to one "
        "optimizer step per batch, so this trades memory for speed and not the update.",
    )


@dataclass
class EvalConfig:
    max_prompts: int = opt(32, "Held-out prompts to evaluate on.")
    samples_per_prompt: int = opt(2, "Replies per held-out prompt from each policy.")
    max_new_tokens: int = opt(128, "Reply length cap in evaluation.")
    temperature: float = opt(0.7, "Sampling temperature (the serving default).")
    min_win_rate: float = opt(
        0.5,
        "Gate: candidate's RM win rate over serving must reach this (and at equal length "
        "too, when the votes do not reward length); the canary's live votes judge the rest.",
    )
    max_kl: float = opt(10.0, "Gate: KL(candidate || v0) per reply, nats, must stay within this.")
    max_length_ratio: float = opt(
        2.0,
        "Gate: mean reply length of candidate / serving must stay at or below x (length is "
        "the first thing an RM learns, and an RM's bias runs to longer replies).",
    )
    min_length_ratio: float = opt(
        0.25,
        "Gate: ... and at or above this. Where users want shorter replies a candidate may be "
        "much shorter; where they do not, the equal-length win rate refuses it.",
    )


@dataclass
class ScheduleConfig:
    min_new_events: int = opt(100, "Start a round once this many new votes arrived.")
    interval_minutes: float = opt(60.0, "Or start one this often...")
    min_events: int = opt(20, "...if at least this many new votes arrived.")
    poll_seconds: float = opt(30.0, "How often the schedule checks for new votes.")


@dataclass
class RolloutConfig:
    engine: str = opt(
        "auto",
        "Where rollouts and the gate's replies are drawn: vllm (an engine beside the "
        "trainer, the adapter synced into it before each draw), transformers (the training "
        "model's own decode loop), or auto (vllm where it is installed).",
    )
    dtype: str = opt(
        "auto",
        "The rollout engine's dtype: auto (bf16 on a GPU or a CPU with AVX-512 / native bf16, "
        "float32 elsewhere), or any dtype vLLM accepts.",
    )
    kv_cache_gib: float = opt(
        1.0, "The rollout engine's KV cache, GiB (a round's batch of rollouts needs far less)."
    )
    gpu_memory_utilization: float = opt(
        0.3, "On a GPU: the share of its memory the rollout engine may take beside training."
    )
    max_model_len: int = opt(2048, "The rollout engine's context length: prompt + reply.")
    enforce_eager: bool = opt(True, "Eager mode: a faster start, as the server's engine.")


@dataclass
class TrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    evaluation: EvalConfig = field(default_factory=EvalConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    rollouts: RolloutConfig = field(default_factory=RolloutConfig)
    device: str = opt(
        "auto",
        "Where the policy and reward model train: auto (the first CUDA device when torch "
        "sees one, else the CPU), cpu, cuda or cuda:N.",
    )
    precision: str = opt(
        "auto",
        "Their weights' dtype: auto (bf16 on a GPU that supports it, float32 on the CPU), "
        "float32 or bfloat16. The LoRA adapters stay float32.",
    )
    threads: int = opt(1, "torch threads for training; leave cores to the server.")
    seed: int = opt(0, "Seed for sampling and initialisation.")
    notify_url: str = opt(
        "", "Server to notify of a new candidate (http://127.0.0.1:8000); empty: none."
    )


SECTIONS = ("data", "reward", "policy", "evaluation", "schedule", "rollouts")
ROLLOUT_ENGINES = ("auto", "vllm", "transformers")
REWARD_KINDS = ("head", "lora")
ALGORITHMS = ("rloo", "ppo", "online_dpo")


class ConfigError(ValueError):
    pass


def _coerce(kind: type, raw: Any, where: str) -> Any:
    if kind is bool:
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.lower() in ("true", "1", "yes", "false", "0", "no"):
            return raw.lower() in ("true", "1", "yes")
        raise ConfigError(f"{where}: expected true or false, got {raw!r}")
    try:
        if kind is int and isinstance(raw, float):
            raise ValueError
        return kind(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: expected {kind.__name__}, got {raw!r}") from None


def _set(obj: Any, name: str, raw: Any, where: str) -> None:
    hints = get_type_hints(type(obj))
    names = {f.name for f in dataclasses.fields(obj)}
    if name not in names or dataclasses.is_dataclass(hints[name]):
        raise ConfigError(f"unknown setting {where}")
    setattr(obj, name, _coerce(hints[name], raw, where))


def apply(cfg: TrainConfig, values: dict[str, Any], where: str = "") -> TrainConfig:
    """Apply a nested mapping (as parsed from TOML) onto `cfg`."""
    for key, value in values.items():
        if key in SECTIONS:
            if not isinstance(value, dict):
                raise ConfigError(f"{where}[{key}] must be a table")
            section = getattr(cfg, key)
            for name, raw in value.items():
                _set(section, name, raw, f"{key}.{name}")
        else:
            _set(cfg, key, value, key)
    return cfg


def parse_override(text: str) -> dict[str, Any]:
    """`policy.algorithm=ppo` -> {"policy": {"algorithm": "ppo"}}."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"expected section.field=value, got {text!r}")
    parts = key.strip().split(".")
    if len(parts) == 1:
        return {parts[0]: value}
    if len(parts) == 2:
        return {parts[0]: {parts[1]: value}}
    raise ConfigError(f"expected section.field=value, got {text!r}")


def validate(cfg: TrainConfig) -> TrainConfig:
    if cfg.policy.algorithm not in ALGORITHMS:
        raise ConfigError(f"policy.algorithm must be one of {', '.join(ALGORITHMS)}")
    if cfg.rollouts.engine not in ROLLOUT_ENGINES:
        raise ConfigError(f"rollouts.engine must be one of {', '.join(ROLLOUT_ENGINES)}")
    if cfg.rollouts.kv_cache_gib <= 0 or not 0 < cfg.rollouts.gpu_memory_utilization <= 1:
        raise ConfigError("rollouts.kv_cache_gib must be > 0, gpu_memory_utilization in (0, 1]")
    if cfg.reward.kind not in REWARD_KINDS:
        raise ConfigError(f"reward.kind must be one of {', '.join(REWARD_KINDS)}")
    if not 0.0 < cfg.data.heldout_fraction < 1.0:
        raise ConfigError("data.heldout_fraction must be between 0 and 1")
    if cfg.policy.samples_per_prompt < 2:
        raise ConfigError("policy.samples_per_prompt must be at least 2")
    if cfg.precision not in ("auto", "float32", "bfloat16"):
        raise ConfigError("precision must be auto, float32 or bfloat16")
    if cfg.device not in ("auto", "cpu", "cuda") and not (
        cfg.device.startswith("cuda:") and cfg.device[5:].isdigit()
    ):
        raise ConfigError("device must be auto, cpu, cuda or cuda:N")
    if cfg.threads < 1:
        raise ConfigError("threads must be at least 1")
    for name in ("epochs", "batch_size", "max_length"):
        if getattr(cfg.reward, name) < 1:
            raise ConfigError(f"reward.{name} must be at least 1")
    if cfg.policy.dpo_nll_weight < 0:
        raise ConfigError("policy.dpo_nll_weight must be 0 (off) or more")
    if cfg.policy.kl_step < 0:
        raise ConfigError("policy.kl_step must be 0 (off) or more")
    if cfg.policy.kl_step_max < 0 or cfg.policy.kl_budget < 0:
        raise ConfigError("policy.kl_step_max and policy.kl_budget must be 0 (off) or more")
    if cfg.policy.kl_step_max and cfg.policy.kl_step_max < cfg.policy.kl_step:
        raise ConfigError("policy.kl_step_max must not be below policy.kl_step")
    if not 0.0 < cfg.evaluation.min_length_ratio <= 1.0 <= cfg.evaluation.max_length_ratio:
        raise ConfigError(
            "evaluation.min_length_ratio must be in (0, 1] and max_length_ratio at least 1"
        )
    if cfg.reward.warm_epochs < 0:
        raise ConfigError("reward.warm_epochs must be 0 (as epochs) or more")
    return cfg


def load_config(path: Path | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """Defaults, then the TOML file at `path`, then `section.field=value` overrides."""
    cfg = TrainConfig()
    if path is not None:
        try:
            with open(path, "rb") as f:
                apply(cfg, tomllib.load(f), f"{path}: ")
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise ConfigError(f"cannot read {path}: {e}") from None
    for text in overrides or []:
        apply(cfg, parse_override(text))
    return validate(cfg)


def as_dict(cfg: TrainConfig) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def describe(cfg: TrainConfig) -> str:
    """Every setting, its current value and its help, as TOML comments and values."""
    lines: list[str] = []

    def section(obj: Any, title: str | None) -> None:
        if title:
            lines.append(f"\n[{title}]")
        for f in dataclasses.fields(obj):
            if f.name in SECTIONS:
                continue
            lines.append(f"# {f.metadata.get('help', '')}")
            value = getattr(obj, f.name)
            shown = (
                f'"{value}"'
                if isinstance(value, str)
                else str(value).lower()
                if isinstance(value, bool)
                else value
            )
            lines.append(f"{f.name} = {shown}")

    section(cfg, None)
    for name in SECTIONS:
        section(getattr(cfg, name), name)
    return "\n".join(lines).lstrip() + "\n"
