"""Prometheus metrics, one registry per app (no global state, so tests can build many apps)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest


class _Result(Protocol):
    tokens: int
    ttft_ms: float | None
    latency_ms: float
    finish_reason: str | None


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "loopchat_http_requests",
            "HTTP requests by route and status.",
            ["route", "status"],
            registry=self.registry,
        )
        self.generations = Counter(
            "loopchat_generations",
            "Replies generated, by policy version, source and outcome.",
            ["version", "source", "outcome"],
            registry=self.registry,
        )
        self.tokens = Counter(
            "loopchat_completion_tokens",
            "Completion tokens by policy version.",
            ["version"],
            registry=self.registry,
        )
        self.ttft = Histogram(
            "loopchat_time_to_first_token_seconds",
            "Time to first token.",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )
        self.latency = Histogram(
            "loopchat_generation_seconds",
            "Time to the last token.",
            buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
            registry=self.registry,
        )

    def observe_chat(self, version: str, source: str, results: Sequence[_Result]) -> None:
        for r in results:
            self.generations.labels(version, source, r.finish_reason or "unknown").inc()
            self.tokens.labels(version).inc(r.tokens)
            if r.ttft_ms is not None:
                self.ttft.observe(r.ttft_ms / 1000)
            self.latency.observe(r.latency_ms / 1000)

    def observe_cutoff(self, version: str, source: str) -> None:
        self.generations.labels(version, source, "cut_off").inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
