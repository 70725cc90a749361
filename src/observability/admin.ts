// The admin listener: a small Fastify instance of its own, apart from the proxy's port, for
// Prometheus, the kubelet's probes and people. It never proxies and exposes no secret.
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import { ProxyError, sendError } from '../errors.js';
import { renderStatusPage } from './status-page.js';
import type { StatusData } from './status.js';

export interface AdminOptions {
  /** ADMIN_HOST. */
  host: string;
  /** ADMIN_PORT; 0 picks a free one. */
  port: number;
  logger: Logger;
  metrics: { readonly contentType: string; text(): Promise<string> };
  /** The main port's /readyz answer: 200 when ready, else 503, with this body either way. */
  readiness(): { ready: boolean };
  status(): Promise<StatusData>;
  /** A connection silent this long is closed (a slow request, an idle keep-alive). */
  idleTimeoutMs?: number;
}

export interface Admin {
  app: FastifyInstance;
  /** Where it listens, e.g. http://127.0.0.1:9464. */
  url: string;
  close(): Promise<void>;
}

/** The page may use its inline CSS and nothing else: no script, no fetch, no external asset. */
const PAGE_CSP = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

export const ADMIN_ROUTES = ['/metrics', '/healthz', '/readyz', '/status', '/status.json'];

const IDLE_TIMEOUT_MS = 10_000;

export async function buildAdmin(options: Omit<AdminOptions, 'host' | 'port'>): Promise<FastifyInstance> {
  const { metrics, readiness, status } = options;
  const app = Fastify({
    loggerInstance: options.logger as FastifyBaseLogger,
    logController: new LogController({ disableRequestLogging: true }),
    return503OnClosing: true,
    // Scrapers keep connections open: closing must not wait for them.
    forceCloseConnections: true,
    // A client cannot hold a connection by going silent.
    connectionTimeout: options.idleTimeoutMs ?? IDLE_TIMEOUT_MS,
  });
  app.addHook('onSend', async (_request, reply) => {
    reply.header('cache-control', 'no-store').header('x-content-type-options', 'nosniff');
  });
  app.get('/metrics', async (_request, reply) => reply.header('content-type', metrics.contentType).send(await metrics.text()));
  app.get('/healthz', async () => ({ status: 'ok' }));
  app.get('/readyz', async (_request, reply) => {
    const state = readiness();
    return reply.code(state.ready ? 200 : 503).send(state);
  });
  app.get('/status.json', async () => status());
  app.get('/status', async (_request, reply) =>
    reply.header('content-type', 'text/html; charset=utf-8').header('content-security-policy', PAGE_CSP).send(renderStatusPage(await status())),
  );
  app.setNotFoundHandler((request, reply) =>
    sendError(reply, new ProxyError('not_found', `nothing at ${request.method} ${request.url.split('?')[0]} on the admin port; it serves GET ${ADMIN_ROUTES.join(', ')}`)),
  );
  app.setErrorHandler((err, request, reply) => {
    request.log.error({ err }, 'admin request failed');
    return sendError(reply, new ProxyError('internal_error', 'the admin listener failed to answer'));
  });
  return app;
}

export async function startAdmin(options: AdminOptions): Promise<Admin> {
  const logger = options.logger.child({ component: 'admin' });
  const app = await buildAdmin({ ...options, logger });
  await app.listen({ host: options.host, port: options.port });
  const address = app.server.address();
  const port = typeof address === 'object' && address ? address.port : options.port;
  const host = options.host.includes(':') ? `[${options.host}]` : options.host;
  const url = `http://${host}:${port}`;
  logger.info({ url }, `admin listening on ${url}: ${ADMIN_ROUTES.join(', ')}`);
  return { app, url, close: () => app.close() };
}
