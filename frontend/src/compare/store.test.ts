import { describe, expect, it } from 'vitest';
import type { ComparisonOut } from '../api/types';
import type { ServerFrame } from '../ws/protocol';
import { type CompareAction, type CompareState, canVote, compareReducer, emptyCompare } from './store';

const f = (frame: ServerFrame): CompareAction => ({ type: 'frame', frame });
const run = (s: CompareState, ...a: CompareAction[]) => a.reduce(compareReducer, s);
const usage = { prompt_tokens: 1, completion_tokens: 1, total_tokens: 2 };

const voted = (choice: 'a' | 'b' | 'tie' | 'both_bad'): ComparisonOut => ({
  id: 'cmp-1',
  object: 'comparison',
  created_at: '2026-01-01T00:00:00Z',
  voted_at: '2026-01-01T00:00:01Z',
  choice,
  reason: null,
  a: { generation_id: 'ga', content: 'x', finish_reason: null, model: 'loopchat@v3' },
  b: { generation_id: 'gb', content: 'y', finish_reason: null, model: 'loopchat@v2' },
});

describe('compare store', () => {
  const started = run(
    emptyCompare,
    { type: 'ask', prompt: 'joke?' },
    f({ type: 'comparison', id: 'cmp-1', a: { generation_id: 'ga' }, b: { generation_id: 'gb' } }),
  );

  it('streams both sides and finishes when both are done', () => {
    expect(canVote(emptyCompare)).toBe(false);
    let s = run(started, f({ type: 'delta', side: 'a', index: 0, content: 'A1' }), f({ type: 'delta', side: 'b', index: 0, content: 'B1' }), f({ type: 'delta', side: 'a', index: 0, content: 'A2' }));
    expect([s.a.content, s.b.content]).toEqual(['A1A2', 'B1']);
    s = run(s, f({ type: 'done', side: 'a', choices: [{ index: 0, generation_id: 'ga', finish_reason: 'stop' }], usage }));
    expect(s.phase).toBe('streaming');
    s = run(s, f({ type: 'done', side: 'b', choices: [{ index: 0, generation_id: 'gb', finish_reason: 'length' }], usage }));
    expect(s.phase).toBe('done');
    expect(s.b.finishReason).toBe('length');
  });

  it('takes one vote while streaming and reveals the versions', () => {
    expect(canVote(started)).toBe(true);
    let s = run(started, { type: 'vote', choice: 'b' });
    expect(canVote(s)).toBe(false);
    s = run(s, f({ type: 'voted', comparison: voted('b') }));
    expect(s.choice).toBe('b');
    expect([s.a.model, s.b.model]).toEqual(['loopchat@v3', 'loopchat@v2']);
    expect(s.phase).toBe('streaming');
    expect(canVote(run(s, { type: 'vote', choice: 'a' }))).toBe(false);
  });

  it('an error while a vote waits belongs to the vote', () => {
    const error = { message: 'too many votes', type: 'rate_limit_error', code: 'rate_limit_exceeded', param: null };
    const s = run(started, { type: 'vote', choice: 'a' }, f({ type: 'error', error }));
    expect(s.voteError).toEqual(error);
    expect(s.phase).toBe('streaming');
    expect(canVote(s)).toBe(true);
    const streamError = run(started, f({ type: 'error', error }));
    expect(streamError.phase).toBe('error');
  });
});
