import { describe, expect, it, vi } from 'vitest';
import { ApiError, describeError, errorInfo } from './errors';
import { createAdmin } from './admin';
import { ensureSession } from './session';

function json(status: number, body: unknown): Response {
  return new Response(JSON.stringify(body), { status, headers: { 'content-type': 'application/json' } });
}

describe('api', () => {
  it('starts a web session when GET /v1/me is 401', async () => {
    const seen: string[] = [];
    vi.stubGlobal(
      'fetch',
      vi.fn(async (req: Request) => {
        seen.push(`${req.method} ${new URL(req.url).pathname} ${req.credentials}`);
        return req.method === 'GET'
          ? json(401, { error: { message: 'no credentials', type: 'authentication_error', code: 'invalid_api_key', param: null } })
          : json(201, { user_id: 'u1', kind: 'web' });
      }),
    );
    await expect(ensureSession()).resolves.toEqual({ userId: 'u1', kind: 'web' });
    expect(seen).toEqual(['GET /v1/me same-origin', 'POST /v1/session same-origin']);
  });

  it('raises the error envelope as an ApiError', async () => {
    vi.stubGlobal('fetch', vi.fn(async () => json(500, { error: { message: 'boom', type: 'server_error', code: 'internal_error', param: null } })));
    const err = await ensureSession().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ApiError);
    expect((err as ApiError).status).toBe(500);
    expect((err as ApiError).info.code).toBe('internal_error');
  });

  it('sends the operator token as a bearer token', async () => {
    const auth: (string | null)[] = [];
    vi.stubGlobal(
      'fetch',
      vi.fn(async (req: Request) => {
        auth.push(req.headers.get('authorization'));
        return json(200, []);
      }),
    );
    await createAdmin('s3cret').events();
    expect(auth).toEqual(['Bearer s3cret']);
  });

  it('describes errors a user can act on', () => {
    const info = errorInfo({ error: { message: 'too many votes; try again in 2 s', type: 'rate_limit_error', code: 'rate_limit_exceeded', param: null } }, 'x');
    expect(describeError(info)).toMatch(/^Slow down: too many votes/);
    expect(errorInfo({ detail: 'Not Found' }, 'fallback').message).toBe('Not Found');
    expect(errorInfo(null, 'fallback').message).toBe('fallback');
  });
});
