/** A visible, announced error with an optional dismiss button. */
import { type ErrorInfo, describeError } from '../api/errors';

export function ErrorNote({ error, onDismiss, testId = 'error' }: { error: ErrorInfo; onDismiss?: () => void; testId?: string }) {
  return (
    <div className="error-note" role="alert" data-testid={testId} data-code={error.code ?? undefined}>
      <span>{describeError(error)}</span>
      {onDismiss && (
        <button type="button" className="btn small" onClick={onDismiss} aria-label="Dismiss error">
          Dismiss
        </button>
      )}
    </div>
  );
}
