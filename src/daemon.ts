// The daemon's life: build the parts, fetch the first token, listen, and on shutdown drain
// in-flight requests within a bounded time, then close the WebSocket streams.
import { readFileSync } from 'node:fs';
import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import type { Config } from './config/index.js';
import { MemoryAdmission } from './admission/index.js';
import { createCallerResolver } from './auth/caller.js';
import { KeyStore } from './auth/key-store.js';
import { createCredentialSets, readiness } from './credential-set.js';
import { logEvents } from './event-logs.js';
import { Events } from './events.js';
import { startAdmin, type Admin } from './observability/admin.js';
import { Metrics } from './observability/metrics.js';
import { requestsSaved, savingsMetrics } from './observability/savings-metrics.js';
import { StatusBoard } from './observability/status.js';
import type { ObservedSet } from './observability/types.js';
import { UsagePoller } from './observability/usage.js';
import { shareMetrics, sharedTotals } from './observability/share-metrics.js';
import { createWsProxy } from './proxy/ws/index.js';
import { createShareMode } from './proxy/ws/share.js';
import { createPointsSaver, memoryStoreFor } from './savings/saver.js';
import { buildServer } from './server.js';

export interface Daemon {
  app: FastifyInstance;
  /** The daemon's events: subscribe to observe requests, tokens, streams and refusals. */
  events: Events;
  /** The address actually listened on, e.g. http://127.0.0.1:8080. */
  url: string;
  /** The admin listener's address, unless ADMIN_PORT=off. */
  adminUrl?: string;
  /** Stops accepting, lets in-flight requests finish within SHUTDOWN_TIMEOUT_MS, then cuts the rest. */
  shutdown(): Promise<void>;
}

/** How often idle keep-alive connections are closed while draining (a busy one turns idle when its request ends). */
const IDLE_SWEEP_MS = 50;
/** Part of SHUTDOWN_TIMEOUT_MS kept for WebSocket streams to finish their closing handshake (at most half of it). */
const WS_CLOSE_GRACE_MS = 1000;

function version(): string {
  return (JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }).version;
}

export async function startDaemon(config: Config, logger: Logger): Promise<Daemon> {
  const startedAt = Date.now();
  const events = new Events();
  logEvents(events, logger, { credentialsInLines: config.credentialSets.length > 1 });
  const credentialSets = createCredentialSets(config, logger, events);
  const keys = new KeyStore(config.apiKeys, config.initialKeys, logger.child({ component: 'keys' }));
  const resolveCaller = createCallerResolver(config, keys, credentialSets);
  // REDIS_URL: limits, usage and the cache's second tier shared with the other replicas, in-memory
  // counting as the fallback. Without it, the Redis client is not even loaded.
  const shared = config.redis && (await import('./shared-state/index.js')).startSharedState(config.redis, events, logger);
  const admission = shared ? shared.admission(new MemoryAdmission()) : new MemoryAdmission();
  // One points saver per process; with Redis its cache has a second tier there.
  const keyTtls = Object.values(config.keyPolicies).map((policy) => policy.cacheTtlMs ?? 0);
  const memory = memoryStoreFor(config.savings, keyTtls);
  const store = memory && shared ? shared.cache(memory, config.savings.cacheMaxEntryBytes) : memory;
  const saver = createPointsSaver(config.savings, store, (err) => logger.error({ err }, 'points saver: an exchange or the cache store failed'));
  const app = await buildServer({ config, logger, credentialSets, resolveCaller, admission, events, saver });
  // Observability: metrics and the status board subscribe to the events; the usage poller asks
  // Bitquery's Usage API with each set's token. None of them is on the request path.
  const sets: ObservedSet[] = config.credentialSets.map((s) => ({ name: s.name, mode: s.credentials.mode, tokens: credentialSets.get(s.name)!.tokens }));
  const usage = new UsagePoller({
    sets,
    url: config.usageUrl.href,
    intervalMs: config.usagePollMs,
    warnPercent: config.budgetWarnPercent,
    events,
    logger: logger.child({ component: 'usage' }),
    timeoutMs: config.tokenTimeoutMs,
  });
  // WS_MODE=share: graphql-ws/graphql-transport-ws clients share upstream streams; the rest is relayed.
  const share =
    config.wsMode === 'share'
      ? createShareMode({ config, resolveCaller, admission, logger, events, subscriptionLimit: (name) => usage.state(name)?.usage?.subscriptionLimit })
      : undefined;
  const ws = createWsProxy({ config, logger, resolveCaller, admission, events, ...(share && { takeOver: share }) });
  app.server.on('upgrade', ws.handleUpgrade);

  // In-flight HTTP requests, so that shutdown closes the streams only once they have drained.
  let inflight = 0;
  let onDrained: (() => void) | undefined;
  app.server.on('request', (_req, res) => {
    inflight += 1;
    res.once('close', () => {
      inflight -= 1;
      if (inflight === 0) onDrained?.();
    });
  });

  for (const set of credentialSets.values()) set.tokens.start();
  keys.start();
  let observed: { metrics: Metrics; board: StatusBoard; admin: Admin } | undefined;
  if (config.adminPort !== 'off') {
    const metrics = new Metrics({ events, paths: config.paths, sets, isKnownKey: (name) => keys.has(name) });
    savingsMetrics(metrics, saver);
    if (share) shareMetrics(metrics, events, sets.map((s) => s.name), () => share.engine.stats());
    shared?.observe(metrics);
    const traffic = async () => ({ ...(await metrics.traffic()), requestsSaved: requestsSaved(saver), ...(share && sharedTotals(share.engine.stats())) });
    const board = new StatusBoard({ version: version(), startedAt, sets, events, traffic, usage, budgetWarnPercent: config.budgetWarnPercent, gateway: shared?.gateway });
    const admin = await startAdmin({ host: config.adminHost, port: config.adminPort, logger, metrics, readiness: () => readiness(credentialSets), status: () => board.data() });
    observed = { metrics, board, admin };
  }
  await shared?.ready();
  await app.listen({ host: config.host, port: config.port });
  usage.start();
  const address = app.server.address();
  const port = typeof address === 'object' && address ? address.port : config.port;
  const host = config.host.includes(':') ? `[${config.host}]` : config.host;
  const url = `http://${host}:${port}`;
  const upstreams = [...new Set(config.credentialSets.map((s) => s.upstream.origin))];
  logger.info(
    {
      url,
      upstream: upstreams.join(', '),
      paths: config.paths,
      credentials: config.credentialSets.map((s) => `${s.name} (${s.credentials.mode})`),
      inboundKeys: keys.enabled ? config.initialKeys.length : 'none',
    },
    `listening on ${url}, forwarding ${config.paths.join(', ')} to ${upstreams.join(', ')}`,
  );

  let closing: Promise<void> | undefined;
  const shutdown = () =>
    (closing ??= (async () => {
      logger.info({ drainMs: config.shutdownTimeoutMs }, 'shutting down: draining in-flight requests');
      for (const set of credentialSets.values()) set.tokens.stop();
      keys.stop();
      usage.stop();
      ws.stopAccepting();
      const sweep = setInterval(() => app.server.closeIdleConnections(), IDLE_SWEEP_MS);
      const deadline = setTimeout(() => {
        logger.warn('drain time is over: closing the remaining connections');
        app.server.closeAllConnections();
        void ws.close(0);
      }, config.shutdownTimeoutMs);
      // Upgraded sockets are not the HTTP server's to close (closeAllConnections skips them) and
      // server.close() waits for them: streams never end by themselves, so once in-flight HTTP has
      // drained (or only the grace is left) they are closed with 1001 and cut after the grace.
      const wsGrace = Math.min(WS_CLOSE_GRACE_MS, config.shutdownTimeoutMs / 2);
      const drained = new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, config.shutdownTimeoutMs - wsGrace);
        onDrained = () => {
          clearTimeout(timer);
          resolve();
        };
        if (inflight === 0) onDrained();
      });
      const streamsClosed = drained.then(() => ws.close(wsGrace));
      try {
        await Promise.all([app.close(), streamsClosed]);
      } finally {
        clearInterval(sweep);
        clearTimeout(deadline);
        await Promise.all([...[...credentialSets.values()].map((set) => set.upstream.destroy()), admission.close()]);
        await shared?.close();
        await observed?.admin.close();
        observed?.metrics.close();
        observed?.board.close();
      }
      logger.info('stopped');
    })());

  return { app, events, url, adminUrl: observed?.admin.url, shutdown };
}
