/** One message: a user bubble, or a reply with markdown, its version tag and votes. */
import type { ReasonsOut } from '../api/types';
import { feedbackApi } from '../api/feedback';
import { VoteWidget } from '../feedback/VoteWidget';
import { Markdown } from '../markdown/Markdown';
import type { AssistantMessage, Message, StoredVote } from './store';

const STATUS_NOTE: Partial<Record<AssistantMessage['status'], string>> = {
  stopped: 'Stopped',
  error: 'Failed',
  interrupted: 'Interrupted: connection lost',
};

interface ReplyProps {
  m: AssistantMessage;
  last: boolean;
  canRegenerate: boolean;
  reasons: ReasonsOut | null;
  onRegenerate: () => void;
  onVote: (generationId: string, vote: StoredVote | null) => void;
}

function Reply({ m, last, canRegenerate, reasons, onRegenerate, onVote }: ReplyProps) {
  const live = m.status === 'waiting' || m.status === 'streaming';
  const note = STATUS_NOTE[m.status] ?? (m.finishReason === 'length' ? 'Cut at the length limit' : null);
  return (
    <article className="msg assistant" data-testid="message-assistant" data-status={m.status} aria-busy={live}>
      {m.status === 'waiting' ? (
        <p className="typing" aria-label="The model is thinking">
          <span aria-hidden="true">●●●</span>
        </p>
      ) : (
        <Markdown source={m.content} />
      )}
      <footer className="msg-foot">
        {m.model && (
          <span className="model-tag" data-testid="model-tag">
            {m.model}
          </span>
        )}
        {note && <span className="status-note">{note}</span>}
        {!live && (
          <VoteWidget
            generationId={m.generationId}
            vote={m.vote}
            reasons={reasons}
            api={feedbackApi}
            onChange={(v) => m.generationId && onVote(m.generationId, v)}
          />
        )}
        {last && !live && (
          <button type="button" className="btn small" data-testid="regenerate" disabled={!canRegenerate} onClick={onRegenerate}>
            <span aria-hidden="true">↻</span> Regenerate
          </button>
        )}
      </footer>
    </article>
  );
}

export interface MessageItemProps extends Omit<ReplyProps, 'm'> {
  m: Message;
}

export function MessageItem({ m, ...rest }: MessageItemProps) {
  if (m.role === 'user') {
    return (
      <article className="msg user" data-testid="message-user">
        <p className="user-text">{m.content}</p>
      </article>
    );
  }
  return <Reply m={m} {...rest} />;
}
