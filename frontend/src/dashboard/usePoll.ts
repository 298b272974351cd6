/**
 * Load now, then again every `intervalMs` (null: no polling) while the tab is visible;
 * again at once when `key` changes (the inputs of `load`).
 */
import { useCallback, useEffect, useRef, useState } from 'react';

export interface Polled<T> {
  data: T | null;
  error: unknown;
  reload: () => Promise<void>;
}

export function usePoll<T>(load: () => Promise<T>, intervalMs: number | null, key: unknown = null): Polled<T> {
  const [data, setData] = useState<T | null>(null);
  const [error, setError] = useState<unknown>(null);
  const loadRef = useRef(load);
  loadRef.current = load;
  const alive = useRef(true);

  const reload = useCallback(async () => {
    try {
      const value = await loadRef.current();
      if (alive.current) {
        setData(value);
        setError(null);
      }
    } catch (e) {
      if (alive.current) setError(e);
    }
  }, []);

  useEffect(() => {
    alive.current = true;
    void reload();
    return () => {
      alive.current = false;
    };
  }, [reload, key]);

  useEffect(() => {
    if (intervalMs === null) return;
    const t = setInterval(() => {
      if (!document.hidden) void reload();
    }, intervalMs);
    return () => clearInterval(t);
  }, [intervalMs, reload]);

  return { data, error, reload };
}
