import { act, render, screen } from '@testing-library/react';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { ConnectionBanner } from './ConnectionBanner';

afterEach(() => vi.useRealTimers());

describe('ConnectionBanner', () => {
  it('is hidden while connected and counts down while reconnecting', () => {
    vi.useFakeTimers();
    vi.setSystemTime(1_000_000);
    const { rerender } = render(<ConnectionBanner info={{ status: 'open', attempt: 0, retryAt: null }} onRetry={() => undefined} />);
    expect(screen.queryByTestId('reconnecting')).toBeNull();
    vi.setSystemTime(5_000_000); // long after mount
    rerender(<ConnectionBanner info={{ status: 'reconnecting', attempt: 2, retryAt: 5_002_000 }} onRetry={() => undefined} />);
    expect(screen.getByTestId('reconnecting')).toHaveTextContent('Reconnecting in 2 s (attempt 2)');
    act(() => vi.advanceTimersByTime(1_100));
    expect(screen.getByTestId('reconnecting')).toHaveTextContent('Reconnecting in 1 s');
  });
});
