// The points saver's metrics (src/savings/), joined to the daemon's registry through Metrics'
// counter() and gauge(): read from the saver when Prometheus scrapes, nothing on the request path.
import type { CacheResult } from '../events.js';
import type { Metrics } from './metrics.js';

/** What the saver counts (PointsSaver). */
export interface SaverReadings {
  readonly requests: Readonly<Record<CacheResult, number>>;
  /** Upstream requests saved (hits and coalesced), per credential set. */
  readonly saved: ReadonlyMap<string, number>;
  readonly cacheBytes: number;
  readonly cacheEntries: number;
}

/** All upstream requests saved, for the status page. */
export function requestsSaved(saver: SaverReadings): number {
  let total = 0;
  for (const n of saver.saved.values()) total += n;
  return total;
}

export function savingsMetrics(metrics: Metrics, saver: SaverReadings): void {
  const { labels } = metrics;
  metrics.counter({
    name: 'bitquery_proxy_cache_requests_total',
    help: "Queries on proxied paths by how the points saver answered: hit (from the cache), miss (went upstream), coalesced (shared another's upstream request), bypass (not eligible)",
    labelNames: ['result'] as const,
    collect() {
      this.reset();
      for (const [result, count] of Object.entries(saver.requests)) this.inc({ result }, count);
    },
  });
  metrics.counter({
    name: 'bitquery_proxy_upstream_requests_saved_total',
    help: 'Upstream requests (and their points) saved by cache hits and coalesced queries',
    labelNames: ['credentials'] as const,
    collect() {
      this.reset();
      for (const [name, count] of saver.saved) this.inc({ credentials: labels.credentials(name) }, count);
    },
  });
  metrics.gauge({
    name: 'bitquery_proxy_cache_bytes',
    help: 'Bytes the response cache holds (bodies, headers and keys), at most CACHE_MAX_BYTES',
    collect() {
      this.set(saver.cacheBytes);
    },
  });
  metrics.gauge({
    name: 'bitquery_proxy_cache_entries',
    help: 'Answers the response cache holds',
    collect() {
      this.set(saver.cacheEntries);
    },
  });
}
