/** The anonymous web session: GET /v1/me, and POST /v1/session when there is none. */
import { ApiError } from './errors';
import { api, unwrap } from './http';

export interface Me {
  userId: string;
  kind: string;
}

export async function ensureSession(): Promise<Me> {
  try {
    const me = await unwrap(api.GET('/v1/me'));
    return { userId: me.user_id, kind: me.kind };
  } catch (e) {
    if (!(e instanceof ApiError) || e.status !== 401) throw e;
  }
  const started = await unwrap(api.POST('/v1/session'));
  return { userId: started.user_id, kind: started.kind };
}
