/** Reconnect delays: exponential with full jitter, capped. */

export interface BackoffPolicy {
  baseMs: number;
  maxMs: number;
  factor: number;
}

export const DEFAULT_BACKOFF: BackoffPolicy = { baseMs: 500, maxMs: 15_000, factor: 2 };

/** Delay before reconnect attempt `attempt` (0 = first); `random` in [0, 1). */
export function backoffDelay(attempt: number, policy: BackoffPolicy = DEFAULT_BACKOFF, random = Math.random): number {
  const ceiling = Math.min(policy.maxMs, policy.baseMs * policy.factor ** attempt);
  // Half fixed, half jitter: never hammers the server, never waits for nothing.
  return Math.round(ceiling / 2 + (ceiling / 2) * random());
}
