// A small real WebSocket upstream for in-process tests of share mode, behaving as Bitquery does on
// the points that matter: legacy `graphql-ws`, the token checked at the handshake only (`?token=`),
// `ka` keep-alives, and a subscription that lasts until its socket closes (`stop` is ignored). Events
// are published on demand; it can go silent, refuse handshakes, end or fail a subscription.
import { EventEmitter, once } from 'node:events';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { WebSocket, WebSocketServer } from 'ws';

export interface UpstreamConn {
  ws: WebSocket;
  token: string | null;
  authorization?: string;
  path: string;
  /** Messages received from the proxy, parsed. */
  received: { type: string; id?: string; payload?: any }[];
  /** The `start` payload, once started. */
  started?: { query: string; variables?: Record<string, unknown>; operationName?: string };
  startId?: string;
  open: boolean;
  closed: Promise<{ code: number; reason: string }>;
}

export class LegacyUpstream extends EventEmitter {
  readonly conns: UpstreamConn[] = [];
  /** Tokens accepted at the handshake. */
  readonly tokens = new Set<string>(['token-1']);
  /** Statuses the next handshakes are refused with, in order (with an optional Retry-After). */
  readonly refusals: { status: number; retryAfter?: string; body?: string }[] = [];
  /** While true, nothing is sent: no ack, no ka, no events. */
  silent = false;
  /** connection_init is answered with connection_error instead of an ack. */
  rejectInit = false;
  /** Period of `ka` on every open socket; 0 = only the one after the ack. */
  kaMs: number;
  private readonly wss = new WebSocketServer({ noServer: true, perMessageDeflate: false, handleProtocols: (p) => (p.has('graphql-ws') ? 'graphql-ws' : false) });
  private readonly server: Server;
  private kaTimer?: NodeJS.Timeout;
  origin = '';

  private constructor(kaMs: number) {
    super();
    this.kaMs = kaMs;
    this.server = createServer((_req, res) => res.writeHead(404).end());
    this.server.on('upgrade', (req, socket, head) => this.upgrade(req, socket, head));
  }

  static async start(options: { kaMs?: number } = {}): Promise<LegacyUpstream> {
    const up = new LegacyUpstream(options.kaMs ?? 0);
    up.server.listen(0, '127.0.0.1');
    await once(up.server, 'listening');
    up.origin = `http://127.0.0.1:${(up.server.address() as AddressInfo).port}`;
    if (up.kaMs > 0) {
      up.kaTimer = setInterval(() => {
        for (const c of up.openConns()) up.send(c, { type: 'ka' });
      }, up.kaMs);
    }
    return up;
  }

  openConns(): UpstreamConn[] {
    return this.conns.filter((c) => c.open);
  }

  /** Open sockets whose subscription has started. */
  streams(): UpstreamConn[] {
    return this.openConns().filter((c) => c.started);
  }

  /** Sends an event to every started subscription for which `match` holds; returns how many. */
  publish(data: unknown, match: (c: UpstreamConn) => boolean = () => true): number {
    let n = 0;
    for (const c of this.streams()) {
      if (!match(c)) continue;
      this.send(c, { type: 'data', id: c.startId, payload: { data } });
      n += 1;
    }
    return n;
  }

  send(c: UpstreamConn, msg: unknown): void {
    if (!this.silent && c.ws.readyState === WebSocket.OPEN) c.ws.send(JSON.stringify(msg));
  }

  /** The next connection (already accepted). */
  nextConn(): Promise<UpstreamConn> {
    return new Promise((resolve) => this.once('conn', resolve));
  }

  async close(): Promise<void> {
    clearInterval(this.kaTimer);
    for (const c of this.conns) c.ws.terminate();
    this.server.closeAllConnections();
    await new Promise((resolve) => this.server.close(resolve));
  }

  private upgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    const url = new URL(req.url ?? '/', 'http://x');
    const token = url.searchParams.get('token');
    const refusal = this.refusals.shift() ?? (token !== null && this.tokens.has(token) ? undefined : { status: 401, body: '{"error":"invalid token"}' });
    if (refusal) {
      const body = refusal.body ?? '';
      socket.end(
        `HTTP/1.1 ${refusal.status} Refused\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n${refusal.retryAfter ? `Retry-After: ${refusal.retryAfter}\r\n` : ''}\r\n${body}`,
      );
      return;
    }
    this.wss.handleUpgrade(req, socket, head, (ws) => {
      const closed = new Promise<{ code: number; reason: string }>((resolve) =>
        ws.once('close', (code, reason) => {
          conn.open = false;
          resolve({ code, reason: reason.toString() });
        }),
      );
      const conn: UpstreamConn = { ws, token, path: url.pathname, received: [], open: true, closed, ...(req.headers.authorization && { authorization: req.headers.authorization }) };
      this.conns.push(conn);
      ws.on('error', () => {});
      ws.on('message', (raw) => {
        const msg = JSON.parse(raw.toString()) as UpstreamConn['received'][number];
        conn.received.push(msg);
        if (msg.type === 'connection_init' && this.rejectInit) {
          this.send(conn, { type: 'connection_error', payload: { message: 'init refused' } });
        } else if (msg.type === 'connection_init') {
          this.send(conn, { type: 'connection_ack' });
          this.send(conn, { type: 'ka' });
        } else if (msg.type === 'start' && !this.silent) {
          conn.started = msg.payload;
          conn.startId = msg.id;
          this.emit('started', conn);
        }
        // `stop` is ignored, as Bitquery does: only closing the socket ends a stream.
      });
      this.emit('conn', conn);
    });
  }
}
