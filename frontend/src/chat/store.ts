/**
 * The open conversation as a pure reducer: messages, the reply being streamed, and the
 * error to show. Frames from the WebSocket and the user's actions are its actions.
 */
import type { ErrorInfo } from '../api/errors';
import type { ChatMessageIn, ConversationDetail, StoredMessage, Thumb } from '../api/types';
import type { ServerFrame } from '../ws/protocol';

export type ReplyStatus = 'waiting' | 'streaming' | 'done' | 'stopped' | 'error' | 'interrupted';

export interface StoredVote {
  rating: Thumb;
  reason: string | null;
  comment: string | null;
}

export interface UserMessage {
  key: string;
  role: 'user';
  content: string;
}

export interface AssistantMessage {
  key: string;
  role: 'assistant';
  content: string;
  generationId: string | null;
  model: string | null;
  status: ReplyStatus;
  finishReason: string | null;
  vote: StoredVote | null;
}

export type Message = UserMessage | AssistantMessage;

export interface ChatState {
  conversationId: string | null;
  messages: Message[];
  error: ErrorInfo | null;
  /** Text of a message the server refused before replying, back for the composer. */
  draft: string | null;
  /** Key of the user message the current request added (none for a regenerate). */
  sentKey: string | null;
  /** Keys are unique within a state; a counter keeps the reducer pure. */
  nextKey: number;
}

export type ChatAction =
  | { type: 'reset'; conversationId: string | null }
  | { type: 'loaded'; conversation: ConversationDetail }
  | { type: 'send'; text: string; conversationId: string }
  | { type: 'regenerate' }
  | { type: 'frame'; frame: ServerFrame }
  | { type: 'not-sent'; error: ErrorInfo }
  | { type: 'connection-lost' }
  | { type: 'voted'; generationId: string; vote: StoredVote | null }
  | { type: 'dismiss-error' };

export const emptyChat: ChatState = { conversationId: null, messages: [], error: null, draft: null, sentKey: null, nextKey: 1 };

const CONNECTION_LOST: ErrorInfo = {
  message: 'Connection lost while the reply was streaming; reconnecting. The part received is kept.',
  type: 'connection_error',
  code: 'connection_lost',
  param: null,
};

export function isStreaming(state: ChatState): boolean {
  const last = lastReply(state);
  return last !== null && (last.status === 'waiting' || last.status === 'streaming');
}

/** The assistant message at the end of the list, if the list ends with one. */
export function lastReply(state: ChatState): AssistantMessage | null {
  const last = state.messages[state.messages.length - 1];
  return last && last.role === 'assistant' ? last : null;
}

/** The history the server gets for the reply being requested (everything before it). */
export function historyToSend(state: ChatState): ChatMessageIn[] {
  const msgs = state.messages;
  const pending = lastReply(state)?.status === 'waiting' ? msgs.slice(0, -1) : msgs;
  return pending
    .filter((m) => m.role === 'user' || m.content.length > 0)
    .map((m) => ({ role: m.role, content: m.content }));
}

function waitingReply(key: number): AssistantMessage {
  return {
    key: `m${key}`,
    role: 'assistant',
    content: '',
    generationId: null,
    model: null,
    status: 'waiting',
    finishReason: null,
    vote: null,
  };
}

/** How a stored reply ended, as the live stream would have shown it. */
function storedStatus(m: StoredMessage): ReplyStatus {
  if (m.status === 'cut_off') return 'stopped';
  if (m.status === 'error') return 'error';
  return 'done';
}

function fromStored(c: ConversationDetail): Message[] {
  return c.messages
    .filter((m) => m.role === 'user' || m.role === 'assistant')
    .map((m): Message =>
      m.role === 'user'
        ? { key: `s${m.position}`, role: 'user', content: m.content }
        : {
            key: `s${m.position}`,
            role: 'assistant',
            content: m.content,
            generationId: m.generation_id,
            model: m.model,
            status: storedStatus(m),
            finishReason: m.finish_reason,
            vote: m.rating ? { rating: m.rating, reason: m.reason, comment: m.comment } : null,
          },
    );
}

function updateLastReply(state: ChatState, change: (m: AssistantMessage) => AssistantMessage): ChatState {
  const last = lastReply(state);
  if (!last) return state;
  return { ...state, messages: [...state.messages.slice(0, -1), change(last)] };
}

/** Drops the trailing reply (if any) and asks for a new one to the same history. */
function regenerate(state: ChatState): ChatState {
  if (isStreaming(state)) return state;
  const msgs = lastReply(state) ? state.messages.slice(0, -1) : state.messages;
  if (msgs.length === 0) return state;
  return { ...state, messages: [...msgs, waitingReply(state.nextKey)], error: null, sentKey: null, nextKey: state.nextKey + 1 };
}

function applyFrame(state: ChatState, frame: ServerFrame): ChatState {
  const last = lastReply(state);
  const live = last !== null && (last.status === 'waiting' || last.status === 'streaming');
  switch (frame.type) {
    case 'start':
      if (!live) return state;
      return updateLastReply(state, (m) => ({
        ...m,
        status: 'streaming',
        generationId: frame.generation_ids[0] ?? null,
        model: frame.model,
      }));
    case 'delta':
      // Text comes after `start`; anything else is a stale frame of an earlier stream.
      if (last?.status !== 'streaming' || frame.index !== 0 || frame.side) return state;
      return updateLastReply(state, (m) => ({ ...m, content: m.content + frame.content }));
    case 'done':
      if (last?.status !== 'streaming' || frame.side) return state;
      if (last.generationId && !frame.choices.some((c) => c.generation_id === last.generationId)) return state;
      return updateLastReply(state, (m) => ({
        ...m,
        status: 'done',
        finishReason: frame.choices.find((c) => c.index === 0)?.finish_reason ?? null,
      }));
    case 'stopped':
      if (!live) return state;
      if (last.generationId && !frame.generation_ids.includes(last.generationId)) return state;
      return updateLastReply(state, (m) => ({ ...m, status: 'stopped' }));
    case 'error': {
      // A refused request (no reply started): the empty reply goes, and a message sent with
      // it goes back to the composer to be edited; a reply that had started stays.
      if (live && last.content === '' && last.generationId === null) {
        const msgs = state.messages.slice(0, -1);
        const sent = msgs[msgs.length - 1];
        if (sent?.role === 'user' && sent.key === state.sentKey) {
          return { ...state, messages: msgs.slice(0, -1), error: frame.error, draft: sent.content };
        }
        return { ...state, messages: msgs, error: frame.error };
      }
      const next = live ? updateLastReply(state, (m) => ({ ...m, status: 'error' })) : state;
      return { ...next, error: frame.error };
    }
    default:
      return state;
  }
}

export function chatReducer(state: ChatState, action: ChatAction): ChatState {
  switch (action.type) {
    case 'reset':
      return { ...emptyChat, conversationId: action.conversationId, nextKey: state.nextKey };
    case 'loaded':
      return { ...state, conversationId: action.conversation.id, messages: fromStored(action.conversation), error: null };
    case 'send': {
      if (isStreaming(state)) return state;
      const user: UserMessage = { key: `m${state.nextKey}`, role: 'user', content: action.text };
      return {
        ...state,
        conversationId: action.conversationId,
        messages: [...state.messages, user, waitingReply(state.nextKey + 1)],
        error: null,
        draft: null,
        sentKey: user.key,
        nextKey: state.nextKey + 2,
      };
    }
    case 'regenerate':
      return regenerate(state);
    case 'frame':
      return applyFrame(state, action.frame);
    case 'not-sent': {
      const waiting = lastReply(state)?.status === 'waiting';
      return { ...state, messages: waiting ? state.messages.slice(0, -1) : state.messages, error: action.error };
    }
    case 'connection-lost':
      if (!isStreaming(state)) return state;
      return { ...updateLastReply(state, (m) => ({ ...m, status: 'interrupted' })), error: CONNECTION_LOST };
    case 'voted':
      return {
        ...state,
        messages: state.messages.map((m) =>
          m.role === 'assistant' && m.generationId === action.generationId ? { ...m, vote: action.vote } : m,
        ),
      };
    case 'dismiss-error':
      return { ...state, error: null };
  }
}
