// What a caller sees of the per-minute limit, the same for HTTP requests and WebSocket handshakes:
// the x-ratelimit-* headers on every answer, and the 429 with Retry-After once over the limit.
import { ProxyError } from '../errors.js';
import type { Admission, RateDecision, RateSubject } from './admission.js';

/** x-ratelimit-limit, -remaining and -reset of a decision (Retry-After goes on the refusal). */
function rateLimitHeaders(decision: RateDecision): Record<string, string> {
  return {
    'x-ratelimit-limit': String(decision.limit),
    'x-ratelimit-remaining': String(decision.remaining),
    'x-ratelimit-reset': String(decision.resetSec),
  };
}

/** "59 seconds", "1 minute": when a limited caller may come back, in words. */
function retryIn(seconds: number): string {
  const minutes = Math.round(seconds / 60);
  if (minutes > 0) return `${minutes} minute${minutes === 1 ? '' : 's'}`;
  return `${seconds} second${seconds === 1 ? '' : 's'}`;
}

/** The 429 of a refused decision, with the rate headers and Retry-After. */
function rateLimited(decision: RateDecision, keyName: string | undefined): ProxyError {
  const retryAfter = decision.retryAfterSec ?? decision.resetSec;
  const who = keyName === undefined ? '' : ` for the key "${keyName}"`;
  return new ProxyError('rate_limited', `${decision.limit} requests a minute${who}: retry in ${retryIn(retryAfter)}`, {
    headers: { ...rateLimitHeaders(decision), 'retry-after': String(retryAfter) },
  });
}

/**
 * Counts one request (or WebSocket handshake) of `subject` against `limit` a minute (0: no limit,
 * nothing counted): the 429 to answer when over it, else the headers to put on the answer.
 */
export async function countRequest(admission: Admission, subject: RateSubject, limit: number): Promise<ProxyError | Record<string, string>> {
  if (limit === 0) return {};
  const decision = await admission.take(subject, limit);
  return decision.allowed ? rateLimitHeaders(decision) : rateLimited(decision, subject.keyName);
}
