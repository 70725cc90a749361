// Stand-ins for the daemon's parts that the observability modules read.
import type { AccountUsage, RequestEvent } from '../../src/events.js';
import type { ObservedSet, TokenReadiness } from '../../src/observability/types.js';

/** A credential set whose token state and token the test sets. */
export function fakeSet(name: string, mode = 'client_credentials', readiness: TokenReadiness = { ready: true, expiresInSec: 3600 }, token = `tok-${name}-secret`) {
  const set = {
    name,
    mode,
    state: readiness,
    token,
    tokenRequests: 0,
    tokens: {
      readiness: () => set.state,
      getToken: async () => {
        set.tokenRequests += 1;
        if (!set.state.ready) throw new Error(set.state.reason ?? 'no valid token');
        return set.token;
      },
    },
  };
  return set satisfies ObservedSet;
}

export function request(fields: Partial<RequestEvent> = {}): RequestEvent {
  return { requestId: 'r1', method: 'POST', url: '/graphql', path: '/graphql', status: 200, attempts: 1, ms: 0.2, upstreamMs: 0.1, bytesIn: 10, bytesOut: 20, ...fields };
}

export function usage(fields: Partial<AccountUsage> = {}): AccountUsage {
  return {
    status: 'active',
    plan: 'Paid plan',
    periodStart: '2026-06-24T00:00:00.000Z',
    periodEnd: '2026-07-23T23:59:59.000Z',
    pointsLimit: 1_000_000,
    pointsUsed: 4458,
    requestsUsed: 184,
    subscriptionLimit: 1000,
    polledAt: Date.now(),
    ...fields,
  };
}

/** The Usage API's documented body. */
export function usageBody(fields: { status?: string; started?: string; ended?: string; limit?: number; used?: number } = {}) {
  return {
    account_id: 12345,
    payer_id: 12345,
    status: fields.status ?? 'active',
    billing_period: {
      started_at: fields.started ?? '2026-06-24T00:00:00Z',
      ended_at: fields.ended ?? '2026-07-23T23:59:59Z',
      plan_name: 'Paid plan',
      product: null,
      limits: { points_limit: fields.limit ?? 1_000_000, rate_limit: 10000, session_limit: 1000, subscription_limit: 1000, time_sec_limit: 0, traffic_bytes_limit: 0, team_slots_limit: 5 },
      usage: { points_usage: fields.used ?? 4458, requests_usage: 184, time_sec_usage: 301, traffic_bytes_usage: 3763747 },
      description: { points_limit: fields.limit ?? 1_000_000, rate_limit: 10000, session_limit: 1000, subscription_limit: 1000 },
    },
  };
}

/** The value of one sample of the Prometheus text, found by name and labels (any label order). */
export function sample(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of text.split('\n')) {
    const m = /^([a-z_:]+)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const got = Object.fromEntries([...(m[2] ?? '').matchAll(/(\w+)="([^"]*)"/g)].map((l) => [l[1], l[2]]));
    if (Object.entries(labels).every(([k, v]) => got[k] === v)) return Number(m[3]);
  }
  return undefined;
}
