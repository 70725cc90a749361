// Holds the client-credentials token: fetches it at start, renews it ahead of expiry, retries
// failures with capped backoff, and makes sure only one token request is ever in flight.
import type { Logger } from 'pino';
import { setLongTimeout, type LongTimer } from './timer.js';
import { reportToken, TokenRequestError, TokenUnavailableError, type Readiness, type Token, type TokenProvider, type TokenReport } from './types.js';

export interface TokenFetcher {
  fetch(): Promise<Token>;
  /** Calls `onChange` when the credentials change (a rotated secret file); returns a closer. */
  watchCredentials?(onChange: () => void): { close(): void } | undefined;
}

export interface RefresherOptions {
  source: TokenFetcher;
  logger: Logger;
  /** Where token events go (none in tests that do not listen). */
  report?: TokenReport;
  /** Renew when this fraction of the lifetime is left, plus up to half of it again as jitter. */
  refreshMargin: number;
  retryMinMs: number;
  retryMaxMs: number;
  /** Delay after the endpoint rejected the credentials: retrying sooner only adds noise. */
  rejectedRetryMs: number;
  /** Random source in [0, 1); tests pin it. */
  random?: () => number;
}

/**
 * Renewals forced by 401s are at most this frequent: an upstream that rejects every token must
 * not drive one token request per client request.
 */
const MIN_FORCED_RENEWAL_INTERVAL_MS = 1000;

/** Stop sending a token this close to its expiry: it could expire on the way. Capped at 5% of the lifetime. */
const EXPIRY_SKEW_MS = 10_000;

export function isUsable(token: Token, now = Date.now()): boolean {
  const skew = Math.min(EXPIRY_SKEW_MS, (token.expiresAt - token.obtainedAt) * 0.05);
  return now < token.expiresAt - skew;
}

/**
 * When to renew: after (1 - margin) of the lifetime, minus up to margin/2 of jitter, so renewals
 * of many replicas spread out and a margin always remains. Scales from minutes to 30 days.
 * The margin is at most 0.5 (config), so this is at least a quarter of the lifetime.
 */
export function renewalDelayMs(lifetimeMs: number, margin: number, random: () => number): number {
  return lifetimeMs * (1 - margin - (margin / 2) * random());
}

/** Capped exponential backoff with jitter in [delay/2, delay). */
export function backoffMs(failures: number, minMs: number, maxMs: number, random: () => number): number {
  const delay = Math.min(maxMs, minMs * 2 ** Math.min(failures - 1, 30));
  return delay / 2 + (delay / 2) * random();
}

export class TokenRefresher implements TokenProvider {
  private current?: Token;
  private inflight?: Promise<Token>;
  private timer?: LongTimer;
  private failures = 0;
  private lastError?: string;
  /** Set while waiting out a backoff: requests then wait for the scheduled attempt instead of forcing one. */
  private backingOff = false;
  /** When the scheduled token request is due (epoch ms); Infinity when none is. */
  private nextAttemptAt = Infinity;
  /** When the upstream last accepted the current token (performance.now()). */
  private workedAt = -Infinity;
  private stopped = false;
  private lastForcedAt = -Infinity;
  /** Credentials changed while a request was in flight with the old ones: request again after it. */
  private renewAgain = false;
  private credentialsWatch?: { close(): void };
  /** Requests waiting for the token request under way to settle. */
  private readonly waiters = new Set<() => void>();
  private readonly random: () => number;

  constructor(private readonly options: RefresherOptions) {
    this.random = options.random ?? Math.random;
  }

  start(): void {
    this.credentialsWatch ??= this.options.source.watchCredentials?.(() => this.credentialsChanged());
    this.kick();
  }

  stop(): void {
    this.stopped = true;
    this.timer?.cancel();
    this.credentialsWatch?.close();
  }

  /** A token request in the background; its outcome is logged and rescheduled inside fetchOnce(). */
  private kick(): void {
    this.refresh().catch(() => undefined);
  }

  /** A rotated secret is used at once: the held token stays valid, but a rejected streak must not wait out its backoff. */
  private credentialsChanged(): void {
    this.options.logger.info('the client secret changed: requesting a token with it');
    this.failures = 0;
    if (this.inflight) this.renewAgain = true;
    else this.kick();
  }

  readiness(): Readiness {
    const token = this.current;
    if (token && isUsable(token)) {
      return { ready: true, expiresInSec: Math.floor((token.expiresAt - Date.now()) / 1000) };
    }
    return { ready: false, reason: this.lastError ? `no valid token: ${this.lastError}` : 'no valid token yet: the first token request is under way' };
  }

  /** Single flight: every caller during a request shares it. */
  private refresh(): Promise<Token> {
    this.inflight ??= this.fetchOnce().finally(() => {
      this.inflight = undefined;
      for (const wake of this.waiters) wake();
      this.waiters.clear();
      if (this.renewAgain) {
        this.renewAgain = false;
        this.kick();
      }
    });
    return this.inflight;
  }

  private async fetchOnce(): Promise<Token> {
    this.timer?.cancel();
    this.backingOff = false;
    this.nextAttemptAt = Infinity;
    const { logger } = this.options;
    logger.debug('requesting a token');
    try {
      const token = await this.options.source.fetch();
      this.current = token;
      this.workedAt = -Infinity;
      this.failures = 0;
      this.lastError = undefined;
      const lifetimeMs = token.expiresAt - token.obtainedAt;
      const delay = renewalDelayMs(lifetimeMs, this.options.refreshMargin, this.random);
      logger.info({ expiresInSec: Math.round(lifetimeMs / 1000), renewInSec: Math.round(delay / 1000) }, 'obtained a token');
      reportToken(this.options.report, 'ok', { expiresAt: token.expiresAt });
      this.schedule(delay);
      return token;
    } catch (err) {
      this.failures += 1;
      const rejected = err instanceof TokenRequestError && err.rejected;
      this.lastError = (err as Error).message;
      const { retryMinMs, retryMaxMs, rejectedRetryMs } = this.options;
      const delay = rejected ? rejectedRetryMs : backoffMs(this.failures, retryMinMs, retryMaxMs, this.random);
      const stillValid = this.current !== undefined && isUsable(this.current);
      const log = { failures: this.failures, retryInMs: Math.round(delay), serving: stillValid ? 'current token' : 'nothing' };
      if (rejected) {
        logger.error(log, `${this.lastError}: check BITQUERY_CLIENT_ID and BITQUERY_CLIENT_SECRET`);
      } else {
        logger.warn(log, `token request failed: ${this.lastError}`);
      }
      reportToken(this.options.report, rejected ? 'rejected' : 'failed', { reason: this.lastError });
      this.backingOff = true;
      this.schedule(delay);
      throw err;
    }
  }

  private schedule(delayMs: number): void {
    this.timer?.cancel();
    this.nextAttemptAt = Infinity;
    if (this.stopped) return;
    this.nextAttemptAt = Date.now() + delayMs;
    this.timer = setLongTimeout(() => this.kick(), delayMs);
  }

  usableToken(): string | undefined {
    const token = this.current;
    return token && isUsable(token) ? token.value : undefined;
  }

  async getToken(waitMs: number): Promise<string> {
    const deadline = Date.now() + waitMs;
    for (;;) {
      const usable = this.usableToken();
      if (usable !== undefined) return usable;
      // Expired without a failure pending, or a retry overdue (a laptop woke from sleep; timers did not run): renew now.
      if (!this.inflight && (!this.backingOff || this.nextAttemptAt <= Date.now())) this.kick();
      const left = deadline - Date.now();
      // Waiting helps only when a token request is under way or due before the deadline.
      if (left <= 0 || (!this.inflight && this.nextAttemptAt >= deadline)) throw this.unavailable();
      await this.nextSettle(left);
    }
  }

  private unavailable(): TokenUnavailableError {
    if (!this.lastError) return new TokenUnavailableError('no valid Bitquery token yet');
    const next = this.nextAttemptAt === Infinity ? '' : `; next token request in ${Math.max(1, Math.ceil((this.nextAttemptAt - Date.now()) / 1000))} s`;
    return new TokenUnavailableError(`no valid Bitquery token: ${this.lastError}${next}`);
  }

  /** Resolves when a token request settles or after `ms`, whichever is first; leaves nothing behind. */
  private nextSettle(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.waiters.delete(done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.waiters.add(done);
    });
  }

  tokenWorked(token: string): void {
    if (this.current?.value === token) this.workedAt = performance.now();
  }

  async tokenRejected(rejected: string, waitMs: number, sentAt: number): Promise<string | undefined> {
    const current = this.current;
    if (current && current.value !== rejected && isUsable(current)) return current.value;
    // Past its expiry the token explains the 401 (the request waited, for a connection or a slow
    // upstream, while the token ran out): wait below for the next one, due or under way.
    if (current?.value === rejected && isUsable(current)) {
      if (this.workedAt >= sentAt) {
        this.options.logger.debug('upstream answered 401 although the token worked since the request was sent: not renewing');
        return undefined;
      }
      if (Date.now() - this.lastForcedAt < MIN_FORCED_RENEWAL_INTERVAL_MS) return undefined;
      this.lastForcedAt = Date.now();
      this.options.logger.info('upstream rejected the token (401): renewing it');
      this.current = undefined;
      if (!this.inflight) this.kick();
    }
    try {
      const token = await this.getToken(waitMs);
      return token === rejected ? undefined : token;
    } catch {
      return undefined;
    }
  }
}

