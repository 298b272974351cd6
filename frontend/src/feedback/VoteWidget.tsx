/**
 * Thumbs up / down on one reply. A click stores the vote at once and opens a popover for
 * an optional reason tag and comment (Submit stores them too); clicking the active thumb
 * again withdraws the vote.
 */
import { type KeyboardEvent, type ReactNode, useEffect, useRef, useState } from 'react';
import { asErrorInfo, describeError } from '../api/errors';
import type { FeedbackApi } from '../api/feedback';
import type { RatingReason, ReasonsOut, Thumb } from '../api/types';
import type { StoredVote } from '../chat/store';
import { ThumbDown, ThumbUp } from '../ui/icons';
import { reasonLabel } from './reasons';

export interface VoteWidgetProps {
  generationId: string | null;
  vote: StoredVote | null;
  reasons: ReasonsOut | null;
  api: FeedbackApi;
  onChange: (vote: StoredVote | null) => void;
}

const THUMBS: { rating: Thumb; label: string; Icon: () => ReactNode }[] = [
  { rating: 'up', label: 'Good reply', Icon: ThumbUp },
  { rating: 'down', label: 'Bad reply', Icon: ThumbDown },
];

export function VoteWidget({ generationId, vote, reasons, api, onChange }: VoteWidgetProps) {
  const [open, setOpen] = useState<Thumb | null>(null);
  const [reason, setReason] = useState<RatingReason | null>(null);
  const [comment, setComment] = useState('');
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const popover = useRef<HTMLDivElement>(null);

  useEffect(() => {
    if (open) popover.current?.querySelector<HTMLElement>('button, textarea')?.focus();
  }, [open]);

  async function run(action: () => Promise<void>): Promise<void> {
    setBusy(true);
    setError(null);
    try {
      await action();
    } catch (e) {
      setError(describeError(asErrorInfo(e)));
    } finally {
      setBusy(false);
    }
  }

  function clickThumb(rating: Thumb): Promise<void> {
    return run(async () => {
      if (!generationId) return;
      if (vote?.rating === rating) {
        await api.withdraw(generationId);
        setOpen(null);
        onChange(null);
        return;
      }
      const out = await api.rate({ generation_id: generationId, rating });
      onChange({ rating, reason: out.reason ?? null, comment: out.comment ?? null });
      setReason(null);
      setComment('');
      setOpen(rating);
    });
  }

  function submit(): Promise<void> {
    return run(async () => {
      if (!generationId || !open) return;
      const text = comment.trim();
      if (reason !== null || text) {
        const body = { generation_id: generationId, rating: open, reason, comment: text || null };
        const out = await api.rate(body);
        onChange({ rating: open, reason: out.reason ?? reason, comment: out.comment ?? (text || null) });
      }
      setOpen(null);
    });
  }

  function onKeyDown(e: KeyboardEvent<HTMLDivElement>): void {
    if (e.key === 'Escape') {
      e.stopPropagation();
      setOpen(null);
    }
  }

  const tags = open && reasons ? reasons[open] : [];
  return (
    <div className="vote">
      <div className="vote-thumbs" role="group" aria-label="Rate this reply">
        {THUMBS.map((t) => (
          <button
            key={t.rating}
            type="button"
            className="icon-btn thumb"
            data-testid={`thumb-${t.rating}`}
            aria-label={t.label}
            aria-pressed={vote?.rating === t.rating}
            title={vote?.rating === t.rating ? `${t.label} (click again to withdraw)` : t.label}
            disabled={!generationId || busy}
            onClick={() => void clickThumb(t.rating)}
          >
            <t.Icon />
          </button>
        ))}
      </div>
      {open && (
        <div
          ref={popover}
          className="vote-popover"
          role="dialog"
          aria-label={open === 'up' ? 'What was good?' : 'What was wrong?'}
          data-testid="vote-popover"
          onKeyDown={onKeyDown}
        >
          <p className="vote-popover-title">{open === 'up' ? 'What was good?' : 'What was wrong?'} (optional)</p>
          <div className="chips" role="group" aria-label="Reason">
            {tags.map((tag) => (
              <button
                key={tag}
                type="button"
                className="chip"
                data-testid={`reason-${tag}`}
                aria-pressed={reason === tag}
                onClick={() => setReason(reason === tag ? null : tag)}
              >
                {reasonLabel(tag)}
              </button>
            ))}
          </div>
          <label className="field">
            <span>Comment (optional)</span>
            <textarea
              data-testid="vote-comment"
              rows={2}
              maxLength={2000}
              value={comment}
              onChange={(e) => setComment(e.target.value)}
            />
          </label>
          <div className="row">
            <button type="button" className="btn primary" data-testid="vote-submit" disabled={busy} onClick={() => void submit()}>
              Submit
            </button>
            <button type="button" className="btn" data-testid="vote-close" onClick={() => setOpen(null)}>
              Close
            </button>
          </div>
        </div>
      )}
      {error && (
        <p className="inline-error" role="alert" data-testid="vote-error">
          {error}
        </p>
      )}
    </div>
  );
}
