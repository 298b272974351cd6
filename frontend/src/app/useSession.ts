/** Makes sure the browser has a web session (cookie) before chatting. */
import { useCallback, useEffect, useState } from 'react';
import { type ErrorInfo, asErrorInfo } from '../api/errors';
import { type Me, ensureSession } from '../api/session';

export type SessionState = { status: 'loading' } | { status: 'ready'; me: Me } | { status: 'failed'; error: ErrorInfo };

export function useSession(): { session: SessionState; retry: () => void } {
  const [session, setSession] = useState<SessionState>({ status: 'loading' });
  const start = useCallback(() => {
    setSession({ status: 'loading' });
    ensureSession().then(
      (me) => setSession({ status: 'ready', me }),
      (e: unknown) => setSession({ status: 'failed', error: asErrorInfo(e) }),
    );
  }, []);
  useEffect(start, [start]);
  return { session, retry: start };
}
