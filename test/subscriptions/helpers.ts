// In-process harness for share mode: the engine behind a real HTTP server's upgrade listener, a
// real legacy upstream, real client sockets on both subprotocols, the logs and events captured.
import { once } from 'node:events';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Test } from 'tap';
import pino from 'pino';
import { WebSocket, type ClientOptions } from 'ws';
import { createClient, type Client } from 'graphql-ws';
import { logEvents } from '../../src/event-logs.js';
import { Events } from '../../src/events.js';
import { createSharedSubscriptions, type SharedSubscriptions, type SharingSettings } from '../../src/subscriptions/engine.js';
import type { Authenticate, Principal, TokenSource } from '../../src/subscriptions/types.js';
import { waitFor } from '../helpers/proxy-process.js';
import { LegacyUpstream } from './legacy-upstream.js';

export { waitFor };

export const DEFAULTS: SharingSettings = {
  idleMs: 15_000,
  reconnectAttempts: 5,
  lingerMs: 0,
  connectTimeoutMs: 2000,
  tokenWaitMs: 1000,
  maxMessageBytes: 16 * 1024 * 1024,
  backoffMinMs: 20,
  backoffMaxMs: 200,
  initTimeoutMs: 3000,
  maxBufferedBytes: 4 * 1024 * 1024,
  maxSubscriptions: 100,
  keepAliveMs: 10_000,
  pingIntervalMs: 30_000,
  maxClientMessageBytes: 1024 * 1024,
};

/** A token holder whose answers the test sets. */
export class FakeTokens implements TokenSource {
  current = 'token-1';
  /** Handed out by the next tokenRejected. */
  fresh?: string;
  unavailable = false;
  readonly rejected: string[] = [];

  async getToken(): Promise<string> {
    if (this.unavailable) throw new Error('no token (test)');
    return this.current;
  }

  async tokenRejected(rejected: string): Promise<string | undefined> {
    this.rejected.push(rejected);
    if (this.fresh === undefined) return undefined;
    this.current = this.fresh;
    this.fresh = undefined;
    return this.current;
  }
}

export interface Logged {
  level: number;
  msg: string;
  [field: string]: any;
}

export interface Harness {
  /** ws://…/graphql of the engine. */
  url: string;
  engine: SharedSubscriptions;
  upstream: LegacyUpstream;
  tokens: FakeTokens;
  logs: Logged[];
  /** Every event published on the bus, in order. */
  events: { name: string; event: any }[];
  /** Every raw log line, to search for secrets. */
  raw(): string;
}

export interface HarnessOptions {
  settings?: Partial<SharingSettings>;
  /** Per handshake; default: credential set from the `x-set` header (else "default"), no key. */
  principalFor?: (req: IncomingMessage, base: (credentials: string) => Principal) => Principal | undefined;
  authenticate?: (base: (credentials: string) => Principal) => Authenticate;
  maxUpstreamStreams?: (credentials: string) => number;
  kaMs?: number;
  /** Upstream origin instead of the test upstream's (for unreachable upstreams). */
  origin?: string;
}

export async function harness(t: Test, options: HarnessOptions = {}): Promise<Harness> {
  const upstream = await LegacyUpstream.start({ kaMs: options.kaMs ?? 0 });
  const tokens = new FakeTokens();
  const logs: Logged[] = [];
  let raw = '';
  const logger = pino(
    { level: 'debug' },
    {
      write(line: string) {
        raw += line;
        logs.push(JSON.parse(line) as Logged);
      },
    },
  );
  const events = new Events();
  // The stream lines are event subscribers, as in the daemon.
  logEvents(events, logger, { credentialsInLines: false });
  const recorded: Harness['events'] = [];
  for (const name of ['sharedStreamOpened', 'sharedStreamClosed', 'upstreamReconnect', 'streamCapRefused'] as const) {
    events.on(name, (event) => recorded.push({ name, event }));
  }
  const base = (credentials: string): Principal => ({ credentials, tokens, origin: new URL(options.origin ?? upstream.origin) });
  const engine = createSharedSubscriptions({
    settings: { ...DEFAULTS, ...options.settings },
    maxUpstreamStreams: options.maxUpstreamStreams ?? (() => 0),
    ...(options.authenticate && { authenticate: options.authenticate(base) }),
    logger,
    events,
  });
  const server: Server = createServer((_req, res) => res.writeHead(404).end());
  server.on('upgrade', (req: IncomingMessage, socket, head) => {
    const protocols = (req.headers['sec-websocket-protocol'] ?? '').split(',').map((p) => p.trim()).filter(Boolean);
    const set = typeof req.headers['x-set'] === 'string' ? req.headers['x-set'] : 'default';
    const principal = options.principalFor ? options.principalFor(req, base) : base(set);
    // What the WebSocket proxy does with a socket the engine does not take: relay it (here: refuse).
    if (!engine.takeOver(req, socket, head, principal, protocols)) socket.end('HTTP/1.1 409 Not Taken\r\nContent-Length: 0\r\nConnection: close\r\n\r\n');
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.teardown(async () => {
    await engine.close(0);
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
    await upstream.close();
  });
  return { url: `ws://127.0.0.1:${(server.address() as AddressInfo).port}/graphql`, engine, upstream, tokens, logs, events: recorded, raw: () => raw };
}

export type Msg = { type: string; id?: string | number; payload?: any };

/** A client speaking either subprotocol by hand, recording everything it receives. */
export class RawClient {
  readonly messages: Msg[] = [];
  readonly closed: Promise<{ code: number; reason: string }>;

  private constructor(
    readonly ws: WebSocket,
    readonly protocol: 'graphql-ws' | 'graphql-transport-ws',
  ) {
    ws.on('message', (data, isBinary) => {
      if (!isBinary) this.messages.push(JSON.parse(data.toString()) as Msg);
    });
    ws.on('error', () => {});
    this.closed = new Promise((resolve) => ws.once('close', (code, reason) => resolve({ code, reason: reason.toString() })));
  }

  static async open(url: string, protocol: 'graphql-ws' | 'graphql-transport-ws', options: ClientOptions = {}): Promise<RawClient> {
    const ws = new WebSocket(url, [protocol], options);
    const client = new RawClient(ws, protocol);
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('error', reject);
    });
    return client;
  }

  get legacy(): boolean {
    return this.protocol === 'graphql-ws';
  }

  send(msg: unknown): void {
    this.ws.send(typeof msg === 'string' ? msg : JSON.stringify(msg));
  }

  async init(payload?: Record<string, unknown>): Promise<void> {
    this.send({ type: 'connection_init', ...(payload && { payload }) });
    await this.next((m) => m.type === 'connection_ack', 'connection_ack');
  }

  subscribe(id: string | number, query: string, variables?: Record<string, unknown>, operationName?: string): void {
    this.send({ type: this.legacy ? 'start' : 'subscribe', id, payload: { query, ...(variables && { variables }), ...(operationName && { operationName }) } });
  }

  complete(id: string | number): void {
    this.send({ type: this.legacy ? 'stop' : 'complete', id });
  }

  /** The `data` of each event received for `id`, in order. */
  events(id: string | number): unknown[] {
    const type = this.legacy ? 'data' : 'next';
    return this.messages.filter((m) => m.type === type && m.id === id).map((m) => m.payload?.data);
  }

  of(type: string, id?: string | number): Msg[] {
    return this.messages.filter((m) => m.type === type && (id === undefined || m.id === id));
  }

  /** Waits for a message matching `match` (received already or later). */
  next(match: (m: Msg) => boolean, what = 'a message', timeoutMs = 5000): Promise<Msg> {
    return waitFor(() => this.messages.find(match), timeoutMs, what);
  }

  get open(): boolean {
    return this.ws.readyState === WebSocket.OPEN;
  }
}

/** A graphql-ws library client (graphql-transport-ws) with one subscription. */
export interface LibSubscription {
  client: Client;
  events: unknown[];
  error?: unknown;
  completed: boolean;
  unsubscribe(): void;
}

export function libSubscribe(url: string, query: string, variables?: Record<string, unknown>, connectionParams?: Record<string, unknown>): LibSubscription {
  const client = createClient({ url, webSocketImpl: WebSocket, retryAttempts: 0, lazy: true, ...(connectionParams && { connectionParams }) });
  const sub: LibSubscription = {
    client,
    events: [],
    completed: false,
    unsubscribe: () => {},
  };
  sub.unsubscribe = client.subscribe(
    { query, ...(variables && { variables }) },
    {
      next: (value) => sub.events.push(value.data),
      error: (err) => (sub.error = err),
      complete: () => (sub.completed = true),
    },
  );
  return sub;
}
