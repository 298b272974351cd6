"""Simulated users for the closed loop: a prompt set with a fixed held-out
split, gold preference functions, noisy simulated judges, and `simulate()`, which casts
votes on a running server through its public HTTP API only."""

from __future__ import annotations

from harness.simulation.gold import (
    SHIPPED,
    Gold,
    GoldReasons,
    GoldSpecError,
    answers_number,
    concise,
    load_gold,
    uses_list,
    warm,
    with_reasons,
)
from harness.simulation.prompts import Prompt, PromptFileError, load_prompts
from harness.simulation.run import (
    Progress,
    SimulationError,
    SimulationResult,
    VersionStats,
    simulate,
    simulate_async,
)
from harness.simulation.users import ComparisonPick, SimulatedUser, Thumbs

__all__ = [
    "SHIPPED",
    "ComparisonPick",
    "Gold",
    "GoldReasons",
    "GoldSpecError",
    "Progress",
    "Prompt",
    "PromptFileError",
    "SimulatedUser",
    "SimulationError",
    "SimulationResult",
    "Thumbs",
    "VersionStats",
    "answers_number",
    "concise",
    "load_gold",
    "load_prompts",
    "simulate",
    "simulate_async",
    "uses_list",
    "warm",
    "with_reasons",
]
