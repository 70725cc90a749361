// HTTP forwarding with the token injected and one retry on 401. The body is buffered (bounded
// by BODY_LIMIT) because a streamed body cannot be sent twice; the response streams through
// (relay.ts).
// Before anything goes upstream the caller is resolved (key, origin, credential set) and, when
// limits are set, admitted under its per-minute limit.
import type { OutgoingHttpHeaders } from 'node:http';
import type { FastifyInstance, FastifyReply, FastifyRequest, onRequestHookHandler } from 'fastify';
import type { Dispatcher } from 'undici';
import { countRequest, type Admission } from '../admission/index.js';
import type { Caller, ResolveCaller } from '../auth/caller.js';
import type { Config } from '../config/index.js';
import { ProxyError, sendError, upstreamFailure, writeError } from '../errors.js';
import { provesToken } from '../token/index.js';
import { headerLimit, upstreamRequestHeaderList, withoutTokenParam } from './headers.js';
import { operationName } from './operation.js';
import { ClientLink, relay, type RelayResult } from './relay.js';

export interface HttpProxyOptions {
  config: Config;
  resolveCaller: ResolveCaller;
  admission: Admission;
}

/** What happened to a request on a proxied path, for its request event. */
export class ProxyOutcome {
  attempts = 0;
  bytesIn = 0;
  operation?: string;
  upstreamStatus?: number;
  upstreamMs?: number;
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

/** A 401 body is a few bytes ("Unauthorized"); keep at most this much to pass it back. */
const MAX_401_BODY = 64 * 1024;

/** What Bitquery means by the statuses counted per key (see the README). */
const LIMIT_MEANING: Record<number, string> = {
  402: 'Bitquery points exhausted or no active billing period',
  429: 'Bitquery rate, session or stream limit reached (Too Many Sessions)',
};

export async function httpProxy(app: FastifyInstance, options: HttpProxyOptions): Promise<void> {
  const { config, resolveCaller, admission } = options;
  /** Upstream 402 and 429 answers, per key name and status, for the warning lines. */
  const limitHits = new Map<string, number>();

  app.decorateRequest('caller', null);
  app.decorateRequest('proxyOutcome', null);

  // Every content type is taken as raw bytes: the proxy never parses GraphQL, it only re-sends it.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', { parseAs: 'buffer', bodyLimit: config.bodyLimit }, (_req, body, done) => done(null, body));

  /** The caller, then its per-minute limit: before the body is read. Synchronous unless a limit applies. */
  const admitTo = (path: string): onRequestHookHandler => (request, reply, done) => {
    request.proxyOutcome = new ProxyOutcome(path, request.raw.socket);
    const caller = resolveCaller(request.raw);
    if (caller instanceof ProxyError) return void sendError(reply, caller);
    request.caller = caller;
    const limit = caller.policy.rateLimitPerMinute ?? config.rateLimitPerMinute;
    if (limit === 0) return done();
    const { keyName } = caller;
    countRequest(admission, { keyName, address: request.ip }, limit).then((answer) => {
      if (answer instanceof ProxyError) return void sendError(reply, answer);
      reply.headers(answer);
      done();
    }, done);
  };

  async function forward(request: FastifyRequest, reply: FastifyReply, path: string): Promise<FastifyReply | undefined> {
    const { credentialSet, keyName } = request.caller!;
    const tooMany = headerLimit(request.raw.rawHeaders);
    if (tooMany) return sendError(reply, tooMany);
    const body = request.body as Buffer | undefined;
    const outcome = request.proxyOutcome!;
    outcome.bytesIn = body?.length ?? 0;
    const q = request.url.indexOf('?');
    const search = q === -1 ? '' : request.url.slice(q + 1);
    outcome.operation = operationName(body, search);

    let token: string;
    try {
      token = await credentialSet.tokens.getToken(config.tokenWaitMs);
    } catch (err) {
      if (err instanceof ProxyError) return sendError(reply, err);
      throw err;
    }

    const target = path + withoutTokenParam(search);
    const headers = upstreamRequestHeaderList(request.headers);

    // From here the answer is written by hand, straight from undici's callbacks.
    reply.hijack();
    const client = new ClientLink(reply.raw, config.clientTimeoutMs, () =>
      request.log.warn({ clientTimeoutMs: config.clientTimeoutMs }, 'the client stopped reading the answer for CLIENT_TIMEOUT_MS: connection cut, upstream request released'),
    );
    const baseHeaders = reply.getHeaders() as OutgoingHttpHeaders;
    const send = async (bearer: string, hold?: number): Promise<RelayResult> => {
      let release: () => void;
      try {
        release = await credentialSet.slots.acquire();
      } catch (err) {
        return { kind: 'failed', error: err as Error, headersSent: false };
      }
      outcome.attempts += 1;
      const started = performance.now();
      return relay({
        upstream: credentialSet.upstream,
        request: {
          path: target,
          method: request.method as Dispatcher.HttpMethod,
          headers: ['authorization', `Bearer ${bearer}`, ...headers] as string[],
          body,
          headersTimeout: config.upstreamTimeoutMs,
          bodyTimeout: config.upstreamTimeoutMs,
        },
        client,
        baseHeaders,
        hold,
        holdLimit: MAX_401_BODY,
        onStatus: (status) => {
          if (provesToken(status)) credentialSet.tokens.tokenWorked(bearer);
          outcome.upstreamStatus = status;
          outcome.upstreamMs = Math.round((performance.now() - started) * 100) / 100;
        },
      }).finally(release);
    };

    const sentAt = performance.now();
    let result = await send(token, 401);
    if (result.kind === 'held') {
      // The 401 is kept so it can be passed back if no other token is to be had.
      const first = result;
      const fresh = await credentialSet.tokens.tokenRejected(token, config.tokenWaitMs, sentAt);
      if (client.gone) return;
      if (fresh === undefined) {
        reply.raw.writeHead(first.status, { ...baseHeaders, ...first.headers, 'content-length': first.body.length }).end(first.body);
        return;
      }
      result = await send(fresh);
    }
    if (result.kind === 'failed') {
      if (client.gone) return;
      const failure = result.error instanceof ProxyError ? result.error : upstreamFailure(result.error);
      request.log.warn({ reqId: request.id, upstreamError: failure.message }, 'upstream request failed');
      request.proxyError = failure;
      // Part of the answer is out: all the client can be told is that the rest will not come.
      if (result.headersSent) reply.raw.destroy();
      else writeError(reply.raw, failure, baseHeaders);
      return;
    }
    const meaning = LIMIT_MEANING[result.status];
    if (meaning) {
      const counter = `${keyName ?? ''} ${result.status}`;
      const count = (limitHits.get(counter) ?? 0) + 1;
      limitHits.set(counter, count);
      request.log.warn({ reqId: request.id, key: keyName, upstreamStatus: result.status, count }, `upstream answered ${result.status}: ${meaning}; passed to the client unchanged`);
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
