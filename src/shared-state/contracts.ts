// The narrow shapes the Redis side implements or falls back to. They mirror the admission
// interface (rate limit and per-key stream cap, in memory), the response cache's store and the
// usage counters, so each Redis part can stand in for its in-memory twin.

/** Who a rate limit counts: the key's name, else the client address (no keys configured). */
export interface AdmissionSubject {
  keyName?: string;
  address: string;
}

/** One rate-limit answer, the same whichever limiter gave it (so HTTP answers the same 429). */
export interface RateDecision {
  allowed: boolean;
  limit: number;
  remaining: number;
  /** Seconds until the current window ends. */
  resetSec: number;
  /** Set when refused: seconds to wait (Retry-After). */
  retryAfterSec?: number;
}

export interface Admission {
  /** Counts one request against `limitPerMinute` (a fixed 60 s window). */
  take(subject: AdmissionSubject, limitPerMinute: number): Promise<RateDecision>;
  /** A slot among `cap` concurrent streams of the key: its release function, or undefined when full. */
  acquireStream(keyName: string, cap: number): Promise<(() => void) | undefined>;
}

/** One cached upstream answer. */
export interface CachedAnswer {
  status: number;
  headers: Record<string, string | string[]>;
  body: Buffer;
  /** Epoch ms when it was stored. */
  storedAt: number;
}

/** The usage counted per key name. */
export interface UsageCounts {
  requests: number;
  /** Upstream 402 answers (points exhausted). */
  status402: number;
  /** 429 answers (upstream's or the proxy's own limit). */
  status429: number;
  /** Requests answered without going upstream (cache hits, coalesced). */
  saved: number;
}

/** Thrown by the shared limits in REDIS_FAILURE=closed mode while Redis is unavailable: answer 503. */
export class SharedStateUnavailableError extends Error {
  override name = 'SharedStateUnavailableError';
  readonly code = 'shared_state_unavailable';
  readonly statusCode = 503;
  constructor() {
    super('the shared limits store (Redis) is unavailable and REDIS_FAILURE=closed: try again shortly');
  }
}
