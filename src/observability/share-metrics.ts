// The share mode's metrics (WS_MODE=share), in the daemon's registry: the gauges are read from the
// engine's counts when Prometheus scrapes, the counters follow its events. Their ratio is the
// saving: client subscriptions carried by upstream streams.
import type { Events } from '../events.js';
import type { SharingStats } from '../subscriptions/types.js';
import type { Metrics } from './metrics.js';
import type { TrafficSummary } from './status.js';

export function shareMetrics(metrics: Metrics, events: Events, sets: readonly string[], stats: () => SharingStats): void {
  const { labels } = metrics;
  const gauge = (name: string, help: string, pick: (counts: { upstreamStreams: number; subscriptions: number }) => number) =>
    metrics.gauge({
      name,
      help,
      labelNames: ['credentials'] as const,
      collect() {
        const now = stats().credentials;
        for (const set of sets) this.set({ credentials: set }, now[set] ? pick(now[set]) : 0);
      },
    });
  gauge('bitquery_proxy_ws_upstream_streams', 'Upstream WebSocket streams held in share mode (connecting, live, reconnecting or lingering)', (c) => c.upstreamStreams);
  gauge('bitquery_proxy_ws_subscriptions', 'Client subscriptions served by the shared upstream streams', (c) => c.subscriptions);
  const reconnects = metrics.counter({
    name: 'bitquery_proxy_ws_upstream_reconnects_total',
    help: 'Shared upstream streams reconnected, by reason (idle, dropped, timeout, unreachable, unauthorized, refused, connection_error, token_unavailable)',
    labelNames: ['credentials', 'reason'] as const,
  });
  const capRefusals = metrics.counter({
    name: 'bitquery_proxy_ws_cap_refusals_total',
    help: 'New distinct subscriptions refused over WS_MAX_UPSTREAM_STREAMS',
    labelNames: ['credentials'] as const,
  });
  events.on('upstreamReconnect', (e) => reconnects.inc({ credentials: labels.credentials(e.credentials), reason: e.reason }));
  events.on('streamCapRefused', (e) => {
    if (e.scope === 'credentials') capRefusals.inc({ credentials: labels.credentials(e.credentials) });
  });
}

/** Subscriptions against upstream streams, all credential sets together, for the status page. */
export function sharedTotals(stats: SharingStats): Pick<TrafficSummary, 'subscriptions' | 'upstreamStreams'> {
  let subscriptions = 0;
  let upstreamStreams = 0;
  for (const counts of Object.values(stats.credentials)) {
    subscriptions += counts.subscriptions;
    upstreamStreams += counts.upstreamStreams;
  }
  return { subscriptions, upstreamStreams };
}
