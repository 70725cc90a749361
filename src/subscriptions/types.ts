// The narrow interfaces the sharing engine needs from the rest of the proxy, declared here so the
// engine depends on nothing but these: a token source per credential set, the caller's identity,
// and plain settings. The WebSocket proxy adapts its own Caller/Tenant to them when it hands a
// socket over.
import type { ErrorLike } from './protocol.js';

/** What the engine asks of a credential set's token holder (a subset of token/types.ts TokenProvider). */
export interface TokenSource {
  /** A valid token, waiting up to `waitMs`; rejects (TokenUnavailableError) when there is none. */
  getToken(waitMs: number): Promise<string>;
  /** The upstream answered 401 to `rejected`: a different token worth one more try, or undefined. */
  tokenRejected(rejected: string, waitMs: number): Promise<string | undefined>;
}

/** Gives back a slot taken by `acquire`; the engine calls it exactly once. */
export type Release = () => void;

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
   * Returns the release, or why not (a message naming the limit). Absent: no per-key cap.
   */
  acquire?: () => Release | { refused: string };
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

/** Why an upstream stream was reconnected (the metric label). */
export type ReconnectReason =
  /** No message at all for `idleMs`. */
  | 'idle'
  /** The socket closed or broke without the proxy asking. */
  | 'dropped'
  /** The handshake did not complete within the connect timeout. */
  | 'timeout'
  /** The upstream could not be reached (refused, reset, DNS, TLS). */
  | 'unreachable'
  /** 401 at the handshake: the token was rejected. */
  | 'unauthorized'
  /** Another retryable handshake status (408, 429, 5xx). */
  | 'refused'
  /** connection_error instead of connection_ack. */
  | 'connection_error'
  /** No token within the token wait. */
  | 'token_unavailable';

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

/** One upstream stream, as published when it opens and when it ends. */
export interface SharedStreamInfo {
  stream: number;
  credentials: string;
  path: string;
  operationName?: string;
}

export interface SharedStreamClosedEvent extends SharedStreamInfo {
  ms: number;
  /** Distinct client subscriptions it served over its life. */
  subscribers: number;
  /** Most at once. */
  peakSubscribers: number;
  /** Events received from the upstream (each delivered to every subscriber then). */
  events: number;
  reconnects: number;
  /**
   * unused: the last subscriber left and the linger ran out; upstream_complete / upstream_error:
   * Bitquery ended it; failed: reconnect attempts exhausted or a refusal not worth retrying;
   * shutdown.
   */
  cause: 'unused' | 'upstream_complete' | 'upstream_error' | 'failed' | 'shutdown';
}

export interface ReconnectEvent {
  credentials: string;
  reason: ReconnectReason;
}

export interface CapRefusalEvent {
  credentials: string;
  /** credentials: WS_MAX_UPSTREAM_STREAMS for the set; key: the key's own subscription limit. */
  scope: 'credentials' | 'key';
  key?: string;
}

// The events the engine publishes on the daemon's bus. Declared by augmentation so the shared
// events.ts is untouched until the wiring; they can move into its EventMap then.
declare module '../events.js' {
  interface EventMap {
    sharedStreamOpened: SharedStreamInfo;
    sharedStreamClosed: SharedStreamClosedEvent;
    upstreamReconnect: ReconnectEvent;
    streamCapRefused: CapRefusalEvent;
  }
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
