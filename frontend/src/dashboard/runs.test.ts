import { describe, expect, it } from 'vitest';
import type { RunDetail } from '../api/types';
import { runOut } from '../test/runs';
import { SUMMARY_COLUMNS, runFigures, summaryCells, votesLength } from './runs';

const cells = (summary: Parameters<typeof runOut>[1]) =>
  Object.fromEntries(summaryCells(runOut(3, summary)).map((c) => [c.key, c.value]));

describe('runs table figures', () => {
  it('puts each raw figure beside its length-controlled one', () => {
    expect(SUMMARY_COLUMNS.map((c) => c.label)).toEqual([
      'RM accuracy',
      'RM accuracy, length-controlled',
      'Shorter wins (baseline)',
      'Win rate (RM)',
      'Win rate at equal length',
      'Votes reward length',
    ]);
  });

  it('shows the length-controlled figures from the run list’s summary', () => {
    expect(
      cells({
        rm_accuracy: 0.812,
        rm_length_controlled_accuracy: 0.61,
        rm_length_baseline_accuracy: 0.35,
        win_rate: 0.7,
        length_controlled_win_rate: 0.525,
        votes_longer_won: 0.62,
        votes_reward_length: true,
      }),
    ).toEqual({
      'rm-accuracy': '81.2%',
      'rm-lc-accuracy': '61.0%',
      'rm-length-baseline': '35.0%',
      'win-rate': '70.0%',
      'lc-win-rate': '52.5%',
      'votes-length': 'yes (62% longer won)',
    });
  });

  it('shows a dash where a figure is null or missing', () => {
    const dashes = { 'rm-accuracy': '–', 'rm-lc-accuracy': '–', 'rm-length-baseline': '–', 'win-rate': '–', 'lc-win-rate': '–', 'votes-length': '–' };
    expect(cells({})).toEqual(dashes);
    // a server from before these figures: the keys are absent
    const old = runOut(3, {});
    for (const k of ['rm_length_controlled_accuracy', 'rm_length_baseline_accuracy', 'votes_longer_won', 'votes_reward_length', 'length_controlled_win_rate'] as const) {
      delete old.summary[k];
    }
    expect(Object.fromEntries(summaryCells(old).map((c) => [c.key, c.value]))).toEqual(dashes);
    // a round stopped after its reward model: RM figures, no win rates
    expect(cells({ rm_accuracy: 0.7, rm_length_controlled_accuracy: 0.5 })).toMatchObject({ 'rm-lc-accuracy': '50.0%', 'lc-win-rate': '–', 'win-rate': '–' });
  });

  it('says whether the votes reward length', () => {
    expect(votesLength(true, 0.62)).toBe('yes (62% longer won)');
    expect(votesLength(false, 0.51)).toBe('no (51% longer won)');
    expect(votesLength(false, null)).toBe('no');
    expect(votesLength(null, 0.51)).toBe('51% longer won');
    expect(votesLength(null, null)).toBe('–');
    expect(votesLength(undefined, undefined)).toBe('–');
  });
});

describe('run detail figures', () => {
  const detail = (metrics: Record<string, unknown>): RunDetail => ({ ...runOut(3, {}), metrics, logs: '' });

  it('lists the length-controlled figures after their raw ones', () => {
    const rows = runFigures(
      detail({
        reward: { accuracy: 0.8, length_controlled_accuracy: 0.6, length_baseline_accuracy: 0.4, votes_longer_won: 0.55, votes_reward_length: false },
        evaluation: { win_rate: 0.7, length_controlled_win_rate: 0.52 },
      }),
    );
    expect(rows).toEqual([
      ['RM held-out accuracy', '80.0%'],
      ['RM accuracy, length-controlled', '60.0%'],
      ['Length baseline accuracy', '40.0%'],
      ['Votes: longer reply won', '55.0%'],
      ['Votes reward length', 'no'],
      ['Candidate win rate (RM)', '70.0%'],
      ['Candidate win rate at equal length (RM)', '52.0%'],
    ]);
  });

  it('leaves out missing figures, as before', () => {
    expect(runFigures(detail({ reward: { accuracy: 0.8, length_controlled_accuracy: null, votes_reward_length: 'yes' } }))).toEqual([['RM held-out accuracy', '80.0%']]);
  });
});
