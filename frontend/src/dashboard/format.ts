/** Small formatting helpers for the dashboard. */

export function pct(x: number | null | undefined, digits = 0): string {
  return x === null || x === undefined || !Number.isFinite(x) ? '–' : `${(x * 100).toFixed(digits)}%`;
}

export function num(x: number | null | undefined, digits = 3): string {
  return x === null || x === undefined || !Number.isFinite(x) ? '–' : Number(x.toFixed(digits)).toString();
}

/** A flag as text: "yes", "no", or the placeholder where it is missing. */
export function yesNo(x: boolean | null | undefined): string {
  return x === true ? 'yes' : x === false ? 'no' : '–';
}

/** Parses an ISO time; one without a zone is UTC (the server sends some without). */
export function parseTime(iso: string): Date {
  return new Date(/T[\d:.]+$/.test(iso) ? `${iso}Z` : iso);
}

export function when(iso: string | null | undefined): string {
  if (!iso) return '–';
  const d = parseTime(iso);
  return Number.isNaN(d.getTime()) ? iso : d.toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'short' });
}

export function duration(seconds: number | null | undefined): string {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return '–';
  const s = Math.round(seconds);
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${s % 60} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

/** "loopchat@v3" -> "v3"; "v3" -> "v3". */
export function versionName(model: string): string {
  const at = model.lastIndexOf('@');
  return at >= 0 ? model.slice(at + 1) : model;
}

/** A finite number at obj[key], else null (metrics are free-form JSON). */
export function metric(obj: unknown, key: string): number | null {
  if (!obj || typeof obj !== 'object') return null;
  const v = (obj as Record<string, unknown>)[key];
  return typeof v === 'number' && Number.isFinite(v) ? v : null;
}

/** A boolean at obj[key], else null. */
export function flag(obj: unknown, key: string): boolean | null {
  if (!obj || typeof obj !== 'object') return null;
  const v = (obj as Record<string, unknown>)[key];
  return typeof v === 'boolean' ? v : null;
}

export function sub(obj: unknown, key: string): Record<string, unknown> | null {
  if (!obj || typeof obj !== 'object') return null;
  const v = (obj as Record<string, unknown>)[key];
  return v && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : null;
}
