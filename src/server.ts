// Assembles the Fastify app from its parts: health routes, CORS, the HTTP proxy, error shapes and
// the access log. No forwarding, token or key logic lives here.
import cors from '@fastify/cors';
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import { originAllowed, type ResolveCaller } from './auth/caller.js';
import type { Config } from './config/index.js';
import { readiness, type CredentialSet } from './credential-set.js';
import { accessLogger } from './log.js';
import { answeredError, ProxyError, refuseSocket, sendError } from './errors.js';
import { httpProxy } from './proxy/http.js';

const PROBES = new Set(['/healthz', '/readyz']);

/** What a request Node's parser rejected is answered with. */
function clientError(code: string | undefined): ProxyError {
  if (code === 'HPE_HEADER_OVERFLOW') return new ProxyError('request_header_fields_too_large', 'the request headers are larger than 16 KiB');
  if (code === 'ERR_HTTP_REQUEST_TIMEOUT') return new ProxyError('request_timeout');
  return new ProxyError('bad_request', 'the request is not valid HTTP');
}

export interface ServerParts {
  config: Config;
  logger: Logger;
  credentialSets: Map<string, CredentialSet>;
  resolveCaller: ResolveCaller;
}

export async function buildServer({ config, logger, credentialSets, resolveCaller }: ServerParts): Promise<FastifyInstance> {
  const app = Fastify({
    loggerInstance: logger as FastifyBaseLogger,
    // One access line per request is written below, without the query string's secrets.
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: config.bodyLimit,
    // Idle keep-alive connections are closed on shutdown; busy ones get Connection: close.
    forceCloseConnections: 'idle',
    return503OnClosing: true,
    requestTimeout: 0,
    // Fastify's own handler logs the error with `rawPacket`, the raw bytes of the request (keys
    // included). This one logs only which error it was, and answers like every other error.
    clientErrorHandler: (err: NodeJS.ErrnoException, socket) => {
      if (err.code === 'ECONNRESET' || socket.destroyed) return;
      const error = clientError(err.code);
      logger.debug({ error: error.code, reason: /^[A-Z_]{1,40}$/.test(err.code ?? '') ? err.code : undefined }, 'client error');
      refuseSocket(socket, error);
    },
  });

  app.get('/healthz', async () => ({ status: 'ok' }));
  app.get('/readyz', async (_request, reply) => {
    const state = readiness(credentialSets);
    return reply.code(state.ready ? 200 : 503).send(state);
  });

  // Preflights are answered here, without a key and without touching the upstream.
  await app.register(cors, {
    origin: (origin, done) => done(null, origin !== undefined && originAllowed(config, origin)),
    methods: ['GET', 'POST'],
    maxAge: 600,
  });

  app.setNotFoundHandler((request, reply) =>
    sendError(reply, new ProxyError('not_found', `nothing at ${request.method} ${request.url.split('?')[0]}; proxied paths: ${config.paths.join(', ')}`)),
  );

  app.setErrorHandler((err: { statusCode?: number; code?: string; message: string }, request, reply) => {
    if (err instanceof ProxyError) return sendError(reply, err);
    if (err.code === 'FST_ERR_CTP_BODY_TOO_LARGE') {
      return sendError(reply, new ProxyError('payload_too_large', `the request body is larger than BODY_LIMIT (${config.bodyLimit} bytes)`));
    }
    if (err.statusCode && err.statusCode >= 400 && err.statusCode < 500) {
      return sendError(reply, new ProxyError('bad_request', err.message, { status: err.statusCode }));
    }
    request.log.error({ err }, 'unexpected error');
    return sendError(reply, new ProxyError('internal_error'));
  });

  const access = accessLogger(logger);
  app.addHook('onResponse', (request, reply, done) => {
    const outcome = request.proxyOutcome;
    const error = answeredError(reply.raw);
    // A 5xx of the proxy's own (upstream unreachable, no token, shutting down) is a warning, as for
    // WebSocket handshakes; probes arrive every few seconds and would drown the traffic at info.
    const level = error && reply.statusCode >= 500 ? 'warn' : outcome || !PROBES.has(request.url) ? 'info' : 'debug';
    access[level](
      {
        reqId: request.id,
        req: request,
        ...(request.caller?.keyName && { key: request.caller.keyName }),
        ...(request.caller && credentialSets.size > 1 && { credentials: request.caller.credentialSet.name }),
        status: reply.statusCode,
        ...(error && { error }),
        ...outcome?.fields(),
        ms: Math.round(reply.elapsedTime * 100) / 100,
      },
      'request',
    );
    done();
  });

  // Registered last: a plugin inherits only the handlers and hooks set before it.
  await app.register(httpProxy, { config, resolveCaller });

  return app;
}
