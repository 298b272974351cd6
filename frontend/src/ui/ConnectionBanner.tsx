/** "Reconnecting" while the chat socket is down, with a countdown and Retry now. */
import { useEffect, useState } from 'react';
import type { SocketInfo } from '../ws/socket';

export function ConnectionBanner({ info, onRetry }: { info: SocketInfo; onRetry: () => void }) {
  const [now, setNow] = useState(() => Date.now());
  const down = info.status === 'reconnecting' || (info.status === 'connecting' && info.attempt > 0);
  useEffect(() => {
    if (!down) return;
    setNow(Date.now());
    const t = setInterval(() => setNow(Date.now()), 250);
    return () => clearInterval(t);
  }, [down, info.retryAt]);
  if (!down) return null;
  const seconds = info.retryAt ? Math.max(0, Math.ceil((info.retryAt - now) / 1000)) : 0;
  return (
    <div className="banner warn" role="status" data-testid="reconnecting">
      <span>
        Connection lost. Reconnecting{info.status === 'reconnecting' && seconds > 0 ? ` in ${seconds} s` : '…'} (attempt{' '}
        {info.attempt})
      </span>
      <button type="button" className="btn small" onClick={onRetry} data-testid="reconnect-now">
        Retry now
      </button>
    </div>
  );
}
