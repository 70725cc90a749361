// HTTP forwarding with the token injected and one retry on 401. The body is buffered (bounded
// by BODY_LIMIT) because a streamed body cannot be sent twice; the response streams through
// (exchange.ts, relay.ts).
// Before anything goes upstream the caller is resolved (key, origin, credential set) and, when
// limits are set, admitted under its per-minute limit. Then the points saver (src/savings/)
// answers from its cache, joins an identical query in flight, or runs the exchange.
// A request reaches HttpForwarder by one of two routes: the fast path (fast-path.ts) for the
// common case, or the Fastify routes at the end of this file for every other request.
import type { IncomingHttpHeaders, IncomingMessage, OutgoingHttpHeaders, ServerResponse } from 'node:http';
import type { FastifyBaseLogger, FastifyInstance, FastifyReply, onRequestHookHandler } from 'fastify';
import type { Dispatcher } from 'undici';
import { countRequest, type Admission } from '../admission/index.js';
import { rateLimitOf, type Caller, type ResolveCaller } from '../auth/caller.js';
import type { Config } from '../config/index.js';
import { ProxyError, sendError } from '../errors.js';
import type { CacheResult } from '../events.js';
import type { PointsSaver } from '../savings/saver.js';
import { createExchange } from './exchange.js';
import { headerLimit, upstreamRequestHeaderList, withoutTokenParam } from './headers.js';
import { operationName } from './operation.js';

export interface HttpProxyOptions {
  config: Config;
  resolveCaller: ResolveCaller;
  admission: Admission;
  saver: PointsSaver;
  log: FastifyBaseLogger;
}

/** What happened to a request on a proxied path, for its request event. */
export class ProxyOutcome {
  attempts = 0;
  bytesIn = 0;
  operation?: string;
  upstreamStatus?: number;
  upstreamMs?: number;
  /** How the points saver answered. */
  cache?: CacheResult;
  private readonly bytesBefore: number;

  constructor(
    /** The configured path. */
    readonly path: string,
    private readonly socket: { bytesWritten: number },
  ) {
    this.bytesBefore = socket.bytesWritten;
  }

  /**
   * Written to the client so far, headers included: read off the socket once the response is
   * done, so the streamed body is never tapped on its way through.
   */
  bytesOut(): number {
    return this.socket.bytesWritten - this.bytesBefore;
  }
}

/** A request on a proxied path, whichever parsed it: Fastify, or the fast path (fast-path.ts). */
export interface ProxiedRequest {
  readonly id: string;
  readonly method: string;
  readonly url: string;
  readonly headers: IncomingHttpHeaders;
  readonly raw: IncomingMessage;
  caller: Caller | null;
  proxyOutcome: ProxyOutcome | null;
  /** The error the proxy answered this request with, if it did. */
  proxyError: ProxyError | null;
}

/** How a proxied request is answered until the points saver takes the answer over. */
export interface ProxiedReply {
  readonly res: ServerResponse;
  /** Answers with the proxy's own error. */
  fail(error: ProxyError): void;
  /** Headers every answer to this request carries (a limit's RateLimit headers). */
  addHeaders(headers: Record<string, string>): void;
  /** From here the answer is written by hand; returns the headers set on it so far. */
  takeOver(): OutgoingHttpHeaders;
}

declare module 'fastify' {
  interface FastifyRequest {
    caller: Caller | null;
    proxyOutcome: ProxyOutcome | null;
  }
}

/** A Fastify reply as a ProxiedReply. */
class FastifyProxiedReply implements ProxiedReply {
  constructor(private readonly reply: FastifyReply) {}

  get res(): ServerResponse {
    return this.reply.raw;
  }

  fail(error: ProxyError): void {
    sendError(this.reply, error);
  }

  addHeaders(headers: Record<string, string>): void {
    this.reply.headers(headers);
  }

  takeOver(): OutgoingHttpHeaders {
    this.reply.hijack();
    return this.reply.getHeaders() as OutgoingHttpHeaders;
  }
}

/** The steps of a proxied request after routing: admission, then forwarding through the points saver. */
export class HttpForwarder {
  /** Upstream 402 and 429 answers, per key name and status, for the warning lines. */
  private readonly limitHits = new Map<string, number>();

  constructor(private readonly options: HttpProxyOptions) {}

  /**
   * The caller, then its per-minute limit: before the body is read. `next` is called
   * synchronously unless a limit applies; a refusal is answered through `reply`.
   */
  admit(request: ProxiedRequest, reply: ProxiedReply, path: string, next: (err?: Error) => void): void {
    const { config, resolveCaller, admission } = this.options;
    request.proxyOutcome = new ProxyOutcome(path, request.raw.socket);
    const caller = resolveCaller(request.raw);
    if (caller instanceof ProxyError) return reply.fail(caller);
    request.caller = caller;
    const limit = rateLimitOf(caller, config);
    if (limit === 0) return next();
    const { keyName } = caller;
    countRequest(admission, { keyName, address: request.raw.socket.remoteAddress ?? '' }, limit).then((answer) => {
      if (answer instanceof ProxyError) return reply.fail(answer);
      reply.addHeaders(answer);
      next();
    }, next);
  }

  /** Forwards an admitted request: its answer comes from the points saver's cache, a shared flight or its own exchange. */
  async forward(request: ProxiedRequest, body: Buffer | undefined, reply: ProxiedReply, path: string): Promise<void> {
    const { config, saver, log } = this.options;
    const { credentialSet, keyName, policy } = request.caller!;
    const tooMany = headerLimit(request.raw.rawHeaders);
    if (tooMany) return reply.fail(tooMany);
    const outcome = request.proxyOutcome!;
    outcome.bytesIn = body?.length ?? 0;
    const q = request.url.indexOf('?');
    const search = q === -1 ? '' : request.url.slice(q + 1);
    outcome.operation = operationName(body, search);

    const exchange = createExchange({
      credentialSet,
      method: request.method as Dispatcher.HttpMethod,
      target: path + withoutTokenParam(search),
      headers: upstreamRequestHeaderList(request.headers) as string[],
      body,
      timeouts: config,
      facts: outcome,
      log,
      reqId: request.id,
      keyName,
      limitHits: this.limitHits,
    });
    const base = reply.takeOver();
    const facts = { method: request.method, path, search, body, headers: request.headers, credentials: credentialSet.name, cacheTtlMs: policy.cacheTtlMs };
    const result = await saver.handle(facts, exchange, reply.res, base, {
      decided: (cache) => (outcome.cache = cache),
      failed: (error) => (request.proxyError = error),
    });
    if (result.cut) {
      log.warn(
        { reqId: request.id, maxBufferedBytes: config.savings.maxBufferedBytes },
        'the client fell more than COALESCE_MAX_BUFFERED_BYTES behind the others sharing its answer: connection cut',
      );
    }
  }
}

/** The proxied paths as Fastify routes: every request the fast path does not take. */
export async function httpProxy(app: FastifyInstance, options: { config: Config; forwarder: HttpForwarder }): Promise<void> {
  const { config, forwarder } = options;
  app.decorateRequest('caller', null);
  app.decorateRequest('proxyOutcome', null);

  // Every content type is taken as raw bytes and re-sent as it came (the points saver reads a
  // GraphQL request only to tell identical ones apart).
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', { parseAs: 'buffer', bodyLimit: config.bodyLimit }, (_req, body, done) => done(null, body));

  for (const path of config.paths) {
    const onRequest: onRequestHookHandler = (request, reply, done) => forwarder.admit(request, new FastifyProxiedReply(reply), path, done);
    app.route({
      method: ['GET', 'POST'],
      url: path,
      onRequest,
      handler: (request, reply) => forwarder.forward(request, request.body as Buffer | undefined, new FastifyProxiedReply(reply), path),
    });
    app.route({
      method: ['PUT', 'PATCH', 'DELETE'],
      url: path,
      onRequest,
      handler: (request, reply) =>
        sendError(reply, new ProxyError('method_not_allowed', `${request.method} is not proxied: use GET or POST`, { headers: { allow: 'GET, POST' } })),
    });
  }
}
