/** A tiny history router: /, /c/<conversation id>, /compare, /dashboard (FastAPI serves index.html for each). */
import { useSyncExternalStore } from 'react';

export type Route = 'chat' | 'compare' | 'dashboard';

export const ROUTES: { route: Route; path: string; label: string }[] = [
  { route: 'chat', path: '/', label: 'Chat' },
  { route: 'compare', path: '/compare', label: 'Compare' },
  { route: 'dashboard', path: '/dashboard', label: 'Dashboard' },
];

const CONVERSATION = /^\/c\/([^/]+)$/;

export function routeOf(pathname: string): Route {
  const path = pathname.replace(/\/+$/, '') || '/';
  return ROUTES.find((r) => r.path === path)?.route ?? 'chat';
}

export function conversationOf(pathname: string): string | null {
  const m = CONVERSATION.exec(pathname);
  return m?.[1] ? decodeURIComponent(m[1]) : null;
}

const listeners = new Set<() => void>();

function subscribe(listener: () => void): () => void {
  listeners.add(listener);
  window.addEventListener('popstate', listener);
  return () => {
    listeners.delete(listener);
    window.removeEventListener('popstate', listener);
  };
}

export function navigate(url: string, replace = false): void {
  if (url === location.pathname + location.search) return;
  if (replace) history.replaceState(null, '', url);
  else history.pushState(null, '', url);
  listeners.forEach((l) => l());
}

/** The current path + query; re-renders on navigation. */
export function useLocation(): { route: Route; conversationId: string | null } {
  const href = useSyncExternalStore(subscribe, () => location.pathname + location.search);
  const { pathname } = new URL(href, 'http://x');
  return { route: routeOf(pathname), conversationId: conversationOf(pathname) };
}

export function conversationUrl(id: string | null): string {
  return id ? `/c/${encodeURIComponent(id)}` : '/';
}
