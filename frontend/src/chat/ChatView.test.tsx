import { act, render, screen, waitFor, within } from '@testing-library/react';
import userEvent from '@testing-library/user-event';
import { beforeEach, describe, expect, it, vi } from 'vitest';
import { FakeSocket } from '../test/fakeSocket';
import { ChatView } from './ChatView';

const CONV = { id: 'c1', title: null, created_at: '2026-01-01T00:00:00Z', updated_at: '2026-01-01T00:00:00Z' };

function json(status: number, body: unknown): Response {
  return new Response(body === null ? null : JSON.stringify(body), { status, headers: { 'content-type': 'application/json' } });
}

function fakeServer() {
  const calls: string[] = [];
  vi.stubGlobal(
    'fetch',
    vi.fn(async (req: Request) => {
      const path = new URL(req.url).pathname;
      calls.push(`${req.method} ${path}`);
      if (path === '/v1/feedback/reasons') return json(200, { up: ['helpful'], down: ['wrong'], comparison: [] });
      if (path === '/v1/conversations' && req.method === 'GET') return json(200, { data: calls.includes('POST /v1/conversations') ? [{ ...CONV, title: 'Hello there' }] : [] });
      if (path === '/v1/conversations' && req.method === 'POST') return json(201, CONV);
      return json(404, { error: { message: 'not found', type: 'invalid_request_error', code: 'not_found', param: null } });
    }),
  );
  return calls;
}

async function openSocket(): Promise<FakeSocket> {
  await waitFor(() => expect(FakeSocket.instances.length).toBeGreaterThan(0));
  const ws = FakeSocket.latest();
  act(() => ws.open());
  return ws;
}

function stream(ws: FakeSocket, gid: string, words: string[]): void {
  act(() => {
    ws.receive({ type: 'start', generation_ids: [gid], model: 'loopchat@v1' });
    for (const w of words) ws.receive({ type: 'delta', index: 0, content: w });
    ws.receive({ type: 'done', choices: [{ index: 0, generation_id: gid, finish_reason: 'stop' }], usage: { prompt_tokens: 1, completion_tokens: 1, total_tokens: 2 } });
  });
}

beforeEach(() => {
  FakeSocket.instances = [];
  vi.stubGlobal('WebSocket', FakeSocket);
  history.replaceState(null, '', '/');
});

describe('ChatView', () => {
  it('creates a conversation, streams the reply, regenerates with the history minus the last reply', async () => {
    const calls = fakeServer();
    const user = userEvent.setup();
    render(<ChatView conversationId={null} />);
    const ws = await openSocket();

    await user.type(screen.getByTestId('composer'), 'Hello there{Enter}');
    await waitFor(() => expect(ws.sent).toHaveLength(1));
    expect(calls).toContain('POST /v1/conversations');
    expect(ws.sent[0]).toEqual({ type: 'chat', messages: [{ role: 'user', content: 'Hello there' }], conversation_id: 'c1' });
    expect(location.pathname).toBe('/c/c1');
    expect(screen.getByTestId('composer')).toBeDisabled();
    expect(screen.getByTestId('stop')).toBeInTheDocument();

    stream(ws, 'g1', ['**Hi**', ' you']);
    const reply = screen.getByTestId('message-assistant');
    expect(reply.querySelector('strong')?.textContent).toBe('Hi');
    expect(within(reply).getByTestId('model-tag')).toHaveTextContent('loopchat@v1');
    expect(screen.getByTestId('composer')).toBeEnabled();
    expect(screen.getByTestId('messages')).toHaveAttribute('aria-live', 'polite');
    await waitFor(() => expect(screen.getByTestId('conversation-c1')).toHaveTextContent('Hello there'));

    await user.click(screen.getByTestId('regenerate'));
    expect(ws.sent[1]).toEqual({ type: 'chat', messages: [{ role: 'user', content: 'Hello there' }], conversation_id: 'c1' });
    expect(screen.getAllByTestId('message-assistant')).toHaveLength(1);
    await user.click(screen.getByTestId('stop'));
    expect(ws.sent[2]).toEqual({ type: 'stop' });
    act(() => ws.receive({ type: 'stopped', generation_ids: ['g2'] }));
    expect(screen.getByTestId('message-assistant')).toHaveAttribute('data-status', 'stopped');
  });

  it('shows server errors inline and a reconnecting banner when the socket drops', async () => {
    fakeServer();
    const user = userEvent.setup();
    render(<ChatView conversationId={null} />);
    const ws = await openSocket();
    await user.type(screen.getByTestId('composer'), 'x{Enter}');
    await waitFor(() => expect(ws.sent).toHaveLength(1));
    act(() => ws.receive({ type: 'error', error: { message: 'the prompt is 3000 tokens, over 1536', type: 'invalid_request_error', code: 'context_length_exceeded', param: 'messages' } }));
    expect(screen.getByTestId('chat-error')).toHaveTextContent('Too long for the model');
    expect(screen.queryByTestId('message-assistant')).toBeNull();
    expect(screen.queryByTestId('message-user')).toBeNull();
    expect(screen.getByTestId('composer')).toHaveValue('x');

    act(() => ws.drop());
    expect(screen.getByTestId('reconnecting')).toHaveTextContent('Reconnecting');
    await user.click(screen.getByTestId('reconnect-now'));
    act(() => FakeSocket.latest().open());
    expect(screen.queryByTestId('reconnecting')).toBeNull();
  });
});
