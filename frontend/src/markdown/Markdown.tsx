/** A reply rendered from markdown; handles the copy buttons of its code blocks. */
import { type MouseEvent, useMemo } from 'react';
import { copyText } from './clipboard';
import { renderMarkdown } from './render';

async function onCopy(event: MouseEvent<HTMLDivElement>): Promise<void> {
  const button = (event.target as HTMLElement).closest('button[data-copy]');
  if (!(button instanceof HTMLButtonElement)) return;
  const code = button.closest('.code-block')?.querySelector('code')?.textContent ?? '';
  const ok = await copyText(code);
  button.textContent = ok ? 'Copied' : 'Copy failed';
  setTimeout(() => {
    button.textContent = 'Copy';
  }, 1500);
}

export function Markdown({ source }: { source: string }) {
  const html = useMemo(() => renderMarkdown(source), [source]);
  return (
    // The container only delegates clicks from the copy buttons, which are real buttons.
    <div className="markdown" onClick={(e) => void onCopy(e)} dangerouslySetInnerHTML={{ __html: html }} />
  );
}
