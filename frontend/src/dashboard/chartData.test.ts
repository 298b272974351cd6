import { describe, expect, it } from 'vitest';
import type { VersionRating } from '../api/types';
import { runOut } from '../test/runs';
import { eloSeries, runPoint, thumbsSeries, trainingSeries, votesSeries } from './chartData';

const r = (version: string, extra: Partial<VersionRating>): VersionRating => ({
  version,
  status: 'retired',
  elo: 1000,
  elo_interval: { low: 990, high: 1010 },
  comparisons: 0,
  thumbs_up: 0,
  thumbs_down: 0,
  thumbs_rate: null,
  thumbs_interval: null,
  ...extra,
});

const run = runOut;

describe('chart data', () => {
  const ratings = [
    r('v10', { thumbs_rate: 0.5, thumbs_interval: { low: 0.3, high: 0.7 }, elo: 1040, elo_interval: { low: 1000, high: 1080 } }),
    r('v0', { thumbs_rate: 0.25, thumbs_interval: { low: 0.1, high: 0.5 } }),
    r('v2', {}),
  ];

  it('thumbs-up rates per version with their intervals as floating bars', () => {
    expect(thumbsSeries(ratings)).toEqual({
      labels: ['v0', 'v2', 'v10'],
      values: [0.25, null, 0.5],
      ranges: [[0.1, 0.5], null, [0.3, 0.7]],
    });
  });

  it('Elo per version with its interval', () => {
    const s = eloSeries(ratings);
    expect(s.labels).toEqual(['v0', 'v2', 'v10']);
    expect(s.values).toEqual([1000, 1000, 1040]);
    expect(s.ranges[2]).toEqual([1000, 1080]);
  });

  it('accepts public model names as versions', () => {
    expect(thumbsSeries([r('loopchat@v1', {})]).labels).toEqual(['v1']);
  });

  it('votes per day as three series', () => {
    const s = votesSeries([
      { day: '2026-01-01', ratings: 3, thumbs_up: 2, thumbs_down: 1, comparisons: 4 },
      { day: '2026-01-02', ratings: 0, thumbs_up: 0, thumbs_down: 0, comparisons: 1 },
    ]);
    expect(s.labels).toEqual(['2026-01-01', '2026-01-02']);
    expect(s.series.map((x) => [x.label, x.data])).toEqual([
      ['Thumbs up', [2, 0]],
      ['Thumbs down', [1, 0]],
      ['Comparisons', [4, 1]],
    ]);
  });

  it('training figures per round from the run list’s summaries, oldest first, gaps as null', () => {
    const runs = [
      run(4, {}, 'running'), // no figures yet: not charted
      run(3, { rm_accuracy: 0.8, win_rate: 0.6, kl_candidate: 1.5, kl_serving: 0.4, check_win_rate: 0.55 }),
      run(1, { rm_accuracy: 0.55 }, 'stopped'), // stopped after the reward model
    ];
    expect(runPoint(runs[1]!)).toEqual({
      id: 3,
      rmAccuracy: 0.8,
      rmLengthControlledAccuracy: null,
      winRate: 0.6,
      lengthControlledWinRate: null,
      checkWinRate: 0.55,
      klCandidate: 1.5,
      klServing: 0.4,
    });
    const { rates, kl } = trainingSeries(runs);
    expect(rates.labels).toEqual(['#1', '#3']);
    expect(rates.series[0]).toEqual({ label: 'RM held-out accuracy', data: [0.55, 0.8] });
    expect(rates.series.find((s) => s.label === 'Candidate win rate (RM)')!.data).toEqual([null, 0.6]);
    expect(kl.series[0]!.data).toEqual([null, 1.5]);
  });

  it('charts the length-controlled figures, dashed, right after their raw ones', () => {
    const runs = [
      run(3, { rm_accuracy: 0.8, rm_length_controlled_accuracy: 0.62, win_rate: 0.7, length_controlled_win_rate: 0.54, check_win_rate: 0.6 }),
      run(2, { rm_accuracy: 0.75, rm_length_controlled_accuracy: null, win_rate: 0.65, length_controlled_win_rate: null }),
    ];
    // A summary from before the server sent the length-controlled figures: no such keys.
    const old = run(1, { rm_accuracy: 0.7 });
    delete old.summary.rm_length_controlled_accuracy;
    delete old.summary.length_controlled_win_rate;
    runs.push(old);
    const { rates } = trainingSeries(runs);
    expect(rates.labels).toEqual(['#1', '#2', '#3']);
    expect(rates.series.map((s) => [s.label, s.dashed ?? false])).toEqual([
      ['RM held-out accuracy', false],
      ['RM accuracy, length-controlled', true],
      ['Candidate win rate (RM)', false],
      ['Candidate win rate at equal length (RM)', true],
      ['Candidate win rate (check RM)', false],
    ]);
    expect(rates.series[1]!.data).toEqual([null, null, 0.62]);
    expect(rates.series[3]!.data).toEqual([null, null, 0.54]);
    expect(rates.series[0]!.data).toEqual([0.7, 0.75, 0.8]);
  });

  it('charts the newest 30 finished rounds', () => {
    const runs = Array.from({ length: 40 }, (_, i) => run(40 - i, { rm_accuracy: 0.5 }));
    const { rates } = trainingSeries(runs);
    expect(rates.labels).toHaveLength(30);
    expect(rates.labels[0]).toBe('#11');
    expect(rates.labels[29]).toBe('#40');
  });
});

describe('parseTime', () => {
  it('reads times without a zone as UTC', async () => {
    const { parseTime } = await import('./format');
    expect(parseTime('2026-11-21T21:27:40.220841').toISOString()).toBe('2026-11-21T21:27:40.220Z');
    expect(parseTime('2026-11-21T21:27:40Z').toISOString()).toBe('2026-11-21T21:27:40.000Z');
    expect(parseTime('2026-11-21T21:27:40+01:00').toISOString()).toBe('2026-11-21T20:27:40.000Z');
  });
});
