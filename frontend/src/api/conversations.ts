/** /v1/conversations: the web user's stored chats. */
import { api, unwrap } from './http';
import type { Conversation, ConversationDetail } from './types';

export async function listConversations(): Promise<Conversation[]> {
  return (await unwrap(api.GET('/v1/conversations'))).data;
}

export function createConversation(title?: string): Promise<Conversation> {
  return unwrap(api.POST('/v1/conversations', { body: title ? { title } : {} }));
}

export function getConversation(id: string): Promise<ConversationDetail> {
  return unwrap(api.GET('/v1/conversations/{conversation_id}', { params: { path: { conversation_id: id } } }));
}

export function renameConversation(id: string, title: string): Promise<Conversation> {
  return unwrap(
    api.PATCH('/v1/conversations/{conversation_id}', {
      params: { path: { conversation_id: id } },
      body: { title },
    }),
  );
}

export async function deleteConversation(id: string): Promise<void> {
  await unwrap(api.DELETE('/v1/conversations/{conversation_id}', { params: { path: { conversation_id: id } } }));
}
