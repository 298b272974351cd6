/** Training runs: live progress and headline figures, start a round, and one run's metrics and logs. */
import { useCallback, useLayoutEffect, useRef, useState } from 'react';
import type { AdminApi } from '../api/admin';
import { asErrorInfo } from '../api/errors';
import type { RunOut } from '../api/types';
import { ErrorNote } from '../ui/ErrorNote';
import { duration, when } from './format';
import { SUMMARY_COLUMNS, isActive, progressOf, runFigures, summaryCells } from './runs';
import { usePoll } from './usePoll';

export const POLL_ACTIVE_MS = 3000;

/** Run, status, trigger, created, progress, version, the figures, note. */
const COLUMNS = 7 + SUMMARY_COLUMNS.length;

function ProgressCell({ run }: { run: RunOut }) {
  const p = progressOf(run);
  if (!isActive(run)) return <>{run.status === 'queued' ? 'waiting' : '–'}</>;
  return (
    <div className="progress-cell" data-testid={`run-progress-${run.id}`}>
      <span>
        {p.phase} {p.total > 0 ? `${p.step}/${p.total}` : ''}
      </span>
      {p.total > 0 && <progress max={p.total} value={p.step} aria-label={`Phase ${p.phase}: step ${p.step} of ${p.total}`} />}
      {p.etaS !== null && <span className="muted small">ETA {duration(p.etaS)}</span>}
    </div>
  );
}

/** The run's log, kept scrolled to the end while it grows (unless scrolled up). */
function Logs({ text, id }: { text: string; id: number }) {
  const ref = useRef<HTMLPreElement>(null);
  const atEnd = useRef(true);
  useLayoutEffect(() => {
    const el = ref.current;
    if (el && atEnd.current) el.scrollTop = el.scrollHeight;
  }, [text]);
  return (
    <pre
      ref={ref}
      className="logs"
      data-testid="run-logs"
      tabIndex={0}
      aria-label={`Logs of run ${id}`}
      onScroll={(e) => {
        const el = e.currentTarget;
        atEnd.current = el.scrollHeight - el.scrollTop - el.clientHeight < 24;
      }}
    >
      {text || '(no logs yet)'}
    </pre>
  );
}

function RunDetailView({ admin, id, active, onClose }: { admin: AdminApi; id: number; active: boolean; onClose: () => void }) {
  const load = useCallback(() => admin.run(id), [admin, id]);
  const detail = usePoll(load, active ? POLL_ACTIVE_MS : null, id);
  const run = detail.data;
  return (
    <section className="card run-detail" data-testid="run-detail" aria-labelledby="run-detail-title">
      <div className="row between">
        <h3 id="run-detail-title">Run #{id}</h3>
        <button type="button" className="btn small" onClick={onClose} data-testid="run-detail-close">
          Close
        </button>
      </div>
      {detail.error !== null && <ErrorNote error={asErrorInfo(detail.error)} />}
      {run && (
        <>
          <p className="muted">
            {run.status}
            {run.reason ? `: ${run.reason}` : ''}
            {run.policy_version ? ` · produced ${run.policy_version}` : ''}
          </p>
          <dl className="kv" data-testid="run-metrics">
            {runFigures(run).map(([k, v]) => (
              <div key={k}>
                <dt>{k}</dt>
                <dd>{v}</dd>
              </div>
            ))}
          </dl>
          <details>
            <summary>Votes and pairs used</summary>
            <dl className="kv" data-testid="run-counts">
              {Object.entries(run.counts).map(([k, v]) => (
                <div key={k}>
                  <dt>{k.replace(/_/g, ' ')}</dt>
                  <dd>{String(v)}</dd>
                </div>
              ))}
            </dl>
          </details>
          <h4>Logs</h4>
          <Logs text={run.logs} id={id} />
        </>
      )}
    </section>
  );
}

interface RunsPanelProps {
  admin: AdminApi;
  runs: RunOut[];
  error: unknown;
  reload: () => Promise<void>;
}

export function RunsPanel({ admin, runs: rows, error, reload }: RunsPanelProps) {
  const [selected, setSelected] = useState<number | null>(null);
  const [startError, setStartError] = useState<unknown>(null);
  const selectedRun = rows.find((r) => r.id === selected);

  async function start(): Promise<void> {
    setStartError(null);
    try {
      const run = await admin.startRun();
      setSelected(run.id);
      await reload();
    } catch (e) {
      setStartError(e);
    }
  }

  return (
    <section className="card" aria-labelledby="runs-title">
      <div className="row between">
        <h2 id="runs-title">Training rounds</h2>
        <button type="button" className="btn primary" data-testid="start-round" onClick={() => void start()}>
          Start a round
        </button>
      </div>
      {startError !== null && <ErrorNote error={asErrorInfo(startError)} testId="start-round-error" />}
      {error !== null && <ErrorNote error={asErrorInfo(error)} />}
      <div className="table-wrap">
        <table className="runs" data-testid="runs-table">
          <caption className="sr-only">Training runs, newest first</caption>
          <thead>
            <tr>
              <th scope="col">Run</th>
              <th scope="col">Status</th>
              <th scope="col">Trigger</th>
              <th scope="col">Created</th>
              <th scope="col">Progress</th>
              <th scope="col">Version</th>
              {SUMMARY_COLUMNS.map((c) => (
                <th scope="col" key={c.key} title={c.title}>
                  {c.label}
                </th>
              ))}
              <th scope="col">Note</th>
            </tr>
          </thead>
          <tbody>
            {rows.map((r) => (
              <tr key={r.id} data-testid={`run-row-${r.id}`} className={r.id === selected ? 'selected' : undefined}>
                <th scope="row">
                  <button
                    type="button"
                    className="link-btn"
                    data-testid={`run-${r.id}`}
                    aria-expanded={r.id === selected}
                    onClick={() => setSelected(r.id === selected ? null : r.id)}
                  >
                    #{r.id}
                  </button>
                </th>
                <td>
                  <span className={`badge run-${r.status}`}>{r.status}</span>
                </td>
                <td>{r.trigger ?? '–'}</td>
                <td>{when(r.created_at)}</td>
                <td>
                  <ProgressCell run={r} />
                </td>
                <td>{r.policy_version ?? '–'}</td>
                {summaryCells(r).map((c) => (
                  <td key={c.key} className="num" data-testid={`run-${c.key}-${r.id}`}>
                    {c.value}
                  </td>
                ))}
                <td className="small">{r.reason ?? ''}</td>
              </tr>
            ))}
            {rows.length === 0 && (
              <tr>
                <td colSpan={COLUMNS} className="muted">
                  No rounds yet.
                </td>
              </tr>
            )}
          </tbody>
        </table>
      </div>
      {selected !== null && (
        <RunDetailView admin={admin} id={selected} active={selectedRun ? isActive(selectedRun) : false} onClose={() => setSelected(null)} />
      )}
    </section>
  );
}
