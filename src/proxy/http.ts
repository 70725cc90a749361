// HTTP forwarding with the token injected and one retry on 401. The body is buffered (bounded
// by BODY_LIMIT) because a streamed body cannot be sent twice; the response streams through.
// Before anything goes upstream the caller is resolved (key, origin, credential set) and, when
// limits are set, rate-limited.
import rateLimit from '@fastify/rate-limit';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Dispatcher } from 'undici';
import { isRefusal, type Caller, type ResolveCaller } from '../auth/caller.js';
import { readCapped } from '../read-capped.js';
import type { Config } from '../config.js';
import { TokenUnavailableError } from '../token/index.js';
import { sendError, upstreamFailure } from './errors.js';
import { clientResponseHeaders, upstreamRequestHeaders, withoutTokenParam } from './headers.js';
import { operationName } from './operation.js';

export interface HttpProxyOptions {
  config: Config;
  resolveCaller: ResolveCaller;
}

/** What happened upstream, for the access log line. */
export class ProxyOutcome {
  attempts = 0;
  operation?: string;
  upstreamStatus?: number;
  upstreamMs?: number;
  private readonly bytesBefore: number;

  constructor(
    private readonly socket: { bytesWritten: number },
    readonly bytesIn: number,
  ) {
    this.bytesBefore = socket.bytesWritten;
  }

  /**
   * The fields of the access line. Bytes out are read off the client socket once the response
   * is done (headers included), so the streamed body is never tapped on its way through.
   */
  fields() {
    const { attempts, operation, upstreamStatus, upstreamMs, bytesIn } = this;
    return { operation, upstreamStatus, attempts, upstreamMs, bytesIn, bytesOut: this.socket.bytesWritten - this.bytesBefore };
  }
}

declare module 'fastify' {
  interface FastifyRequest {
    caller: Caller | null;
    proxyOutcome: ProxyOutcome | null;
  }
}

/** A 401 body is a few bytes ("Unauthorized"); keep at most this much to pass it back. */
const MAX_401_BODY = 64 * 1024;

/** What Bitquery means by the statuses counted per key (see the README). */
const LIMIT_MEANING: Record<number, string> = {
  402: 'Bitquery points exhausted or no active billing period',
  429: 'Bitquery rate, session or stream limit reached (Too Many Sessions)',
};

/** The per-minute limit for a caller: its key's own, else RATE_LIMIT_PER_MINUTE; 0 = none. */
function limitOf(config: Config, request: FastifyRequest): number {
  return request.caller?.policy.rateLimitPerMinute ?? config.rateLimitPerMinute;
}

export async function httpProxy(app: FastifyInstance, options: HttpProxyOptions): Promise<void> {
  const { config, resolveCaller } = options;
  /** Upstream 402 and 429 answers, per key name and status, for the warning lines. */
  const limitHits = new Map<string, number>();

  app.decorateRequest('caller', null);
  app.decorateRequest('proxyOutcome', null);

  // Every content type is taken as raw bytes: the proxy never parses GraphQL, it only re-sends it.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', { parseAs: 'buffer', bodyLimit: config.bodyLimit }, (_req, body, done) => done(null, body));

  // Before the body is read and before anything goes upstream.
  app.addHook('onRequest', async (request, reply) => {
    const caller = resolveCaller(request.headers);
    if (isRefusal(caller)) return sendError(reply, caller.status, caller.error, caller.message);
    request.caller = caller;
  });

  const limited = config.rateLimitPerMinute > 0 || Object.values(config.keyPolicies).some((p) => p.rateLimitPerMinute);
  if (limited) {
    await app.register(rateLimit, {
      hook: 'preParsing',
      timeWindow: 60_000,
      keyGenerator: (request) => request.caller?.keyName ?? request.ip,
      allowList: (request) => limitOf(config, request) === 0,
      max: async (request) => limitOf(config, request),
      errorResponseBuilder: (request, context) => ({
        statusCode: 429,
        code: 'rate_limited',
        message: `${context.max} requests a minute${request.caller?.keyName ? ` for the key "${request.caller.keyName}"` : ''}: retry in ${context.after}`,
      }),
    });
  }

  async function forward(request: FastifyRequest, reply: FastifyReply, path: string): Promise<FastifyReply> {
    const { tenant, keyName } = request.caller!;
    const body = request.body as Buffer | undefined;
    const outcome = new ProxyOutcome(request.raw.socket, body?.length ?? 0);
    request.proxyOutcome = outcome;
    const q = request.url.indexOf('?');
    const search = q === -1 ? '' : request.url.slice(q + 1);
    outcome.operation = operationName(body, search);

    let token: string;
    try {
      token = await tenant.tokens.getToken(config.tokenWaitMs);
    } catch (err) {
      if (err instanceof TokenUnavailableError) return sendError(reply, 503, 'token_unavailable', err.message);
      throw err;
    }

    const target = path + withoutTokenParam(search);
    const headers = upstreamRequestHeaders(request.headers);

    // The upstream's work is wasted once the client has gone: abort it.
    const abort = new AbortController();
    reply.raw.once('close', () => {
      if (!reply.raw.writableFinished) abort.abort();
    });

    const send = (bearer: string) => {
      outcome.attempts += 1;
      const started = performance.now();
      return tenant.upstream
        .request({
          path: target,
          method: request.method as Dispatcher.HttpMethod,
          headers: { ...headers, authorization: `Bearer ${bearer}` },
          body,
          signal: abort.signal,
          headersTimeout: config.upstreamTimeoutMs,
          bodyTimeout: config.upstreamTimeoutMs,
        })
        .then((res) => {
          outcome.upstreamStatus = res.statusCode;
          outcome.upstreamMs = Math.round((performance.now() - started) * 100) / 100;
          return res;
        });
    };

    let res: Dispatcher.ResponseData;
    try {
      res = await send(token);
      if (res.statusCode === 401) {
        // Keep the 401 so it can be passed back if no other token is to be had.
        const first = res;
        const firstBody = await readCapped(first.body, MAX_401_BODY);
        const fresh = await tenant.tokens.tokenRejected(token, config.tokenWaitMs);
        if (fresh === undefined) {
          return reply.code(401).headers(clientResponseHeaders(first.headers)).removeHeader('content-length').send(firstBody);
        }
        res = await send(fresh);
      }
    } catch (err) {
      if (abort.signal.aborted) return reply;
      const failure = upstreamFailure(err);
      request.log.warn({ upstreamError: failure.message }, 'upstream request failed');
      return sendError(reply, failure.status, failure.error, failure.message);
    }
    const meaning = LIMIT_MEANING[res.statusCode];
    if (meaning) {
      const counter = `${keyName ?? ''} ${res.statusCode}`;
      const count = (limitHits.get(counter) ?? 0) + 1;
      limitHits.set(counter, count);
      request.log.warn({ key: keyName, upstreamStatus: res.statusCode, count }, `upstream answered ${res.statusCode}: ${meaning}; passed to the client unchanged`);
    }
    return reply.code(res.statusCode).headers(clientResponseHeaders(res.headers)).send(res.body);
  }

  for (const path of config.paths) {
    app.route({
      method: ['GET', 'POST'],
      url: path,
      handler: (request, reply) => forward(request, reply, path),
    });
    app.route({
      method: ['PUT', 'PATCH', 'DELETE'],
      url: path,
      handler: (request, reply) =>
        sendError(reply.header('allow', 'GET, POST'), 405, 'method_not_allowed', `${request.method} is not proxied: use GET or POST`),
    });
  }
}
