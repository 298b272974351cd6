/** The shell: header with navigation, the web session, and the page for the path. */
import { Suspense, lazy } from 'react';
import { ChatView } from '../chat/ChatView';
import { CompareView } from '../compare/CompareView';
import { ErrorNote } from '../ui/ErrorNote';
import { ROUTES, navigate, useLocation } from './router';
import { useSession } from './useSession';

const Dashboard = lazy(() => import('../dashboard/Dashboard'));

function Header({ current }: { current: string }) {
  return (
    <header className="app-header">
      <a className="skip-link" href="#main">
        Skip to content
      </a>
      <span className="brand">loopchat</span>
      <nav aria-label="Main">
        <ul>
          {ROUTES.map((r) => (
            <li key={r.route}>
              <a
                href={r.path}
                data-testid={`nav-${r.route}`}
                aria-current={current === r.route ? 'page' : undefined}
                onClick={(e) => {
                  if (e.metaKey || e.ctrlKey || e.shiftKey || e.button !== 0) return;
                  e.preventDefault();
                  navigate(r.path);
                }}
              >
                {r.label}
              </a>
            </li>
          ))}
        </ul>
      </nav>
    </header>
  );
}

function UserPages({ route, conversationId }: { route: 'chat' | 'compare'; conversationId: string | null }) {
  const { session, retry } = useSession();
  if (session.status === 'loading') return <p className="center muted">Connecting…</p>;
  if (session.status === 'failed') {
    return (
      <div className="center">
        <ErrorNote error={session.error} testId="session-error" />
        <button type="button" className="btn" onClick={retry}>
          Try again
        </button>
      </div>
    );
  }
  return route === 'chat' ? <ChatView conversationId={conversationId} /> : <CompareView />;
}

export function App() {
  const { route, conversationId } = useLocation();
  return (
    <div className="app">
      <Header current={route} />
      <main id="main" tabIndex={-1}>
        {route === 'dashboard' ? (
          <Suspense fallback={<p className="center muted">Loading the dashboard…</p>}>
            <Dashboard />
          </Suspense>
        ) : (
          <UserPages route={route} conversationId={conversationId} />
        )}
      </main>
    </div>
  );
}
