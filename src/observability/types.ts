// What the observability parts need from the rest of the daemon, and nothing more: a credential
// set's name, mode and token holder. The daemon's own types satisfy these structurally.

/** A token holder's state, as the readiness probe reports it. */
export interface TokenReadiness {
  ready: boolean;
  /** Why not ready, in words that hold no secret. */
  reason?: string;
  /** Seconds the held token stays valid; absent when unknown (static tokens). */
  expiresInSec?: number;
}

export interface ObservedTokens {
  readiness(): TokenReadiness;
  /** A valid token, waiting up to `waitMs` for one; rejects when there is none. */
  getToken(waitMs: number): Promise<string>;
}

/** One configured credential set. */
export interface ObservedSet {
  readonly name: string;
  /** `client_credentials` or `static` today; the Usage API is polled only for these two. */
  readonly mode: string;
  readonly tokens: ObservedTokens;
}
