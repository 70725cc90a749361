// One upstream exchange of a proxied request, written into an AnswerSink (src/savings/flight.ts):
// the token wait, the attempt through an upstream slot, the retry with a fresh token after a 401,
// and the proxy's own error answer when there is no upstream answer to give. The points saver
// runs it at most once per distinct query in flight, so one token wait and one 401 retry serve
// every client sharing the answer; a cache hit runs none and needs no token.
import type { FastifyBaseLogger } from 'fastify';
import type { Dispatcher } from 'undici';
import type { CredentialSet } from '../credential-set.js';
import { errorAnswer, ProxyError, upstreamFailure } from '../errors.js';
import type { AnswerSink, Exchange } from '../savings/flight.js';
import { provesToken } from '../token/index.js';
import { relay, type RelayResult } from './relay.js';

/** A 401 body is a few bytes ("Unauthorized"); keep at most this much to pass it back. */
const MAX_401_BODY = 64 * 1024;

/** What Bitquery means by the statuses counted per key (see the README). */
const LIMIT_MEANING: Record<number, string> = {
  402: 'Bitquery points exhausted or no active billing period',
  429: 'Bitquery rate, session or stream limit reached (Too Many Sessions)',
};

/** The facts of the upstream attempts, for the request event of the client that led the exchange. */
export interface AttemptFacts {
  attempts: number;
  upstreamStatus?: number;
  upstreamMs?: number;
}

export interface ExchangeOptions {
  credentialSet: CredentialSet;
  method: Dispatcher.HttpMethod;
  /** Path and query string as sent upstream (no token parameter). */
  target: string;
  /** Request headers for upstream, without Authorization (put first for each attempt). */
  headers: string[];
  body: Buffer | undefined;
  timeouts: { tokenWaitMs: number; upstreamTimeoutMs: number; clientTimeoutMs: number };
  facts: AttemptFacts;
  log: FastifyBaseLogger;
  reqId: string;
  keyName?: string;
  /** Upstream 402 and 429 answers per key name and status, for the warning lines. */
  limitHits: Map<string, number>;
  /** The proxy answered with its own error (no token, upstream unreachable or too slow). */
  onError(error: ProxyError): void;
}

function answerError(sink: AnswerSink, error: ProxyError): void {
  const { status, headers, body } = errorAnswer(error);
  sink.head(status, headers);
  sink.write(body);
  sink.end();
}

export function createExchange(options: ExchangeOptions): Exchange {
  const { credentialSet, timeouts, facts, log, reqId } = options;

  const send = async (sink: AnswerSink, bearer: string, hold?: number): Promise<RelayResult> => {
    let release: () => void;
    try {
      release = await credentialSet.slots.acquire();
    } catch (err) {
      return { kind: 'failed', error: err as Error, headersSent: false };
    }
    facts.attempts += 1;
    const started = performance.now();
    return relay({
      upstream: credentialSet.upstream,
      request: {
        path: options.target,
        method: options.method,
        headers: ['authorization', `Bearer ${bearer}`, ...options.headers],
        body: options.body,
        headersTimeout: timeouts.upstreamTimeoutMs,
        bodyTimeout: timeouts.upstreamTimeoutMs,
      },
      sink,
      hold,
      holdLimit: MAX_401_BODY,
      readTimeoutMs: timeouts.clientTimeoutMs,
      onReadTimeout: () =>
        log.warn({ reqId, clientTimeoutMs: timeouts.clientTimeoutMs }, 'the client stopped reading the answer for CLIENT_TIMEOUT_MS: connection cut, upstream request released'),
      onStatus: (status) => {
        if (provesToken(status)) credentialSet.tokens.tokenWorked(bearer);
        facts.upstreamStatus = status;
        facts.upstreamMs = Math.round((performance.now() - started) * 100) / 100;
      },
    }).finally(release);
  };

  const warnLimit = (status: number) => {
    const meaning = LIMIT_MEANING[status];
    if (!meaning) return;
    const counter = `${options.keyName ?? ''} ${status}`;
    const count = (options.limitHits.get(counter) ?? 0) + 1;
    options.limitHits.set(counter, count);
    log.warn({ reqId, key: options.keyName, upstreamStatus: status, count }, `upstream answered ${status}: ${meaning}; passed to the client unchanged`);
  };

  return async (sink) => {
    let token: string;
    try {
      token = await credentialSet.tokens.getToken(timeouts.tokenWaitMs);
    } catch (err) {
      if (!(err instanceof ProxyError)) throw err;
      options.onError(err);
      return answerError(sink, err);
    }
    if (sink.gone) return;
    const sentAt = performance.now();
    let result = await send(sink, token, 401);
    if (result.kind === 'held') {
      // The 401 is kept so it can be passed back if no other token is to be had.
      const first = result;
      const fresh = await credentialSet.tokens.tokenRejected(token, timeouts.tokenWaitMs, sentAt);
      if (sink.gone) return;
      if (fresh === undefined) {
        sink.head(first.status, { ...first.headers, 'content-length': String(first.body.length) });
        sink.write(first.body);
        return sink.end();
      }
      result = await send(sink, fresh);
    }
    if (result.kind === 'relayed') return warnLimit(result.status);
    // 'cut': no client read the answer, and all were cut (logged by onReadTimeout).
    if (result.kind !== 'failed' || sink.gone) return;
    const failure = result.error instanceof ProxyError ? result.error : upstreamFailure(result.error);
    log.warn({ reqId, upstreamError: failure.message }, 'upstream request failed');
    options.onError(failure);
    // Part of the answer is out: all the clients can be told is that the rest will not come.
    if (result.headersSent) sink.destroy();
    else answerError(sink, failure);
  };
}
