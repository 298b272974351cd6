/** Asks for the operator token (LOOPCHAT_ADMIN_TOKEN or data/admin_token). */
import { useState } from 'react';

export function TokenForm({ refused, onToken }: { refused: boolean; onToken: (token: string) => void }) {
  const [token, setToken] = useState('');
  return (
    <form
      className="token-form card"
      onSubmit={(e) => {
        e.preventDefault();
        if (token.trim()) onToken(token.trim());
      }}
    >
      <h1>Operator dashboard</h1>
      <label className="field">
        <span>Operator token</span>
        <input
          type="password"
          autoComplete="off"
          data-testid="token-input"
          value={token}
          onChange={(e) => setToken(e.target.value)}
          aria-describedby="token-help"
          aria-invalid={refused}
        />
      </label>
      <p id="token-help" className="muted">
        The server's <code>LOOPCHAT_ADMIN_TOKEN</code>, or the file <code>data/admin_token</code>. Kept for this tab only.
      </p>
      {refused && (
        <p className="inline-error" role="alert" data-testid="token-error">
          The server refused that token.
        </p>
      )}
      <button type="submit" className="btn primary" data-testid="token-submit" disabled={!token.trim()}>
        Open dashboard
      </button>
    </form>
  );
}
