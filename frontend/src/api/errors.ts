/** The server's one error envelope, `{"error": {message, type, code, param}}`, as a JS error. */
import type { ErrorDetail } from './types';

/** The envelope's `error` (the schema's ErrorDetail); WS error frames carry the same. */
export type ErrorInfo = ErrorDetail;

export class ApiError extends Error {
  readonly status: number;
  readonly info: ErrorInfo;

  constructor(status: number, info: ErrorInfo) {
    super(info.message);
    this.name = 'ApiError';
    this.status = status;
    this.info = info;
  }

  get code(): string | null {
    return this.info.code;
  }
}

function str(v: unknown): string | null {
  return typeof v === 'string' ? v : null;
}

/** Reads an error envelope from any JSON body; falls back to a generic message. */
export function errorInfo(body: unknown, fallback: string): ErrorInfo {
  const env = (body as { error?: unknown } | null)?.error;
  if (env && typeof env === 'object') {
    const e = env as Record<string, unknown>;
    return {
      message: str(e.message) ?? fallback,
      type: str(e.type) ?? 'error',
      code: str(e.code),
      param: str(e.param),
    };
  }
  const detail = (body as { detail?: unknown } | null)?.detail;
  return { message: str(detail) ?? fallback, type: 'error', code: null, param: null };
}

/** Words for the errors a user can do something about; the server's message otherwise. */
export function describeError(info: ErrorInfo): string {
  switch (info.code) {
    case 'rate_limit_exceeded':
      return `Slow down: ${info.message}`;
    case 'context_length_exceeded':
      return `Too long for the model: ${info.message}. Shorten the message or start a new chat.`;
    case 'engine_not_ready':
      return 'The model is still loading. Try again in a few seconds.';
    case 'invalid_api_key':
      return 'Your session has expired. Reload the page to start a new one.';
    default:
      return info.message;
  }
}

export function asErrorInfo(e: unknown): ErrorInfo {
  if (e instanceof ApiError) return e.info;
  const message = e instanceof Error ? e.message : String(e);
  return { message: message || 'Something went wrong', type: 'error', code: null, param: null };
}
