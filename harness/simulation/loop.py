"""The closed loop: rounds of simulated votes, a training round, the canary and
promotion path, and a gold evaluation of whatever serves, all through the HTTP API.

Round r (1..rounds):

1. vote: `simulate()` casts `votes_per_round` votes on train prompts. Users get whatever
   serves, the canary's share included, and comparisons put the canary against the
   serving version, so the server's promotion rule acts on these votes by itself.
   With `promote="always"` the loop then promotes a canary through the operator API;
   with `"never"` it retires it (the server's own rule may still have promoted it during
   the votes unless the server runs with LOOPCHAT_AUTO_PROMOTE=false). With `"close"`
   the canary's window closes with the round: one the rule left waiting is promoted if
   it won more than half of its live comparisons with the serving version (at least
   `close_min_comparisons`), else retired (`close_verdict`). This happens before the
   round's training, so the next candidate is trained from whatever serves after it.
2. train: `POST /v1/admin/training-runs` queues a round, which a trainer process
   (`loopchat train --schedule`, started by `loopchat run`) picks up; the loop polls
   `GET /v1/admin/training-runs/{id}` until it finishes.
3. canary: a published candidate is followed in `GET /v1/admin/policies` until the
   server admits it as canary (or it fails to load). Its promotion happens on the next
   round's votes.
4. evaluate: the serving version and `v0` answer the first `eval_samples` held-out
   prompts, pinned (`loopchat@vN`), with the same seeds and temperature; `gold()` scores
   both; the gold win rate counts ties as half. v0's replies are sampled once, in round 0,
   and reused (same prompts, same seeds).

Round 0 is the baseline: v0 evaluated before any vote (win rate 0.5 by definition).
Every figure lands in a `LoopReport`; `report.write_report()` turns it into report.json,
plots and report.md. A figure that could not be had is null, and the round's `nulls`
says why.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx

from harness.simulation.client import ApiError, open_operator
from harness.simulation.gold import Gold, gold_spec, load_gold
from harness.simulation.prompts import Prompt, load_prompts
from harness.simulation.run import SimulationResult, VersionStats, simulate
from harness.simulation.users import DEFAULT_FLIP_RATE
from store.intervals import wilson_interval
from store.lengthcontrol import length_controlled_win_rate

PromoteMode = Literal["rule", "close", "always", "never"]
PROMOTE_MODES: tuple[PromoteMode, ...] = ("rule", "close", "always", "never")
BASELINE = "v0"
TERMINAL = ("succeeded", "stopped", "rejected", "failed")
# A candidate is settled once the server has admitted it (canary) or got past that.
ADMITTED = ("canary", "serving", "retired", "failed", "rejected")
PHASES = ("vote", "train", "canary", "evaluate")
REPORT_VERSION = 1


class LoopError(RuntimeError):
    """The loop could not go on (no server, bad token); the message says why."""


# -- pure helpers --------------------------------------------------------------------------


def gold_win_rate(gold_a: Sequence[float], gold_b: Sequence[float]) -> dict[str, Any]:
    """Pairwise win rate of a over b on paired scores: win when gold_a > gold_b, ties half."""
    if len(gold_a) != len(gold_b):
        raise ValueError("the two score lists must pair up")
    wins = sum(a > b for a, b in zip(gold_a, gold_b, strict=True))
    losses = sum(a < b for a, b in zip(gold_a, gold_b, strict=True))
    ties = len(gold_a) - wins - losses
    n = len(gold_a)
    return {
        "win_rate": (wins + 0.5 * ties) / n if n else None,
        "wins": wins,
        "ties": ties,
        "losses": losses,
        "n": n,
    }


def thumbs_table(
    per_version: dict[str, VersionStats] | dict[str, dict[str, Any]],
) -> dict[str, dict[str, Any]]:
    """Thumbs-up rate per version with a 95% Wilson interval, from a simulation's
    per-version stats (VersionStats or their to_dict())."""
    out: dict[str, dict[str, Any]] = {}
    for name in sorted(per_version):
        v = per_version[name]
        up, down = (
            (v.thumbs_up, v.thumbs_down)
            if isinstance(v, VersionStats)
            else (int(v["thumbs_up"]), int(v["thumbs_down"]))
        )
        n = up + down
        ci = wilson_interval(up, n) if n else None
        out[name] = {
            "thumbs_up": up,
            "thumbs_down": down,
            "n": n,
            "rate": up / n if n else None,
            "low": ci.low if ci else None,
            "high": ci.high if ci else None,
        }
    return out


def merge_thumbs(tables: Sequence[dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Thumbs over several rounds: counts summed per version, intervals recomputed."""
    counts: dict[str, dict[str, Any]] = {}
    for table in tables:
        for name, row in table.items():
            c = counts.setdefault(name, {"thumbs_up": 0, "thumbs_down": 0})
            c["thumbs_up"] += int(row["thumbs_up"])
            c["thumbs_down"] += int(row["thumbs_down"])
    return thumbs_table(counts)


def close_verdict(
    canary: str, verdict: dict[str, Any] | None, min_comparisons: int
) -> tuple[Literal["promote", "retire"] | None, str]:
    """What the loop does with a canary when its round closes (`promote="close"`), from the
    server's last canary verdict (`GET /v1/admin/policies/ratings`, field `canary`): promote
    when it won more than half of at least `min_comparisons` comparisons, retire when it did
    not; keep it waiting with fewer comparisons. Returns the action and a sentence."""
    if verdict is None or verdict.get("version") != canary:
        return None, f"no verdict on {canary} from the server yet: kept waiting"
    metrics = verdict.get("metrics") or {}
    n = int(metrics.get("comparisons") or 0)
    rate = metrics.get("win_rate")
    if n < min_comparisons or rate is None:
        return None, f"{canary}: {n} of {min_comparisons} comparisons at round close: kept waiting"
    record = f"{canary} won {float(rate):.3f} of {n} comparisons with the serving version"
    if float(rate) > 0.5:
        return "promote", f"round closed: {record}"
    return "retire", f"round closed: {record}, not more than half"


def _sqrt(x: float | None) -> float | None:
    return math.sqrt(max(x, 0.0)) if x is not None else None


def _mean(xs: Sequence[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


# -- records -------------------------------------------------------------------------------


@dataclass
class GoldEvaluation:
    """One round's gold evaluation: the serving version's replies to the held-out prompts
    scored by the gold against v0's, pair by pair."""

    serving: str
    baseline: str
    samples: int  # pairs scored
    errors: int  # prompts that failed (skipped)
    gold_serving: float | None
    gold_baseline: float | None
    win_rate: float | None
    wins: int
    ties: int
    losses: int
    words_serving: float | None
    words_baseline: float | None
    reused_baseline: bool  # serving is v0: its replies are the baseline's
    # the win rate at equal length: wins regressed on the word-count difference, read at 0
    length_controlled_win_rate: float | None = None
    # The serving version's replies come from the round that first evaluated it (same
    # prompts and seeds): a version is scored once, so the gold moves only when it changes.
    reused: bool = False


@dataclass
class TrainingRecord:
    run_id: int | None
    status: str  # succeeded, stopped, rejected, failed, or timeout / error (the loop's)
    reason: str | None
    policy_version: str | None
    elapsed_s: float
    summary: dict[str, float | None]
    reward_candidate: float | None  # the RM's mean reward (the proxy), this round's RM
    reward_serving: float | None
    counts: dict[str, Any]
    last_progress: dict[str, Any]


@dataclass
class RoundRecord:
    round: int
    serving_start: str | None
    canary_start: str | None
    serving_end: str | None = None
    canary_end: str | None = None
    votes_requested: int = 0
    votes_recorded: int = 0
    simulation: dict[str, Any] | None = None
    thumbs: dict[str, dict[str, Any]] = field(default_factory=dict)
    server_ratings: list[dict[str, Any]] | None = None
    promotion: dict[str, Any] = field(default_factory=dict)
    training: TrainingRecord | None = None
    candidate: str | None = None
    candidate_status: str | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    # rounds the trainer ran on its own schedule (events / interval) since the last round
    other_runs: list[dict[str, Any]] = field(default_factory=list)
    promoted: list[str] = field(default_factory=list)
    retired: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    evaluation: GoldEvaluation | None = None
    rm_accuracy: float | None = None
    rm_length_controlled_accuracy: float | None = None
    rm_length_baseline_accuracy: float | None = None  # "the shorter reply wins"
    kl_candidate: float | None = None
    kl_serving: float | None = None  # KL to v0 of the version evaluated this round
    sqrt_kl_serving: float | None = None
    wall_s: dict[str, float | None] = field(default_factory=dict)
    nulls: dict[str, str] = field(default_factory=dict)  # field -> why it is null

    def why(self, name: str, reason: str) -> None:
        self.nulls.setdefault(name, reason)


@dataclass
class LoopReport:
    config: dict[str, Any]
    rounds: list[RoundRecord] = field(default_factory=list)
    totals: dict[str, Any] = field(default_factory=dict)
    started_at: float = 0.0
    elapsed_s: float = 0.0
    stopped_early: bool = False
    stop_reason: str | None = None
    version: int = REPORT_VERSION

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def null_fields(record: dict[str, Any]) -> list[str]:
    """Dotted names of the null figures of a round (as JSON), down into training.summary,
    evaluation and wall_s; each must have a reason in `nulls`."""
    out: list[str] = []
    for key, value in record.items():
        if key in ("nulls",):
            continue
        if value is None:
            out.append(key)
        elif key in ("training", "evaluation", "wall_s") and isinstance(value, dict):
            for k, v in value.items():
                if v is None:
                    out.append(f"{key}.{k}")
                elif k == "summary" and isinstance(v, dict):
                    out += [f"training.summary.{kk}" for kk, vv in v.items() if vv is None]
    return out


def totals_of(report: LoopReport) -> dict[str, Any]:
    rounds = report.rounds
    trained = [r.training for r in rounds if r.training is not None]
    statuses: dict[str, int] = {}
    for t in trained:
        statuses[t.status] = statuses.get(t.status, 0) + 1
    wall: dict[str, float] = {p: 0.0 for p in PHASES}
    for r in rounds:
        for p in PHASES:
            wall[p] += r.wall_s.get(p) or 0.0
    evals = [r.evaluation for r in rounds if r.evaluation is not None]
    rates = [e.win_rate for e in evals if e.win_rate is not None]
    golds = [e.gold_serving for e in evals if e.gold_serving is not None]
    return {
        "rounds": sum(1 for r in rounds if r.round > 0),
        "votes_requested": sum(r.votes_requested for r in rounds),
        "votes_recorded": sum(r.votes_recorded for r in rounds),
        "training_runs": statuses,
        "versions_published": [
            t.policy_version for t in trained if t.policy_version and t.status == "succeeded"
        ],
        "promoted": [v for r in rounds for v in r.promoted],
        "retired": [v for r in rounds for v in r.retired],
        "rejected": [v for r in rounds for v in r.rejected],
        "final_serving": rounds[-1].serving_end if rounds else None,
        "final_win_rate": rates[-1] if rates else None,
        "best_win_rate": max(rates) if rates else None,
        "final_gold": golds[-1] if golds else None,
        "baseline_gold": evals[0].gold_baseline if evals else None,
        "wall_s": {k: round(v, 3) for k, v in wall.items()},
        "thumbs": merge_thumbs([r.thumbs for r in rounds]),
    }


# -- the operator API ----------------------------------------------------------------------


class Operator:
    """The operator API of one server (sync; the loop waits on it anyway)."""

    def __init__(self, base_url: str, admin_token: str, timeout_s: float = 60.0):
        self.http = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers={"Authorization": f"Bearer {admin_token}"},
            timeout=timeout_s,
        )

    def close(self) -> None:
        self.http.close()

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        try:
            r = self.http.request(method, path, json=body)
        except httpx.HTTPError as e:
            raise ApiError(f"{method} {path}", None, type(e).__name__, str(e)) from e
        if r.status_code >= 400:
            raise ApiError(f"{method} {path}", r.status_code, "http_error", r.text[:300])
        return r.json()

    def policies(self) -> dict[str, Any]:
        out: dict[str, Any] = self.call("GET", "/v1/admin/policies")
        return out

    def status_of(self, version: str) -> str | None:
        for row in self.policies()["data"]:
            if row["name"] == version:
                return str(row["status"])
        return None

    def events(self, limit: int = 500) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = self.call("GET", f"/v1/admin/policies/events?limit={limit}")
        return out

    def ratings(self) -> dict[str, Any]:
        out: dict[str, Any] = self.call("GET", "/v1/admin/policies/ratings?samples=50")
        return out


# -- the phases ----------------------------------------------------------------------------


def _train(
    op: Operator, timeout_s: float, poll_s: float, say: Callable[[str], None]
) -> TrainingRecord:
    start = time.monotonic()
    queued = op.call("POST", "/v1/admin/training-runs")
    run_id = int(queued["id"])
    say(f"training run {run_id} queued")
    last_line = ""
    run: dict[str, Any] = queued
    while True:
        run = op.call("GET", f"/v1/admin/training-runs/{run_id}")
        status = str(run["status"])
        prog = run.get("progress") or {}
        line = f"training run {run_id}: {status} {prog.get('phase', '')} {prog.get('step', '')}"
        line += f"/{prog.get('total', '')}" if prog.get("total") else ""
        if line != last_line:
            say(line)
            last_line = line
        if status in TERMINAL:
            break
        if time.monotonic() - start > timeout_s:
            status = "timeout"
            run = {**run, "reason": f"not finished after {timeout_s:.0f} s (was {run['status']})"}
            break
        time.sleep(poll_s)
    evaluation = (run.get("metrics") or {}).get("evaluation") or {}

    def fig(key: str) -> float | None:
        v = evaluation.get(key)
        return float(v) if isinstance(v, int | float) and math.isfinite(v) else None

    return TrainingRecord(
        run_id=run_id,
        status=status,
        reason=run.get("reason"),
        policy_version=run.get("policy_version"),
        elapsed_s=round(time.monotonic() - start, 3),
        summary=dict(run.get("summary") or {}),
        reward_candidate=fig("reward_candidate"),
        reward_serving=fig("reward_serving"),
        counts=dict(run.get("counts") or {}),
        last_progress=dict(run.get("progress") or {}),
    )


def _wait_admitted(op: Operator, version: str, timeout_s: float, poll_s: float) -> str | None:
    deadline = time.monotonic() + timeout_s
    status = op.status_of(version)
    while status not in ADMITTED and time.monotonic() < deadline:
        time.sleep(poll_s)
        status = op.status_of(version)
    return status


@dataclass
class _Sample:
    prompt: Prompt
    seed: int
    text: str
    gold: float


async def _sample_version(
    base_url: str,
    version: str,
    prompts: Sequence[Prompt],
    seeds: Sequence[int],
    gold: Gold,
    *,
    temperature: float,
    max_tokens: int | None,
    concurrency: int,
    admin_token: str,
) -> tuple[dict[int, _Sample], int]:
    """Replies of `version` (pinned) to each prompt with its seed, gold-scored. Returns the
    samples by prompt index and the count of failed prompts."""
    client = open_operator(base_url, admin_token)
    out: dict[int, _Sample] = {}
    errors = 0
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        nonlocal errors
        async with sem:
            p = prompts[i]
            try:
                reply = await client.chat(
                    p.messages(),
                    model=f"loopchat@{version}",
                    max_tokens=max_tokens,
                    temperature=temperature,
                    seed=seeds[i],
                )
            except ApiError:
                errors += 1
                return
            out[i] = _Sample(p, seeds[i], reply.text, float(gold(p.text, reply.text)))

    try:
        await asyncio.gather(*(one(i) for i in range(len(prompts))))
    finally:
        await client.aclose()
    return out, errors


def _evaluate(
    base_url: str,
    serving: str,
    baseline: dict[int, _Sample],
    prompts: Sequence[Prompt],
    seeds: Sequence[int],
    gold: Gold,
    *,
    temperature: float,
    max_tokens: int | None,
    concurrency: int,
    admin_token: str,
    sampled: dict[str, dict[int, _Sample]],
) -> GoldEvaluation:
    """Score `serving`'s replies against v0's by the gold. Replies of a version already in
    `sampled` (v0's baseline among them) are reused: vLLM's seeded sampling does not repeat
    exactly, so sampling an unchanged version again would move its gold by noise. New ones
    are added to it."""
    reused = serving in sampled
    if reused:
        mine = sampled[serving]
        errors = len(prompts) - len(mine)
    else:
        mine, errors = asyncio.run(
            _sample_version(
                base_url,
                serving,
                prompts,
                seeds,
                gold,
                temperature=temperature,
                max_tokens=max_tokens,
                concurrency=concurrency,
                admin_token=admin_token,
            )
        )
        if not errors:  # a version with failed prompts is sampled again next time
            sampled[serving] = mine
    both = sorted(set(mine) & set(baseline))
    wr = gold_win_rate([mine[i].gold for i in both], [baseline[i].gold for i in both])
    words = [len(mine[i].text.split()) for i in both]
    base_words = [len(baseline[i].text.split()) for i in both]
    controlled = length_controlled_win_rate(
        [gold_win_rate([mine[i].gold], [baseline[i].gold])["win_rate"] for i in both],
        [float(w - b) for w, b in zip(words, base_words, strict=True)],
    )
    return GoldEvaluation(
        serving=serving,
        baseline=BASELINE,
        samples=len(both),
        errors=errors,
        gold_serving=_mean([mine[i].gold for i in both]),
        gold_baseline=_mean([baseline[i].gold for i in both]),
        win_rate=wr["win_rate"],
        wins=wr["wins"],
        ties=wr["ties"],
        losses=wr["losses"],
        words_serving=_mean([float(w) for w in words]),
        words_baseline=_mean([float(w) for w in base_words]),
        reused_baseline=serving == BASELINE,
        length_controlled_win_rate=controlled,
        reused=reused,
    )


# -- the loop ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _LoopConfig:
    """What `run_loop` was asked for, with the gold loaded and the held-out prompts drawn."""

    base_url: str
    admin_token: str
    rounds: int
    votes_per_round: int
    gold: Gold
    flip_rate: float
    seed: int
    max_tokens: int | None
    prompts: list[Prompt]  # the held-out prompts of the gold evaluation
    seeds: list[int]  # one per prompt, the same in every round
    promote: PromoteMode
    close_min_comparisons: int
    train_timeout_s: float
    canary_timeout_s: float
    poll_s: float
    eval_temperature: float
    eval_concurrency: int
    simulate_options: dict[str, Any]
    report_dir: Path | None  # None: the report is not written


@dataclass
class _LoopState:
    """What the loop carries from one round to the next."""

    cfg: _LoopConfig
    op: Operator
    report: LoopReport
    say: Callable[[str], None]
    start: float  # time.monotonic() at the start, for the report's elapsed_s
    baseline: dict[int, _Sample] = field(default_factory=dict)  # v0's held-out replies
    sampled: dict[str, dict[int, _Sample]] = field(default_factory=dict)  # per version
    # KL to v0 per version, from the run that made it
    kl_of: dict[str, float] = field(default_factory=lambda: {BASELINE: 0.0})
    # the newest policy event and training run already seen: a round reports only later ones
    last_event: int = 0
    last_run: int = 0


def run_loop(
    base_url: str,
    admin_token: str,
    *,
    rounds: int,
    votes_per_round: int,
    gold: Gold | str,
    flip_rate: float = DEFAULT_FLIP_RATE,
    seed: int = 0,
    max_tokens: int | None = None,
    eval_samples: int = 50,
    out_dir: Path | str | None = None,
    progress: Callable[[str], None] | None = None,
    promote: PromoteMode = "rule",
    close_min_comparisons: int = 30,
    train_timeout_s: float = 3600.0,
    canary_timeout_s: float = 120.0,
    poll_s: float = 2.0,
    eval_temperature: float = 0.7,
    eval_concurrency: int | None = None,
    write: bool = True,
    **simulate_options: Any,
) -> LoopReport:
    """Run the closed loop against the server at `base_url` (a trainer process must take
    its queued rounds). Writes report.json, plots and report.md into `out_dir` after every
    round (so a run cut short still leaves its figures) when `write` and `out_dir` are set."""
    if rounds < 0 or votes_per_round < 0 or eval_samples < 1:
        raise ValueError("rounds and votes_per_round must be >= 0, eval_samples >= 1")
    if promote not in PROMOTE_MODES:
        raise ValueError(f"promote must be one of {PROMOTE_MODES}, not {promote!r}")
    if eval_concurrency is None:  # the votes' load: a comparison streams two replies
        eval_concurrency = 2 * int(simulate_options.get("concurrency", 4))
    gold_fn = load_gold(gold) if isinstance(gold, str) else gold
    prompts = load_prompts("heldout")[:eval_samples]
    cfg = _LoopConfig(
        base_url=base_url,
        admin_token=admin_token,
        rounds=rounds,
        votes_per_round=votes_per_round,
        gold=gold_fn,
        flip_rate=flip_rate,
        seed=seed,
        max_tokens=max_tokens,
        prompts=prompts,
        seeds=[seed * 100_000 + i for i in range(len(prompts))],
        promote=promote,
        close_min_comparisons=close_min_comparisons,
        train_timeout_s=train_timeout_s,
        canary_timeout_s=canary_timeout_s,
        poll_s=poll_s,
        eval_temperature=eval_temperature,
        eval_concurrency=eval_concurrency,
        simulate_options=simulate_options,
        report_dir=Path(out_dir) if write and out_dir is not None else None,
    )
    report = LoopReport(config=_config_record(cfg, gold), started_at=time.time())
    op = Operator(base_url, admin_token)
    st = _LoopState(cfg, op, report, progress or (lambda _line: None), time.monotonic())
    try:
        _round_zero(st, _connect(st))
        for r in range(1, rounds + 1):
            if not _round(st, r):
                break
    finally:
        op.close()
    _save(st)
    return report


def _config_record(cfg: _LoopConfig, gold: Gold | str) -> dict[str, Any]:
    """The report's `config`: the loop's settings as JSON."""
    return {
        "base_url": cfg.base_url,
        "rounds": cfg.rounds,
        "votes_per_round": cfg.votes_per_round,
        "gold": gold if isinstance(gold, str) else gold_spec(cfg.gold),
        "flip_rate": cfg.flip_rate,
        "seed": cfg.seed,
        "max_tokens": cfg.max_tokens,
        "eval_samples": len(cfg.prompts),
        "eval_temperature": cfg.eval_temperature,
        "eval_concurrency": cfg.eval_concurrency,
        "eval_seeds": f"{cfg.seeds[0]}..{cfg.seeds[-1]}" if cfg.seeds else None,
        "promote": cfg.promote,
        "close_min_comparisons": cfg.close_min_comparisons if cfg.promote == "close" else None,
        "train_timeout_s": cfg.train_timeout_s,
        "canary_timeout_s": cfg.canary_timeout_s,
        "simulate_options": {
            k: v for k, v in cfg.simulate_options.items() if isinstance(v, int | float | str)
        },
        "baseline_replies": "v0 sampled once in round 0, reused with the same seeds",
    }


def _save(st: _LoopState) -> None:
    """Bring the totals and elapsed time up to date and write the report, if asked to."""
    report = st.report
    report.totals = totals_of(report)
    report.elapsed_s = round(time.monotonic() - st.start, 3)
    if st.cfg.report_dir is not None:
        from harness.simulation.report import write_report

        write_report(report.to_dict(), st.cfg.report_dir)


def _connect(st: _LoopState) -> dict[str, Any]:
    """The server's policies at the start; also notes its newest event and training run.
    A LoopError when the operator API does not answer (no server, bad token)."""
    try:
        pol = st.op.policies()
        st.last_event = max((int(e["id"]) for e in st.op.events()), default=0)
        runs = st.op.call("GET", "/v1/admin/training-runs?limit=1")
        st.last_run = max((int(run["id"]) for run in runs), default=0)
    except ApiError as e:
        raise LoopError(f"cannot reach the operator API at {st.cfg.base_url}: {e}") from e
    return pol


def _round_zero(st: _LoopState, pol: dict[str, Any]) -> None:
    """Round 0, the baseline: v0's replies to the held-out prompts, sampled before any vote;
    every later round is scored against them."""
    cfg = st.cfg
    rec = RoundRecord(0, pol["serving"], pol.get("canary"))
    t0 = time.monotonic()
    st.say(f"round 0: sampling {BASELINE} on {len(cfg.prompts)} held-out prompts")
    baseline, errors = asyncio.run(
        _sample_version(
            cfg.base_url,
            BASELINE,
            cfg.prompts,
            cfg.seeds,
            cfg.gold,
            temperature=cfg.eval_temperature,
            max_tokens=cfg.max_tokens,
            concurrency=cfg.eval_concurrency,
            admin_token=cfg.admin_token,
        )
    )
    if not baseline:  # every reply failed: no baseline to measure any round against
        raise LoopError(
            f"{BASELINE} answered none of the {len(cfg.prompts)} held-out prompts "
            f"({errors} errors); is the server's engine up (GET /readyz)?"
        )
    st.baseline = baseline
    st.sampled = {BASELINE: baseline}
    rec.evaluation = evaluation = _baseline_evaluation(baseline, errors)
    rec.wall_s = {"vote": None, "train": None, "canary": None}
    rec.wall_s["evaluate"] = round(time.monotonic() - t0, 3)
    for p in ("vote", "train", "canary"):
        rec.why(f"wall_s.{p}", "round 0 is the baseline: no votes or training")
    rec.serving_end, rec.canary_end = rec.serving_start, rec.canary_start
    _explain_round0(rec)
    st.report.rounds.append(rec)
    st.say(f"round 0: {BASELINE} gold {evaluation.gold_serving}")
    _save(st)


def _baseline_evaluation(baseline: dict[int, _Sample], errors: int) -> GoldEvaluation:
    """v0 against itself: every pair a tie, so the win rate is 0.5 by definition."""
    gold = [s.gold for s in baseline.values()]
    words = [float(len(s.text.split())) for s in baseline.values()]
    return GoldEvaluation(
        serving=BASELINE,
        baseline=BASELINE,
        samples=len(baseline),
        errors=errors,
        gold_serving=_mean(gold),
        gold_baseline=_mean(gold),
        win_rate=0.5,
        wins=0,
        ties=len(baseline),
        losses=0,
        words_serving=_mean(words),
        words_baseline=_mean(words),
        reused_baseline=True,
        length_controlled_win_rate=0.5,
    )


def _round(st: _LoopState, r: int) -> bool:
    """Round r >= 1, phase by phase (see the module's docstring). False when the loop
    stops here: the votes stopped early, or the training run did not finish in time."""
    pol = st.op.policies()
    rec = RoundRecord(r, pol["serving"], pol.get("canary"))
    rec.votes_requested = st.cfg.votes_per_round
    if not _vote(st, rec):
        return False
    training = _train_round(st, rec)
    _admit_candidate(st, rec, training)
    _record_other_runs(st, rec, training)
    _record_events(st, rec, training)
    evaluation = _evaluate_round(st, rec, training)
    _record_round(st, rec, evaluation)
    if training.status == "timeout":
        st.report.stopped_early = True
        st.report.stop_reason = f"round {r}: {training.reason}"
        return False
    return True


def _vote(st: _LoopState, rec: RoundRecord) -> bool:
    """1. vote: the round's simulated votes, then what the loop does with the canary. False
    when the votes stopped early: the server keeps failing, and training on nothing is no
    round."""
    t0 = time.monotonic()
    result = _cast_votes(st, rec)
    if result.stopped_early:
        _stop_after_failed_votes(st, rec, result)
        return False
    votes = f"{result.votes}/{st.cfg.votes_per_round} votes"
    st.say(f"round {rec.round}: {votes} in {result.elapsed_s:.0f} s")
    rec.thumbs = thumbs_table(result.per_version)
    _close_canary(st, rec, _server_ratings(st.op, rec))
    rec.wall_s["vote"] = round(time.monotonic() - t0, 3)
    return True


def _cast_votes(st: _LoopState, rec: RoundRecord) -> SimulationResult:
    cfg, r = st.cfg, rec.round
    st.say(
        f"round {r}: {cfg.votes_per_round} votes (serving {rec.serving_start}, "
        f"canary {rec.canary_start})"
    )
    result = simulate(
        cfg.base_url,
        votes=cfg.votes_per_round,
        gold=cfg.gold,
        flip_rate=cfg.flip_rate,
        split="train",
        seed=cfg.seed * 1000 + r,
        max_tokens=cfg.max_tokens,
        admin_token=cfg.admin_token,
        **cfg.simulate_options,
    )
    rec.simulation = result.to_dict()
    rec.simulation["config"]["gold"] = st.report.config["gold"]
    rec.votes_recorded = result.votes
    return result


def _stop_after_failed_votes(st: _LoopState, rec: RoundRecord, result: SimulationResult) -> None:
    kinds = ", ".join(f"{n} x {k}" for k, n in sorted(result.error_kinds.items()))
    reason = (
        f"round {rec.round}: votes stopped at {result.votes}/{st.cfg.votes_per_round} after "
        f"{result.errors} failed requests ({kinds})"
    )
    st.report.stopped_early = True
    st.report.stop_reason = reason
    rec.why("evaluation", "the round's votes stopped early; no training, no evaluation")
    st.report.rounds.append(rec)
    st.say(reason)


def _server_ratings(op: Operator, rec: RoundRecord) -> dict[str, Any] | None:
    """The server's ratings after the votes, its canary verdict among them; None, with the
    reason in the round's nulls, when it could not be had."""
    try:
        ratings = op.ratings()
    except ApiError as e:
        rec.why("server_ratings", f"GET /v1/admin/policies/ratings failed: {e}")
        return None
    rec.server_ratings = list(ratings.get("ratings") or [])
    return ratings


def _close_canary(st: _LoopState, rec: RoundRecord, ratings: dict[str, Any] | None) -> None:
    """Promote or retire the canary after the votes as `promote` says ("rule" leaves it to
    the server, whose rule may also have acted during the votes)."""
    promote = st.cfg.promote
    canary = st.op.policies().get("canary")
    rec.promotion = {"mode": promote, "canary_after_votes": canary, "action": None}
    verb: str | None = None
    why = f"closed loop, promote={promote}"
    if canary and promote in ("always", "never"):
        verb = "promote" if promote == "always" else "retire"
    elif canary and promote == "close":
        verdict = ratings.get("canary") if ratings is not None else None
        if ratings is None:
            rec.promotion["error"] = rec.nulls["server_ratings"]
        rec.promotion["verdict"] = verdict
        verb, why = close_verdict(str(canary), verdict, st.cfg.close_min_comparisons)
        rec.promotion["reason"] = why
    if canary and verb is not None:
        try:
            st.op.call("POST", f"/v1/admin/policies/{canary}/{verb}", {"reason": why})
            rec.promotion["action"] = f"{verb} {canary}"
        except ApiError as e:
            rec.promotion["action"] = f"{verb} {canary} failed: {e}"
    if canary and promote != "rule":
        st.say(f"round {rec.round}: {rec.promotion['action'] or 'no action'} ({why})")


def _train_round(st: _LoopState, rec: RoundRecord) -> TrainingRecord:
    """2. train: queue a training round and wait until the trainer finishes it."""
    t0 = time.monotonic()
    try:
        t = _train(st.op, st.cfg.train_timeout_s, st.cfg.poll_s, st.say)
    except ApiError as e:
        t = TrainingRecord(
            run_id=None,
            status="error",
            reason=str(e),
            policy_version=None,
            elapsed_s=round(time.monotonic() - t0, 3),
            summary={},
            reward_candidate=None,
            reward_serving=None,
            counts={},
            last_progress={},
        )
    rec.training = t
    rec.wall_s["train"] = round(time.monotonic() - t0, 3)
    rec.rm_accuracy = t.summary.get("rm_accuracy")
    rec.rm_length_controlled_accuracy = t.summary.get("rm_length_controlled_accuracy")
    rec.rm_length_baseline_accuracy = t.summary.get("rm_length_baseline_accuracy")
    rec.kl_candidate = t.summary.get("kl_candidate")
    st.say(
        f"round {rec.round}: training {t.status} ({t.reason or 'ok'}), version {t.policy_version}"
    )
    return t


def _admit_candidate(st: _LoopState, rec: RoundRecord, t: TrainingRecord) -> None:
    """3. canary: follow a published candidate until the server admits it; whether it is
    promoted is up to the next round's votes."""
    t0 = time.monotonic()
    if not (t.policy_version and t.status == "succeeded"):
        rec.wall_s["canary"] = None
        why = f"no candidate published (training {t.status}: {t.reason})"
        for name in ("candidate", "candidate_status", "wall_s.canary"):
            rec.why(name, why)
        return
    rec.candidate = t.policy_version
    if rec.kl_candidate is not None:
        st.kl_of[t.policy_version] = rec.kl_candidate
    rec.candidate_status = _wait_admitted(
        st.op, t.policy_version, st.cfg.canary_timeout_s, min(st.cfg.poll_s, 1.0)
    )
    st.say(f"round {rec.round}: {t.policy_version} is {rec.candidate_status}")
    rec.wall_s["canary"] = round(time.monotonic() - t0, 3)


def _record_other_runs(st: _LoopState, rec: RoundRecord, t: TrainingRecord) -> None:
    """The training runs the trainer's schedule started by itself since the last round."""
    try:
        runs = st.op.call("GET", "/v1/admin/training-runs?limit=50")
        rec.other_runs = [
            {k: run.get(k) for k in ("id", "status", "trigger", "reason", "policy_version")}
            for run in runs
            if int(run["id"]) > st.last_run and int(run["id"]) != t.run_id
        ]
        st.last_run = max([st.last_run, *(int(run["id"]) for run in runs)])
    except ApiError as e:
        rec.other_runs = [{"error": str(e)}]


def _record_events(st: _LoopState, rec: RoundRecord, t: TrainingRecord) -> None:
    """The policy events since the last round, sorted into the versions promoted, retired
    and failed, and the candidate the trainer's gate rejected."""
    events = [ev for ev in st.op.events() if int(ev["id"]) > st.last_event]
    events.sort(key=lambda ev: int(ev["id"]))
    st.last_event = max((int(ev["id"]) for ev in events), default=st.last_event)
    rec.events = events
    for ev in events:
        bucket = {
            "promote": rec.promoted,
            "rollback": rec.promoted,
            "retire": rec.retired,
            "fail": rec.failed,
        }.get(str(ev["kind"]))
        if bucket is not None:
            bucket.append(str(ev["version"]))
    if t.status == "rejected":
        rec.rejected.append(t.policy_version or f"run {t.run_id}")


def _evaluate_round(st: _LoopState, rec: RoundRecord, t: TrainingRecord) -> GoldEvaluation:
    """4. evaluate: score whatever serves now against v0 on the held-out prompts."""
    cfg = st.cfg
    pol = st.op.policies()
    rec.serving_end, rec.canary_end = pol["serving"], pol.get("canary")
    t0 = time.monotonic()
    serving = str(rec.serving_end)
    st.say(f"round {rec.round}: evaluating {serving} against {BASELINE}")
    rec.evaluation = evaluation = _evaluate(
        cfg.base_url,
        serving,
        st.baseline,
        cfg.prompts,
        cfg.seeds,
        cfg.gold,
        temperature=cfg.eval_temperature,
        max_tokens=cfg.max_tokens,
        concurrency=cfg.eval_concurrency,
        admin_token=cfg.admin_token,
        sampled=st.sampled,
    )
    rec.wall_s["evaluate"] = round(time.monotonic() - t0, 3)
    _record_kl(st, rec, t, serving)
    return evaluation


def _record_kl(st: _LoopState, rec: RoundRecord, t: TrainingRecord, serving: str) -> None:
    """KL to v0 of the evaluated version: from the run that made it, else as this round's
    run measured the serving version."""
    rec.kl_serving = st.kl_of.get(serving)
    if rec.kl_serving is None:
        ks = t.summary.get("kl_serving")
        if ks is not None:
            rec.kl_serving = ks
        else:
            rec.why("kl_serving", f"no KL measured for {serving} by this loop's runs")
    rec.sqrt_kl_serving = _sqrt(rec.kl_serving)
    if rec.sqrt_kl_serving is None:
        rec.why("sqrt_kl_serving", rec.nulls.get("kl_serving", "no KL"))


def _record_round(st: _LoopState, rec: RoundRecord, evaluation: GoldEvaluation) -> None:
    """Explain the round's nulls, add it to the report and write the report."""
    _explain_round(rec)
    st.report.rounds.append(rec)
    st.say(
        f"round {rec.round}: {evaluation.serving} gold {evaluation.gold_serving} vs "
        f"{evaluation.gold_baseline}, win rate {evaluation.win_rate}"
    )
    _save(st)


def _explain_round0(rec: RoundRecord) -> None:
    base = "round 0 is the baseline evaluation of v0: no votes, no training"
    for name in (
        "simulation",
        "server_ratings",
        "training",
        "candidate",
        "candidate_status",
        "rm_accuracy",
        "rm_length_controlled_accuracy",
        "rm_length_baseline_accuracy",
        "kl_candidate",
    ):
        rec.why(name, base)
    rec.kl_serving, rec.sqrt_kl_serving = 0.0, 0.0
    if rec.canary_start is None:
        rec.why("canary_start", "no canary")
        rec.why("canary_end", "no canary")
    _explain_round(rec)


def _explain_round(rec: RoundRecord) -> None:
    """A reason for every null figure still unexplained, from what the round did."""
    t = rec.training
    ran = f"training {t.status}: {t.reason}" if t else "no training"
    if t is not None and t.status == "succeeded":
        not_reported = (
            "the succeeded run reported no such figure (not computed this round, e.g. the "
            "check RM is off or had too few pairs)"
        )
    else:
        not_reported = f"not reported by the run ({ran}; the round did not get that far)"
    for name in null_fields(_as_json(rec)):
        if name in rec.nulls:
            continue
        if name in ("canary_start", "canary_end"):
            rec.why(name, "no canary at that moment")
        elif name.startswith(("training.summary.", "rm_")) or name == "kl_candidate":
            rec.why(name, not_reported)
        elif name == "training.reason":
            rec.why(name, f"the run {t.status if t else '-'} with no reason given")
        elif name.startswith("training."):
            rec.why(name, f"not available ({ran})")
        elif name.startswith("evaluation."):
            rec.why(name, "no held-out reply could be scored")
        else:
            rec.why(name, "not available")


def _as_json(rec: RoundRecord) -> dict[str, Any]:
    return asdict(rec)
