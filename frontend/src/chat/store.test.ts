import { describe, expect, it } from 'vitest';
import type { ConversationDetail } from '../api/types';
import type { ServerFrame } from '../ws/protocol';
import { type ChatAction, type ChatState, chatReducer, emptyChat, historyToSend, isStreaming, lastReply } from './store';

function run(state: ChatState, ...actions: ChatAction[]): ChatState {
  return actions.reduce(chatReducer, state);
}
const frame = (f: ServerFrame): ChatAction => ({ type: 'frame', frame: f });

const streamed = (text: string, gid: string): ChatAction[] => [
  frame({ type: 'start', generation_ids: [gid], model: 'loopchat@v1' }),
  ...text.split(' ').map((w, i): ChatAction => frame({ type: 'delta', index: 0, content: (i ? ' ' : '') + w })),
  frame({ type: 'done', choices: [{ index: 0, generation_id: gid, finish_reason: 'stop' }], usage: { prompt_tokens: 1, completion_tokens: 2, total_tokens: 3 } }),
];

type Stored = ConversationDetail['messages'][number];
const user = (position: number, content: string): Stored => ({
  position,
  role: 'user',
  content,
  generation_id: null,
  model: null,
  rating: null,
  reason: null,
  comment: null,
  finish_reason: null,
  status: null,
});
const reply = (position: number, content: string, status: Stored['status'], finish: Stored['finish_reason']): Stored => ({
  ...user(position, content),
  role: 'assistant',
  generation_id: `g${position}`,
  model: 'loopchat@v0',
  status,
  finish_reason: finish,
});

describe('chat store', () => {
  it('streams a reply token by token from the frames', () => {
    let s = run(emptyChat, { type: 'send', text: 'Hi', conversationId: 'c1' });
    expect(isStreaming(s)).toBe(true);
    expect(lastReply(s)?.status).toBe('waiting');
    expect(historyToSend(s)).toEqual([{ role: 'user', content: 'Hi' }]);
    s = run(s, frame({ type: 'start', generation_ids: ['g1'], model: 'loopchat@v1' }), frame({ type: 'delta', index: 0, content: 'Hel' }));
    expect(lastReply(s)).toMatchObject({ status: 'streaming', content: 'Hel', generationId: 'g1', model: 'loopchat@v1' });
    s = run(s, frame({ type: 'delta', index: 1, content: 'ignored' }), frame({ type: 'delta', index: 0, content: 'lo' }));
    s = run(s, frame({ type: 'done', choices: [{ index: 0, generation_id: 'g1', finish_reason: 'length' }], usage: { prompt_tokens: 1, completion_tokens: 2, total_tokens: 3 } }));
    expect(lastReply(s)).toMatchObject({ status: 'done', content: 'Hello', finishReason: 'length' });
    expect(isStreaming(s)).toBe(false);
    expect(s.conversationId).toBe('c1');
  });

  it('regenerate drops the last reply and asks again with the same history', () => {
    let s = run(emptyChat, { type: 'send', text: 'Q1', conversationId: 'c' }, ...streamed('A one', 'g1'));
    s = run(s, { type: 'send', text: 'Q2', conversationId: 'c' }, ...streamed('A two', 'g2'));
    s = run(s, { type: 'regenerate' });
    expect(s.messages.map((m) => m.content)).toEqual(['Q1', 'A one', 'Q2', '']);
    expect(lastReply(s)?.status).toBe('waiting');
    expect(historyToSend(s)).toEqual([
      { role: 'user', content: 'Q1' },
      { role: 'assistant', content: 'A one' },
      { role: 'user', content: 'Q2' },
    ]);
    s = run(s, ...streamed('A three', 'g3'));
    expect(s.messages.map((m) => m.content)).toEqual(['Q1', 'A one', 'Q2', 'A three']);
    expect(run(s, { type: 'send', text: 'x', conversationId: 'c' }, { type: 'regenerate' }).messages).toHaveLength(6); // not while streaming
  });

  it('a refused message goes back to the composer with the error shown', () => {
    const error = { message: 'prompt is 5000 tokens', type: 'invalid_request_error', code: 'context_length_exceeded', param: 'messages' };
    const first = run(emptyChat, { type: 'send', text: 'Q1', conversationId: 'c' }, ...streamed('A one', 'g1'));
    const s = run(first, { type: 'send', text: 'long', conversationId: 'c' }, frame({ type: 'error', error }));
    expect(s.messages.map((m) => m.content)).toEqual(['Q1', 'A one']);
    expect(s.draft).toBe('long');
    expect(s.error).toEqual(error);
    expect(isStreaming(s)).toBe(false);
    expect(run(s, { type: 'send', text: 'short', conversationId: 'c' }).draft).toBeNull();
  });

  it('a refused regenerate keeps the history and retries with it', () => {
    const error = { message: 'engine is loading', type: 'server_error', code: 'engine_not_ready', param: null };
    let s = run(emptyChat, { type: 'send', text: 'Q1', conversationId: 'c' }, { type: 'not-sent', error });
    expect(s.messages.map((m) => m.role)).toEqual(['user']); // not sent at all: nothing to edit
    s = run(s, { type: 'regenerate' }, frame({ type: 'error', error }));
    expect(s.messages.map((m) => m.content)).toEqual(['Q1']);
    expect(s.draft).toBeNull();
    expect(historyToSend(run(s, { type: 'regenerate' }))).toEqual([{ role: 'user', content: 'Q1' }]);
  });

  it('an error mid-stream keeps the partial reply', () => {
    const error = { message: 'engine failed', type: 'server_error', code: 'engine_error', param: null };
    const s = run(
      emptyChat,
      { type: 'send', text: 'q', conversationId: 'c' },
      frame({ type: 'start', generation_ids: ['g'], model: 'm' }),
      frame({ type: 'delta', index: 0, content: 'part' }),
      frame({ type: 'error', error }),
    );
    expect(lastReply(s)).toMatchObject({ status: 'error', content: 'part' });
    expect(s.error?.code).toBe('engine_error');
  });

  it('ignores frames of another stream', () => {
    const waiting = run(emptyChat, { type: 'send', text: 'q', conversationId: 'c' });
    expect(run(waiting, frame({ type: 'delta', index: 0, content: 'old' }))).toBe(waiting);
    const mine = run(waiting, frame({ type: 'start', generation_ids: ['g2'], model: 'm' }));
    expect(run(mine, frame({ type: 'stopped', generation_ids: ['g1'] }))).toBe(mine);
    expect(lastReply(run(mine, frame({ type: 'stopped', generation_ids: ['g2'] })))?.status).toBe('stopped');
    // Stopped before it started (no start frame): the reply ends empty.
    expect(lastReply(run(waiting, frame({ type: 'stopped', generation_ids: ['g2'] })))?.status).toBe('stopped');
  });

  it('stop and connection loss end the stream', () => {
    const base = run(emptyChat, { type: 'send', text: 'q', conversationId: 'c' }, frame({ type: 'start', generation_ids: ['g'], model: 'm' }));
    expect(lastReply(run(base, frame({ type: 'stopped', generation_ids: ['g'] })))?.status).toBe('stopped');
    const lost = run(base, { type: 'connection-lost' });
    expect(lastReply(lost)?.status).toBe('interrupted');
    expect(lost.error?.code).toBe('connection_lost');
    expect(run(lost, { type: 'connection-lost' })).toBe(lost);
  });

  it('loads a stored conversation with the user’s votes', () => {
    const conv: ConversationDetail = {
      id: 'c9',
      title: 'Cats',
      created_at: '2026-01-01T00:00:00Z',
      updated_at: '2026-01-01T00:00:00Z',
      messages: [
        user(0, 'cat?'),
        { ...reply(1, 'meow', 'completed', 'stop'), rating: 'down', reason: 'too_short', comment: 'more' },
      ],
    };
    const s = run(emptyChat, { type: 'loaded', conversation: conv });
    expect(s.conversationId).toBe('c9');
    expect(lastReply(s)).toMatchObject({ generationId: 'g1', status: 'done', finishReason: 'stop', vote: { rating: 'down', reason: 'too_short', comment: 'more' } });
    const voted = run(s, { type: 'voted', generationId: 'g1', vote: null });
    expect(lastReply(voted)?.vote).toBeNull();
  });

  it('a stored reply that was stopped, cut at the limit or failed says so after a reload', () => {
    const conv: ConversationDetail = {
      id: 'c1',
      title: null,
      created_at: '2026-01-01T00:00:00Z',
      updated_at: '2026-01-01T00:00:00Z',
      messages: [
        user(0, 'a'),
        reply(1, 'half a', 'cut_off', null),
        user(2, 'b'),
        reply(3, 'long b', 'completed', 'length'),
        user(4, 'c'),
        reply(5, '', 'error', null),
        user(6, 'd'),
        { ...reply(7, 'typed in', null, null), generation_id: null, model: null }, // history sent by the client
      ],
    };
    const replies = run(emptyChat, { type: 'loaded', conversation: conv }).messages.filter((m) => m.role === 'assistant');
    expect(replies.map((m) => [m.status, m.finishReason])).toEqual([
      ['stopped', null],
      ['done', 'length'],
      ['error', null],
      ['done', null],
    ]);
  });
});
