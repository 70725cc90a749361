// Share mode (WS_MODE=share), wired into the WebSocket proxy through its TakeOver seam: clients
// offering `graphql-ws` or `graphql-transport-ws` are served by the sharing engine
// (src/subscriptions/), everyone else stays with the 1:1 relay. This file adapts the proxy's own
// parts to the engine's narrow interfaces: the caller becomes a Principal, the per-key cap counts
// subscriptions through the admission interface, and a key presented in connection_init is
// resolved by the same decision as a key in a header.
import type { Logger } from 'pino';
import { countRequest, type Admission } from '../../admission/index.js';
import { rateLimitOf, type Caller, type ResolveCaller } from '../../auth/caller.js';
import type { Config } from '../../config/index.js';
import { ProxyError } from '../../errors.js';
import type { Events } from '../../events.js';
import { createSharedSubscriptions, type SharedSubscriptions } from '../../subscriptions/engine.js';
import type { Acquired, Principal } from '../../subscriptions/types.js';
import type { TakeOver } from './take-over.js';

/** Upper bound on waiting for the upstream's handshake response once connected (as the relay). */
const HANDSHAKE_RESPONSE_MAX_MS = 10_000;
/** The engine's own bounds and periods (not settings). */
const MAX_SUBSCRIPTIONS_PER_SOCKET = 100;
const KEEP_ALIVE_MS = 10_000;
const BACKOFF_MIN_MS = 500;
const BACKOFF_MAX_MS = 10_000;

export interface ShareModeOptions {
  config: Config;
  resolveCaller: ResolveCaller;
  admission: Admission;
  /** The plan's concurrent stream limit of a credential set, when the Usage API told it (0 or undefined: unknown or none). */
  subscriptionLimit: (credentials: string) => number | undefined;
  logger: Logger;
  events: Events;
}

export interface ShareMode extends TakeOver {
  /** Counts for the metrics and the status page. */
  readonly engine: SharedSubscriptions;
}

/**
 * Upstream streams allowed for a credential set: WS_MAX_UPSTREAM_STREAMS when set, else the plan's
 * subscription_limit when known, else WS_MAX_STREAMS, so upstream sockets stay bounded even when
 * neither is known (a client socket may hold up to 100 subscriptions).
 */
export function upstreamStreamCap(config: Pick<Config, 'wsMaxUpstreamStreams' | 'wsMaxStreams'>, planLimit: number | undefined): number {
  return config.wsMaxUpstreamStreams || planLimit || config.wsMaxStreams;
}

export function createShareMode({ config, resolveCaller, admission, subscriptionLimit, logger, events }: ShareModeOptions): ShareMode {
  /**
   * What each subscription takes: one request under the caller's per-minute limit (as the
   * handshake did), then one of the key's subscription places (its maxStreams or
   * WS_MAX_STREAMS_PER_KEY). `address` stands for a caller without a key.
   */
  const acquireFor = (caller: Caller, address: string): (() => Promise<Acquired>) | undefined => {
    const cap = caller.policy.maxStreams ?? config.wsMaxStreamsPerKey;
    const limit = rateLimitOf(caller, config);
    const key = caller.keyName;
    const capped = key !== undefined && cap !== 0;
    if (!capped && limit === 0) return undefined;
    return async () => {
      const rate = await countRequest(admission, { keyName: key, address }, limit);
      if (rate instanceof ProxyError) return { refused: rate.message };
      if (!capped) return () => {};
      return (
        (await admission.acquireStream(key, cap)) ?? {
          refused: `the key "${key}" has ${cap} subscriptions open (its stream limit): complete one or try again later`,
        }
      );
    };
  };

  const principalOf = (caller: Caller, address: string): Principal => {
    const set = caller.credentialSet;
    const acquire = acquireFor(caller, address);
    return {
      credentials: set.name,
      tokens: set.tokens,
      origin: set.origin,
      ...(caller.keyName !== undefined && { key: caller.keyName }),
      ...(acquire && { acquire }),
    };
  };

  const engine = createSharedSubscriptions({
    settings: {
      lingerMs: config.wsLingerMs,
      idleMs: config.wsUpstreamIdleMs,
      reconnectAttempts: config.wsReconnectAttempts,
      initTimeoutMs: config.wsInitTimeoutMs,
      connectTimeoutMs: config.upstreamConnectTimeoutMs + Math.min(config.upstreamTimeoutMs, HANDSHAKE_RESPONSE_MAX_MS),
      tokenWaitMs: config.tokenWaitMs,
      maxBufferedBytes: config.wsMaxBufferedBytes,
      pingIntervalMs: config.wsPingIntervalMs,
      maxClientMessageBytes: config.wsMaxMessageBytes,
      maxMessageBytes: config.wsMaxUpstreamMessageBytes,
      maxSubscriptions: MAX_SUBSCRIPTIONS_PER_SOCKET,
      keepAliveMs: KEEP_ALIVE_MS,
      backoffMinMs: BACKOFF_MIN_MS,
      backoffMaxMs: BACKOFF_MAX_MS,
    },
    maxUpstreamStreams: (credentials) => upstreamStreamCap(config, subscriptionLimit(credentials)),
    // A key from connection_init goes through the same decision as one in a header.
    authenticate: (presented) => {
      const caller = resolveCaller({ headers: { 'x-api-key': presented }, rawHeaders: [] });
      return caller instanceof ProxyError ? { refused: caller.message } : principalOf(caller, '');
    },
    logger,
    events,
  });

  return {
    engine,
    take: ({ req, socket, head, protocols, caller }) => engine.takeOver(req, socket, head, caller && principalOf(caller, req.socket.remoteAddress ?? ''), protocols),
    get size() {
      return engine.size;
    },
    stopAccepting: () => engine.stopAccepting(),
    close: (graceMs) => engine.close(graceMs),
  };
}
