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
import { relay, type RelayListener, type RelayResult } from './relay.js';

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
}

function answerError(sink: AnswerSink, error: ProxyError): void {
  const { status, headers, body } = errorAnswer(error);
  sink.head(status, headers);
  sink.write(body);
  sink.end();
}

/**
 * One exchange as an object, so that a request costs one allocation for it rather than a closure
 * per step. With a token held and an upstream slot free (the usual case) it goes upstream without
 * waiting for a turn of the event loop.
 */
class UpstreamExchange implements RelayListener {
  /** The token of the attempt under way. */
  private bearer = '';
  /** When the attempt under way was sent (performance.now()). */
  private sentAt = 0;

  constructor(private readonly options: ExchangeOptions) {}

  readonly run = async (sink: AnswerSink): Promise<void> => {
    const { credentialSet, timeouts } = this.options;
    let token = credentialSet.tokens.usableToken();
    if (token === undefined) {
      try {
        token = await credentialSet.tokens.getToken(timeouts.tokenWaitMs);
      } catch (err) {
        if (!(err instanceof ProxyError)) throw err;
        sink.proxyError(err);
        return answerError(sink, err);
      }
      if (sink.gone) return;
    }
    const sentAt = performance.now();
    let result = await this.send(sink, token, 401);
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
      result = await this.send(sink, fresh);
    }
    if (result.kind === 'relayed') return this.warnLimit(result.status);
    // 'cut': no client read the answer, and all were cut (logged by onReadTimeout).
    if (result.kind !== 'failed' || sink.gone) return;
    const failure = result.error instanceof ProxyError ? result.error : upstreamFailure(result.error);
    this.options.log.warn({ reqId: this.options.reqId, upstreamError: failure.message }, 'upstream request failed');
    sink.proxyError(failure);
    // Part of the answer is out: all the clients can be told is that the rest will not come.
    if (result.headersSent) sink.destroy();
    else answerError(sink, failure);
  };

  onStatus(status: number): void {
    const { credentialSet, facts } = this.options;
    if (provesToken(status)) credentialSet.tokens.tokenWorked(this.bearer);
    facts.upstreamStatus = status;
    facts.upstreamMs = Math.round((performance.now() - this.sentAt) * 100) / 100;
  }

  onReadTimeout(): void {
    const { log, reqId, timeouts } = this.options;
    log.warn({ reqId, clientTimeoutMs: timeouts.clientTimeoutMs }, 'the client stopped reading the answer for CLIENT_TIMEOUT_MS: connection cut, upstream request released');
  }

  /** One attempt, through an upstream slot (at once when one is free). */
  private send(sink: AnswerSink, bearer: string, hold?: number): Promise<RelayResult> {
    const { slots } = this.options.credentialSet;
    const release = slots.tryAcquire();
    if (release) return this.attempt(sink, bearer, hold, release);
    return slots.acquire().then(
      (granted) => this.attempt(sink, bearer, hold, granted),
      (err: unknown): RelayResult => ({ kind: 'failed', error: err as Error, headersSent: false }),
    );
  }

  private attempt(sink: AnswerSink, bearer: string, hold: number | undefined, release: () => void): Promise<RelayResult> {
    const { options } = this;
    options.facts.attempts += 1;
    this.bearer = bearer;
    this.sentAt = performance.now();
    return relay({
      upstream: options.credentialSet.upstream,
      request: {
        path: options.target,
        method: options.method,
        headers: ['authorization', `Bearer ${bearer}`, ...options.headers],
        body: options.body,
        headersTimeout: options.timeouts.upstreamTimeoutMs,
        bodyTimeout: options.timeouts.upstreamTimeoutMs,
      },
      sink,
      hold,
      holdLimit: MAX_401_BODY,
      readTimeoutMs: options.timeouts.clientTimeoutMs,
      listener: this,
      release,
    });
  }

  private warnLimit(status: number): void {
    const meaning = LIMIT_MEANING[status];
    if (!meaning) return;
    const { keyName, limitHits, log, reqId } = this.options;
    const counter = `${keyName ?? ''} ${status}`;
    const count = (limitHits.get(counter) ?? 0) + 1;
    limitHits.set(counter, count);
    log.warn({ reqId, key: keyName, upstreamStatus: status, count }, `upstream answered ${status}: ${meaning}; passed to the client unchanged`);
  }
}

export function createExchange(options: ExchangeOptions): Exchange {
  return new UpstreamExchange(options).run;
}
