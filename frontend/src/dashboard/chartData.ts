/**
 * API answers -> Chart.js data. Intervals are floating bars ([low, high] per label)
 * under a point for the estimate; missing values are null so Chart.js leaves a gap.
 */
import type { DayVotes, RunOut, VersionRating } from '../api/types';
import { versionName } from './format';
import { isActive } from './runs';

export type Range = [number, number];

export interface IntervalSeries {
  labels: string[];
  values: (number | null)[];
  ranges: (Range | null)[];
}

export interface LineSeries {
  label: string;
  data: (number | null)[];
  /** A variant of the series before it (drawn dashed, in its colour). */
  dashed?: boolean;
}

export interface Series {
  labels: string[];
  series: LineSeries[];
}

function byVersion(ratings: VersionRating[]): VersionRating[] {
  const n = (v: string) => Number(versionName(v).replace(/^\D+/, '')) || 0;
  return [...ratings].sort((a, b) => n(a.version) - n(b.version) || a.version.localeCompare(b.version));
}

/** Thumbs-up rate per version with its Wilson interval (null where no thumbs yet). */
export function thumbsSeries(ratings: VersionRating[]): IntervalSeries {
  const rows = byVersion(ratings);
  return {
    labels: rows.map((r) => versionName(r.version)),
    values: rows.map((r) => r.thumbs_rate ?? null),
    ranges: rows.map((r) => (r.thumbs_interval ? [r.thumbs_interval.low, r.thumbs_interval.high] : null)),
  };
}

/** Bradley-Terry Elo per version with its bootstrap interval. */
export function eloSeries(ratings: VersionRating[]): IntervalSeries {
  const rows = byVersion(ratings);
  return {
    labels: rows.map((r) => versionName(r.version)),
    values: rows.map((r) => r.elo),
    ranges: rows.map((r) => [r.elo_interval.low, r.elo_interval.high]),
  };
}

/** Votes per UTC day: thumbs up, thumbs down and comparisons. */
export function votesSeries(days: DayVotes[]): Series {
  return {
    labels: days.map((d) => d.day),
    series: [
      { label: 'Thumbs up', data: days.map((d) => d.thumbs_up) },
      { label: 'Thumbs down', data: days.map((d) => d.thumbs_down) },
      { label: 'Comparisons', data: days.map((d) => d.comparisons) },
    ],
  };
}

export interface RunPoint {
  id: number;
  rmAccuracy: number | null;
  rmLengthControlledAccuracy: number | null;
  winRate: number | null;
  lengthControlledWinRate: number | null;
  checkWinRate: number | null;
  klCandidate: number | null;
  klServing: number | null;
}

/** Finished rounds charted at most (the newest). */
const MAX_CHART_RUNS = 30;

/** The round figures the charts show, from the run list's `summary`. */
export function runPoint(run: RunOut): RunPoint {
  const s = run.summary;
  return {
    id: run.id,
    rmAccuracy: s.rm_accuracy,
    rmLengthControlledAccuracy: s.rm_length_controlled_accuracy ?? null,
    winRate: s.win_rate,
    lengthControlledWinRate: s.length_controlled_win_rate ?? null,
    checkWinRate: s.check_win_rate,
    klCandidate: s.kl_candidate,
    klServing: s.kl_serving,
  };
}

/**
 * Rates over rounds (0..1), each raw one followed by its length-controlled one (dashed),
 * and KL to the reference over rounds, oldest round first: the newest `MAX_CHART_RUNS`
 * finished rounds (queued and running ones have no figures yet).
 */
export function trainingSeries(runs: RunOut[]): { rates: Series; kl: Series } {
  const newest = runs
    .filter((r) => !isActive(r))
    .sort((a, b) => b.id - a.id)
    .slice(0, MAX_CHART_RUNS);
  const points = newest.reverse().map(runPoint);
  const labels = points.map((p) => `#${p.id}`);
  return {
    rates: {
      labels,
      series: [
        { label: 'RM held-out accuracy', data: points.map((p) => p.rmAccuracy) },
        { label: 'RM accuracy, length-controlled', data: points.map((p) => p.rmLengthControlledAccuracy), dashed: true },
        { label: 'Candidate win rate (RM)', data: points.map((p) => p.winRate) },
        { label: 'Candidate win rate at equal length (RM)', data: points.map((p) => p.lengthControlledWinRate), dashed: true },
        { label: 'Candidate win rate (check RM)', data: points.map((p) => p.checkWinRate) },
      ],
    },
    kl: {
      labels,
      series: [
        { label: 'KL to v0, candidate', data: points.map((p) => p.klCandidate) },
        { label: 'KL to v0, serving', data: points.map((p) => p.klServing) },
      ],
    },
  };
}
