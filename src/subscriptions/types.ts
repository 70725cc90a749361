// The narrow interfaces the sharing engine needs from the rest of the proxy, declared here so the
// engine depends on nothing but these: a token source per credential set, the caller's identity,
// and plain settings. The WebSocket proxy adapts its own Caller/Tenant to them when it hands a
// socket over.
import type { ReconnectReason } from '../events.js';
import type { ErrorLike } from './protocol.js';

export type { CapRefusalEvent, ReconnectEvent, ReconnectReason, SharedStreamClosedEvent, SharedStreamInfo } from '../events.js';

/** What the engine asks of a credential set's token holder (a subset of token/types.ts TokenProvider). */
export interface TokenSource {
  /** A valid token, waiting up to `waitMs`; rejects (TokenUnavailableError) when there is none. */
  getToken(waitMs: number): Promise<string>;
  /**
   * The upstream answered 401 to `rejected`, on a handshake sent at `sentAt` (performance.now()):
   * a different token worth one more try, or undefined.
   */
  tokenRejected(rejected: string, waitMs: number, sentAt: number): Promise<string | undefined>;
  /** The upstream accepted `token` (a handshake completed). */
  tokenWorked?(token: string): void;
}

/** Gives back a slot taken by `acquire`; the engine calls it exactly once. */
export type Release = () => void;

/** A slot taken under the key's cap, or why not. */
export type Acquired = Release | { refused: string };

/** Who subscribes: resolved from the handshake, or from the key in connection_init. */
export interface Principal {
  /** Credential set name: part of every stream's identity, and the unit of the stream cap. */
  credentials: string;
  tokens: TokenSource;
  /** Upstream origin (http(s)://host[:port]); streams go to the same path on its ws(s) twin. */
  origin: URL;
  /** The key's name, for logs (never the key itself). */
  key?: string;
  /**
   * Takes one of the key's subscription slots (per-key caps count subscriptions, shared or not).
   * Returns the release, or why not (a message naming the limit), at once or as a promise (a count
   * shared by replicas answers over the network; a rejection refuses the subscription with its
   * message). Absent: no per-key cap.
   */
  acquire?: () => Acquired | Promise<Acquired>;
}

/** A key presented in connection_init that does not open the door: the socket is closed with 4403. */
export interface KeyRefusal {
  refused: string;
}

/**
 * Resolves a key presented in connection_init (a browser cannot set headers on a WebSocket). Only
 * used for sockets handed over without a Principal.
 */
export type Authenticate = (presentedKey: string) => Principal | KeyRefusal;

export interface StreamCounts {
  /** Upstream sockets held (connecting, live, reconnecting or lingering). */
  upstreamStreams: number;
  /** Client subscriptions served by them. */
  subscriptions: number;
}

export interface SharingStats {
  /** Per credential set. Sets with nothing open are absent. */
  credentials: Record<string, StreamCounts>;
  /** Cumulative reconnects per credential set and reason. */
  reconnects: Record<string, Partial<Record<ReconnectReason, number>>>;
  /** Cumulative refusals of a new distinct subscription over WS_MAX_UPSTREAM_STREAMS, per credential set. */
  capRefusals: Record<string, number>;
  /** Client sockets served (initialising or ready). */
  clients: number;
}

/** What a stream tells each subscriber. Called synchronously; must not throw. */
export interface Subscriber {
  /** One event: the payload's JSON, UTF-8, shared by every subscriber (read only). */
  next(payload: Buffer): void;
  /** The stream ended with errors (upstream error, or the proxy gave up): this subscription is over. */
  fail(errors: readonly ErrorLike[]): void;
  /** The upstream completed the stream: this subscription is over. */
  complete(): void;
}

/** How an upstream stream connects, waits and gives up (part of WS_* settings). */
export interface UpstreamSettings {
  /** Reconnect after this long without any message from the upstream. */
  idleMs: number;
  /** Reconnect attempts in a row before subscribers get an error; 0 = none. */
  reconnectAttempts: number;
  /** The socket is closed this long after its last subscriber left; 0 = at once. */
  lingerMs: number;
  /** TCP+TLS connection and WebSocket handshake together. */
  connectTimeoutMs: number;
  tokenWaitMs: number;
  /** Largest upstream message; a larger one breaks the connection (and counts as a drop). */
  maxMessageBytes: number;
  /** Backoff: the first reconnect is immediate, then min, 2×min, … up to max, each with jitter (50–100%). */
  backoffMinMs: number;
  backoffMaxMs: number;
}
