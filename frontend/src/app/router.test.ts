import { describe, expect, it } from 'vitest';
import { conversationOf, conversationUrl, routeOf } from './router';

describe('router', () => {
  it('maps paths to views and conversations', () => {
    expect(routeOf('/')).toBe('chat');
    expect(routeOf('/compare')).toBe('compare');
    expect(routeOf('/dashboard/')).toBe('dashboard');
    expect(routeOf('/c/abc')).toBe('chat');
    expect(conversationOf('/c/abc')).toBe('abc');
    expect(conversationOf('/compare')).toBeNull();
    expect(conversationUrl('a b')).toBe('/c/a%20b');
    expect(conversationOf(conversationUrl('a b'))).toBe('a b');
  });
});
