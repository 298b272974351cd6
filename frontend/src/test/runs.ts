/** Training runs as GET /v1/admin/training-runs lists them, for the dashboard's tests. */
import type { RunOut, RunSummary } from '../api/types';

/** A summary without figures: a round that has not reached any (every field null). */
export const NO_FIGURES: RunSummary = {
  rm_accuracy: null,
  rm_length_controlled_accuracy: null,
  rm_length_baseline_accuracy: null,
  votes_longer_won: null,
  votes_reward_length: null,
  check_rm_accuracy: null,
  win_rate: null,
  length_controlled_win_rate: null,
  check_win_rate: null,
  kl_candidate: null,
  kl_serving: null,
  length_ratio: null,
};

export function runOut(id: number, summary: Partial<RunSummary>, status = 'succeeded'): RunOut {
  return {
    id,
    status,
    trigger: 'operator',
    reason: null,
    created_at: '',
    started_at: null,
    finished_at: null,
    data_window_start: null,
    data_window_end: null,
    counts: {},
    progress: {},
    policy_version: null,
    reward_model_id: null,
    summary: { ...NO_FIGURES, ...summary },
  };
}
