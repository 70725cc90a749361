// Share mode for GraphQL subscriptions: the WebSocket proxy hands over each handshake whose client
// offers `graphql-transport-ws` or `graphql-ws` (once the caller is resolved and admitted), and
// from then on the proxy speaks that subprotocol with the client itself while the hub keeps one
// upstream stream per distinct subscription. Anything else stays with the 1:1 relay.
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import { WebSocketServer } from 'ws';
import type { Events } from '../events.js';
import { Hub } from './hub.js';
import { pickProtocol } from './protocol.js';
import { ClientSession, type SessionSettings } from './session.js';
import type { Authenticate, Principal, SharingStats, UpstreamSettings } from './types.js';

export interface SharingSettings extends UpstreamSettings, SessionSettings {
  /** Period of `ka` messages to legacy clients. */
  keepAliveMs: number;
  /** WebSocket ping period to clients; one that misses a pong by the next ping is cut. */
  pingIntervalMs: number;
  /** Largest message a client may send (ws maxPayload; larger closes with 1009). */
  maxClientMessageBytes: number;
}

export interface SharedSubscriptionsOptions {
  settings: SharingSettings;
  /** WS_MAX_UPSTREAM_STREAMS for a credential set (later: the plan's subscription_limit); 0 = unlimited. */
  maxUpstreamStreams: (credentials: string) => number;
  /** Resolves a key presented in connection_init; required to hand over sockets without a Principal. */
  authenticate?: Authenticate;
  /** The daemon's logger; a `component: 'ws'` child is made from it. */
  logger: Logger;
  events?: Events;
}

export interface SharedSubscriptions {
  /**
   * Takes over an upgrade on a proxied path, after the caller is resolved and admitted. Returns
   * false (touching nothing) when the client offers neither shared subprotocol, or after
   * stopAccepting: the caller then relays or refuses as before. `principal` undefined means the
   * gateway requires keys and the handshake carried none: the key must come in connection_init.
   */
  takeOver(req: IncomingMessage, socket: Duplex, head: Buffer, principal: Principal | undefined, protocols: readonly string[]): boolean;
  /** Client sockets served (for WS_MAX_STREAMS and the shutdown wait). */
  readonly size: number;
  stats(): SharingStats;
  stopAccepting(): void;
  /**
   * Closes every client with 1001 and every upstream stream, terminating clients that have not
   * finished closing after `graceMs`. Resolves when every client socket is gone.
   */
  close(graceMs: number): Promise<void>;
}

export function createSharedSubscriptions(options: SharedSubscriptionsOptions): SharedSubscriptions {
  const { settings, events, authenticate } = options;
  const log = options.logger.child({ component: 'ws' });
  const hub = new Hub({ settings, maxUpstreamStreams: options.maxUpstreamStreams, log, ...(events && { events }) });
  const sessions = new Set<ClientSession>();
  const allGone: (() => void)[] = [];
  let accepting = true;
  let nextId = 1;

  const wss = new WebSocketServer({
    noServer: true,
    clientTracking: false,
    perMessageDeflate: false,
    maxPayload: settings.maxClientMessageBytes,
    handleProtocols: (offered) => pickProtocol(offered) ?? false,
  });

  const context = {
    settings,
    hub,
    log,
    ...(events && { events }),
    ...(authenticate && { authenticate }),
    onClose: (session: ClientSession) => {
      sessions.delete(session);
      if (sessions.size === 0) for (const resolve of allGone.splice(0)) resolve();
    },
  };

  const heartbeat = setInterval(() => {
    for (const session of sessions) session.heartbeat();
  }, settings.pingIntervalMs);
  heartbeat.unref();
  const keepAlive = setInterval(() => {
    for (const session of sessions) session.keepAlive();
  }, settings.keepAliveMs);
  keepAlive.unref();

  return {
    takeOver(req, socket, head, principal, protocols) {
      const protocol = pickProtocol(protocols);
      if (!accepting || protocol === undefined) return false;
      if (!principal && !authenticate) throw new Error('a socket without a principal needs the authenticate option');
      const path = (req.url ?? '/').split('?', 1)[0]!;
      wss.handleUpgrade(req, socket, head, (ws) => {
        sessions.add(new ClientSession(nextId++, ws, protocol, path, principal, context));
      });
      return true;
    },
    get size() {
      return sessions.size;
    },
    stats() {
      return { ...hub.stats(), clients: sessions.size };
    },
    stopAccepting() {
      accepting = false;
    },
    close(graceMs) {
      accepting = false;
      clearInterval(heartbeat);
      clearInterval(keepAlive);
      // Streams first, so that they end as `shutdown` (1001 upstream) rather than as unused when their last subscriber leaves.
      hub.close();
      for (const session of sessions) {
        if (graceMs <= 0) session.terminate();
        else session.close(1001, 'proxy shutting down', 'shutdown');
      }
      const gone = new Promise<void>((resolve) => {
        if (sessions.size === 0) resolve();
        else allGone.push(resolve);
      });
      if (graceMs <= 0) return gone;
      const cut = setTimeout(() => {
        for (const session of sessions) session.terminate();
      }, graceMs);
      return gone.finally(() => clearTimeout(cut));
    },
  };
}
