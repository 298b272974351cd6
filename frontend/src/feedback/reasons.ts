/** The reason tags (GET /v1/feedback/reasons), fetched once per page. */
import { useEffect, useState } from 'react';
import { getReasons } from '../api/feedback';
import type { ReasonsOut } from '../api/types';

let pending: Promise<ReasonsOut> | null = null;

export function loadReasons(): Promise<ReasonsOut> {
  pending ??= getReasons().catch((e: unknown) => {
    pending = null;
    throw e;
  });
  return pending;
}

export function useReasons(): ReasonsOut | null {
  const [reasons, setReasons] = useState<ReasonsOut | null>(null);
  useEffect(() => {
    let live = true;
    loadReasons().then(
      (r) => live && setReasons(r),
      () => undefined, // voting still works without tags
    );
    return () => {
      live = false;
    };
  }, []);
  return reasons;
}

/** "followed_instructions" -> "Followed instructions" */
export function reasonLabel(tag: string): string {
  const words = tag.replace(/_/g, ' ');
  return words.charAt(0).toUpperCase() + words.slice(1);
}
