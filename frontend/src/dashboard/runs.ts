/** Reading training runs: progress, liveness, and the figures a run's detail shows. */
import type { RunDetail, RunOut } from '../api/types';
import { duration, metric, num, pct, sub } from './format';

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
  const rows: [string, number | null, (v: number) => string][] = [
    ['RM held-out accuracy', metric(reward, 'accuracy'), (v) => pct(v, 1)],
    ['RM accuracy on new pairs', metric(reward, 'new_pair_accuracy'), (v) => pct(v, 1)],
    ['RM held-out pairs', metric(reward, 'n'), (v) => num(v, 0)],
    ['Length baseline accuracy', metric(reward, 'length_baseline_accuracy'), (v) => pct(v, 1)],
    ['Check RM accuracy', metric(check, 'accuracy'), (v) => pct(v, 1)],
    ['Policy steps', metric(policy, 'steps'), (v) => num(v, 0)],
    ['Candidate win rate (RM)', metric(ev, 'win_rate'), (v) => pct(v, 1)],
    ['Candidate win rate (check RM)', metric(ev, 'check_win_rate'), (v) => pct(v, 1)],
    ['KL to v0, candidate', metric(ev, 'kl_candidate'), (v) => num(v)],
    ['KL to v0, serving', metric(ev, 'kl_serving'), (v) => num(v)],
    ['Length ratio (candidate / serving)', metric(ev, 'length_ratio'), (v) => num(v)],
  ];
  const out: [string, string][] = [];
  for (const [label, v, fmt] of rows) if (v !== null) out.push([label, fmt(v)]);
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
