// HTTP forwarding with the token injected and one retry on 401. The body is buffered (bounded
// by BODY_LIMIT) because a streamed body cannot be sent twice; the response streams through.
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Dispatcher } from 'undici';
import type { Config } from '../config.js';
import { TokenUnavailableError, type TokenProvider } from '../token/index.js';
import { sendError, upstreamFailure } from './errors.js';
import { clientResponseHeaders, upstreamRequestHeaders, withoutTokenParam } from './headers.js';

export interface HttpProxyOptions {
  config: Config;
  tokens: TokenProvider;
  /** A keep-alive pool bound to the upstream origin. */
  upstream: Dispatcher;
}

/** What happened upstream, for the access log line. */
export interface ProxyOutcome {
  attempts: number;
  upstreamStatus?: number;
  upstreamMs?: number;
}

declare module 'fastify' {
  interface FastifyRequest {
    proxyOutcome: ProxyOutcome | null;
  }
}

/** A 401 body is a few bytes ("Unauthorized"); keep at most this much to pass it back. */
const MAX_401_BODY = 64 * 1024;

async function readCapped(body: Dispatcher.ResponseData['body'], limit: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of body) {
    if (size + (chunk as Buffer).length > limit) {
      body.destroy();
      break;
    }
    size += (chunk as Buffer).length;
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks);
}

export async function httpProxy(app: FastifyInstance, options: HttpProxyOptions): Promise<void> {
  const { config, tokens, upstream } = options;

  app.decorateRequest('proxyOutcome', null);

  // Every content type is taken as raw bytes: the proxy never parses GraphQL, it only re-sends it.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', { parseAs: 'buffer', bodyLimit: config.bodyLimit }, (_req, body, done) => done(null, body));

  async function forward(request: FastifyRequest, reply: FastifyReply, path: string): Promise<FastifyReply> {
    const outcome: ProxyOutcome = { attempts: 0 };
    request.proxyOutcome = outcome;

    let token: string;
    try {
      token = await tokens.getToken(config.tokenWaitMs);
    } catch (err) {
      if (err instanceof TokenUnavailableError) return sendError(reply, 503, 'token_unavailable', err.message);
      throw err;
    }

    const q = request.url.indexOf('?');
    const target = path + withoutTokenParam(q === -1 ? '' : request.url.slice(q + 1));
    const headers = upstreamRequestHeaders(request.headers);
    const body = request.body as Buffer | undefined;

    // The upstream's work is wasted once the client has gone: abort it.
    const abort = new AbortController();
    reply.raw.once('close', () => {
      if (!reply.raw.writableFinished) abort.abort();
    });

    const send = (bearer: string) => {
      outcome.attempts += 1;
      const started = performance.now();
      return upstream
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
        const fresh = await tokens.tokenRejected(token, config.tokenWaitMs);
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
