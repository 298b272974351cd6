/** Typed clients generated from the OpenAPI schema (openapi-fetch), and `unwrap`. */
import createClient, { type Client } from 'openapi-fetch';
import { ApiError, errorInfo } from './errors';
import type { paths } from './schema';

export type Api = Client<paths>;

function origin(): string {
  return globalThis.location?.origin ?? 'http://localhost';
}

/** A client for the same origin; fetch is looked up per call so tests can stub it. */
export function createApi(headers: Record<string, string> = {}): Api {
  return createClient<paths>({
    baseUrl: origin(),
    credentials: 'same-origin',
    headers,
    fetch: (req: Request) => globalThis.fetch(req),
  });
}

/** The operator's client: `Authorization: Bearer <token>` on every call. */
export function createAdminApi(token: string): Api {
  return createApi({ Authorization: `Bearer ${token}` });
}

interface Result<T> {
  data?: T;
  error?: unknown;
  response: Response;
}

/** The body of a 2xx answer, or an ApiError carrying the server's error envelope. */
export async function unwrap<T>(call: Promise<Result<T>>): Promise<T> {
  const { data, error, response } = await call;
  if (!response.ok) {
    throw new ApiError(response.status, errorInfo(error, `${response.status} ${response.statusText}`));
  }
  return data as T;
}

export const api: Api = createApi();
