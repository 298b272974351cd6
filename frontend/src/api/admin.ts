/** The operator API (/v1/admin/*), called with the operator token. */
import { createAdminApi, type Api, unwrap } from './http';
import type { EventOut, PolicyList, PolicyOut, RatingsOut, RunDetail, RunOut, StatsOut } from './types';

export interface AdminApi {
  policies(): Promise<PolicyList>;
  ratings(): Promise<RatingsOut>;
  events(): Promise<EventOut[]>;
  stats(days: number): Promise<StatsOut>;
  runs(): Promise<RunOut[]>;
  run(id: number): Promise<RunDetail>;
  startRun(): Promise<RunOut>;
  promote(name: string, reason: string | null): Promise<PolicyOut>;
  retire(name: string, reason: string | null): Promise<PolicyOut>;
  rollback(reason: string | null): Promise<PolicyOut>;
}

function adminCalls(c: Api): AdminApi {
  const ref = (name: string) => ({ params: { path: { ref: name } } });
  return {
    policies: () => unwrap(c.GET('/v1/admin/policies')),
    ratings: () => unwrap(c.GET('/v1/admin/policies/ratings')),
    events: () => unwrap(c.GET('/v1/admin/policies/events', { params: { query: { limit: 200 } } })),
    stats: (days) => unwrap(c.GET('/v1/admin/stats', { params: { query: { days } } })),
    runs: () => unwrap(c.GET('/v1/admin/training-runs', { params: { query: { limit: 100 } } })),
    run: (id) => unwrap(c.GET('/v1/admin/training-runs/{run_id}', { params: { path: { run_id: id } } })),
    startRun: () => unwrap(c.POST('/v1/admin/training-runs')),
    promote: (name, reason) => unwrap(c.POST('/v1/admin/policies/{ref}/promote', { ...ref(name), body: { reason } })),
    retire: (name, reason) => unwrap(c.POST('/v1/admin/policies/{ref}/retire', { ...ref(name), body: { reason } })),
    rollback: (reason) => unwrap(c.POST('/v1/admin/policies/rollback', { body: { reason } })),
  };
}

export function createAdmin(token: string): AdminApi {
  return adminCalls(createAdminApi(token));
}
