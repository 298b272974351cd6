/** The policy event log: swaps, promotions, rollbacks, retirements, failures, canaries. */
import type { EventOut } from '../api/types';
import { num, when } from './format';

function metricsText(m: Record<string, unknown>): string {
  return Object.entries(m)
    .filter(([, v]) => typeof v === 'number' || typeof v === 'string')
    .slice(0, 6)
    .map(([k, v]) => `${k} ${typeof v === 'number' ? num(v) : v}`)
    .join(' · ');
}

export function EventsList({ events }: { events: EventOut[] }) {
  const rows = [...events].sort((a, b) => b.created_at.localeCompare(a.created_at) || b.id - a.id);
  return (
    <section className="card" aria-labelledby="events-title">
      <h2 id="events-title">Swaps and promotions</h2>
      {rows.length === 0 ? (
        <p className="muted">No events yet.</p>
      ) : (
        <ol className="events" data-testid="events-list">
          {rows.map((e) => (
            <li key={e.id} data-testid={`event-${e.id}`}>
              <div className="row wrap">
                <span className={`badge event-${e.kind}`}>{e.kind}</span>
                <strong>{e.version}</strong>
                {e.previous_version && <span className="muted">(was {e.previous_version})</span>}
                <span className="muted">
                  by {e.actor} · <time dateTime={e.created_at}>{when(e.created_at)}</time>
                </span>
              </div>
              {e.reason && <p className="small">{e.reason}</p>}
              {Object.keys(e.metrics).length > 0 && <p className="small muted">{metricsText(e.metrics)}</p>}
            </li>
          ))}
        </ol>
      )}
    </section>
  );
}
