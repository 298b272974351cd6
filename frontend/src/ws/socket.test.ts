import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { FakeSocket } from '../test/fakeSocket';
import { backoffDelay } from './backoff';
import { parseFrame } from './protocol';
import { ChatSocket, POLICY_VIOLATION, type SocketInfo } from './socket';

const policy = { baseMs: 1000, maxMs: 8000, factor: 2 };

function make(extra: Partial<ConstructorParameters<typeof ChatSocket>[0]> = {}) {
  const statuses: SocketInfo[] = [];
  const socket = new ChatSocket({
    url: 'ws://test/v1/ws/chat',
    createSocket: (url) => new FakeSocket(url),
    backoff: policy,
    random: () => 1, // the top of each jitter range: delays are exactly the ceiling
    now: () => 0,
    ...extra,
  });
  socket.onStatus((s) => statuses.push(s));
  return { socket, statuses };
}

beforeEach(() => {
  FakeSocket.instances = [];
  vi.useFakeTimers();
});
afterEach(() => {
  vi.useRealTimers();
});

describe('backoffDelay', () => {
  it('grows exponentially to the cap, with jitter in the upper half', () => {
    expect([0, 1, 2, 3, 4, 9].map((n) => backoffDelay(n, policy, () => 1))).toEqual([1000, 2000, 4000, 8000, 8000, 8000]);
    expect(backoffDelay(2, policy, () => 0)).toBe(2000);
  });
});

describe('parseFrame', () => {
  it('keeps known frames and drops junk', () => {
    expect(parseFrame('{"type":"delta","index":0,"content":"hi"}')).toEqual({ type: 'delta', index: 0, content: 'hi' });
    expect(parseFrame('not json')).toBeNull();
    expect(parseFrame('{"type":"nope"}')).toBeNull();
    expect(parseFrame('[1]')).toBeNull();
  });
});

describe('ChatSocket', () => {
  it('connects, delivers frames, and sends only while open', () => {
    const { socket, statuses } = make();
    const frames: unknown[] = [];
    socket.onFrame((f) => frames.push(f));
    socket.connect();
    const ws = FakeSocket.latest();
    expect(ws.url).toBe('ws://test/v1/ws/chat');
    expect(socket.send({ type: 'stop' })).toBe(false);
    ws.open();
    expect(socket.state.status).toBe('open');
    expect(socket.send({ type: 'stop' })).toBe(true);
    expect(ws.sent).toEqual([{ type: 'stop' }]);
    ws.receive({ type: 'start', generation_ids: ['g1'], model: 'loopchat@v0' });
    ws.onmessage?.(new MessageEvent('message', { data: 'garbage' }));
    expect(frames).toEqual([{ type: 'start', generation_ids: ['g1'], model: 'loopchat@v0' }]);
    expect(statuses.map((s) => s.status)).toEqual(['connecting', 'open']);
  });

  it('reconnects with growing delays after drops, and resets after an open', () => {
    const { socket } = make();
    socket.connect();
    FakeSocket.latest().open();

    FakeSocket.latest().drop();
    expect(socket.state).toEqual({ status: 'reconnecting', attempt: 1, retryAt: 1000 });
    expect(socket.send({ type: 'stop' })).toBe(false);
    vi.advanceTimersByTime(999);
    expect(FakeSocket.instances).toHaveLength(1);
    vi.advanceTimersByTime(1);
    expect(FakeSocket.instances).toHaveLength(2);
    expect(socket.state.status).toBe('connecting');

    FakeSocket.latest().drop(); // the attempt itself failed
    expect(socket.state).toMatchObject({ status: 'reconnecting', attempt: 2, retryAt: 2000 });
    vi.advanceTimersByTime(2000);
    expect(FakeSocket.instances).toHaveLength(3);

    FakeSocket.latest().open();
    expect(socket.state).toEqual({ status: 'open', attempt: 0, retryAt: null });
    FakeSocket.latest().drop();
    expect(socket.state.retryAt).toBe(1000); // back to the first delay
  });

  it('retryNow skips the wait', () => {
    const { socket } = make();
    socket.connect();
    FakeSocket.latest().drop();
    socket.retryNow();
    expect(FakeSocket.instances).toHaveLength(2);
    vi.advanceTimersByTime(10_000);
    expect(FakeSocket.instances).toHaveLength(2); // the pending timer was cancelled
  });

  it('close() stops reconnecting and ignores late events', () => {
    const { socket } = make();
    socket.connect();
    const ws = FakeSocket.latest();
    ws.open();
    socket.close();
    expect(ws.closed).toBe(true);
    expect(socket.state.status).toBe('closed');
    ws.drop();
    vi.advanceTimersByTime(60_000);
    expect(FakeSocket.instances).toHaveLength(1);
  });

  it('re-authenticates before reconnecting when the server refused the session', async () => {
    const reauthenticate = vi.fn(() => Promise.resolve());
    const { socket } = make({ reauthenticate });
    socket.connect();
    FakeSocket.latest().drop(1006);
    vi.advanceTimersByTime(1000);
    expect(reauthenticate).not.toHaveBeenCalled();
    FakeSocket.latest().drop(POLICY_VIOLATION);
    vi.advanceTimersByTime(2000);
    expect(reauthenticate).toHaveBeenCalledTimes(1);
    await vi.waitFor(() => expect(FakeSocket.instances).toHaveLength(3));
  });
});
