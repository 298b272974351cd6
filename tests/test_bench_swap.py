"""`loopchat bench swap`'s pure logic: reading a stream, phase bucketing, the version check,
the table. (The benchmark itself starts vLLM and is run by hand.)"""

from __future__ import annotations

import json
import math

import pytest

from harness.bench.swap import (
    ModeResult,
    PhaseStats,
    Reply,
    StreamState,
    SwapTimes,
    Window,
    allowed_versions,
    goal_line,
    phase_stats,
    render,
    summarize,
    version_problem,
)
from loopchat.cli import build_parser

OLD, NEW = "loopchat@v1", "loopchat@v2"
# notify at 10, canary at 10.5, promote sent at 10.6 and returned at 10.8
SWAP = SwapTimes(notified=10.0, canary=10.5, promote_sent=10.6, promoted=10.8)


def reply(start: float, end: float, *versions: str, **kw: object) -> Reply:
    args: dict[str, object] = {"headers_at": start + 0.1, "first_token_at": start + 0.2}
    args.update(kw)
    return Reply(start, end, versions=versions, tokens=10, **args)  # type: ignore[arg-type]


def chunk(model: str, content: str | None = None, finish: str | None = None) -> str:
    choice: dict[str, object] = {
        "index": 0,
        "delta": {} if content is None else {"content": content},
    }
    if finish:
        choice["finish_reason"] = finish
    return json.dumps({"model": model, "choices": [choice]})


def usage(model: str, tokens: int) -> str:
    return json.dumps({"model": model, "choices": [], "usage": {"completion_tokens": tokens}})


def test_a_stream_that_finishes_records_its_versions_first_token_and_tokens() -> None:
    s = StreamState()
    s.saw(OLD)  # the header
    s.read_event(chunk(OLD, ""), 1.0)  # the role chunk: empty content is not a token
    s.read_event(chunk(OLD, "Hi"), 2.0)
    s.read_event(chunk(OLD, finish="length"), 3.0)
    s.read_event(usage(OLD, 7), 3.0)
    s.read_event("[DONE]", 3.1)
    assert (s.versions, s.first_token_at, s.tokens, s.failure()) == ([OLD], 2.0, 7, None)


def test_a_reply_with_two_versions_keeps_both() -> None:
    s = StreamState()
    s.saw(OLD)
    s.read_event(chunk(NEW, "x"), 1.0)
    assert s.versions == [OLD, NEW]


@pytest.mark.parametrize(
    ("events", "failure"),
    [
        ([json.dumps({"error": {"message": "boom"}}), "[DONE]"], "error event"),
        ([chunk(OLD, finish="abort"), usage(OLD, 1), "[DONE]"], "finish_reason 'abort'"),
        ([chunk(OLD, finish="stop"), usage(OLD, 1)], "without [DONE]"),
        ([chunk(OLD, finish="stop"), "[DONE]"], "without a usage chunk"),
    ],
)
def test_stream_failures(events: list[str], failure: str) -> None:
    s = StreamState()
    for e in events:
        s.read_event(e, 0.0)
    assert failure in (s.failure() or "")


def test_phases_count_throughput_by_end_and_ttft_by_start() -> None:
    replies = [
        reply(0.0, 1.5, OLD),  # ends in [1, 3): counted; started before: no TTFT
        reply(1.0, 2.0, OLD, first_token_at=1.5),  # counted, TTFT 500 ms
        reply(2.0, 4.0, OLD, first_token_at=2.1),  # ends after: TTFT 100 ms only
        reply(1.2, 2.5, error="HTTP 500"),  # failed: neither
    ]
    p = phase_stats(replies, Window("before", 1.0, 3.0))
    assert (p.completed, p.tokens, p.seconds) == (2, 20, 2.0)
    assert (p.tok_s, p.req_s) == (10.0, 1.0)
    assert p.ttft_p50_ms == pytest.approx(300.0)
    assert math.isnan(phase_stats(replies, Window("after", 9.0, 10.0)).ttft_p50_ms)


def test_the_allowed_version_depends_on_when_the_reply_was_routed() -> None:
    assert allowed_versions(reply(10.0, 12.0, OLD), SWAP, OLD, NEW) == {OLD}  # headers 10.1
    assert allowed_versions(reply(10.55, 12.0), SWAP, OLD, NEW) == {OLD, NEW}  # 10.55-10.65
    assert allowed_versions(reply(10.75, 12.0), SWAP, OLD, NEW) == {OLD, NEW}
    assert allowed_versions(reply(10.81, 12.0), SWAP, OLD, NEW) == {NEW}


def test_version_problems() -> None:
    assert version_problem(reply(1.0, 2.0, OLD), SWAP, OLD, NEW) is None
    assert version_problem(reply(1.0, 2.0, NEW), SWAP, OLD, NEW) == "wrong"
    assert version_problem(reply(11.0, 12.0, OLD), SWAP, OLD, NEW) == "wrong"
    assert version_problem(reply(10.0, 12.0, OLD, NEW), SWAP, OLD, NEW) == "mixed"
    failed = reply(11.0, 12.0, OLD, NEW, error="HTTP 500")
    assert version_problem(failed, SWAP, OLD, NEW) is None  # counted as failed instead


def test_summary_table_and_goal() -> None:
    windows = [Window("before", 0, 10), Window("during", 10, 14), Window("after", 14, 24)]
    replies = [reply(1.0, 2.0, OLD), reply(11.0, 12.0, NEW), reply(15.0, 16.0, NEW)]
    ok = summarize("lora", replies, SWAP, windows, "loopchat")
    assert (ok.requests, ok.failed, ok.version_problems, ok.goal_met) == (3, 0, 0, True)
    slow = SwapTimes(0.0, 1.0, 1.0, 2.5, swapped=4.0, engine={"pause_s": 0.25})
    bad = ModeResult(
        "merged", slow, tuple(PhaseStats(n, 1.0, 0, 0, math.nan) for n in ("b", "d", "a")),
        requests=5, failed=1, version_problems=0, errors=("HTTP 500",),
    )  # fmt: skip
    assert not bad.goal_met
    table = "\n".join(render([bad, ok]))
    assert "merged" in table and "lora" in table and "0.250" in table and "n/a" in table
    assert "2.500" in table and "0.800" in table  # the two swap windows
    assert goal_line([bad, ok]).startswith("goal") and "missed" in goal_line([bad, ok])
    assert ": met" in goal_line([ok])


def test_the_cli_defaults() -> None:
    args = build_parser().parse_args(["bench", "swap"])
    assert (args.modes, args.concurrency, args.max_tokens, args.phase_seconds) == (
        ["merged", "lora"], 8, 64, 20.0,
    )  # fmt: skip
