/**
 * Details (metrics) of the finished runs, for the charts over rounds. The run list has
 * no metrics, so each finished run is fetched once and kept (it no longer changes).
 */
import { useEffect, useRef, useState } from 'react';
import type { AdminApi } from '../api/admin';
import type { RunDetail, RunOut } from '../api/types';
import { isActive } from './runs';

const MAX_RUNS = 30;

export function useRunDetails(admin: AdminApi, runs: RunOut[] | null): RunDetail[] {
  const cache = useRef(new Map<number, RunDetail>());
  const [details, setDetails] = useState<RunDetail[]>([]);

  useEffect(() => {
    if (!runs) return;
    let live = true;
    const wanted = runs.filter((r) => !isActive(r)).slice(0, MAX_RUNS);
    const missing = wanted.filter((r) => !cache.current.has(r.id));
    void (async () => {
      for (const r of missing) {
        try {
          cache.current.set(r.id, await admin.run(r.id));
        } catch {
          // a gap in the chart beats no chart
        }
      }
      if (live) setDetails(wanted.map((r) => cache.current.get(r.id)).filter((d): d is RunDetail => d !== undefined));
    })();
    return () => {
      live = false;
    };
  }, [admin, runs]);

  return details;
}
