/**
 * One WebSocket to /v1/ws/chat that reconnects by itself.
 *
 * States: connecting -> open -> (dropped) reconnecting -> connecting -> open ...; close()
 * ends in closed and stops reconnecting (connect() opens it again). A drop while a reply streams loses that stream (the server
 * stores it as cut off); listeners learn about it from the status change.
 */
import { type BackoffPolicy, DEFAULT_BACKOFF, backoffDelay } from './backoff';
import { type ClientFrame, type ServerFrame, parseFrame } from './protocol';

export type SocketStatus = 'connecting' | 'open' | 'reconnecting' | 'closed';

/** Close code the server uses when the connection is not authenticated. */
export const POLICY_VIOLATION = 1008;

export interface SocketInfo {
  status: SocketStatus;
  /** Failed connection attempts since the last open. */
  attempt: number;
  /** When reconnecting: epoch ms of the next attempt. */
  retryAt: number | null;
}

type WebSocketLike = Pick<WebSocket, 'send' | 'close' | 'readyState'> & {
  onopen: ((ev: Event) => unknown) | null;
  onclose: ((ev: CloseEvent) => unknown) | null;
  onmessage: ((ev: MessageEvent) => unknown) | null;
  onerror: ((ev: Event) => unknown) | null;
};

export interface SocketOptions {
  url: string;
  createSocket?: (url: string) => WebSocketLike;
  backoff?: BackoffPolicy;
  random?: () => number;
  now?: () => number;
  /** Called before reconnecting after the server refused the connection (1008). */
  reauthenticate?: () => Promise<unknown>;
}

const OPEN = 1;

export class ChatSocket {
  private readonly opts: SocketOptions;
  private ws: WebSocketLike | null = null;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private info: SocketInfo = { status: 'connecting', attempt: 0, retryAt: null };
  private readonly frameListeners = new Set<(f: ServerFrame) => void>();
  private readonly statusListeners = new Set<(s: SocketInfo) => void>();

  constructor(opts: SocketOptions) {
    this.opts = opts;
  }

  get state(): SocketInfo {
    return this.info;
  }

  /** Opens the connection (no-op while one is open or opening); also after close(). */
  connect(): void {
    if (this.ws) return;
    this.clearTimer();
    this.setInfo({ status: 'connecting', attempt: this.info.attempt, retryAt: null });
    const create = this.opts.createSocket ?? ((url: string) => new WebSocket(url) as WebSocketLike);
    const ws = create(this.opts.url);
    this.ws = ws;
    ws.onopen = () => this.setInfo({ status: 'open', attempt: 0, retryAt: null });
    ws.onmessage = (ev) => {
      const frame = parseFrame(ev.data);
      if (frame) this.frameListeners.forEach((l) => l(frame));
    };
    ws.onerror = () => undefined; // onclose follows and decides
    ws.onclose = (ev) => this.dropped(ws, ev.code);
  }

  /** Sends a frame; false when the socket is not open (the caller shows that). */
  send(frame: ClientFrame): boolean {
    if (!this.ws || this.ws.readyState !== OPEN) return false;
    this.ws.send(JSON.stringify(frame));
    return true;
  }

  /** Skips the wait of a pending reconnect. */
  retryNow(): void {
    if (this.info.status === 'reconnecting') {
      this.clearTimer();
      this.connect();
    }
  }

  close(): void {
    this.clearTimer();
    this.setInfo({ status: 'closed', attempt: 0, retryAt: null });
    const ws = this.ws;
    this.ws = null;
    if (ws) {
      ws.onclose = null;
      ws.onmessage = null;
      ws.close(1000, 'bye');
    }
  }

  onFrame(listener: (f: ServerFrame) => void): () => void {
    this.frameListeners.add(listener);
    return () => this.frameListeners.delete(listener);
  }

  onStatus(listener: (s: SocketInfo) => void): () => void {
    this.statusListeners.add(listener);
    return () => this.statusListeners.delete(listener);
  }

  private dropped(ws: WebSocketLike, code: number): void {
    if (ws !== this.ws || this.info.status === 'closed') return;
    this.ws = null;
    const attempt = this.info.attempt;
    const delay = backoffDelay(attempt, this.opts.backoff ?? DEFAULT_BACKOFF, this.opts.random);
    const now = (this.opts.now ?? Date.now)();
    this.setInfo({ status: 'reconnecting', attempt: attempt + 1, retryAt: now + delay });
    this.timer = setTimeout(() => {
      this.timer = null;
      if (code === POLICY_VIOLATION && this.opts.reauthenticate) {
        this.opts.reauthenticate().then(
          () => this.connect(),
          () => this.connect(),
        );
      } else {
        this.connect();
      }
    }, delay);
  }

  private clearTimer(): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
  }

  private setInfo(info: SocketInfo): void {
    this.info = info;
    this.statusListeners.forEach((l) => l(info));
  }
}
