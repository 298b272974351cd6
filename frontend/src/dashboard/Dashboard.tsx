/** The operator dashboard: versions, charts, training rounds, events (needs the token). */
import { useCallback, useEffect, useMemo, useState } from 'react';
import { type AdminApi, createAdmin } from '../api/admin';
import { ApiError, asErrorInfo } from '../api/errors';
import type { PolicyOut } from '../api/types';
import { ConfirmDialog, type ConfirmRequest } from '../ui/ConfirmDialog';
import { ErrorNote } from '../ui/ErrorNote';
import { eloSeries, thumbsSeries, trainingSeries, votesSeries } from './chartData';
import { IntervalChart, SeriesChart } from './Charts';
import { EventsList } from './EventsList';
import { EvidencePanel } from './EvidencePanel';
import { isActive } from './runs';
import { POLL_ACTIVE_MS, RunsPanel } from './RunsPanel';
import { type PolicyAction, Timeline } from './Timeline';
import { TokenForm } from './TokenForm';
import { loadToken, saveToken } from './token';
import { usePoll } from './usePoll';

const POLL_MS = 15000;
const DAYS = [7, 30, 90];

function refused(...errors: unknown[]): boolean {
  return errors.some((e) => e instanceof ApiError && (e.status === 401 || e.status === 403));
}

function Board({ admin, onRefused, onSignOut }: { admin: AdminApi; onRefused: () => void; onSignOut: () => void }) {
  const [days, setDays] = useState(30);
  const [confirm, setConfirm] = useState<ConfirmRequest | null>(null);
  const [actionError, setActionError] = useState<unknown>(null);
  const [runsPoll, setRunsPoll] = useState(POLL_MS);

  const policies = usePoll(() => admin.policies(), POLL_MS, admin);
  const ratings = usePoll(() => admin.ratings(), POLL_MS * 2, admin);
  const events = usePoll(() => admin.events(), POLL_MS, admin);
  const stats = usePoll(() => admin.stats(days), POLL_MS * 2, `${days}`);
  const runs = usePoll(
    async () => {
      const rows = await admin.runs();
      setRunsPoll(rows.some(isActive) ? POLL_ACTIVE_MS : POLL_MS);
      return rows;
    },
    runsPoll,
    admin,
  );

  const isRefused = refused(policies.error, runs.error);
  useEffect(() => {
    if (isRefused) onRefused();
  }, [isRefused, onRefused]);

  const refreshAll = useCallback(async () => {
    await Promise.all([policies.reload(), ratings.reload(), events.reload(), runs.reload()]);
  }, [policies, ratings, events, runs]);

  function act(run: () => Promise<unknown>): Promise<void> {
    setActionError(null);
    return run().then(
      () => refreshAll(),
      (e: unknown) => {
        setActionError(e);
        return refreshAll();
      },
    );
  }

  const onAction = (action: PolicyAction, v: PolicyOut) =>
    setConfirm(
      action === 'promote'
        ? {
            title: `Promote ${v.name}?`,
            body: `${v.name} (${v.status}) will serve all unpinned traffic; ${policies.data?.serving ?? 'the serving version'} is retired and kept for rollback.`,
            confirmLabel: `Promote ${v.name}`,
            askReason: true,
            onConfirm: (reason) => act(() => admin.promote(v.name, reason)),
          }
        : {
            title: `Retire ${v.name}?`,
            body: `${v.name} (${v.status}) stops answering requests.`,
            confirmLabel: `Retire ${v.name}`,
            danger: true,
            askReason: true,
            onConfirm: (reason) => act(() => admin.retire(v.name, reason)),
          },
    );

  const onRollback = () =>
    setConfirm({
      title: 'Roll back?',
      body: `${policies.data?.serving ?? 'The serving version'} stops serving; the version it replaced serves again.`,
      confirmLabel: 'Roll back',
      danger: true,
      askReason: true,
      onConfirm: (reason) => act(() => admin.rollback(reason)),
    });

  const training = useMemo(() => trainingSeries(runs.data ?? []), [runs.data]);
  const ratingRows = ratings.data?.ratings ?? [];

  return (
    <div className="dashboard">
      <div className="row between wrap">
        <h1>Operator dashboard</h1>
        <div className="row">
          <button type="button" className="btn" data-testid="refresh" onClick={() => void refreshAll()}>
            Refresh
          </button>
          <button type="button" className="btn" data-testid="sign-out" onClick={onSignOut}>
            Forget token
          </button>
        </div>
      </div>
      {actionError !== null && <ErrorNote error={asErrorInfo(actionError)} onDismiss={() => setActionError(null)} testId="action-error" />}
      {policies.error !== null && <ErrorNote error={asErrorInfo(policies.error)} />}
      {policies.data && <Timeline policies={policies.data} ratings={ratings.data} onAction={onAction} onRollback={onRollback} />}

      <section className="card" aria-labelledby="charts-title">
        <div className="row between wrap">
          <h2 id="charts-title">How the versions do</h2>
          <label className="row">
            <span>Votes over</span>
            <select data-testid="stats-days" value={days} onChange={(e) => setDays(Number(e.target.value))}>
              {DAYS.map((d) => (
                <option key={d} value={d}>
                  {d} days
                </option>
              ))}
            </select>
          </label>
        </div>
        {ratings.error !== null && <ErrorNote error={asErrorInfo(ratings.error)} />}
        {stats.error !== null && <ErrorNote error={asErrorInfo(stats.error)} />}
        <div className="charts">
          <IntervalChart testId="chart-thumbs" title="Thumbs-up rate per version (95% Wilson interval)" valueLabel="Thumbs-up rate" data={thumbsSeries(ratingRows)} percent yRange={[0, 1]} />
          <IntervalChart testId="chart-elo" title={`Bradley-Terry Elo per version (${Math.round((ratings.data?.level ?? 0.95) * 100)}% bootstrap interval)`} valueLabel="Elo" data={eloSeries(ratingRows)} />
          <SeriesChart testId="chart-votes" title={`Votes per day (last ${days} days, UTC)`} data={votesSeries(stats.data?.votes_per_day ?? [])} kind="bar" stacked />
          <SeriesChart testId="chart-training" title="Reward model accuracy and candidate win rate per round (dashed: length-controlled)" data={training.rates} kind="line" percent />
          <SeriesChart testId="chart-kl" title="KL to the reference (v0) per round, nats" data={training.kl} kind="line" />
        </div>
      </section>

      <EvidencePanel evidence={stats.data?.evidence} />
      <RunsPanel admin={admin} runs={runs.data ?? []} error={runs.error} reload={runs.reload} />
      <EventsList events={events.data ?? []} />
      <ConfirmDialog request={confirm} onClose={() => setConfirm(null)} />
    </div>
  );
}

export default function Dashboard() {
  const [token, setToken] = useState<string | null>(loadToken);
  const [wasRefused, setRefused] = useState(false);
  const admin = useMemo(() => (token ? createAdmin(token) : null), [token]);

  const onRefused = useCallback(() => {
    saveToken(null);
    setRefused(true);
    setToken(null);
  }, []);

  const signOut = useCallback(() => {
    saveToken(null);
    setToken(null);
  }, []);

  if (!admin) {
    return (
      <TokenForm
        refused={wasRefused}
        onToken={(t) => {
          saveToken(t);
          setRefused(false);
          setToken(t);
        }}
      />
    );
  }
  return (
    <Board key={token} admin={admin} onSignOut={signOut} onRefused={onRefused} />
  );
}
