/** Reading training runs: progress, liveness, and the figures the runs table and a run's detail show. */
import type { RunDetail, RunOut, RunSummary } from '../api/types';
import { duration, flag, metric, num, pct, sub, yesNo } from './format';

export function isActive(run: RunOut): boolean {
  return run.status === 'queued' || run.status === 'running';
}

export interface Progress {
  phase: string;
  step: number;
  total: number;
  etaS: number | null;
}

export function progressOf(run: RunOut): Progress {
  const p = run.progress;
  return {
    phase: typeof p.phase === 'string' ? p.phase : '–',
    step: metric(p, 'step') ?? 0,
    total: metric(p, 'total') ?? 0,
    etaS: metric(p, 'eta_s'),
  };
}

/** [label, value] rows for the run's detail (missing metrics are left out). */
export function runFigures(run: RunDetail): [string, string][] {
  const reward = sub(run.metrics, 'reward');
  const check = sub(run.metrics, 'check_reward');
  const ev = sub(run.metrics, 'evaluation');
  const policy = sub(run.metrics, 'policy');
  const rate = (v: number | null) => (v === null ? null : pct(v, 1));
  const count = (v: number | null) => (v === null ? null : num(v, 0));
  const figure = (v: number | null) => (v === null ? null : num(v));
  const rewarded = flag(reward, 'votes_reward_length');
  const rows: [string, string | null][] = [
    ['RM held-out accuracy', rate(metric(reward, 'accuracy'))],
    ['RM accuracy, length-controlled', rate(metric(reward, 'length_controlled_accuracy'))],
    ['RM accuracy on new pairs', rate(metric(reward, 'new_pair_accuracy'))],
    ['RM held-out pairs', count(metric(reward, 'n'))],
    ['Length baseline accuracy', rate(metric(reward, 'length_baseline_accuracy'))],
    ['Votes: longer reply won', rate(metric(reward, 'votes_longer_won'))],
    ['Votes reward length', rewarded === null ? null : yesNo(rewarded)],
    ['Check RM accuracy', rate(metric(check, 'accuracy'))],
    ['Policy steps', count(metric(policy, 'steps'))],
    ['Candidate win rate (RM)', rate(metric(ev, 'win_rate'))],
    ['Candidate win rate at equal length (RM)', rate(metric(ev, 'length_controlled_win_rate'))],
    ['Candidate win rate (check RM)', rate(metric(ev, 'check_win_rate'))],
    ['KL to v0, candidate', figure(metric(ev, 'kl_candidate'))],
    ['KL to v0, serving', figure(metric(ev, 'kl_serving'))],
    ['Length ratio (candidate / serving)', figure(metric(ev, 'length_ratio'))],
  ];
  const out: [string, string][] = [];
  for (const [label, v] of rows) if (v !== null) out.push([label, v]);
  const phases = sub(run.metrics, 'phase_seconds');
  if (phases) {
    const text = Object.entries(phases)
      .filter(([, s]) => typeof s === 'number')
      .map(([p, s]) => `${p} ${duration(s as number)}`)
      .join(', ');
    if (text) out.push(['Time per phase', text]);
  }
  return out;
}

/** A headline figure of a round in the runs table. */
export interface SummaryCell {
  /** In the cell's test id: `run-<key>-<run id>`. */
  key: string;
  label: string;
  /** What the figure is (the column's tooltip). */
  title: string;
  value: string;
}

interface SummaryColumn extends Omit<SummaryCell, 'value'> {
  value: (s: RunSummary) => string;
}

/** "yes (62% longer won)", "no", "–": whether the round's votes reward length, and the share. */
export function votesLength(rewarded: boolean | null | undefined, longerWon: number | null | undefined): string {
  const share = longerWon === null || longerWon === undefined || !Number.isFinite(longerWon) ? null : `${pct(longerWon)} longer won`;
  if (rewarded === null || rewarded === undefined) return share ?? '–';
  return share ? `${yesNo(rewarded)} (${share})` : yesNo(rewarded);
}

/** The runs table's figure columns, each raw figure beside its length-controlled one. */
export const SUMMARY_COLUMNS: SummaryColumn[] = [
  {
    key: 'rm-accuracy',
    label: 'RM accuracy',
    title: 'The reward model’s accuracy on held-out preference pairs',
    value: (s) => pct(s.rm_accuracy, 1),
  },
  {
    key: 'rm-lc-accuracy',
    label: 'RM accuracy, length-controlled',
    title: 'The same with length taken out: the accuracy where voters chose the longer reply and where they chose the shorter one, averaged (50% for a model that only knows length)',
    value: (s) => pct(s.rm_length_controlled_accuracy, 1),
  },
  {
    key: 'rm-length-baseline',
    label: 'Shorter wins (baseline)',
    title: 'What “the shorter reply wins” scores on the same held-out pairs',
    value: (s) => pct(s.rm_length_baseline_accuracy, 1),
  },
  {
    key: 'win-rate',
    label: 'Win rate (RM)',
    title: 'The candidate’s win rate over the serving version, judged by the reward model',
    value: (s) => pct(s.win_rate, 1),
  },
  {
    key: 'lc-win-rate',
    label: 'Win rate at equal length',
    title: 'The same at equal reply length (length-controlled, as in AlpacaEval)',
    value: (s) => pct(s.length_controlled_win_rate, 1),
  },
  {
    key: 'votes-length',
    label: 'Votes reward length',
    title: 'Whether the share of training pairs whose longer reply won is more than 0.05 from 0.5 (95%)',
    value: (s) => votesLength(s.votes_reward_length, s.votes_longer_won),
  },
];

/** A round's figures for the runs table, from the run list's `summary` ('–' where missing). */
export function summaryCells(run: RunOut): SummaryCell[] {
  return SUMMARY_COLUMNS.map(({ value, ...column }) => ({ ...column, value: value(run.summary) }));
}
