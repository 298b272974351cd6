"""The closed loop's report: report.json (every figure), four PNG plots and report.md.

`write_report(data, out_dir)` reads only the JSON-able report (`LoopReport.to_dict()` or a
loaded report.json), so `replot(out_dir)` (`loopchat simulate --replot DIR`) redraws the
plots and the summary from a stored run. matplotlib runs on the Agg backend: no display.

Plots:
- `win_rate.png`: gold win rate of the serving version against v0 per round, and the
  reward model's mean reward (the proxy) of the round's candidate and serving version;
- `kl_gold.png`: sqrt(KL to v0) of the version evaluated each round against its mean
  gold score, and against the proxy reward of the candidates (Gao et al.'s axes);
- `thumbs.png`: live thumbs-up rate per version (all rounds' simulated votes) with 95%
  Wilson intervals;
- `wall_time.png`: wall time per phase per round, stacked.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from harness.tables import cell

PLOTS = ("win_rate.png", "kl_gold.png", "thumbs.png", "wall_time.png")
PHASES = ("vote", "train", "canary", "evaluate")


def _num(x: Any) -> float:
    """A figure for plotting: null becomes NaN (a gap)."""
    return float(x) if isinstance(x, int | float) and not isinstance(x, bool) else math.nan


def _get(d: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(d, dict):
            return None
        d = d.get(key)
    return d


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _legend_both(ax: Any, ax2: Any) -> None:
    """One legend for a plot with a second y axis."""
    handles, labels = ax.get_legend_handles_labels()
    handles2, labels2 = ax2.get_legend_handles_labels()
    ax.legend(handles + handles2, labels + labels2, loc="best", fontsize=8)


def _save(fig: Any, ax: Any, title: str, path: Path) -> None:
    import matplotlib.pyplot as plt

    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_win_rate(data: dict[str, Any], path: Path) -> None:
    import matplotlib.pyplot as plt

    rounds = data["rounds"]
    xs = [r["round"] for r in rounds]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    ax.plot(
        xs,
        [_num(_get(r, "evaluation", "win_rate")) for r in rounds],
        "o-",
        label="gold win rate vs v0",
    )
    ax.axhline(0.5, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("round")
    ax.set_ylabel("gold win rate of the serving version vs v0")
    ax.set_ylim(0, 1)
    ax.set_xticks(xs)
    ax2 = ax.twinx()
    ax2.plot(
        xs,
        [_num(_get(r, "training", "reward_candidate")) for r in rounds],
        "s--",
        color="tab:orange",
        label="RM reward, candidate",
    )
    ax2.plot(
        xs,
        [_num(_get(r, "training", "reward_serving")) for r in rounds],
        "^:",
        color="tab:green",
        label="RM reward, serving",
    )
    ax2.set_ylabel("mean reward-model reward (proxy; its own RM each round)")
    _legend_both(ax, ax2)
    _save(fig, ax, "Gold win rate and proxy reward per round", path)


def _plot_kl_gold(data: dict[str, Any], path: Path) -> None:
    import matplotlib.pyplot as plt

    rounds = data["rounds"]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    xs = [_num(r.get("sqrt_kl_serving")) for r in rounds]
    ys = [_num(_get(r, "evaluation", "gold_serving")) for r in rounds]
    ax.plot(xs, ys, "o-", label="gold (serving version, held-out)")
    for r, x, y in zip(rounds, xs, ys, strict=True):
        if not (math.isnan(x) or math.isnan(y)):
            ax.annotate(
                f"r{r['round']} {_get(r, 'evaluation', 'serving') or ''}", (x, y), fontsize=7
            )
    ax.set_xlabel("sqrt(KL to v0)  [sqrt(nats)]")
    ax.set_ylabel("mean gold score")
    ax2 = ax.twinx()
    kc = [_num(_sqrt(r.get("kl_candidate"))) for r in rounds]
    rc = [_num(_get(r, "training", "reward_candidate")) for r in rounds]
    ax2.plot(kc, rc, "s--", color="tab:orange", label="proxy reward (candidate)")
    ax2.set_ylabel("mean RM reward (proxy)")
    _legend_both(ax, ax2)
    _save(fig, ax, "Gold and proxy reward against sqrt(KL)", path)


def _sqrt(x: Any) -> float | None:
    v = _num(x)
    return None if math.isnan(v) else math.sqrt(max(v, 0.0))


def _plot_thumbs(data: dict[str, Any], path: Path) -> None:
    import matplotlib.pyplot as plt

    table: dict[str, Any] = _get(data, "totals", "thumbs") or {}
    names = [n for n in _version_order(table) if table[n].get("rate") is not None]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    if names:
        rates = [float(table[n]["rate"]) for n in names]
        lows = [rates[i] - float(table[n]["low"]) for i, n in enumerate(names)]
        highs = [float(table[n]["high"]) - rates[i] for i, n in enumerate(names)]
        ax.bar(names, rates, yerr=[lows, highs], capsize=5, color="tab:blue", alpha=0.7)
        for i, n in enumerate(names):
            ax.text(i, 0.02, f"n={table[n]['n']}", ha="center", fontsize=8)
    else:
        ax.text(0.5, 0.5, "no thumbs votes", ha="center", transform=ax.transAxes)
    ax.set_ylim(0, 1)
    ax.set_xlabel("policy version")
    ax.set_ylabel("thumbs-up rate (95% Wilson interval)")
    _save(fig, ax, "Live thumbs-up rate per version (simulated users, all rounds)", path)


def _version_order(names: Any) -> list[str]:
    def key(n: str) -> tuple[int, str]:
        return (int(n[1:]), n) if n[:1] == "v" and n[1:].isdigit() else (10**9, n)

    return sorted(names, key=key)


def _plot_wall(data: dict[str, Any], path: Path) -> None:
    import matplotlib.pyplot as plt

    rounds = data["rounds"]
    xs = [int(r["round"]) for r in rounds]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    ax.set_xticks(xs)
    bottom = [0.0] * len(rounds)
    for phase in PHASES:
        h = [_get(r, "wall_s", phase) or 0.0 for r in rounds]
        ax.bar(xs, h, bottom=bottom, label=phase)
        bottom = [b + v for b, v in zip(bottom, h, strict=True)]
    ax.set_xlabel("round (0 = baseline)")
    ax.set_ylabel("wall time, s")
    ax.legend(fontsize=8)
    _save(fig, ax, "Wall time per phase per round", path)


TABLE_HEAD = (
    "| round | serving | canary | votes | run | status | RM acc | ceiling | win rate (RM) "
    "| KL cand. | gold serving | gold v0 | gold win rate | words | wall s |",
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
)
TABLE_NOTE = (
    "ceiling: the accuracy a reward model that knew the gold exactly would expect on the "
    "round's comparison votes (1 - flip rate on clearly different replies, nearer 0.5 "
    "on close ones). gold serving, gold win rate and words: the serving version's "
    "replies to the held-out prompts, sampled once per version (a round that serves the "
    "same version as an earlier one reuses them)."
)


def summary_markdown(data: dict[str, Any]) -> str:
    """report.md: the run's settings, a table of its rounds, its outcome and the plots."""
    cfg = data.get("config", {})
    totals = data.get("totals", {})
    lines = [
        "# Closed-loop run",
        "",
        f"gold `{cfg.get('gold')}`, flip rate {cfg.get('flip_rate')}, "
        f"{cfg.get('rounds')} rounds of {cfg.get('votes_per_round')} votes, "
        f"{cfg.get('eval_samples')} held-out prompts, promote `{cfg.get('promote')}`, "
        f"seed {cfg.get('seed')}; {cell(data.get('elapsed_s'), 0)} s in all.",
        "",
        *TABLE_HEAD,
        *(_round_row(r) for r in data.get("rounds", [])),
        "",
        TABLE_NOTE,
        "",
        f"Promoted: {', '.join(totals.get('promoted') or []) or 'none'}; "
        f"retired: {', '.join(totals.get('retired') or []) or 'none'}; "
        f"rejected: {', '.join(totals.get('rejected') or []) or 'none'}. "
        f"Final serving {totals.get('final_serving')}, gold win rate "
        f"{cell(totals.get('final_win_rate'))} against v0.",
    ]
    if data.get("stopped_early"):
        lines.append(f"\nStopped early: {data.get('stop_reason')}")
    lines += ["", *[f"![{p}]({p})" for p in PLOTS], ""]
    return "\n".join(lines)


def _round_row(r: dict[str, Any]) -> str:
    """One round's row of the summary table."""
    t = r.get("training") or {}
    s = t.get("summary") or {}
    e = r.get("evaluation") or {}
    sim = r.get("simulation") or {}
    wall = sum(v for v in (r.get("wall_s") or {}).values() if isinstance(v, int | float))
    cells = [
        str(r["round"]),
        cell(r.get("serving_end")),
        cell(r.get("canary_end")),
        f"{r.get('votes_recorded')}/{r.get('votes_requested')}",
        cell(t.get("run_id")),
        f"{cell(t.get('status'))}" + (f" ({t['reason']})" if t.get("reason") else ""),
        cell(s.get("rm_accuracy")),
        cell(sim.get("accuracy_ceiling")),
        cell(s.get("win_rate")),
        cell(s.get("kl_candidate")),
        cell(e.get("gold_serving")),
        cell(e.get("gold_baseline")),
        cell(e.get("win_rate")),
        cell(e.get("words_serving"), 1),
        cell(float(wall), 0),
    ]
    return "| " + " | ".join(cells) + " |"


def write_report(data: dict[str, Any], out_dir: Path | str) -> list[Path]:
    """Write report.json, the four plots and report.md into `out_dir`; returns the paths."""
    import matplotlib

    matplotlib.use("Agg")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "report.json"]
    _write_atomic(written[0], json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    for name, draw in zip(
        PLOTS, (_plot_win_rate, _plot_kl_gold, _plot_thumbs, _plot_wall), strict=True
    ):
        draw(data, out / name)
        written.append(out / name)
    written.append(out / "report.md")
    _write_atomic(written[-1], summary_markdown(data))
    return written


def replot(out_dir: Path | str) -> list[Path]:
    """Redraw the plots and report.md of a stored run from its report.json."""
    out = Path(out_dir)
    data = json.loads((out / "report.json").read_text(encoding="utf-8"))
    return write_report(data, out)
