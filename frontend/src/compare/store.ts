/** One A/B round as a pure reducer: two replies streaming side by side, one vote. */
import type { ErrorInfo } from '../api/errors';
import type { Choice, ComparisonOut } from '../api/types';
import type { ServerFrame, Side } from '../ws/protocol';

export interface SideState {
  content: string;
  generationId: string | null;
  done: boolean;
  finishReason: string | null;
  /** The policy version, revealed by the vote. */
  model: string | null;
}

export type ComparePhase = 'idle' | 'waiting' | 'streaming' | 'done' | 'stopped' | 'error';

export interface CompareState {
  phase: ComparePhase;
  prompt: string;
  comparisonId: string | null;
  a: SideState;
  b: SideState;
  choice: Choice | null;
  votePending: Choice | null;
  voteError: ErrorInfo | null;
  error: ErrorInfo | null;
}

export type CompareAction =
  | { type: 'ask'; prompt: string }
  | { type: 'frame'; frame: ServerFrame }
  | { type: 'vote'; choice: Choice }
  | { type: 'voted'; comparison: ComparisonOut }
  | { type: 'vote-failed'; error: ErrorInfo }
  | { type: 'failed'; error: ErrorInfo }
  | { type: 'connection-lost' }
  | { type: 'reset' };

const emptySide: SideState = { content: '', generationId: null, done: false, finishReason: null, model: null };

export const emptyCompare: CompareState = {
  phase: 'idle',
  prompt: '',
  comparisonId: null,
  a: emptySide,
  b: emptySide,
  choice: null,
  votePending: null,
  voteError: null,
  error: null,
};

export function isLive(s: CompareState): boolean {
  return s.phase === 'waiting' || s.phase === 'streaming';
}

/** Votes are allowed once the comparison exists, also while it streams, and only once. */
export function canVote(s: CompareState): boolean {
  return s.comparisonId !== null && s.choice === null && s.votePending === null;
}

function patchSide(s: CompareState, side: Side, change: (x: SideState) => SideState): CompareState {
  return side === 'a' ? { ...s, a: change(s.a) } : { ...s, b: change(s.b) };
}

function applyFrame(s: CompareState, f: ServerFrame): CompareState {
  switch (f.type) {
    case 'comparison':
      if (s.phase !== 'waiting') return s;
      return {
        ...s,
        phase: 'streaming',
        comparisonId: f.id,
        a: { ...emptySide, generationId: f.a.generation_id },
        b: { ...emptySide, generationId: f.b.generation_id },
      };
    case 'delta':
      if (s.phase !== 'streaming' || !f.side) return s;
      return patchSide(s, f.side, (x) => ({ ...x, content: x.content + f.content }));
    case 'done': {
      if (s.phase !== 'streaming' || !f.side) return s;
      const next = patchSide(s, f.side, (x) => ({ ...x, done: true, finishReason: f.choices[0]?.finish_reason ?? null }));
      return next.a.done && next.b.done ? { ...next, phase: 'done' } : next;
    }
    case 'stopped':
      return isLive(s) ? { ...s, phase: 'stopped' } : s;
    case 'voted':
      return applyVoted(s, f.comparison);
    case 'error':
      // One socket carries the stream and the vote; a vote waiting for its answer owns the error.
      if (s.votePending !== null) return { ...s, votePending: null, voteError: f.error };
      return { ...s, phase: isLive(s) || s.phase === 'idle' ? 'error' : s.phase, error: f.error };
    default:
      return s;
  }
}

function applyVoted(s: CompareState, c: ComparisonOut): CompareState {
  if (c.id !== s.comparisonId) return s;
  return {
    ...s,
    choice: c.choice ?? s.votePending,
    votePending: null,
    voteError: null,
    a: { ...s.a, model: c.a.model ?? null },
    b: { ...s.b, model: c.b.model ?? null },
  };
}

export function compareReducer(s: CompareState, action: CompareAction): CompareState {
  switch (action.type) {
    case 'ask':
      if (isLive(s)) return s;
      return { ...emptyCompare, phase: 'waiting', prompt: action.prompt };
    case 'frame':
      return applyFrame(s, action.frame);
    case 'vote':
      return canVote(s) ? { ...s, votePending: action.choice, voteError: null } : s;
    case 'voted':
      return applyVoted(s, action.comparison);
    case 'vote-failed':
      return { ...s, votePending: null, voteError: action.error };
    case 'failed':
      return { ...s, phase: 'error', error: action.error };
    case 'connection-lost':
      return isLive(s)
        ? {
            ...s,
            phase: 'error',
            error: { message: 'Connection lost; the replies were cut off. You can still vote.', type: 'connection_error', code: 'connection_lost', param: null },
          }
        : s;
    case 'reset':
      return isLive(s) ? s : emptyCompare;
  }
}
