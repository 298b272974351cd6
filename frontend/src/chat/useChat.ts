/**
 * The open conversation: loads it, sends chat frames over the socket, feeds the frames
 * back into the store, and reloads the stored history after a dropped connection.
 */
import { useCallback, useEffect, useReducer, useRef, useState } from 'react';
import { createConversation, getConversation } from '../api/conversations';
import { asErrorInfo } from '../api/errors';
import type { ChatSocket, SocketInfo } from '../ws/socket';
import { type ChatState, type StoredVote, chatReducer, emptyChat, historyToSend, isStreaming } from './store';

export interface Chat {
  state: ChatState;
  streaming: boolean;
  send: (text: string) => Promise<void>;
  regenerate: () => void;
  stop: () => void;
  setVote: (generationId: string, vote: StoredVote | null) => void;
  dismissError: () => void;
}

const NOT_CONNECTED = {
  message: 'Not connected to the server; reconnecting. Try again in a moment.',
  type: 'connection_error',
  code: 'not_connected',
  param: null,
};

export function useChat(
  socket: ChatSocket,
  info: SocketInfo,
  conversationId: string | null,
  onConversationChanged: (id: string, created: boolean) => void,
): Chat {
  const [state, dispatch] = useReducer(chatReducer, emptyChat);
  const stateRef = useRef(state);
  stateRef.current = state;
  const interrupted = useRef(false);

  const load = useCallback(async (id: string) => {
    try {
      dispatch({ type: 'loaded', conversation: await getConversation(id) });
    } catch (e) {
      dispatch({ type: 'reset', conversationId: null });
      dispatch({ type: 'not-sent', error: asErrorInfo(e) });
    }
  }, []);

  // Leaving a conversation mid-stream stops that stream; its last frames are dropped, and
  // sending waits for them (the server takes one stream at a time).
  const [draining, setDraining] = useState(false);
  const drainingRef = useRef(false);

  // The URL picks the conversation; one we just created is already in the state.
  useEffect(() => {
    if (conversationId === stateRef.current.conversationId) return;
    if (isStreaming(stateRef.current) && socket.send({ type: 'stop' })) {
      drainingRef.current = true;
      setDraining(true);
    }
    dispatch({ type: 'reset', conversationId });
    if (conversationId) void load(conversationId);
  }, [conversationId, load, socket]);

  useEffect(
    () =>
      socket.onFrame((frame) => {
        if (drainingRef.current) {
          if (frame.type === 'stopped' || frame.type === 'done' || frame.type === 'error') {
            drainingRef.current = false;
            setDraining(false);
          }
          return;
        }
        dispatch({ type: 'frame', frame });
        const id = stateRef.current.conversationId;
        if (id && (frame.type === 'done' || frame.type === 'stopped')) onConversationChanged(id, false);
      }),
    [socket, onConversationChanged],
  );

  useEffect(() => {
    if (info.status === 'reconnecting') {
      drainingRef.current = false;
      setDraining(false);
    }
    if (info.status === 'reconnecting' && isStreaming(stateRef.current)) {
      interrupted.current = true;
      dispatch({ type: 'connection-lost' });
    }
    // Back online after losing a stream: the server stored it as far as it got.
    if (info.status === 'open' && interrupted.current) {
      interrupted.current = false;
      const id = stateRef.current.conversationId;
      if (id) void load(id);
    }
  }, [info.status, load]);

  const request = useCallback(
    (next: ChatState) => {
      const id = next.conversationId ?? undefined;
      const ok = socket.send({ type: 'chat', messages: historyToSend(next), conversation_id: id });
      if (!ok) dispatch({ type: 'not-sent', error: NOT_CONNECTED });
    },
    [socket],
  );

  const send = useCallback(
    async (text: string) => {
      if (isStreaming(stateRef.current) || drainingRef.current || !text.trim()) return;
      let id = stateRef.current.conversationId;
      const created = id === null;
      if (id === null) {
        try {
          id = (await createConversation()).id;
        } catch (e) {
          dispatch({ type: 'not-sent', error: asErrorInfo(e) });
          return;
        }
      }
      const next = chatReducer(stateRef.current, { type: 'send', text, conversationId: id });
      dispatch({ type: 'send', text, conversationId: id });
      stateRef.current = next;
      if (created) onConversationChanged(id, true);
      request(next);
    },
    [request, onConversationChanged],
  );

  const regenerate = useCallback(() => {
    const next = chatReducer(stateRef.current, { type: 'regenerate' });
    if (next === stateRef.current || drainingRef.current) return;
    dispatch({ type: 'regenerate' });
    stateRef.current = next;
    request(next);
  }, [request]);

  const stop = useCallback(() => {
    socket.send({ type: 'stop' });
  }, [socket]);

  const setVote = useCallback((generationId: string, vote: StoredVote | null) => {
    dispatch({ type: 'voted', generationId, vote });
  }, []);

  const dismissError = useCallback(() => dispatch({ type: 'dismiss-error' }), []);

  return { state, streaming: isStreaming(state) || draining, send, regenerate, stop, setVote, dismissError };
}
