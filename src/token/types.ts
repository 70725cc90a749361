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
  /** A valid token, waiting up to `waitMs` for one; rejects with TokenUnavailableError. */
  getToken(waitMs: number): Promise<string>;
  /**
   * The upstream answered 401 to `rejected`. Resolves to a different token worth one retry
   * (fresh, or obtained meanwhile by another request), or undefined when there is none.
   */
  tokenRejected(rejected: string, waitMs: number): Promise<string | undefined>;
  readiness(): Readiness;
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
