// Assembles the Fastify app from its parts: health routes, CORS, the HTTP proxy and error shapes,
// and publishes one request event per request (and a refused event for each error the proxy
// answered). No forwarding, token or key logic lives here.
import cors from '@fastify/cors';
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import type { Logger } from 'pino';
import type { Admission } from './admission/index.js';
import { originAllowed, type ResolveCaller } from './auth/caller.js';
import type { Config } from './config/index.js';
import { readiness, type CredentialSet } from './credential-set.js';
import { ProxyError, refuseSocket, sendError, writeError } from './errors.js';
import type { Events } from './events.js';
import { redactUrl } from './log.js';
import { REQUEST_ID_HEADER, requestId } from './observability/request-id.js';
import { httpProxy } from './proxy/http.js';
import type { PointsSaver } from './savings/saver.js';

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
  admission: Admission;
  events: Events;
  saver: PointsSaver;
}

/** The request's facts, once its answer is finished (or the client has gone). */
function publish(events: Events, request: FastifyRequest, reply: FastifyReply): void {
  const error = request.proxyError;
  const caller = request.caller;
  const outcome = request.proxyOutcome;
  if (error !== null && events.has('refused')) {
    events.emit('refused', {
      transport: 'http',
      status: error.status,
      error: error.code,
      message: error.message,
      path: outcome?.path,
      key: caller?.keyName,
      credentials: caller?.credentialSet.name,
    });
  }
  if (!events.has('request')) return;
  events.emit('request', {
    requestId: request.id,
    method: request.method,
    url: redactUrl(request.url),
    path: outcome?.path,
    status: reply.statusCode,
    key: caller?.keyName,
    credentials: caller?.credentialSet.name,
    attempts: outcome?.attempts ?? 0,
    upstreamStatus: outcome?.upstreamStatus,
    upstreamMs: outcome?.upstreamMs,
    ms: Math.round(reply.elapsedTime * 100) / 100,
    bytesIn: outcome?.bytesIn ?? 0,
    bytesOut: outcome ? outcome.bytesOut() : 0,
    operation: outcome?.operation,
    error: error?.code,
    cache: outcome?.cache,
  });
}

export async function buildServer({ config, logger, credentialSets, resolveCaller, admission, events, saver }: ServerParts): Promise<FastifyInstance> {
  const app = Fastify({
    loggerInstance: logger as FastifyBaseLogger,
    // One access line per request is written below, without the query string's secrets.
    logController: new LogController({ disableRequestLogging: true }),
    // No child logger per request: the few lines written for a request carry its reqId themselves.
    childLoggerFactory: (parent) => parent,
    bodyLimit: config.bodyLimit,
    // Idle keep-alive connections are closed on shutdown; busy ones get Connection: close.
    forceCloseConnections: 'idle',
    return503OnClosing: true,
    // Bounds per gap, not per request: a large body on a slow link is fine, a stalled one is not.
    requestTimeout: 0,
    genReqId: (req) => requestId(req.headers[REQUEST_ID_HEADER]),
    connectionTimeout: config.clientTimeoutMs,
    // Fastify's own handler logs the error with `rawPacket`, the raw bytes of the request (keys
    // included). This one logs only which error it was, and answers like every other error.
    clientErrorHandler: (err: NodeJS.ErrnoException, socket) => {
      if (err.code === 'ECONNRESET' || socket.destroyed) return;
      const error = clientError(err.code);
      logger.debug({ error: error.code, reason: /^[A-Z_]{1,40}$/.test(err.code ?? '') ? err.code : undefined }, 'client error');
      refuseSocket(socket, error);
    },
  });

  // The id goes back on every answer (hijacked ones take these headers too) and upstream.
  app.addHook('onRequest', (request, reply, done) => {
    reply.header(REQUEST_ID_HEADER, request.id);
    request.headers[REQUEST_ID_HEADER] = request.id;
    done();
  });

  // CLIENT_TIMEOUT_MS between the bytes of a request: the socket's idle timer, which Node reports
  // on the request only while it is incomplete. Once the body is in, waiting is the upstream's
  // doing (UPSTREAM_TIMEOUT_MS), so the timer is off until the next request on the connection.
  app.server.on('request', (req, res) => {
    req.socket.setTimeout(config.clientTimeoutMs);
    req.once('timeout', () => {
      if (res.headersSent) return void req.socket.destroy();
      res.once('finish', () => req.socket.destroy());
      writeError(res, new ProxyError('request_timeout', `no byte of the request came for CLIENT_TIMEOUT_MS (${config.clientTimeoutMs} ms)`), { connection: 'close' });
    });
  });
  app.addHook('preValidation', (request, _reply, done) => {
    request.raw.socket.setTimeout(0);
    done();
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
    request.log.error({ reqId: request.id, err }, 'unexpected error');
    return sendError(reply, new ProxyError('internal_error'));
  });

  app.decorateRequest('proxyError', null);
  app.addHook('onResponse', (request, reply, done) => {
    publish(events, request, reply);
    done();
  });

  // Registered last: a plugin inherits only the handlers and hooks set before it.
  await app.register(httpProxy, { config, resolveCaller, admission, saver });

  return app;
}
