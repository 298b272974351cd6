/**
 * Frames of WS /v1/ws/chat (service/api/ws.py). The WebSocket protocol is not part of
 * the OpenAPI schema, so these are written by hand; the payloads reuse generated types.
 */
import type { ErrorInfo } from '../api/errors';
import type { ChatMessageIn, Choice, ComparisonOut, Usage } from '../api/types';

export type Side = 'a' | 'b';

export type ClientFrame =
  | { type: 'chat'; messages: ChatMessageIn[]; conversation_id?: string; model?: string }
  | { type: 'compare'; messages: ChatMessageIn[] }
  | { type: 'vote'; comparison_id: string; choice: Choice; reason?: string | null }
  | { type: 'stop' };

export interface DoneChoice {
  index: number;
  generation_id: string;
  finish_reason: string | null;
}

export type ServerFrame =
  | { type: 'start'; generation_ids: string[]; model: string }
  | { type: 'comparison'; id: string; a: { generation_id: string }; b: { generation_id: string } }
  | { type: 'delta'; index: number; content: string; side?: Side }
  | { type: 'done'; choices: DoneChoice[]; usage: Usage; side?: Side }
  | { type: 'voted'; comparison: ComparisonOut }
  | { type: 'stopped'; generation_ids: string[] }
  | { type: 'error'; error: ErrorInfo };

const KINDS = new Set(['start', 'comparison', 'delta', 'done', 'voted', 'stopped', 'error']);

/** A server frame from a message's text, or null for anything unrecognised. */
export function parseFrame(raw: unknown): ServerFrame | null {
  if (typeof raw !== 'string') return null;
  let value: unknown;
  try {
    value = JSON.parse(raw);
  } catch {
    return null;
  }
  if (!value || typeof value !== 'object') return null;
  const kind = (value as { type?: unknown }).type;
  return typeof kind === 'string' && KINDS.has(kind) ? (value as ServerFrame) : null;
}

/** ws(s)://<this host>/v1/ws/chat */
export function chatSocketUrl(loc: Pick<Location, 'protocol' | 'host'> = location): string {
  return `${loc.protocol === 'https:' ? 'wss' : 'ws'}://${loc.host}/v1/ws/chat`;
}
