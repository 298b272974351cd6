/** Policy versions in order of creation, with their status and the operator's actions. */
import type { PolicyList, PolicyOut, RatingsOut } from '../api/types';
import { metric, num, pct, versionName, when } from './format';

export type PolicyAction = 'promote' | 'retire';

interface TimelineProps {
  policies: PolicyList;
  ratings: RatingsOut | null;
  onAction: (action: PolicyAction, version: PolicyOut) => void;
  onRollback: () => void;
}

const PROMOTABLE = new Set(['candidate', 'canary', 'retired']);
const RETIRABLE = new Set(['candidate', 'canary']);

function Metrics({ v }: { v: PolicyOut }) {
  const items: [string, string][] = [];
  const win = metric(v.metrics, 'win_rate');
  const kl = metric(v.metrics, 'kl_candidate');
  const acc = metric(v.metrics, 'rm_heldout_accuracy');
  const run = metric(v.metrics, 'run_id');
  if (win !== null) items.push(['win rate (RM)', pct(win, 1)]);
  if (kl !== null) items.push(['KL to v0', num(kl)]);
  if (acc !== null) items.push(['RM accuracy', pct(acc, 1)]);
  if (run !== null) items.push(['run', `#${run}`]);
  if (items.length === 0) return null;
  return (
    <dl className="kv">
      {items.map(([k, val]) => (
        <div key={k}>
          <dt>{k}</dt>
          <dd>{val}</dd>
        </div>
      ))}
    </dl>
  );
}

export function Timeline({ policies, ratings, onAction, onRollback }: TimelineProps) {
  const versions = [...policies.data].sort((a, b) => a.created_at.localeCompare(b.created_at) || a.id - b.id);
  const rating = new Map((ratings?.ratings ?? []).map((r) => [versionName(r.version), r]));
  const canary = ratings?.canary;
  return (
    <section className="card" aria-labelledby="timeline-title">
      <div className="row between">
        <h2 id="timeline-title">Policy versions</h2>
        <button type="button" className="btn" data-testid="rollback" onClick={onRollback}>
          <span aria-hidden="true">↶</span> Roll back
        </button>
      </div>
      <p className="muted">
        Serving <strong data-testid="serving">{policies.serving}</strong>
        {policies.canary && (
          <>
            {' '}· canary <strong data-testid="canary">{policies.canary}</strong> on {pct(policies.canary_share)} of chats
          </>
        )}{' '}
        · swap mode {policies.swap_mode}
      </p>
      {canary && (
        <p className="callout" data-testid="canary-verdict">
          Canary {canary.version}: rule says <strong>{canary.verdict}</strong> — {canary.reason}
        </p>
      )}
      <ol className="timeline" data-testid="timeline">
        {versions.map((v) => {
          const r = rating.get(v.name);
          const highlight = v.status === 'serving' || v.status === 'canary' ? ` is-${v.status}` : '';
          return (
            <li key={v.id} className={`version${highlight}`} data-testid={`version-${v.name}`} data-status={v.status}>
              <div className="row between wrap">
                <div className="row wrap">
                  <strong className="version-name">{v.name}</strong>
                  <span className={`badge status-${v.status}`} data-testid={`status-${v.name}`}>
                    {v.status}
                  </span>
                  {v.loaded && <span className="badge plain">loaded</span>}
                  {v.in_weights && <span className="badge plain">in weights</span>}
                </div>
                <div className="row">
                  {PROMOTABLE.has(v.status) && (
                    <button type="button" className="btn small" data-testid={`promote-${v.name}`} onClick={() => onAction('promote', v)}>
                      Promote
                    </button>
                  )}
                  {RETIRABLE.has(v.status) && (
                    <button type="button" className="btn small danger" data-testid={`retire-${v.name}`} onClick={() => onAction('retire', v)}>
                      Retire
                    </button>
                  )}
                </div>
              </div>
              <p className="muted small">
                {v.kind}
                {v.parent ? ` from ${v.parent}` : ''} · created {when(v.created_at)}
                {r && (
                  <>
                    {' '}· Elo {num(r.elo, 0)} · {r.comparisons} comparisons · {r.thumbs_up} up / {r.thumbs_down} down
                  </>
                )}
              </p>
              <Metrics v={v} />
              {v.error && <p className="inline-error">{v.error}</p>}
            </li>
          );
        })}
      </ol>
    </section>
  );
}
