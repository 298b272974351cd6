/** The message box: Enter sends, Shift+Enter is a newline; Stop while a reply streams. */
import { type FormEvent, type KeyboardEvent, useEffect, useRef, useState } from 'react';

interface ComposerProps {
  streaming: boolean;
  /** Text to put back in the box (a message the server refused). */
  draft: string | null;
  onSend: (text: string) => void;
  onStop: () => void;
}

export function Composer({ streaming, draft, onSend, onStop }: ComposerProps) {
  const [text, setText] = useState('');
  const box = useRef<HTMLTextAreaElement>(null);

  useEffect(() => {
    if (draft !== null) setText(draft);
  }, [draft]);

  useEffect(() => {
    if (!streaming) box.current?.focus();
  }, [streaming]);

  function submit(e?: FormEvent): void {
    e?.preventDefault();
    if (streaming || !text.trim()) return;
    onSend(text);
    setText('');
  }

  function onKeyDown(e: KeyboardEvent<HTMLTextAreaElement>): void {
    if (e.key === 'Enter' && !e.shiftKey && !e.nativeEvent.isComposing) {
      e.preventDefault();
      submit();
    }
  }

  return (
    <form className="composer" onSubmit={submit}>
      <label htmlFor="composer-input" className="sr-only">
        Message
      </label>
      <textarea
        id="composer-input"
        ref={box}
        data-testid="composer"
        rows={2}
        placeholder="Message loopchat (Enter to send, Shift+Enter for a new line)"
        value={text}
        disabled={streaming}
        onChange={(e) => setText(e.target.value)}
        onKeyDown={onKeyDown}
      />
      {streaming ? (
        <button type="button" className="btn danger" data-testid="stop" onClick={onStop}>
          <span aria-hidden="true">■</span> Stop
        </button>
      ) : (
        <button type="submit" className="btn primary" data-testid="send" disabled={!text.trim()}>
          Send
        </button>
      )}
    </form>
  );
}
