// Assembles the Fastify app from its parts: health routes, CORS, the HTTP proxy and error shapes,
// and publishes one request event per request (and a refused event for each error the proxy
// answered). Its HTTP server hands the common proxied request to the fast path (proxy/fast-path.ts)
// before Fastify's routing, and keeps the client timer for every request. No forwarding, token or
// key logic lives here.
import cors from '@fastify/cors';
import { createServer, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import type { Admission } from './admission/index.js';
import { originAllowed, type ResolveCaller } from './auth/caller.js';
import type { Config } from './config/index.js';
import { readiness, type CredentialSet } from './credential-set.js';
import { answerToThrown, ProxyError, refuseSocket, sendError, writeError } from './errors.js';
import type { Events } from './events.js';
import { REQUEST_ID_HEADER, requestId } from './observability/request-id.js';
import { FastPath } from './proxy/fast-path.js';
import { HttpForwarder, httpProxy } from './proxy/http.js';
import { publishRequest } from './proxy/request-event.js';
import type { PointsSaver } from './savings/saver.js';

/** What a request Node's parser rejected is answered with. */
function clientError(code: string | undefined): ProxyError {
  if (code === 'HPE_HEADER_OVERFLOW') return new ProxyError('request_header_fields_too_large', 'the request headers are larger than 16 KiB');
  if (code === 'ERR_HTTP_REQUEST_TIMEOUT') return new ProxyError('request_timeout');
  return new ProxyError('bad_request', 'the request is not valid HTTP');
}

/** The response to the request a socket carries now, for the server's one idle-timer listener. */
const ANSWERING = Symbol('answering');
type ServedSocket = Socket & { [ANSWERING]?: ServerResponse };

/**
 * CLIENT_TIMEOUT_MS between the bytes of a request: each socket's idle timer (the server's
 * timeout, which Node arms on each connection and again when a kept-alive connection carries its
 * next request), with one listener for the whole server instead of one per request. A request
 * still coming in is answered 408. One that is in waits on the upstream (UPSTREAM_TIMEOUT_MS) and
 * on its client's reading (the relay's own bound), so the timer means nothing until its answer is
 * out. An idle connection is closed, as Node does when nobody listens.
 */
function clientTimedOut(socket: ServedSocket, clientTimeoutMs: number): void {
  const res = socket[ANSWERING];
  if (res === undefined || res.writableFinished) return void socket.destroy();
  if (res.req.complete) return;
  if (res.headersSent) return void socket.destroy();
  res.once('finish', () => socket.destroy());
  writeError(res, new ProxyError('request_timeout', `no byte of the request came for CLIENT_TIMEOUT_MS (${clientTimeoutMs} ms)`), { connection: 'close' });
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

export async function buildServer({ config, logger, credentialSets, resolveCaller, admission, events, saver }: ServerParts): Promise<FastifyInstance> {
  const log = logger as FastifyBaseLogger;
  const forwarder = new HttpForwarder({ config, resolveCaller, admission, saver, log });
  const fast = new FastPath({ config, forwarder, events, log });

  const app = Fastify({
    // The server Fastify would make, with the fast path (proxy/fast-path.ts) ahead of its routing.
    serverFactory: (handler, options) => {
      const server = createServer((req, res) => {
        (req.socket as ServedSocket)[ANSWERING] = res;
        if (!fast.take(req, res)) handler(req, res);
      });
      server.on('timeout', (socket: ServedSocket) => clientTimedOut(socket, config.clientTimeoutMs));
      server.keepAliveTimeout = options.keepAliveTimeout as number;
      server.requestTimeout = options.requestTimeout as number;
      server.setTimeout(options.connectionTimeout as number);
      return server;
    },
    loggerInstance: log,
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
    const error = answerToThrown(err, config.bodyLimit);
    if (error) return sendError(reply, error);
    request.log.error({ reqId: request.id, err }, 'unexpected error');
    return sendError(reply, new ProxyError('internal_error'));
  });

  app.decorateRequest('proxyError', null);
  app.addHook('onResponse', (request, reply, done) => {
    publishRequest(events, request, reply.statusCode, reply.elapsedTime);
    done();
  });
  app.addHook('preClose', (done) => {
    fast.close();
    done();
  });

  // Registered last: a plugin inherits only the handlers and hooks set before it.
  await app.register(httpProxy, { config, forwarder });

  return app;
}
