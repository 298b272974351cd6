"""Settings, validated once, built by a factory (never at import time)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationInfo, field_validator
from pydantic_settings import SettingsConfigDict

from service.identity.limits import parse_rule, validate_storage_uri
from store.evidence import EvidenceRules
from store.settings import StoreSettings


class EngineKind(StrEnum):
    AUTO = "auto"
    VLLM = "vllm"
    TRANSFORMERS = "transformers"


class Settings(StoreSettings):
    """The server's settings, on top of the store's (data dir, database, admin token, address).

    Every setting is a `LOOPCHAT_*` environment variable; an env file may hold them too.
    """

    model_config = SettingsConfigDict(
        env_prefix="LOOPCHAT_", env_file=None, extra="ignore", validate_default=True
    )

    engine: EngineKind = Field(EngineKind.AUTO, description="auto picks vLLM when importable.")
    model: Path | None = Field(None, description="Model directory; default the bundled one.")
    model_alias: str = Field("loopchat", description="Public model name prefix: loopchat@v3.")

    # Request limits, enforced before anything reaches the engine.
    max_request_bytes: int = Field(1_000_000, ge=1024)
    max_prompt_tokens: int = Field(1536, ge=16)
    max_new_tokens: int = Field(512, ge=1)
    default_max_tokens: int = Field(256, ge=1)
    # Applied when a request leaves them out (as vLLM applies a model's generation
    # config). OpenAI's default of 1.0 makes a 135M model ramble.
    default_temperature: float = Field(0.7, ge=0.0, le=2.0)
    default_top_p: float = Field(0.95, gt=0.0, le=1.0)
    # Comparisons always sample (never greedy) with a seed the server draws: a caller
    # who could reproduce one side could tell the sides apart before voting.
    comparison_temperature: float = Field(0.7, gt=0.0, le=2.0)
    max_messages: int = Field(64, ge=1)
    max_n: int = Field(4, ge=1)
    max_stop_sequences: int = Field(4, ge=0)

    # vLLM's KV cache: an explicit size (vLLM on CPU otherwise sizes it from the NUMA
    # node's memory, which some machines report as a third of their RAM), or, when it is
    # unset, a share of RAM / GPU memory (0.92, vLLM's default, refuses to start on CPU).
    vllm_kv_cache_gib: float | None = Field(
        1.0, gt=0, description="vLLM KV cache in GiB (about 46k tokens of SmolLM2-135M in bf16)."
    )
    vllm_memory_utilization: float = Field(0.15, gt=0, le=1)
    vllm_enforce_eager: bool = True
    max_model_len: int = Field(2048, ge=64, description="Context length: prompt + reply.")
    vllm_dtype: str = Field(
        "auto",
        description="vLLM's dtype: auto (bf16 on a GPU or a CPU with AVX-512 / native bf16, "
        "float32 on other CPUs), or any dtype vLLM accepts (bfloat16, float32, float16).",
    )
    torch_threads: int | None = Field(
        None, ge=1, description="Threads for the transformers engine."
    )

    web_dir: Path | None = Field(None, description="Built web app; default frontend/dist.")

    # Policy versions: hot swaps, canary, promotion (see service/policies/).
    swap_mode: str = Field(
        "merged",
        pattern="^(merged|lora)$",
        description="merged: the serving version is merged into the engine's weights; "
        "lora: every trained version runs as an adapter on each request.",
    )
    max_lora_rank: int = Field(32, ge=1, description="vLLM's LoRA rank limit (2x trainer rank).")
    canary_share: float = Field(0.1, ge=0, le=1, description="Share of chat traffic to a canary.")
    retain_versions: int = Field(2, ge=0, description="Retired versions kept loaded.")
    policy_poll_seconds: float = Field(10.0, gt=0, description="Database poll and canary rule.")
    auto_promote: bool = Field(True, description="A canary that wins with confidence serves.")
    promote_min_comparisons: int = Field(30, ge=1, description="Canary votes before a verdict.")
    promote_win_lower_bound: float = Field(
        0.5, ge=0, le=1, description="Promote when the win rate's lower bound is above this."
    )
    # Which comparison votes count (store.evidence): the canary rule and the trainer
    # screen them alike. The trainer's [data] section holds the same rules, same defaults.
    evidence_screening: bool = Field(True, description="Screen votes before counting them.")
    evidence_trust_age_s: float = Field(
        60.0, ge=0, description="A web session's votes count once it is this old (seconds)."
    )
    evidence_max_per_user_pair: int = Field(
        10, ge=0, description="Comparisons one voter adds per pair of versions (0: no cap)."
    )
    evidence_max_per_origin_pair: int = Field(
        5,
        ge=0,
        description="Comparisons all web sessions from one client address add per pair of "
        "versions, or evidence_max_origin_share of the pair's counted votes if more (0: no cap).",
    )
    evidence_max_origin_share: float = Field(
        0.1, ge=0, le=1, description="Share of a pair's counted votes one address may add."
    )
    evidence_anomaly_min_votes: int = Field(
        10, ge=1, description="Decisive votes before a voter's choices are tested."
    )
    evidence_anomaly_p: float = Field(
        1e-3,
        gt=0,
        lt=1,
        description="A voter this unlikely (side bias, against the rest) is set aside.",
    )

    # Identity and votes.
    session_secret: str = Field(
        "", description="Signs session cookies; empty: generated into data_dir/session_secret."
    )
    anonymous_sessions: bool = Field(True, description="POST /v1/session may start web sessions.")
    session_cookie_secure: bool = Field(False, description="Mark the cookie Secure (HTTPS).")
    session_max_age_days: int = Field(
        30, ge=1, description="Lifetime of a web session cookie, in days."
    )
    session_mints_per_address: str = Field(
        "20/hour;100/day",
        description="New anonymous sessions one client address may start (POST /v1/session): "
        "one or more windows such as '20/hour;100/day'. A script that mints users to get "
        "fresh vote budgets gets 429 after this.",
    )
    session_mints_global: str = Field(
        "1000/hour", description="New anonymous sessions the whole service may start."
    )
    generation_requests_per_user: str = Field(
        "60/minute;1000/hour",
        description="Generations a caller may ask for (a chat request, HTTP or WebSocket; each "
        "side of a comparison), per window. The operator is not limited.",
    )
    generation_tokens_per_user: str = Field(
        "30000/minute;300000/hour",
        description="Tokens a caller may ask the engine for (max_tokens per choice, counted "
        "when the request is accepted), per window.",
    )
    generations_at_once_per_user: int = Field(
        4,
        ge=1,
        description="Generations one caller may have running at once (each choice of a chat, "
        "each side of a comparison; HTTP and WebSocket together).",
    )
    ws_connections_per_user: int = Field(
        4, ge=1, description="Chat WebSockets one caller may have open at once."
    )
    trusted_proxy_header: str = Field(
        "",
        description="Header a trusted reverse proxy sets to the client's address (e.g. "
        "X-Forwarded-For; its last entry is used). Empty: the connection's peer address. Set "
        "it only behind a proxy that overwrites the header, or any client can pick its own.",
    )
    ws_recheck_seconds: float = Field(
        5.0,
        gt=0,
        description="How often an open chat WebSocket checks its credential again: a revoked "
        "key or an ended session closes its sockets within this.",
    )
    ws_idle_timeout_seconds: float = Field(
        600.0, gt=0, description="A chat WebSocket with no frame and no reply for this closes."
    )
    allowed_origins: str = Field(
        "",
        description="Origins (scheme://host:port, comma-separated) whose pages may open the "
        "WebSocket with a session cookie, beside the server's own.",
    )
    rate_limit_storage: str = Field(
        "memory://",
        description="Where rate-limit counts live: memory:// (this process) or a Redis URI "
        "such as redis://127.0.0.1:6379, shared by every server process that names it.",
    )
    vote_rate_per_minute: float = Field(
        120.0, gt=0, description="Votes (ratings and comparison votes) per user per minute."
    )
    vote_burst: int = Field(60, ge=1, description="Votes a user may send at once.")
    max_comment_chars: int = Field(2000, ge=1)

    def evidence_rules(self) -> EvidenceRules:
        return EvidenceRules(
            trust_age_s=self.evidence_trust_age_s,
            max_per_user_pair=self.evidence_max_per_user_pair,
            max_per_origin_pair=self.evidence_max_per_origin_pair,
            max_origin_share=self.evidence_max_origin_share,
            anomaly_min_votes=self.evidence_anomaly_min_votes,
            anomaly_p=self.evidence_anomaly_p,
            enabled=self.evidence_screening,
        )

    @field_validator(
        "session_mints_per_address",
        "session_mints_global",
        "generation_requests_per_user",
        "generation_tokens_per_user",
    )
    @classmethod
    def _limit_rule(cls, v: str, info: ValidationInfo) -> str:
        parse_rule(str(info.field_name), v)
        return v

    @field_validator("rate_limit_storage")
    @classmethod
    def _limit_storage(cls, v: str) -> str:
        return validate_storage_uri(v)

    @property
    def engine_work_dir(self) -> Path:
        """Merged weights and relative adapters the engine writes (rebuildable)."""
        return self.data_dir / "engine"

    @property
    def resolved_model_dir(self) -> Path:
        return self.model if self.model is not None else self.models_dir / "SmolLM2-135M-Instruct"


def load_settings(env_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Build settings from the environment, an optional env file, and explicit overrides."""
    if env_file is not None:
        return Settings(_env_file=env_file, **overrides)  # type: ignore[call-arg]
    return Settings(**overrides)
