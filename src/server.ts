// Assembles the Fastify app from its parts: health routes, the HTTP proxy, error shapes and the
// access log. No forwarding or token logic lives here.
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import type { Dispatcher } from 'undici';
import type { Config } from './config.js';
import { sendError } from './proxy/errors.js';
import { httpProxy } from './proxy/http.js';
import type { TokenProvider } from './token/index.js';

const PROBES = new Set(['/healthz', '/readyz']);

export interface ServerParts {
  config: Config;
  logger: Logger;
  tokens: TokenProvider;
  upstream: Dispatcher;
}

export async function buildServer({ config, logger, tokens, upstream }: ServerParts): Promise<FastifyInstance> {
  const app = Fastify({
    loggerInstance: logger as FastifyBaseLogger,
    // One access line per request is written below, without the query string's secrets.
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: config.bodyLimit,
    // Idle keep-alive connections are closed on shutdown; busy ones get Connection: close.
    forceCloseConnections: 'idle',
    return503OnClosing: true,
    requestTimeout: 0,
  });

  app.get('/healthz', async () => ({ status: 'ok' }));
  app.get('/readyz', async (_request, reply) => {
    const readiness = tokens.readiness();
    return reply.code(readiness.ready ? 200 : 503).send(readiness);
  });

  app.setNotFoundHandler((request, reply) =>
    sendError(reply, 404, 'not_found', `nothing at ${request.method} ${request.url.split('?')[0]}; proxied paths: ${config.paths.join(', ')}`),
  );

  app.setErrorHandler((err: { statusCode?: number; code?: string; message: string }, request, reply) => {
    if (err.code === 'FST_ERR_CTP_BODY_TOO_LARGE') {
      return sendError(reply, 413, 'payload_too_large', `the request body is larger than BODY_LIMIT (${config.bodyLimit} bytes)`);
    }
    if (err.statusCode && err.statusCode >= 400 && err.statusCode < 500) {
      return sendError(reply, err.statusCode, 'bad_request', err.message);
    }
    request.log.error({ err }, 'unexpected error');
    return sendError(reply, 500, 'internal_error', 'the proxy failed to handle the request');
  });

  app.addHook('onResponse', (request, reply, done) => {
    const outcome = request.proxyOutcome;
    // Probes arrive every few seconds: their lines would drown the traffic at info.
    const level = outcome || !PROBES.has(request.url) ? 'info' : 'debug';
    request.log[level](
      {
        req: request,
        status: reply.statusCode,
        ...(outcome && { upstreamStatus: outcome.upstreamStatus, attempts: outcome.attempts, upstreamMs: outcome.upstreamMs }),
        ms: Math.round(reply.elapsedTime * 100) / 100,
      },
      'request',
    );
    done();
  });

  // Registered last: a plugin inherits only the handlers and hooks set before it.
  await app.register(httpProxy, { config, tokens, upstream });

  return app;
}
