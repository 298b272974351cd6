/** A modal confirm (native <dialog>: focus trap, Escape) with an optional reason field. */
import { useEffect, useRef, useState } from 'react';

export interface ConfirmRequest {
  title: string;
  body: string;
  confirmLabel: string;
  danger?: boolean;
  askReason?: boolean;
  onConfirm: (reason: string | null) => void | Promise<void>;
}

export function ConfirmDialog({ request, onClose }: { request: ConfirmRequest | null; onClose: () => void }) {
  const ref = useRef<HTMLDialogElement>(null);
  const [reason, setReason] = useState('');
  const [busy, setBusy] = useState(false);

  useEffect(() => {
    const dialog = ref.current;
    if (!dialog) return;
    if (request && !dialog.open) {
      setReason('');
      if (typeof dialog.showModal === 'function') dialog.showModal();
      else dialog.setAttribute('open', '');
    }
    if (!request && dialog.open) dialog.close();
  }, [request]);

  async function confirm(): Promise<void> {
    if (!request) return;
    setBusy(true);
    try {
      await request.onConfirm(reason.trim() || null);
    } finally {
      setBusy(false);
      onClose();
    }
  }

  return (
    <dialog
      ref={ref}
      className="dialog"
      aria-labelledby="confirm-title"
      data-testid="confirm-dialog"
      onClose={onClose}
      onCancel={onClose}
    >
      {request && (
        <form
          method="dialog"
          onSubmit={(e) => {
            e.preventDefault();
            void confirm();
          }}
        >
          <h2 id="confirm-title">{request.title}</h2>
          <p>{request.body}</p>
          {request.askReason && (
            <label className="field">
              <span>Reason (optional, kept in the event log)</span>
              <input data-testid="confirm-reason" value={reason} maxLength={500} onChange={(e) => setReason(e.target.value)} />
            </label>
          )}
          <div className="row end">
            <button type="button" className="btn" data-testid="confirm-cancel" onClick={onClose}>
              Cancel
            </button>
            <button type="submit" className={`btn ${request.danger ? 'danger' : 'primary'}`} data-testid="confirm-ok" disabled={busy}>
              {request.confirmLabel}
            </button>
          </div>
        </form>
      )}
    </dialog>
  );
}
