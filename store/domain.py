"""Enums shared by storage, engines and the API (one definition each)."""

from __future__ import annotations

from enum import StrEnum


class VersionKind(StrEnum):
    BASE = "base"  # the base model itself
    LORA = "lora"  # an adapter on the base model
    MERGED = "merged"  # full weights of the base architecture


class VersionStatus(StrEnum):
    CANDIDATE = "candidate"
    CANARY = "canary"
    SERVING = "serving"
    RETIRED = "retired"
    REJECTED = "rejected"
    FAILED = "failed"
