// HTTP forwarding with the token injected and one retry on 401. The body is buffered (bounded
// by BODY_LIMIT) because a streamed body cannot be sent twice; the response streams through
// (exchange.ts, relay.ts).
// Before anything goes upstream the caller is resolved (key, origin, credential set) and, when
// limits are set, admitted under its per-minute limit. Then the points saver (src/savings/)
// answers from its cache, joins an identical query in flight, or runs the exchange.
import type { OutgoingHttpHeaders } from 'node:http';
import type { FastifyInstance, FastifyReply, FastifyRequest, onRequestHookHandler } from 'fastify';
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

declare module 'fastify' {
  interface FastifyRequest {
    caller: Caller | null;
    proxyOutcome: ProxyOutcome | null;
  }
}

export async function httpProxy(app: FastifyInstance, options: HttpProxyOptions): Promise<void> {
  const { config, resolveCaller, admission, saver } = options;
  /** Upstream 402 and 429 answers, per key name and status, for the warning lines. */
  const limitHits = new Map<string, number>();

  app.decorateRequest('caller', null);
  app.decorateRequest('proxyOutcome', null);

  // Every content type is taken as raw bytes and re-sent as it came (the points saver reads a
  // GraphQL request only to tell identical ones apart).
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', { parseAs: 'buffer', bodyLimit: config.bodyLimit }, (_req, body, done) => done(null, body));

  /** The caller, then its per-minute limit: before the body is read. Synchronous unless a limit applies. */
  const admitTo = (path: string): onRequestHookHandler => (request, reply, done) => {
    request.proxyOutcome = new ProxyOutcome(path, request.raw.socket);
    const caller = resolveCaller(request.raw);
    if (caller instanceof ProxyError) return void sendError(reply, caller);
    request.caller = caller;
    const limit = rateLimitOf(caller, config);
    if (limit === 0) return done();
    const { keyName } = caller;
    countRequest(admission, { keyName, address: request.ip }, limit).then((answer) => {
      if (answer instanceof ProxyError) return void sendError(reply, answer);
      reply.headers(answer);
      done();
    }, done);
  };

  async function forward(request: FastifyRequest, reply: FastifyReply, path: string): Promise<void> {
    const { credentialSet, keyName, policy } = request.caller!;
    const tooMany = headerLimit(request.raw.rawHeaders);
    if (tooMany) return void sendError(reply, tooMany);
    const body = request.body as Buffer | undefined;
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
      log: request.log,
      reqId: request.id,
      keyName,
      limitHits,
      onError: (error) => (request.proxyError = error),
    });
    // From here the answer is written by hand: by the saver from its cache, or from the exchange.
    reply.hijack();
    const base = reply.getHeaders() as OutgoingHttpHeaders;
    const facts = { method: request.method, path, search, body, headers: request.headers, credentials: credentialSet.name, cacheTtlMs: policy.cacheTtlMs };
    const result = await saver.handle(facts, exchange, reply.raw, base, (cache) => (outcome.cache = cache));
    if (result.cut) {
      request.log.warn(
        { reqId: request.id, maxBufferedBytes: config.savings.maxBufferedBytes },
        'the client fell more than COALESCE_MAX_BUFFERED_BYTES behind the others sharing its answer: connection cut',
      );
    }
  }

  for (const path of config.paths) {
    const onRequest = admitTo(path);
    app.route({
      method: ['GET', 'POST'],
      url: path,
      onRequest,
      handler: (request, reply) => forward(request, reply, path),
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
