import { ProxyError } from '../errors.js';
import type { Events, TokenEvent } from '../events.js';

/** An access token and when it stops being usable. */
export interface Token {
  value: string;
  /** Epoch ms after which the token must not be sent; Infinity when the lifetime is unknown (static tokens). */
  expiresAt: number;
  /** Epoch ms when the token was asked for (the lifetime counts from here, to stay on the safe side). */
  obtainedAt: number;
}

export interface Readiness {
  ready: boolean;
  /** Why not ready, in words fit for a health probe (never a secret). */
  reason?: string;
  /** Seconds the held token stays valid; absent when unknown. */
  expiresInSec?: number;
}

/** Where a token holder publishes its token events: the daemon's Events, and its credential set's name. */
export interface TokenReport {
  events: Events;
  credentials: string;
}

/** Publishes one token event (built only when someone listens). */
export function reportToken(report: TokenReport | undefined, result: TokenEvent['result'], detail: Pick<TokenEvent, 'expiresAt' | 'reason'> = {}): void {
  if (report?.events.has('token')) report.events.emit('token', { credentials: report.credentials, result, ...detail });
}

/** What the proxy asks of a token holder, whatever the mode. */
export interface TokenProvider {
  start(): void;
  stop(): void;
  /**
   * A valid token, waiting up to `waitMs` for one. Rejects with TokenUnavailableError, at once when
   * no token request can end before then (none under way and the next one due later), else when
   * the wait is over.
   */
  getToken(waitMs: number): Promise<string>;
  /** The token held, when it can be used now without waiting; undefined otherwise (then getToken). */
  usableToken(): string | undefined;
  /**
   * The upstream accepted `token`: an HTTP answer for which provesToken() holds, or an opened
   * WebSocket. A 401 to a request sent before this was seen is then not taken as the token's fault.
   */
  tokenWorked(token: string): void;
  /**
   * The upstream answered 401 to `rejected`, on a request sent at `sentAt` (performance.now()).
   * Resolves to a different token worth one retry (fresh, or obtained meanwhile by another request),
   * or undefined when there is none, or when the token was seen to work since `sentAt`: the 401 was
   * then about that request, not the token, and no token request is made.
   */
  tokenRejected(rejected: string, waitMs: number, sentAt: number): Promise<string | undefined>;
  readiness(): Readiness;
}

/**
 * Whether an upstream answer shows that the token it carried was accepted: only a 2xx does.
 * Bitquery answers 403 to an expired token at some gateways, and other 4xx and 5xx can come from
 * a gateway before the token is looked at, so none of those is evidence either way.
 */
export function provesToken(status: number): boolean {
  return status >= 200 && status < 300;
}

/** No valid token could be had within the wait: answered 503. */
export class TokenUnavailableError extends ProxyError {
  override name = 'TokenUnavailableError';
  constructor(message: string) {
    super('token_unavailable', message);
  }
}

/**
 * A token request failed. `rejected` marks the endpoint refusing the credentials themselves
 * (400/401 such as invalid_client), which retrying soon will not fix.
 */
export class TokenRequestError extends Error {
  override name = 'TokenRequestError';
  constructor(
    message: string,
    readonly rejected = false,
  ) {
    super(message);
  }
}
