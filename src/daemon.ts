// The daemon's life: build the parts, fetch the first token, listen, and on shutdown drain
// in-flight requests within a bounded time, then close the WebSocket streams.
import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import { Pool } from 'undici';
import type { Config } from './config.js';
import { createCallerResolver, type Tenant } from './auth/caller.js';
import { KeyStore } from './auth/key-store.js';
import { createWsProxy } from './proxy/ws.js';
import { buildServer } from './server.js';
import { createTokenProvider } from './token/index.js';

export interface Daemon {
  app: FastifyInstance;
  /** The address actually listened on, e.g. http://127.0.0.1:8080. */
  url: string;
  /** Stops accepting, lets in-flight requests finish within SHUTDOWN_TIMEOUT_MS, then cuts the rest. */
  shutdown(): Promise<void>;
}

/** How often idle keep-alive connections are closed while draining (a busy one turns idle when its request ends). */
const IDLE_SWEEP_MS = 50;
/** Part of SHUTDOWN_TIMEOUT_MS kept for WebSocket streams to finish their closing handshake (at most half of it). */
const WS_CLOSE_GRACE_MS = 1000;

/** A token holder and a keep-alive upstream pool for each credential set. */
function createTenants(config: Config, logger: Logger): Map<string, Tenant> {
  const tenants = new Map<string, Tenant>();
  for (const set of config.sets) {
    const log = logger.child({ component: 'token', ...(config.sets.length > 1 && { credentials: set.name }) });
    tenants.set(set.name, {
      name: set.name,
      origin: set.upstream,
      tokens: createTokenProvider(set, config, log),
      upstream: new Pool(set.upstream.origin, {
        connections: config.upstreamConnections,
        connect: { timeout: config.upstreamConnectTimeoutMs },
        keepAliveTimeout: 30_000,
      }),
    });
  }
  return tenants;
}

export async function startDaemon(config: Config, logger: Logger): Promise<Daemon> {
  const tenants = createTenants(config, logger);
  const keys = new KeyStore(config.apiKeys, config.initialKeys, logger.child({ component: 'keys' }));
  const resolveCaller = createCallerResolver(config, keys, tenants);
  const app = await buildServer({ config, logger, tenants, resolveCaller });
  const ws = createWsProxy({ config, logger, resolveCaller });
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

  for (const tenant of tenants.values()) tenant.tokens.start();
  keys.start();
  await app.listen({ host: config.host, port: config.port });
  const address = app.server.address();
  const port = typeof address === 'object' && address ? address.port : config.port;
  const host = config.host.includes(':') ? `[${config.host}]` : config.host;
  const url = `http://${host}:${port}`;
  const upstreams = [...new Set(config.sets.map((s) => s.upstream.origin))];
  logger.info(
    {
      url,
      upstream: upstreams.join(', '),
      paths: config.paths,
      credentials: config.sets.map((s) => `${s.name} (${s.credentials.mode})`),
      inboundKeys: keys.enabled ? config.initialKeys.length : 'none',
    },
    `listening on ${url}, forwarding ${config.paths.join(', ')} to ${upstreams.join(', ')}`,
  );

  let closing: Promise<void> | undefined;
  const shutdown = () =>
    (closing ??= (async () => {
      logger.info({ drainMs: config.shutdownTimeoutMs }, 'shutting down: draining in-flight requests');
      for (const tenant of tenants.values()) tenant.tokens.stop();
      keys.stop();
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
        await Promise.all([...tenants.values()].map((tenant) => tenant.upstream.destroy()));
      }
      logger.info('stopped');
    })());

  return { app, url, shutdown };
}
