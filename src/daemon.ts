// The daemon's life: build the parts, fetch the first token, listen, and on shutdown drain
// in-flight requests within a bounded time, then close the WebSocket streams.
import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import type { Config } from './config/index.js';
import { MemoryAdmission } from './admission/index.js';
import { createCallerResolver } from './auth/caller.js';
import { KeyStore } from './auth/key-store.js';
import { createCredentialSets } from './credential-set.js';
import { logEvents } from './event-logs.js';
import { Events } from './events.js';
import { createWsProxy } from './proxy/ws/index.js';
import { buildServer } from './server.js';

export interface Daemon {
  app: FastifyInstance;
  /** The daemon's events: subscribe to observe requests, tokens, streams and refusals. */
  events: Events;
  /** The address actually listened on, e.g. http://127.0.0.1:8080. */
  url: string;
  /** Stops accepting, lets in-flight requests finish within SHUTDOWN_TIMEOUT_MS, then cuts the rest. */
  shutdown(): Promise<void>;
}

/** How often idle keep-alive connections are closed while draining (a busy one turns idle when its request ends). */
const IDLE_SWEEP_MS = 50;
/** Part of SHUTDOWN_TIMEOUT_MS kept for WebSocket streams to finish their closing handshake (at most half of it). */
const WS_CLOSE_GRACE_MS = 1000;

export async function startDaemon(config: Config, logger: Logger): Promise<Daemon> {
  const events = new Events();
  logEvents(events, logger, { credentialsInLines: config.credentialSets.length > 1 });
  const credentialSets = createCredentialSets(config, logger, events);
  const keys = new KeyStore(config.apiKeys, config.initialKeys, logger.child({ component: 'keys' }));
  const resolveCaller = createCallerResolver(config, keys, credentialSets);
  const admission = new MemoryAdmission();
  const app = await buildServer({ config, logger, credentialSets, resolveCaller, admission, events });
  const ws = createWsProxy({ config, logger, resolveCaller, admission, events });
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
  await app.listen({ host: config.host, port: config.port });
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
      }
      logger.info('stopped');
    })());

  return { app, events, url, shutdown };
}
