import { render, screen, waitFor } from '@testing-library/react';
import userEvent from '@testing-library/user-event';
import { useState } from 'react';
import { describe, expect, it, vi } from 'vitest';
import { ApiError } from '../api/errors';
import { type FeedbackApi, feedbackApi } from '../api/feedback';
import type { RatingOut, ReasonsOut } from '../api/types';
import type { StoredVote } from '../chat/store';
import { VoteWidget } from './VoteWidget';

const reasons: ReasonsOut = { up: ['helpful', 'concise'], down: ['wrong', 'too_long'], comparison: [] };

function rating(body: Partial<RatingOut>): RatingOut {
  return { object: 'rating', generation_id: 'g1', rating: null, reason: null, comment: null, updated_at: null, changed: true, ...body };
}

function Harness({ api, initial = null }: { api: FeedbackApi; initial?: StoredVote | null }) {
  const [vote, setVote] = useState<StoredVote | null>(initial);
  return (
    <>
      <VoteWidget generationId="g1" vote={vote} reasons={reasons} api={api} onChange={setVote} />
      <output data-testid="vote-state">{vote ? `${vote.rating}:${vote.reason ?? ''}:${vote.comment ?? ''}` : 'none'}</output>
    </>
  );
}

function fakeApi(): FeedbackApi & { rate: ReturnType<typeof vi.fn>; withdraw: ReturnType<typeof vi.fn> } {
  return {
    rate: vi.fn((b: Parameters<FeedbackApi['rate']>[0]) => Promise.resolve(rating({ rating: b.rating, reason: b.reason ?? null, comment: b.comment ?? null }))),
    withdraw: vi.fn(() => Promise.resolve(rating({}))),
  };
}

describe('VoteWidget', () => {
  it('up, then a reason and a comment, then Submit: two calls with the right bodies', async () => {
    const api = fakeApi();
    const user = userEvent.setup();
    render(<Harness api={api} />);
    await user.click(screen.getByTestId('thumb-up'));
    expect(api.rate).toHaveBeenLastCalledWith({ generation_id: 'g1', rating: 'up' });
    expect(screen.getByTestId('thumb-up')).toHaveAttribute('aria-pressed', 'true');
    expect(screen.queryByTestId('reason-wrong')).toBeNull(); // only the "up" tags
    await user.click(screen.getByTestId('reason-helpful'));
    await user.type(screen.getByTestId('vote-comment'), ' clear and short ');
    await user.click(screen.getByTestId('vote-submit'));
    expect(api.rate).toHaveBeenLastCalledWith({ generation_id: 'g1', rating: 'up', reason: 'helpful', comment: 'clear and short' });
    await waitFor(() => expect(screen.queryByTestId('vote-popover')).toBeNull());
    expect(screen.getByTestId('vote-state')).toHaveTextContent('up:helpful:clear and short');
  });

  it('clicking the active thumb again withdraws the vote', async () => {
    const api = fakeApi();
    const user = userEvent.setup();
    render(<Harness api={api} initial={{ rating: 'down', reason: 'wrong', comment: null }} />);
    expect(screen.getByTestId('thumb-down')).toHaveAttribute('aria-pressed', 'true');
    await user.click(screen.getByTestId('thumb-down'));
    expect(api.withdraw).toHaveBeenCalledWith('g1');
    expect(api.rate).not.toHaveBeenCalled();
    await waitFor(() => expect(screen.getByTestId('vote-state')).toHaveTextContent('none'));
    expect(screen.getByTestId('thumb-down')).toHaveAttribute('aria-pressed', 'false');
  });

  it('switching thumbs rates the other way and offers its reasons', async () => {
    const api = fakeApi();
    const user = userEvent.setup();
    render(<Harness api={api} initial={{ rating: 'up', reason: null, comment: null }} />);
    await user.click(screen.getByTestId('thumb-down'));
    expect(api.rate).toHaveBeenLastCalledWith({ generation_id: 'g1', rating: 'down' });
    expect(screen.getByTestId('reason-too_long')).toBeInTheDocument();
    await user.keyboard('{Escape}');
    expect(screen.queryByTestId('vote-popover')).toBeNull();
  });

  it('shows a refused vote and keeps the old state', async () => {
    const api = fakeApi();
    api.rate.mockRejectedValueOnce(new ApiError(429, { message: 'too many votes; try again in 3 s', type: 'rate_limit_error', code: 'rate_limit_exceeded', param: null }));
    const user = userEvent.setup();
    render(<Harness api={api} />);
    await user.click(screen.getByTestId('thumb-up'));
    expect(await screen.findByRole('alert')).toHaveTextContent('too many votes');
    expect(screen.getByTestId('vote-state')).toHaveTextContent('none');
  });

  it('the real client posts the vote to /v1/feedback as JSON', async () => {
    const calls: { url: string; method: string; body: unknown }[] = [];
    vi.stubGlobal(
      'fetch',
      vi.fn(async (req: Request) => {
        calls.push({ url: req.url, method: req.method, body: req.method === 'POST' ? await req.json() : null });
        return new Response(JSON.stringify(rating({ rating: 'down', reason: 'wrong' })), { status: 201, headers: { 'content-type': 'application/json' } });
      }),
    );
    const user = userEvent.setup();
    render(<Harness api={feedbackApi} />);
    await user.click(screen.getByTestId('thumb-down'));
    await user.click(await screen.findByTestId('reason-wrong'));
    await user.click(screen.getByTestId('vote-submit'));
    await waitFor(() => expect(calls).toHaveLength(2));
    expect(calls[1]).toEqual({
      url: `${location.origin}/v1/feedback`,
      method: 'POST',
      body: { generation_id: 'g1', rating: 'down', reason: 'wrong', comment: null },
    });
  });
});
