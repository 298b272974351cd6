/** The chat page: sidebar, messages, composer. */
import { useCallback, useEffect, useLayoutEffect, useRef, useState } from 'react';
import type { Conversation } from '../api/types';
import { conversationUrl, navigate } from '../app/router';
import { useReasons } from '../feedback/reasons';
import { ConfirmDialog, type ConfirmRequest } from '../ui/ConfirmDialog';
import { ConnectionBanner } from '../ui/ConnectionBanner';
import { ErrorNote } from '../ui/ErrorNote';
import { useChatSocket } from '../ws/useChatSocket';
import { Composer } from './Composer';
import { MessageItem } from './MessageItem';
import { Sidebar } from './Sidebar';
import { useChat } from './useChat';
import { useConversations } from './useConversations';

function useStickToBottom(dep: unknown) {
  const ref = useRef<HTMLDivElement>(null);
  const stuck = useRef(true);
  useLayoutEffect(() => {
    const el = ref.current;
    if (el && stuck.current) el.scrollTop = el.scrollHeight;
  }, [dep]);
  const onScroll = useCallback(() => {
    const el = ref.current;
    if (el) stuck.current = el.scrollHeight - el.scrollTop - el.clientHeight < 80;
  }, []);
  return { ref, onScroll };
}

export function ChatView({ conversationId }: { conversationId: string | null }) {
  const { socket, info } = useChatSocket();
  const list = useConversations();
  const reasons = useReasons();
  const [menuOpen, setMenuOpen] = useState(false);
  const [confirm, setConfirm] = useState<ConfirmRequest | null>(null);
  const { refresh } = list;

  const onConversationChanged = useCallback(
    (id: string, created: boolean) => {
      if (created) navigate(conversationUrl(id), true);
      void refresh();
    },
    [refresh],
  );
  const chat = useChat(socket, info, conversationId, onConversationChanged);
  const { messages, error } = chat.state;
  const last = messages[messages.length - 1];
  const scroll = useStickToBottom(last ? `${messages.length}:${last.content.length}` : 0);

  useEffect(() => setMenuOpen(false), [conversationId]);

  const open = (id: string | null) => navigate(conversationUrl(id));
  const askDelete = (c: Conversation) =>
    setConfirm({
      title: 'Delete this conversation?',
      body: `“${c.title ?? 'New chat'}” will be removed from your conversations. Votes you gave its replies still count.`,
      confirmLabel: 'Delete',
      danger: true,
      onConfirm: async () => {
        await list.remove(c.id);
        if (c.id === conversationId) navigate('/', true);
      },
    });

  return (
    <div className="chat-layout">
      <Sidebar list={list} activeId={chat.state.conversationId} open={menuOpen} onOpen={open} onAskDelete={askDelete} />
      <section className="chat-main" aria-labelledby="chat-title">
        <h1 id="chat-title" className="sr-only">
          Chat
        </h1>
        <div className="chat-top">
          <button
            type="button"
            className="btn small menu-toggle"
            data-testid="sidebar-toggle"
            aria-controls="conversations"
            aria-expanded={menuOpen}
            onClick={() => setMenuOpen((o) => !o)}
          >
            <span aria-hidden="true">☰</span> Chats
          </button>
          <ConnectionBanner info={info} onRetry={() => socket.retryNow()} />
        </div>
        <div
          className="messages"
          ref={scroll.ref}
          onScroll={scroll.onScroll}
          role="log"
          aria-live="polite"
          aria-label="Messages"
          data-testid="messages"
        >
          {messages.length === 0 && (
            <div className="empty">
              <h2>What can I help with?</h2>
              <p>Replies get better from your votes: rate each one with a thumb up or down.</p>
            </div>
          )}
          {messages.map((m, i) => (
            <MessageItem
              key={m.key}
              m={m}
              last={i === messages.length - 1}
              canRegenerate={!chat.streaming && info.status === 'open'}
              reasons={reasons}
              onRegenerate={chat.regenerate}
              onVote={chat.setVote}
            />
          ))}
          {last?.role === 'user' && !chat.streaming && (
            <div className="row">
              <button type="button" className="btn small" data-testid="regenerate" onClick={chat.regenerate} disabled={info.status !== 'open'}>
                <span aria-hidden="true">↻</span> Retry
              </button>
            </div>
          )}
        </div>
        {error && <ErrorNote error={error} onDismiss={chat.dismissError} testId="chat-error" />}
        <Composer streaming={chat.streaming} draft={chat.state.draft} onSend={(t) => void chat.send(t)} onStop={chat.stop} />
      </section>
      <ConfirmDialog request={confirm} onClose={() => setConfirm(null)} />
    </div>
  );
}
