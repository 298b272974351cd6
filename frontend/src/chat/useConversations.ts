/** The conversation list of the sidebar, newest first. */
import { useCallback, useEffect, useState } from 'react';
import * as conversations from '../api/conversations';
import { type ErrorInfo, asErrorInfo } from '../api/errors';
import type { Conversation } from '../api/types';

export interface ConversationList {
  items: Conversation[];
  error: ErrorInfo | null;
  refresh: () => Promise<void>;
  rename: (id: string, title: string) => Promise<void>;
  remove: (id: string) => Promise<void>;
}

export function useConversations(): ConversationList {
  const [items, setItems] = useState<Conversation[]>([]);
  const [error, setError] = useState<ErrorInfo | null>(null);

  const guard = useCallback(async (action: () => Promise<void>) => {
    try {
      await action();
      setError(null);
    } catch (e) {
      setError(asErrorInfo(e));
    }
  }, []);

  const refresh = useCallback(() => guard(async () => setItems(await conversations.listConversations())), [guard]);

  const rename = useCallback(
    (id: string, title: string) =>
      guard(async () => {
        const updated = await conversations.renameConversation(id, title);
        setItems((list) => list.map((c) => (c.id === id ? updated : c)));
      }),
    [guard],
  );

  const remove = useCallback(
    (id: string) =>
      guard(async () => {
        await conversations.deleteConversation(id);
        setItems((list) => list.filter((c) => c.id !== id));
      }),
    [guard],
  );

  useEffect(() => {
    void refresh();
  }, [refresh]);

  return { items, error, refresh, rename, remove };
}
