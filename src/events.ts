// The events seam: the facts of a request, a token request, a stream and a refusal are published
// here, from one place each, and the access log, the stream log, metrics and usage accounting
// subscribe. One Events per daemon (not process-global), so servers started side by side in one
// process never see each other's events. Publishers check has() before building a payload, so an
// event nobody listens to costs one property read.
import type { ErrorCode } from './errors.js';

/** How the points saver answered a query (absent when it was not involved). */
export type CacheResult = 'hit' | 'miss' | 'coalesced' | 'bypass';

/** One proxied HTTP request, once its answer is finished (or the client has gone). */
export interface RequestEvent {
  requestId: string;
  method: string;
  /** The URL as logged: secret-looking query parameters already redacted. */
  url: string;
  /** The configured proxied path, or undefined for anything else (probes, 404s). */
  path?: string;
  /** The status the client got. */
  status: number;
  /** The caller's key name, when keys are configured. */
  key?: string;
  /** The credential set used, when the caller was resolved. */
  credentials?: string;
  /** Upstream attempts made (2 after a 401 retry); 0 when nothing went upstream. */
  attempts: number;
  upstreamStatus?: number;
  /** Until the upstream's response headers, in ms, of the last attempt. */
  upstreamMs?: number;
  /** The whole request at the proxy, in ms. */
  ms: number;
  /** The request body, as read (0 when nothing was read: refused early, or no proxied path). */
  bytesIn: number;
  /** Written to the client, headers included, on a proxied path (0 for anything else). */
  bytesOut: number;
  operation?: string;
  /** The proxy's own error code when it answered with an error (upstream_timeout, rate_limited, …). */
  error?: ErrorCode;
  cache?: CacheResult;
}

/** One token request of a credential set. */
export interface TokenEvent {
  credentials: string;
  result: 'ok' | 'failed' | 'rejected';
  /** Epoch ms when the new token expires (result ok). */
  expiresAt?: number;
  /** Why it failed, in words that hold no secret. */
  reason?: string;
}

export interface StreamInfo {
  id: number;
  path: string;
  protocol: string;
  credentials: string;
  key?: string;
}

export interface StreamOpenedEvent extends StreamInfo {
  /** The client's handshake URL as logged: secret-looking query parameters already redacted. */
  url: string;
  /** Upstream handshakes made (2 after a 401 retry). */
  attempts: number;
}

export interface StreamClosedEvent extends StreamInfo {
  ms: number;
  closedBy: 'client' | 'upstream' | 'proxy';
  /** Why the proxy ended it, when it did (slow_client, shutdown, …). */
  cause?: string;
  code?: number;
  reason?: string;
  bytesFromClient: number;
  bytesToClient: number;
  messagesFromClient: number;
  messagesToClient: number;
}

/** One WebSocket message relayed (published only while someone listens). */
export interface StreamMessageEvent {
  direction: 'to_client' | 'to_upstream';
  bytes: number;
}

/** A request or handshake the proxy answered itself with an error, before or instead of forwarding. */
export interface RefusalEvent {
  transport: 'http' | 'ws';
  status: number;
  error: ErrorCode;
  /** The message the client got (no secret in it). */
  message: string;
  path?: string;
  key?: string;
  credentials?: string;
}

/** The account's billing period as Bitquery's Usage API last reported it for one credential set. */
export interface AccountUsage {
  /** `active`, `grace`, `blocked` or `expired` (Bitquery may add others). */
  status: string;
  plan: string;
  /** ISO timestamps of the billing period. */
  periodStart: string;
  periodEnd: string;
  /** 0 means no limit. */
  pointsLimit: number;
  pointsUsed: number;
  requestsUsed: number;
  /** Concurrent streams the plan allows; 0 means no limit. */
  subscriptionLimit: number;
  /** Epoch ms of the poll that got this answer. */
  polledAt: number;
}

/** A successful Usage API poll for one credential set. */
export interface UsageEvent {
  credentials: string;
  usage: AccountUsage;
}

// Share mode (src/subscriptions/): upstream streams shared by client subscriptions.

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

export interface EventMap {
  request: RequestEvent;
  token: TokenEvent;
  streamOpened: StreamOpenedEvent;
  streamClosed: StreamClosedEvent;
  streamMessage: StreamMessageEvent;
  refused: RefusalEvent;
  usage: UsageEvent;
  sharedStreamOpened: SharedStreamInfo;
  sharedStreamClosed: SharedStreamClosedEvent;
  upstreamReconnect: ReconnectEvent;
  streamCapRefused: CapRefusalEvent;
}

type Listener<K extends keyof EventMap> = (event: EventMap[K]) => void;

export class Events {
  private readonly listeners: { [K in keyof EventMap]?: Listener<K>[] } = {};

  /** Subscribes; returns the function that unsubscribes. Listeners run synchronously and must not throw. */
  on<K extends keyof EventMap>(name: K, listener: Listener<K>): () => void {
    const list = (this.listeners[name] ??= []) as Listener<K>[];
    list.push(listener);
    return () => {
      const at = list.indexOf(listener);
      if (at !== -1) list.splice(at, 1);
    };
  }

  /** Whether anyone listens: publishers skip building the payload when not. */
  has(name: keyof EventMap): boolean {
    return (this.listeners[name]?.length ?? 0) > 0;
  }

  emit<K extends keyof EventMap>(name: K, event: EventMap[K]): void {
    const list = this.listeners[name] as Listener<K>[] | undefined;
    if (list) for (const listener of list) listener(event);
  }
}
