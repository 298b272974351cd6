/**
 * Model output -> safe HTML. Markdown (marked, GFM) with raw HTML shown as text, code
 * blocks highlighted, then DOMPurify over everything: model text never runs script,
 * adds event handlers, styles, forms or images (images become links). Copy buttons
 * are added after sanitizing, so only this module can make them.
 */
import DOMPurify from 'dompurify';
import { Marked, type Tokens } from 'marked';
import { highlight } from './highlight';

export function escapeHtml(text: string): string {
  return text
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;')
    .replace(/"/g, '&quot;')
    .replace(/'/g, '&#39;');
}

const marked = new Marked({
  gfm: true,
  breaks: true,
  async: false,
  renderer: {
    html: ({ text }: Tokens.HTML | Tokens.Tag) => escapeHtml(text),
    // A reply's "# Title" sits under the page's own headings: h1 -> h3 ... (capped at h6).
    heading({ tokens, depth }: Tokens.Heading) {
      const level = Math.min(depth + 2, 6);
      return `<h${level}>${this.parser.parseInline(tokens)}</h${level}>\n`;
    },
    image: ({ href, text }: Tokens.Image) => `<a href="${escapeHtml(href)}">${escapeHtml(text || href)}</a>`,
    code: ({ text, lang }: Tokens.Code) => {
      const language = (lang ?? '').trim().split(/\s+/)[0]?.toLowerCase() ?? '';
      const lit = highlight(text, language);
      const cls = lit === null ? 'hljs' : `hljs language-${escapeHtml(language)}`;
      return (
        `<div class="code-block"><div class="code-head"><span class="code-lang">${escapeHtml(language || 'text')}</span></div>` +
        `<pre><code class="${cls}">${lit ?? escapeHtml(text)}</code></pre></div>`
      );
    },
  },
});

const FORBID_TAGS = ['style', 'form', 'input', 'button', 'textarea', 'select', 'option', 'img', 'svg', 'math', 'iframe', 'object', 'embed', 'video', 'audio', 'source', 'link', 'meta', 'base'];

let hooked = false;

function sanitizer(): typeof DOMPurify {
  if (!hooked) {
    DOMPurify.addHook('afterSanitizeAttributes', (node) => {
      if (node.tagName === 'A') {
        node.setAttribute('target', '_blank');
        node.setAttribute('rel', 'noopener noreferrer nofollow');
      }
    });
    hooked = true;
  }
  return DOMPurify;
}

function addCopyButtons(root: DocumentFragment): void {
  root.querySelectorAll('div.code-block > div.code-head').forEach((head) => {
    const button = document.createElement('button');
    button.type = 'button';
    button.className = 'copy-btn';
    button.textContent = 'Copy';
    button.setAttribute('data-copy', '');
    button.setAttribute('data-testid', 'copy-code');
    button.setAttribute('aria-label', 'Copy code');
    head.appendChild(button);
  });
}

/** The second line of defence: any HTML -> a fragment with nothing active left in it. */
export function sanitize(html: string): DocumentFragment {
  return sanitizer().sanitize(html, {
    FORBID_TAGS,
    FORBID_ATTR: ['style', 'id'],
    ALLOW_DATA_ATTR: false,
    RETURN_DOM_FRAGMENT: true,
  });
}

/** Sanitized HTML for a reply's markdown. */
export function renderMarkdown(source: string): string {
  const fragment = sanitize(marked.parse(source) as string);
  addCopyButtons(fragment);
  const holder = document.createElement('div');
  holder.appendChild(fragment);
  return holder.innerHTML;
}
