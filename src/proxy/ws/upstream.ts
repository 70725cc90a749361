// The upstream side of a handshake: one WebSocket attempt with the token, a second one after a
// 401 with a fresh token, and how a failed attempt is answered to the client.
import type { IncomingMessage } from 'node:http';
import { WebSocket } from 'ws';
import type { Caller } from '../../auth/caller.js';
import { presentedKey } from '../../auth/keys.js';
import { ProxyError, upstreamFailure } from '../../errors.js';
import { CappedChunks } from '../../read-capped.js';
import { clip, scrubSecrets } from '../../scrub.js';
import { withoutTokenParam } from '../headers.js';
import { upstreamHandshakeHeaders, wsOrigin } from './handshake.js';

/**
 * At most this much of an upstream refusal's body is read, and at most REFUSAL_TEXT_MAX characters
 * of it, scrubbed of secrets first, are quoted back in the JSON message: a secret cut by the read
 * limit starts beyond what is quoted.
 */
const REFUSAL_BODY_MAX = 4096;
const REFUSAL_TEXT_MAX = 200;
/** Retry-After as HTTP allows it: seconds or an HTTP date; anything else from the upstream is dropped. */
const RETRY_AFTER = /^(?:\d{1,10}|[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} GMT)$/;

/** How one upstream handshake attempt ended. */
type Outcome =
  | { kind: 'open' }
  | { kind: 'status'; status: number; body: string; retryAfter?: string }
  | { kind: 'error'; err: unknown }
  | { kind: 'timeout' };

interface Attempt {
  ws: WebSocket;
  outcome: Promise<Outcome>;
}

/** Opens the upstream WebSocket; the outcome never rejects and always settles within timeoutMs. */
function attempt(url: string, protocols: string[], headers: Record<string, string | string[]>, timeoutMs: number, maxPayload: number): Attempt {
  const ws = new WebSocket(url, protocols, { headers, perMessageDeflate: false, followRedirects: false, maxPayload });
  const outcome = new Promise<Outcome>((resolve) => {
    const timer = setTimeout(() => {
      resolve({ kind: 'timeout' });
      ws.terminate();
    }, timeoutMs);
    const settle = (o: Outcome) => {
      clearTimeout(timer);
      resolve(o);
    };
    // Errors after the outcome (a terminate during the handshake, a reset) are the stream's business.
    ws.on('error', (err) => settle({ kind: 'error', err }));
    ws.once('open', () => settle({ kind: 'open' }));
    ws.once('unexpected-response', (_req, res) => {
      const status = res.statusCode ?? 502;
      const retryAfter = res.headers['retry-after'];
      const kept = new CappedChunks(REFUSAL_BODY_MAX);
      const done = () => {
        settle({
          kind: 'status',
          status,
          body: kept.concat().toString('utf8'),
          ...(typeof retryAfter === 'string' && RETRY_AFTER.test(retryAfter) && { retryAfter }),
        });
        ws.terminate();
      };
      res.on('data', (chunk: Buffer) => {
        if (!kept.push(chunk)) done();
      });
      res.once('end', done);
      res.once('error', done);
      res.once('close', done);
    });
  });
  return { ws, outcome };
}

/**
 * What a failed attempt is answered with. Text from the upstream (its body, an error's message)
 * loses `secrets` (the tokens sent, the client secret, the client's key) before it is quoted: an
 * upstream or a proxy in between may echo the request URL, which holds `?token=`.
 */
function refusalOf(outcome: Exclude<Outcome, { kind: 'open' }>, secrets: readonly string[]): ProxyError {
  switch (outcome.kind) {
    case 'timeout':
      return new ProxyError('upstream_timeout', 'the upstream did not complete the WebSocket handshake in time (UPSTREAM_CONNECT_TIMEOUT_MS + UPSTREAM_TIMEOUT_MS, at most 10 s of the latter)');
    case 'error': {
      const failure = upstreamFailure(outcome.err);
      return new ProxyError(failure.code, clip(scrubSecrets(failure.message, secrets), REFUSAL_TEXT_MAX), { cause: outcome.err });
    }
    case 'status': {
      const { status } = outcome;
      const body = clip(scrubSecrets(outcome.body, secrets).replace(/[^\x20-\x7e]+/g, ' ').trim(), REFUSAL_TEXT_MAX);
      // A redirect would send the client to the upstream without a token; a 1xx/2xx is no handshake.
      const passed = status >= 400 && status <= 599 ? status : 502;
      const detail = body ? `: ${body}` : '';
      const message =
        status === 401
          ? `the upstream rejected the token (401) and no other token was to be had${detail}`
          : `the upstream refused the WebSocket handshake with ${status}${detail}`;
      return new ProxyError('upstream_rejected', message, { status: passed, ...(outcome.retryAfter && { headers: { 'Retry-After': outcome.retryAfter } }) });
    }
  }
}

export interface UpstreamRequest {
  caller: Caller;
  path: string;
  /** The client's query string, without the `?`. */
  query: string;
  protocols: string[];
  headers: IncomingMessage['headers'];
  tokenWaitMs: number;
  timeoutMs: number;
  /** Largest message taken from the upstream (WS_MAX_UPSTREAM_MESSAGE_BYTES). */
  maxPayload: number;
  /** True once the client has gone or the proxy is shutting down: nothing more is attempted. */
  abandoned(): boolean;
  /** The attempt under way, so that it can be terminated when the handshake is abandoned. */
  onAttempt(ws: WebSocket): void;
}

export type UpstreamResult = { ws: WebSocket; attempts: number } | { refusal: ProxyError } | { abandoned: true };

/**
 * Opens the upstream WebSocket for a handshake, with the credential set's token (as `?token=`,
 * Bitquery's documented way, and as `Authorization: Bearer`); one retry with a fresh token after
 * a 401. Rejects only on a bug (token errors other than ProxyError).
 */
export async function openUpstream(r: UpstreamRequest): Promise<UpstreamResult> {
  const { tokens, origin } = r.caller.credentialSet;
  let token: string;
  try {
    token = await tokens.getToken(r.tokenWaitMs);
  } catch (err) {
    if (r.abandoned()) return { abandoned: true };
    if (err instanceof ProxyError) return { refusal: err };
    throw err;
  }
  if (r.abandoned()) return { abandoned: true };

  const tried = [token];
  const rest = withoutTokenParam(r.query);
  const headers = upstreamHandshakeHeaders(r.headers);
  let current: WebSocket;
  // The URL holds the token: it is never logged, nor is any error message that could quote it.
  const connect = (bearer: string) => {
    const url = `${wsOrigin(origin)}${r.path}${rest ? `${rest}&` : '?'}token=${encodeURIComponent(bearer)}`;
    const a = attempt(url, r.protocols, { authorization: `Bearer ${bearer}`, ...headers }, r.timeoutMs, r.maxPayload);
    current = a.ws;
    r.onAttempt(a.ws);
    return a.outcome.then((outcome) => {
      if (outcome.kind === 'open') tokens.tokenWorked(bearer);
      return outcome;
    });
  };

  let attempts = 1;
  const sentAt = performance.now();
  let outcome = await connect(token);
  if (outcome.kind === 'status' && outcome.status === 401 && !r.abandoned()) {
    // Bitquery checks the token at the handshake only: a 401 here means this token is no good,
    // unless it was seen to work since (the 401 was then about this handshake).
    const fresh = await tokens.tokenRejected(token, r.tokenWaitMs, sentAt);
    if (fresh !== undefined && !r.abandoned()) {
      attempts += 1;
      tried.push(fresh);
      outcome = await connect(fresh);
    }
  }
  if (r.abandoned()) {
    current!.terminate();
    return { abandoned: true };
  }
  if (outcome.kind !== 'open') return { refusal: refusalOf(outcome, [...tried, ...r.caller.credentialSet.secrets(), presentedKey(r.headers) ?? '']) };
  return { ws: current!, attempts };
}
