import { render, screen, within } from '@testing-library/react';
import { describe, expect, it } from 'vitest';
import type { AdminApi } from '../api/admin';
import { runOut } from '../test/runs';
import { RunsPanel } from './RunsPanel';

// The table alone calls nothing: no row is opened.
const admin = {} as AdminApi;

describe('RunsPanel', () => {
  it('shows the length-controlled figures beside the raw ones, a dash where there is none', () => {
    const runs = [
      runOut(5, {}, 'running'),
      runOut(4, {
        rm_accuracy: 0.8,
        rm_length_controlled_accuracy: 0.64,
        rm_length_baseline_accuracy: 0.38,
        win_rate: 0.71,
        length_controlled_win_rate: 0.55,
        votes_longer_won: 0.6,
        votes_reward_length: true,
      }),
      runOut(3, { rm_accuracy: 0.7, votes_longer_won: 0.49, votes_reward_length: false }, 'stopped'),
    ];
    render(<RunsPanel admin={admin} runs={runs} error={null} reload={async () => undefined} />);
    const headers = within(screen.getByTestId('runs-table'))
      .getAllByRole('columnheader')
      .map((th) => th.textContent);
    expect(headers.slice(headers.indexOf('RM accuracy'), headers.indexOf('Note'))).toEqual([
      'RM accuracy',
      'RM accuracy, length-controlled',
      'Shorter wins (baseline)',
      'Win rate (RM)',
      'Win rate at equal length',
      'Votes reward length',
    ]);
    expect(screen.getByTestId('run-rm-accuracy-4')).toHaveTextContent('80.0%');
    expect(screen.getByTestId('run-rm-lc-accuracy-4')).toHaveTextContent('64.0%');
    expect(screen.getByTestId('run-rm-length-baseline-4')).toHaveTextContent('38.0%');
    expect(screen.getByTestId('run-win-rate-4')).toHaveTextContent('71.0%');
    expect(screen.getByTestId('run-lc-win-rate-4')).toHaveTextContent('55.0%');
    expect(screen.getByTestId('run-votes-length-4')).toHaveTextContent('yes (60% longer won)');
    // nulls render as the table's placeholder
    expect(screen.getByTestId('run-rm-accuracy-3')).toHaveTextContent('70.0%');
    expect(screen.getByTestId('run-rm-lc-accuracy-3')).toHaveTextContent(/^–$/);
    expect(screen.getByTestId('run-lc-win-rate-3')).toHaveTextContent(/^–$/);
    expect(screen.getByTestId('run-votes-length-3')).toHaveTextContent('no (49% longer won)');
    for (const key of ['rm-accuracy', 'rm-lc-accuracy', 'rm-length-baseline', 'win-rate', 'lc-win-rate', 'votes-length']) {
      expect(screen.getByTestId(`run-${key}-5`)).toHaveTextContent(/^–$/);
    }
  });

  it('spans the empty table’s note over every column', () => {
    render(<RunsPanel admin={admin} runs={[]} error={null} reload={async () => undefined} />);
    const cols = within(screen.getByTestId('runs-table')).getAllByRole('columnheader').length;
    expect(screen.getByText('No rounds yet.')).toHaveAttribute('colspan', String(cols));
  });
});
