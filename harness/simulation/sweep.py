"""The closed loop over several golds with the same settings: one table, one set of plots.

For each gold, in turn: a fresh data directory, `loopchat run` on it (server + trainer,
with the loop's file: threads and no schedule of the trainer's own, nothing else), the
closed loop of `run_loop` against it, then the server stopped. Every gold gets the same
trainer settings, the product's defaults, and the same simulated-user settings, so a
gold the loop learns and one it does not differ only in the preference.

    out/
      <gold>/report.json, report.md, plots   the loop's own report, per gold
      <gold>/data/                           that run's data directory (votes, models)
      <gold>/server.log                      `loopchat run`'s output
      sweep.json, sweep.md, sweep.png        per gold and round, side by side
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from harness.simulation.client import FORWARDED_FOR
from harness.simulation.loop import run_loop
from harness.tables import cell, pipe_table

LOOP_FILE = Path(__file__).with_name("loop.toml")
READY_TIMEOUT_S = 600.0


class SweepError(RuntimeError):
    """A gold's run could not start (the message says why)."""


@dataclass(frozen=True)
class SweepConfig:
    golds: tuple[str, ...]
    rounds: int = 5
    votes: int = 300
    out: Path = Path("data/sweep")
    port: int = 8100
    seed: int = 0
    train_config: Path = LOOP_FILE
    # passed to run_loop as they are: how the simulated users vote and are evaluated
    loop_options: dict[str, Any] = field(default_factory=dict)


def slug(spec: str) -> str:
    """A directory name for a gold spec: `harness.simulation.gold:warm` -> `warm`."""
    name = spec.rsplit(":", 1)[-1]
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or "gold"


def _wait_ready(url: str, proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SweepError(f"loopchat run exited with {proc.returncode} before it served")
        try:
            if httpx.get(f"{url}/readyz", timeout=5.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(2.0)
    raise SweepError(f"the server at {url} was not ready after {timeout_s:.0f} s")


def _admin_token(data_dir: Path) -> str:
    return (data_dir / "admin_token").read_text().strip()


def run_gold(cfg: SweepConfig, gold: str, say: Callable[[str], None]) -> Path:
    """One gold's closed loop on a fresh product; the directory of its report."""
    out = cfg.out / slug(gold)
    data_dir = out / "data"
    if data_dir.exists():
        raise SweepError(f"{data_dir} exists: a sweep starts every gold on a fresh product")
    data_dir.mkdir(parents=True)
    url = f"http://127.0.0.1:{cfg.port}"
    cmd = [
        sys.executable, "-m", "loopchat", "run",
        "--data-dir", str(data_dir),
        "--port", str(cfg.port),
        "--train-config", str(cfg.train_config),
    ]  # fmt: skip
    with open(out / "server.log", "wb") as log:
        # The simulator stands in for the proxy in front of many people: its users each
        # send an address of their own (harness.simulation.client), which the server
        # trusts only when told to.
        env = {**os.environ, "LOOPCHAT_TRUSTED_PROXY_HEADER": FORWARDED_FOR}
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            _wait_ready(url, proc, READY_TIMEOUT_S)
            say(f"{gold}: server ready at {url}")
            run_loop(
                url,
                _admin_token(data_dir),
                rounds=cfg.rounds,
                votes_per_round=cfg.votes,
                gold=gold,
                seed=cfg.seed,
                out_dir=out,
                progress=lambda line: say(f"{slug(gold)}: {line}"),
                **cfg.loop_options,
            )
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=90)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    return out


# -- the table -----------------------------------------------------------------------------


@dataclass(frozen=True)
class SweepRow:
    gold: str
    round: int
    serving: str | None
    gold_win_rate: float | None  # serving vs v0 on held-out prompts, by the gold
    length_controlled_win_rate: float | None
    rm_accuracy: float | None
    rm_length_controlled_accuracy: float | None
    length_rule_accuracy: float | None  # "the shorter reply wins" on the same pairs
    kl: float | None  # the serving version's KL to v0, nats per reply
    words_serving: float | None
    words_baseline: float | None


def rows_of(gold: str, report: dict[str, Any]) -> list[SweepRow]:
    """A row per round of one gold's report.json."""
    out = []
    for r in report.get("rounds", []):
        ev = r.get("evaluation") or {}
        out.append(
            SweepRow(
                gold=gold,
                round=int(r["round"]),
                serving=ev.get("serving"),
                gold_win_rate=ev.get("win_rate"),
                length_controlled_win_rate=ev.get("length_controlled_win_rate"),
                rm_accuracy=r.get("rm_accuracy"),
                rm_length_controlled_accuracy=r.get("rm_length_controlled_accuracy"),
                length_rule_accuracy=r.get("rm_length_baseline_accuracy"),
                kl=r.get("kl_serving"),
                words_serving=ev.get("words_serving"),
                words_baseline=ev.get("words_baseline"),
            )
        )
    return out


def render(rows: Sequence[SweepRow]) -> str:
    head = [
        "gold",
        "round",
        "serving",
        "gold win rate vs v0",
        "length-controlled",
        "RM acc",
        "RM acc length-controlled",
        "shorter wins",
        "KL (nats)",
        "words (v0)",
    ]
    body = (
        [
            r.gold,
            str(r.round),
            r.serving or "-",
            cell(r.gold_win_rate),
            cell(r.length_controlled_win_rate),
            cell(r.rm_accuracy),
            cell(r.rm_length_controlled_accuracy),
            cell(r.length_rule_accuracy),
            cell(r.kl, 2),
            f"{cell(r.words_serving, 1)} ({cell(r.words_baseline, 1)})",
        ]
        for r in rows
    )
    return "\n".join(pipe_table(head, body))


PANELS = (
    ("gold_win_rate", "gold win rate vs v0"),
    ("length_controlled_win_rate", "length-controlled gold win rate"),
    ("rm_accuracy", "RM held-out accuracy"),
    ("kl", "KL to v0 (nats)"),
)


def plot(rows: Sequence[SweepRow], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(PANELS), figsize=(4.2 * len(PANELS), 3.4))
    golds = list(dict.fromkeys(r.gold for r in rows))
    for ax, (key, title) in zip(axes, PANELS, strict=True):
        for g in golds:
            pts = [(r.round, getattr(r, key)) for r in rows if r.gold == g]
            pts = [(x, y) for x, y in pts if y is not None]
            ax.plot([x for x, _ in pts], [y for _, y in pts], marker="o", label=g)
            if key == "rm_accuracy":
                rule = [(r.round, r.length_rule_accuracy) for r in rows if r.gold == g]
                rule = [(x, y) for x, y in rule if y is not None]
                ax.plot([x for x, _ in rule], [y for _, y in rule], linestyle=":", color="grey")
        ax.set_title(title)
        ax.set_xlabel("round")
        if key != "kl":
            ax.axhline(0.5, linestyle=":", color="grey")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_summary(cfg: SweepConfig, golds: Sequence[str]) -> list[SweepRow]:
    """sweep.json, sweep.md and sweep.png from each gold's report.json written so far."""
    rows: list[SweepRow] = []
    for g in golds:
        report = cfg.out / slug(g) / "report.json"
        if report.is_file():
            rows += rows_of(slug(g), json.loads(report.read_text()))
    (cfg.out / "sweep.json").write_text(json.dumps([r.__dict__ for r in rows], indent=2) + "\n")
    (cfg.out / "sweep.md").write_text(
        f"# Sweep: {cfg.rounds} rounds of {cfg.votes} votes per gold\n\n" + render(rows) + "\n"
    )
    if rows:
        plot(rows, cfg.out / "sweep.png")
    return rows


def run_sweep(cfg: SweepConfig, say: Callable[[str], None]) -> list[SweepRow]:
    """Each gold's loop in turn, the summary rewritten after each; a gold that fails is
    reported and the sweep goes on to the next."""
    cfg.out.mkdir(parents=True, exist_ok=True)
    for gold in cfg.golds:
        try:
            run_gold(cfg, gold, say)
        except Exception as e:  # one gold's failure must not lose the others' figures
            say(f"{gold}: {type(e).__name__}: {e}")
        write_summary(cfg, cfg.golds)
    return write_summary(cfg, cfg.golds)
