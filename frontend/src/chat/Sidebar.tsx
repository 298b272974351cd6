/** Conversation list: new chat, open, rename inline, delete with confirm. */
import { useState } from 'react';
import type { Conversation } from '../api/types';
import { conversationUrl } from '../app/router';
import { ErrorNote } from '../ui/ErrorNote';
import { Pencil, Trash } from '../ui/icons';
import type { ConversationList } from './useConversations';

interface SidebarProps {
  list: ConversationList;
  activeId: string | null;
  open: boolean;
  onOpen: (id: string | null) => void;
  onAskDelete: (c: Conversation) => void;
}

function titleOf(c: Conversation): string {
  return c.title?.trim() || 'New chat';
}

function RenameForm({ c, onDone, rename }: { c: Conversation; onDone: () => void; rename: ConversationList['rename'] }) {
  const [title, setTitle] = useState(c.title ?? '');
  return (
    <form
      className="rename"
      onSubmit={(e) => {
        e.preventDefault();
        const t = title.trim();
        if (t && t !== c.title) void rename(c.id, t.slice(0, 300));
        onDone();
      }}
    >
      <input
        autoFocus
        aria-label="Conversation title"
        data-testid="rename-input"
        value={title}
        maxLength={300}
        onChange={(e) => setTitle(e.target.value)}
        onKeyDown={(e) => e.key === 'Escape' && onDone()}
        onBlur={onDone}
      />
    </form>
  );
}

export function Sidebar({ list, activeId, open, onOpen, onAskDelete }: SidebarProps) {
  const [renaming, setRenaming] = useState<string | null>(null);
  return (
    <nav id="conversations" className={`sidebar${open ? ' open' : ''}`} aria-label="Conversations">
      <button type="button" className="btn primary block" data-testid="new-conversation" onClick={() => onOpen(null)}>
        + New chat
      </button>
      {list.error && <ErrorNote error={list.error} testId="conversations-error" />}
      <ul className="conv-list" data-testid="conversations-list">
        {list.items.map((c) => (
          <li key={c.id} className={c.id === activeId ? 'active' : undefined}>
            {renaming === c.id ? (
              <RenameForm c={c} rename={list.rename} onDone={() => setRenaming(null)} />
            ) : (
              <>
                <a
                  href={conversationUrl(c.id)}
                  className="conv-title"
                  data-testid={`conversation-${c.id}`}
                  aria-current={c.id === activeId ? 'page' : undefined}
                  onClick={(e) => {
                    e.preventDefault();
                    onOpen(c.id);
                  }}
                >
                  {titleOf(c)}
                </a>
                <button
                  type="button"
                  className="icon-btn"
                  data-testid={`rename-${c.id}`}
                  aria-label={`Rename “${titleOf(c)}”`}
                  onClick={() => setRenaming(c.id)}
                >
                  <Pencil />
                </button>
                <button
                  type="button"
                  className="icon-btn"
                  data-testid={`delete-${c.id}`}
                  aria-label={`Delete “${titleOf(c)}”`}
                  onClick={() => onAskDelete(c)}
                >
                  <Trash />
                </button>
              </>
            )}
          </li>
        ))}
      </ul>
    </nav>
  );
}
