// What the daemon starts when REDIS_URL is set: one connection, the shared limits (in place of the
// in-memory ones, which become their fallback), the usage counters fed from the request events,
// the two Redis metrics and the gateway totals of the status page. Without REDIS_URL none of this
// exists and the daemon runs as a single process always did.
import type { Logger } from 'pino';
import type { Admission } from '../admission/index.js';
import type { Events } from '../events.js';
import { NONE } from '../observability/metric-parts.js';
import type { Metrics } from '../observability/metrics.js';
import type { GatewayTotals } from '../observability/status.js';
import type { AnswerStore, MemoryStore, StoreStats } from '../savings/store.js';
import { createSharedAdmission } from './admission.js';
import { tieredStore } from './cache-store.js';
import { connectRedis } from './connection.js';
import type { RedisConfig } from './settings.js';
import { createSharedUsage, type SharedUsage } from './usage.js';

export type { RedisConfig } from './settings.js';

/** How long start-up waits for Redis before listening (so the first requests are shared); past it, it starts in fallback. */
const READY_WAIT_MS = 1000;

export interface SharedState {
  /** The limits every replica counts together; `fallback` answers while Redis is away (open mode). */
  admission(fallback: Admission): Admission;
  /** The response cache's tiers for the points saver: this replica's `memory`, then Redis. */
  cache(memory: MemoryStore, maxEntryBytes: number): AnswerStore & StoreStats;
  /** Resolves once Redis answers, or after READY_WAIT_MS. */
  ready(): Promise<void>;
  /** Adds bitquery_proxy_redis_up and bitquery_proxy_redis_errors_total to the daemon's metrics. */
  observe(metrics: Metrics): void;
  /** The usage of all replicas together, for the status page. */
  gateway(): Promise<GatewayTotals>;
  /** After the streams are closed: sends the last usage counts and disconnects. */
  close(): Promise<void>;
}

/** Counts the proxied requests of the `request` events into the shared usage, per key name. */
function countRequests(events: Events, usage: SharedUsage): () => void {
  return events.on('request', (e) => {
    if (e.path === undefined) return;
    usage.add(e.key ?? NONE, {
      requests: 1,
      status402: e.status === 402 ? 1 : 0,
      status429: e.status === 429 ? 1 : 0,
      saved: e.cache === 'hit' || e.cache === 'coalesced' ? 1 : 0,
    });
  });
}

export function startSharedState(config: RedisConfig, events: Events, logger: Logger): SharedState {
  const link = connectRedis(config, logger);
  const usage = createSharedUsage(link);
  const stopCounting = countRequests(events, usage);
  return {
    admission: (fallback) => createSharedAdmission(link, fallback),
    cache: (memory, maxEntryBytes) => tieredStore(link, memory, maxEntryBytes),
    ready: async () => void (await link.waitUntilUp(READY_WAIT_MS)),
    observe(metrics) {
      metrics.gauge({
        name: 'bitquery_proxy_redis_up',
        help: 'Whether Redis (REDIS_URL) answers: 1 up, 0 down or unreachable (limits fall back to memory or 503, the shared cache is skipped)',
        collect() {
          this.set(link.up() ? 1 : 0);
        },
      });
      metrics.counter({
        name: 'bitquery_proxy_redis_errors_total',
        help: 'Redis calls that failed: refused while Redis was down, past REDIS_TIMEOUT_MS, or answered with an error; each fell back to memory or was skipped',
        collect() {
          this.reset();
          this.inc(link.errors());
        },
      });
    },
    async gateway() {
      const totals = await usage.totals();
      const gateway: GatewayTotals = { available: totals !== undefined, requests: 0, status402: 0, status429: 0, saved: 0, keys: [] };
      for (const [name, counts] of Object.entries(totals ?? {}).sort(([a], [b]) => a.localeCompare(b))) {
        gateway.keys.push({ name, ...counts });
        gateway.requests += counts.requests;
        gateway.status402 += counts.status402;
        gateway.status429 += counts.status429;
        gateway.saved += counts.saved;
      }
      return gateway;
    },
    async close() {
      stopCounting();
      usage.close();
      await usage.flush();
      link.close();
    },
  };
}
