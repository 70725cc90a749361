/**
 * A controllable fake of Bitquery's token endpoint (Ory Hydra), GraphQL-over-HTTP
 * endpoint and GraphQL-over-WebSocket endpoint, for tests over real loopback sockets.
 *
 * Behaviour follows Bitquery's documented API (docs.bitquery.io):
 *  - POST /oauth2/token: client_credentials grant, form body or HTTP Basic credentials,
 *    Hydra-style JSON errors (401 invalid_client, 400 invalid_scope, ...).
 *  - /graphql and /eap (GET, POST): token via `Authorization: Bearer` or `?token=`;
 *    401 answers are the plain text `Unauthorized` (not JSON).
 *  - WebSocket on /graphql and /eap: auth checked at the handshake only; legacy
 *    `graphql-ws` subprotocol preferred (hand-written), `graphql-transport-ws` via graphql-ws.
 */
import { EventEmitter } from 'node:events';
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import http, { type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { WebSocket, WebSocketServer } from 'ws';
import {
  buildSchema,
  execute,
  getOperationAST,
  GraphQLError,
  parse,
  subscribe,
  validate,
  type DocumentNode,
  type ExecutionResult,
  type GraphQLSchema,
} from 'graphql';
import { useServer } from 'graphql-ws/use/ws';

// ---------------------------------------------------------------------------
// Public types
// ---------------------------------------------------------------------------

/** A failure the token endpoint should produce instead of its normal answer. */
export type TokenFailure =
  | { kind: 'status'; status: number; body?: string; contentType?: string } // e.g. 500, 503
  | { kind: 'invalid-json' } // 200 with a non-JSON body
  | { kind: 'missing-fields' } // 200 JSON without access_token/expires_in
  | { kind: 'hang' } // never answers (until close())
  | { kind: 'reset' }; // destroys the socket without answering

/** A canned answer for one authorized GraphQL HTTP request. */
export interface ScriptedResponse {
  status: number;
  /** Response headers. Without a content-type, JSON-looking bodies get application/json, others text/plain. */
  headers?: Record<string, string>;
  body?: string | Buffer;
  /** Wait this long before answering. */
  delayMs?: number;
}

export interface FakeBitqueryOptions {
  host?: string; // default '127.0.0.1'
  port?: number; // default 0 (ephemeral)
  clientId?: string; // default 'demo-client'
  clientSecret?: string; // default 'demo-secret'
  tokenLifetimeSec?: number; // expires_in of issued tokens, default 17999
  authMethod?: 'post' | 'basic' | 'any'; // how the client must send credentials; default 'any'
  keepAliveMs?: number; // keep-alive period on WebSockets (legacy `ka`, transport `pong` + ws ping), default 10000
  wsEventIntervalMs?: number; // period of `ticks` subscription events, default 50
}

/** One request seen by the token endpoint (recorded before any failure/delay is applied). */
export interface RecordedTokenRequest {
  at: number;
  headers: IncomingHttpHeaders;
  form: Record<string, string>;
}

/** One request seen by /graphql or /eap over HTTP, authorized or not. */
export interface RecordedGraphqlRequest {
  at: number;
  method: string;
  path: string;
  query: Record<string, string>;
  headers: IncomingHttpHeaders;
  body: Buffer;
  token: string | undefined;
  authorized: boolean;
}

/** One WebSocket upgrade request seen on /graphql or /eap. */
export interface RecordedWsHandshake {
  at: number;
  path: string;
  query: Record<string, string>;
  headers: IncomingHttpHeaders;
  protocols: string[];
  token: string | undefined;
  accepted: boolean;
}

// ---------------------------------------------------------------------------
// Constants
// ---------------------------------------------------------------------------

const GRAPHQL_PATHS = new Set(['/graphql', '/eap']);
const TOKEN_PATH = '/oauth2/token';
const LEGACY_PROTOCOL = 'graphql-ws';
const TRANSPORT_PROTOCOL = 'graphql-transport-ws';
const TEXT = 'text/plain; charset=utf-8';
const JSON_CT = 'application/json';
/** Headers Hydra puts on token endpoint answers. */
const HYDRA_HEADERS = { 'content-type': JSON_CT, 'cache-control': 'no-store', pragma: 'no-cache' };
const BLOB_CHUNK = Buffer.alloc(64 * 1024, 'x');

const HYDRA_ERRORS = {
  invalid_client: {
    status: 401,
    description:
      'Client authentication failed (e.g., unknown client, no client authentication included, or unsupported authentication method).',
  },
  invalid_request: {
    status: 400,
    description:
      'The request is missing a required parameter, includes an invalid parameter value, includes a parameter more than once, or is otherwise malformed.',
  },
  unsupported_grant_type: {
    status: 400,
    description: 'The authorization grant type is not supported by the authorization server.',
  },
  invalid_scope: {
    status: 400,
    description: 'The requested scope is invalid, unknown, or malformed.',
  },
} as const;
type HydraError = keyof typeof HYDRA_ERRORS;

const SDL = /* GraphQL */ `
  type Query { hello: String }
  type Tick { n: Int, at: String }
  type Subscription { ticks(count: Int): Tick }
`;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

function searchToRecord(params: URLSearchParams): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of params) out[k] = v;
  return out;
}

function safeEqual(a: string, b: string): boolean {
  const ab = Buffer.from(a);
  const bb = Buffer.from(b);
  return ab.length === bb.length && timingSafeEqual(ab, bb);
}

function decodeFormComponent(s: string): string {
  try {
    return decodeURIComponent(s.replace(/\+/g, ' '));
  } catch {
    return s;
  }
}

/** Bearer token from the Authorization header, else `?token=`. */
function extractToken(headers: IncomingHttpHeaders, query: Record<string, string>): string | undefined {
  const auth = headers.authorization;
  if (typeof auth === 'string') {
    const m = /^Bearer\s+(.+)$/i.exec(auth.trim());
    if (m) return m[1]!.trim();
  }
  const q = query.token;
  return q === undefined || q === '' ? undefined : q;
}

function parseProtocols(header: string | undefined): string[] {
  if (!header) return [];
  return header
    .split(',')
    .map((p) => p.trim())
    .filter((p) => p.length > 0);
}

function isJsonLike(body: string | Buffer | undefined): boolean {
  if (body === undefined) return false;
  try {
    JSON.parse(body.toString());
    return true;
  } catch {
    return false;
  }
}

function readBody(req: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
    req.on('aborted', () => reject(new Error('request aborted')));
  });
}

/** Sends a complete response with Content-Length (no chunked encoding). */
function respond(res: ServerResponse, status: number, headers: Record<string, string>, body: string | Buffer): void {
  const buf = typeof body === 'string' ? Buffer.from(body) : body;
  res.writeHead(status, { ...headers, 'content-length': String(buf.length) });
  res.end(buf);
}

interface TickEvent {
  ticks: { n: number; at: string };
}

/** An async iterator of ticks whose return() stops it immediately (no pending timer left behind). */
class TickIterator implements AsyncIterableIterator<TickEvent> {
  private n = 0;
  private done = false;
  private timer: NodeJS.Timeout | undefined;
  private pending: ((r: IteratorResult<TickEvent>) => void) | undefined;

  constructor(
    private readonly intervalMs: () => number,
    private readonly count: number | null | undefined,
    private readonly onFinish: (it: TickIterator) => void,
  ) {}

  [Symbol.asyncIterator](): this {
    return this;
  }

  next(): Promise<IteratorResult<TickEvent>> {
    if (this.done) return Promise.resolve({ done: true, value: undefined });
    if (typeof this.count === 'number' && this.n >= this.count) {
      this.finish();
      return Promise.resolve({ done: true, value: undefined });
    }
    return new Promise((resolve) => {
      this.pending = resolve;
      this.timer = setTimeout(() => {
        this.pending = undefined;
        this.timer = undefined;
        this.n += 1;
        resolve({ done: false, value: { ticks: { n: this.n, at: new Date().toISOString() } } });
      }, Math.max(0, this.intervalMs()));
    });
  }

  return(): Promise<IteratorResult<TickEvent>> {
    this.finish();
    return Promise.resolve({ done: true, value: undefined });
  }

  throw(err?: unknown): Promise<IteratorResult<TickEvent>> {
    this.finish();
    return Promise.reject(err);
  }

  /** Stops the iterator; a pending next() resolves as done. */
  finish(): void {
    if (this.done) return;
    this.done = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    const p = this.pending;
    this.pending = undefined;
    p?.({ done: true, value: undefined });
    this.onFinish(this);
  }
}

function isAsyncIterable(x: unknown): x is AsyncIterableIterator<ExecutionResult> {
  return typeof x === 'object' && x !== null && Symbol.asyncIterator in x;
}

// ---------------------------------------------------------------------------
// FakeBitquery
// ---------------------------------------------------------------------------

export class FakeBitquery extends EventEmitter {
  /** http origin, e.g. http://127.0.0.1:12345 */
  readonly url: string;
  /** ws origin, e.g. ws://127.0.0.1:12345 */
  readonly wsUrl: string;
  /** `${url}/oauth2/token` */
  readonly tokenUrl: string;

  /** Accepted client id (mutable: tests rotate credentials). */
  clientId: string;
  /** Accepted client secret (mutable). */
  clientSecret: string;
  /** How the client must authenticate at the token endpoint (mutable). */
  authMethod: 'post' | 'basic' | 'any';
  /** expires_in of newly issued tokens (mutable). */
  tokenLifetimeSec: number;
  /** Delay before answering token requests. */
  tokenDelayMs = 0;
  /** Queue: each token request shifts one failure off, if any, and answers with it. */
  tokenFailures: TokenFailure[] = [];
  /** Delay before answering GraphQL HTTP requests (not applied to scripted responses, which have their own delayMs). */
  graphqlDelayMs = 0;
  /** Queue: each authorized GraphQL HTTP request shifts one and answers with it instead of the default. */
  graphqlScript: ScriptedResponse[] = [];
  /**
   * That many next GraphQL HTTP requests / WS handshakes that carry an otherwise valid token
   * answer 401 anyway (a revoked / old-plan token). Requests already unauthorized don't consume it.
   */
  rejectNextTokens = 0;
  /** Queue: each authorized WebSocket handshake shifts one and is refused with it (e.g. 429 Too Many Sessions). */
  wsRefusals: ScriptedResponse[] = [];
  /** Every token request, in order. */
  readonly tokenRequests: RecordedTokenRequest[] = [];
  /** Every GraphQL HTTP request on /graphql or /eap, in order (including unauthorized ones). */
  readonly graphqlRequests: RecordedGraphqlRequest[] = [];
  /** Every WebSocket handshake on /graphql or /eap, in order (including rejected ones). */
  readonly wsHandshakes: RecordedWsHandshake[] = [];
  /** Every token minted (by the endpoint or issueToken()), in order. */
  readonly issuedTokens: string[] = [];
  /** Server-side ws objects of currently open WebSocket connections. */
  readonly wsServerSockets = new Set<WebSocket>();
  /** Period of `ticks` subscription events (read when each event is scheduled). */
  wsEventIntervalMs: number;
  /** Keep-alive period for WebSockets opened from now on. */
  keepAliveMs: number;

  private readonly server: http.Server;
  private readonly tokens = new Map<string, number>(); // token -> expiry (ms epoch)
  private readonly httpSockets = new Set<Socket | Duplex>();
  private readonly openResponses = new Set<ServerResponse>();
  private readonly timers = new Map<NodeJS.Timeout, () => void>();
  private readonly tickIterators = new Set<TickIterator>();
  private readonly legacyWss: WebSocketServer;
  private readonly transportWss: WebSocketServer;
  private readonly schema: GraphQLSchema;
  private closing = false;
  private closePromise: Promise<void> | undefined;

  private constructor(server: http.Server, opts: FakeBitqueryOptions) {
    super();
    this.server = server;
    this.clientId = opts.clientId ?? 'demo-client';
    this.clientSecret = opts.clientSecret ?? 'demo-secret';
    this.authMethod = opts.authMethod ?? 'any';
    this.tokenLifetimeSec = opts.tokenLifetimeSec ?? 17999;
    this.keepAliveMs = opts.keepAliveMs ?? 10_000;
    this.wsEventIntervalMs = opts.wsEventIntervalMs ?? 50;
    this.url = '';
    this.wsUrl = '';
    this.tokenUrl = '';

    this.schema = this.buildSchema();

    this.legacyWss = new WebSocketServer({
      noServer: true,
      perMessageDeflate: false,
      handleProtocols: (protocols) => (protocols.has(LEGACY_PROTOCOL) ? LEGACY_PROTOCOL : false),
    });
    this.transportWss = new WebSocketServer({ noServer: true, perMessageDeflate: false });
    // useServer replaces transportWss.options.handleProtocols with its own (picks graphql-transport-ws).
    useServer(
      {
        schema: this.schema,
        onConnect: (ctx) => {
          // Unsolicited `pong` messages as keep-alive, like Bitquery.
          const socket = (ctx.extra as { socket: WebSocket }).socket;
          const ms = this.keepAliveMs;
          if (ms > 0 && Number.isFinite(ms)) {
            const iv = setInterval(() => {
              if (socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify({ type: 'pong' }));
            }, ms);
            socket.once('close', () => clearInterval(iv));
          }
          return true;
        },
      },
      this.transportWss,
      this.keepAliveMs,
    );

    server.on('connection', (sock: Socket) => {
      this.httpSockets.add(sock);
      sock.on('error', () => {});
      sock.once('close', () => this.httpSockets.delete(sock));
    });
    server.on('request', (req, res) => {
      this.handleRequest(req, res).catch(() => {
        if (!res.headersSent && !res.destroyed) {
          respond(res, 500, { 'content-type': TEXT }, 'Internal Server Error');
        } else {
          res.destroy();
        }
      });
    });
    server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
      this.handleUpgrade(req, socket, head);
    });
  }

  /** Starts a fake listening on opts.host/opts.port (default 127.0.0.1, ephemeral port). */
  static async start(opts: FakeBitqueryOptions = {}): Promise<FakeBitquery> {
    const server = http.createServer();
    const fake = new FakeBitquery(server, opts);
    const host = opts.host ?? '127.0.0.1';
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(opts.port ?? 0, host, () => {
        server.off('error', reject);
        resolve();
      });
    });
    const addr = server.address() as AddressInfo;
    const hostPart = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
    const origin = `${hostPart}:${addr.port}`;
    const mutable = fake as { -readonly [K in 'url' | 'wsUrl' | 'tokenUrl']: string };
    mutable.url = `http://${origin}`;
    mutable.wsUrl = `ws://${origin}`;
    mutable.tokenUrl = `http://${origin}${TOKEN_PATH}`;
    return fake;
  }

  // ------------------------------------------------------------------ tokens

  /** Mints a valid token directly (for static-token tests); lifetime defaults to tokenLifetimeSec. */
  issueToken(lifetimeSec: number = this.tokenLifetimeSec): string {
    const token = `ory_at_${randomBytes(32).toString('base64url')}.${randomBytes(32).toString('base64url')}`;
    this.tokens.set(token, Date.now() + lifetimeSec * 1000);
    this.issuedTokens.push(token);
    return token;
  }

  /** True if the token was issued, not revoked and not expired. */
  isValid(token: string): boolean {
    const exp = this.tokens.get(token);
    return exp !== undefined && Date.now() < exp;
  }

  /** Revokes one token (open WebSockets stay open, as on Bitquery). */
  revoke(token: string): void {
    this.tokens.delete(token);
  }

  /** Revokes every token (like deleting the application). */
  revokeAll(): void {
    this.tokens.clear();
  }

  /** Makes a token expired now. */
  expire(token: string): void {
    if (this.tokens.has(token)) this.tokens.set(token, Date.now() - 1);
  }

  // ------------------------------------------------------------------ misc

  /** Currently open WebSocket connections on the fake (for leak tests). */
  openSockets(): number {
    return this.wsServerSockets.size;
  }

  /** Emitted after a WebSocket is accepted and its protocol handler attached. */
  override on(event: 'ws-connection', fn: (ws: WebSocket, info: RecordedWsHandshake) => void): this;
  override on(event: string | symbol, fn: (...args: any[]) => void): this;
  override on(event: string | symbol, fn: (...args: any[]) => void): this {
    return super.on(event, fn);
  }

  /**
   * Clears records (requests, handshakes, the issuedTokens list) and queues (tokenFailures,
   * graphqlScript, rejectNextTokens). Issued tokens stay valid; delays and credentials are kept.
   */
  reset(): void {
    this.tokenRequests.length = 0;
    this.graphqlRequests.length = 0;
    this.wsHandshakes.length = 0;
    this.issuedTokens.length = 0;
    this.tokenFailures.length = 0;
    this.graphqlScript.length = 0;
    this.rejectNextTokens = 0;
    this.wsRefusals = [];
  }

  /** Closes everything (hanging requests, delayed answers, WebSockets, subscriptions) promptly. Idempotent. */
  close(): Promise<void> {
    if (this.closePromise) return this.closePromise;
    this.closing = true;
    this.closePromise = (async () => {
      for (const [t, wake] of this.timers) {
        clearTimeout(t);
        wake();
      }
      this.timers.clear();
      for (const it of [...this.tickIterators]) it.finish();
      for (const ws of this.wsServerSockets) ws.terminate();
      for (const res of this.openResponses) res.destroy();
      this.openResponses.clear();
      const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
      this.server.closeAllConnections();
      for (const s of this.httpSockets) s.destroy();
      this.legacyWss.close();
      this.transportWss.close();
      await closed;
      this.removeAllListeners();
    })();
    return this.closePromise;
  }

  // ------------------------------------------------------------------ internals

  /** Resolves after ms, or immediately once close() starts. */
  private delay(ms: number): Promise<void> {
    if (ms <= 0 || this.closing) return Promise.resolve();
    return new Promise((resolve) => {
      const t = setTimeout(() => {
        this.timers.delete(t);
        resolve();
      }, ms);
      this.timers.set(t, resolve);
    });
  }

  private track(res: ServerResponse): void {
    this.openResponses.add(res);
    res.once('close', () => this.openResponses.delete(res));
  }

  private async handleRequest(req: IncomingMessage, res: ServerResponse): Promise<void> {
    this.track(res);
    const url = new URL(req.url ?? '/', 'http://fake.invalid');
    if (url.pathname === TOKEN_PATH && req.method === 'POST') return this.handleToken(req, res);
    if (GRAPHQL_PATHS.has(url.pathname)) {
      if (req.method === 'GET' || req.method === 'POST') return this.handleGraphql(req, res, url);
      respond(res, 405, { 'content-type': TEXT, allow: 'GET, POST' }, 'Method Not Allowed');
      return;
    }
    req.resume();
    respond(res, 404, { 'content-type': TEXT }, '404 page not found');
  }

  // ---- token endpoint

  private sendHydraError(res: ServerResponse, error: HydraError): void {
    const { status, description } = HYDRA_ERRORS[error];
    const body = { error, error_description: description, status_code: status };
    respond(res, status, HYDRA_HEADERS, JSON.stringify(body));
  }

  private async handleToken(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const body = await readBody(req);
    const ct = String(req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
    const form: Record<string, string> =
      ct === 'application/x-www-form-urlencoded' ? searchToRecord(new URLSearchParams(body.toString('utf8'))) : {};
    this.tokenRequests.push({ at: Date.now(), headers: req.headers, form });

    await this.delay(this.tokenDelayMs);
    if (this.closing) {
      res.destroy();
      return;
    }

    const failure = this.tokenFailures.shift();
    if (failure) {
      switch (failure.kind) {
        case 'status': {
          const text = failure.body ?? `${failure.status} ${http.STATUS_CODES[failure.status] ?? 'Error'}`;
          respond(res, failure.status, { 'content-type': failure.contentType ?? TEXT }, text);
          return;
        }
        case 'invalid-json':
          respond(res, 200, { 'content-type': JSON_CT }, '<html><body>upstream unavailable</body></html>');
          return;
        case 'missing-fields':
          respond(res, 200, { 'content-type': JSON_CT }, JSON.stringify({ scope: 'api', token_type: 'bearer' }));
          return;
        case 'hang':
          return; // tracked in openResponses; close() destroys it
        case 'reset':
          req.socket.destroy();
          return;
      }
    }

    // Hydra (fosite) order: grant_type present, client authentication, grant type, scope.
    if (!form.grant_type) return this.sendHydraError(res, 'invalid_request');
    if (!this.authenticateClient(req.headers, form)) return this.sendHydraError(res, 'invalid_client');
    if (form.grant_type !== 'client_credentials') return this.sendHydraError(res, 'unsupported_grant_type');
    const scopes = (form.scope ?? '').split(' ').filter(Boolean);
    if (scopes.length === 0 || scopes.some((s) => s !== 'api')) return this.sendHydraError(res, 'invalid_scope');

    const lifetime = this.tokenLifetimeSec;
    const token = this.issueToken(lifetime);
    const grant = { access_token: token, expires_in: lifetime, scope: 'api', token_type: 'bearer' };
    respond(res, 200, HYDRA_HEADERS, JSON.stringify(grant));
  }

  private authenticateClient(headers: IncomingHttpHeaders, form: Record<string, string>): boolean {
    let basic: { id: string; secret: string } | undefined;
    const auth = headers.authorization;
    if (typeof auth === 'string') {
      const m = /^Basic\s+(.+)$/i.exec(auth.trim());
      if (m) {
        const decoded = Buffer.from(m[1]!, 'base64').toString('utf8');
        const i = decoded.indexOf(':');
        if (i < 0) return false;
        basic = { id: decodeFormComponent(decoded.slice(0, i)), secret: decodeFormComponent(decoded.slice(i + 1)) };
      }
    }
    const post =
      form.client_id !== undefined && form.client_secret !== undefined
        ? { id: form.client_id, secret: form.client_secret }
        : undefined;
    let creds: { id: string; secret: string } | undefined;
    switch (this.authMethod) {
      case 'post':
        creds = basic ? undefined : post; // Basic where form post is expected: invalid_client
        break;
      case 'basic':
        creds = basic;
        break;
      case 'any':
        creds = basic ?? post;
        break;
    }
    if (!creds) return false;
    return safeEqual(creds.id, this.clientId) && safeEqual(creds.secret, this.clientSecret);
  }

  // ---- GraphQL over HTTP

  /** Checks a token (and consumes rejectNextTokens for otherwise-valid tokens). */
  private authorize(token: string | undefined): boolean {
    if (token === undefined || !this.isValid(token)) return false;
    if (this.rejectNextTokens > 0) {
      this.rejectNextTokens -= 1;
      return false;
    }
    return true;
  }

  private async handleGraphql(req: IncomingMessage, res: ServerResponse, url: URL): Promise<void> {
    const body = await readBody(req);
    const query = searchToRecord(url.searchParams);
    const token = extractToken(req.headers, query);
    const authorized = this.authorize(token);
    this.graphqlRequests.push({
      at: Date.now(),
      method: req.method ?? 'GET',
      path: url.pathname,
      query,
      headers: req.headers,
      body,
      token,
      authorized,
    });

    if (!authorized) {
      respond(res, 401, { 'content-type': TEXT }, 'Unauthorized');
      return;
    }

    const scripted = this.graphqlScript.shift();
    if (scripted) {
      await this.delay(scripted.delayMs ?? 0);
      if (this.closing) return void res.destroy();
      const headers: Record<string, string> = { ...(scripted.headers ?? {}) };
      if (!Object.keys(headers).some((h) => h.toLowerCase() === 'content-type')) {
        headers['content-type'] = isJsonLike(scripted.body) ? JSON_CT : TEXT;
      }
      respond(res, scripted.status, headers, scripted.body ?? '');
      return;
    }

    await this.delay(this.graphqlDelayMs);
    if (this.closing) return void res.destroy();

    let gqlQuery: unknown = null;
    let variables: unknown = null;
    let operationName: unknown = null;
    if (req.method === 'GET') {
      gqlQuery = query.query ?? null;
      operationName = query.operationName ?? null;
      if (query.variables !== undefined) {
        try {
          variables = JSON.parse(query.variables);
        } catch {
          variables = query.variables;
        }
      }
    } else {
      try {
        const parsed = JSON.parse(body.toString('utf8')) as Record<string, unknown>;
        if (parsed && typeof parsed === 'object') {
          gqlQuery = parsed.query ?? null;
          variables = parsed.variables ?? null;
          operationName = parsed.operationName ?? null;
        }
      } catch {
        // not JSON: echo with nulls
      }
    }

    const bytes = (variables as { bytes?: unknown } | null)?.bytes;
    if (req.method === 'POST' && typeof bytes === 'number' && Number.isFinite(bytes) && bytes >= 0) {
      await this.streamBlob(res, Math.floor(bytes));
      return;
    }

    respond(
      res,
      200,
      { 'content-type': JSON_CT },
      JSON.stringify({
        data: {
          echo: {
            method: req.method,
            path: url.pathname,
            query: gqlQuery,
            variables,
            operationName,
            bodyBytes: body.length,
            bodySha256: createHash('sha256').update(body).digest('hex'),
          },
        },
      }),
    );
  }

  /** Streams `{"data":{"blob":"xxx…"}}` with n x's in 64 KiB chunks, respecting backpressure. */
  private async streamBlob(res: ServerResponse, n: number): Promise<void> {
    const head = Buffer.from('{"data":{"blob":"');
    const tail = Buffer.from('"}}');
    res.writeHead(200, { 'content-type': JSON_CT, 'content-length': String(head.length + n + tail.length) });
    res.write(head);
    let remaining = n;
    while (remaining > 0) {
      if (res.destroyed || this.closing) return;
      const chunk = remaining >= BLOB_CHUNK.length ? BLOB_CHUNK : BLOB_CHUNK.subarray(0, remaining);
      remaining -= chunk.length;
      if (!res.write(chunk)) {
        await new Promise<void>((resolve) => {
          const done = () => {
            res.off('drain', done);
            res.off('close', done);
            resolve();
          };
          res.on('drain', done);
          res.on('close', done);
        });
      }
    }
    if (!res.destroyed) res.end(tail);
  }

  // ---- WebSocket

  private handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    socket.on('error', () => {});
    const url = new URL(req.url ?? '/', 'http://fake.invalid');
    const reject = (status: number, text: string, headers: Record<string, string> = {}) => {
      const body = Buffer.from(text);
      const extra = Object.entries(headers).map(([name, value]) => `${name}: ${value}\r\n`).join('');
      socket.once('finish', () => socket.destroy());
      socket.end(
        `HTTP/1.1 ${status} ${http.STATUS_CODES[status]}\r\n` +
          `Content-Type: ${TEXT}\r\nContent-Length: ${body.length}\r\nConnection: close\r\n${extra}\r\n` +
          text,
      );
    };
    if (this.closing) return void socket.destroy();
    if (!GRAPHQL_PATHS.has(url.pathname)) return reject(404, '404 page not found');

    const query = searchToRecord(url.searchParams);
    const protocols = parseProtocols(req.headers['sec-websocket-protocol']);
    const token = extractToken(req.headers, query);
    const accepted = this.authorize(token);
    const info: RecordedWsHandshake = {
      at: Date.now(),
      path: url.pathname,
      query,
      headers: req.headers,
      protocols,
      token,
      accepted,
    };
    this.wsHandshakes.push(info);
    if (!accepted) return reject(401, 'Unauthorized');
    const refusal = this.wsRefusals.shift();
    if (refusal) return reject(refusal.status, String(refusal.body ?? http.STATUS_CODES[refusal.status] ?? ''), refusal.headers);

    // Legacy graphql-ws is preferred; graphql-transport-ws if that's all the client offers; else none (legacy).
    const useTransport = !protocols.includes(LEGACY_PROTOCOL) && protocols.includes(TRANSPORT_PROTOCOL);
    const wss = useTransport ? this.transportWss : this.legacyWss;
    wss.handleUpgrade(req, socket, head, (ws) => {
      if (this.closing) return void ws.terminate();
      this.wsServerSockets.add(ws);
      ws.once('close', () => this.wsServerSockets.delete(ws));
      if (useTransport) {
        wss.emit('connection', ws, req); // graphql-ws useServer handles it
      } else {
        ws.on('error', () => {});
        this.serveLegacy(ws);
      }
      this.emit('ws-connection', ws, info);
    });
  }

  private buildSchema(): GraphQLSchema {
    const schema = buildSchema(SDL);
    const ticks = schema.getSubscriptionType()!.getFields().ticks!;
    ticks.subscribe = (_src, args: { count?: number | null }) => {
      const it = new TickIterator(
        () => this.wsEventIntervalMs,
        args.count,
        (done) => this.tickIterators.delete(done),
      );
      this.tickIterators.add(it);
      return it;
    };
    ticks.resolve = (payload: TickEvent) => payload.ticks;
    const hello = schema.getQueryType()!.getFields().hello!;
    hello.resolve = () => 'world';
    return schema;
  }

  /** Hand-written legacy `graphql-ws` (subscriptions-transport-ws) protocol. */
  private serveLegacy(ws: WebSocket): void {
    const ops = new Map<string, AsyncIterableIterator<ExecutionResult> | null>();
    let inited = false;
    let kaTimer: NodeJS.Timeout | undefined;
    const send = (msg: unknown) => {
      if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(msg));
    };
    const stop = (id: string) => {
      const it = ops.get(id);
      ops.delete(id);
      if (it && typeof it.return === 'function') void it.return().catch(() => {});
    };

    ws.on('message', (raw) => {
      let msg: { type?: unknown; id?: unknown; payload?: unknown };
      try {
        msg = JSON.parse(Buffer.isBuffer(raw) ? raw.toString('utf8') : String(raw)) as typeof msg;
        if (!msg || typeof msg !== 'object' || typeof msg.type !== 'string') throw new Error('bad message');
      } catch {
        ws.close(4400, 'Invalid message received');
        return;
      }
      const id = typeof msg.id === 'string' || typeof msg.id === 'number' ? String(msg.id) : undefined;
      switch (msg.type) {
        case 'connection_init': {
          send({ type: 'connection_ack' });
          if (!inited) {
            inited = true;
            send({ type: 'ka' });
            const ms = this.keepAliveMs;
            if (ms > 0 && Number.isFinite(ms)) kaTimer = setInterval(() => send({ type: 'ka' }), ms);
          }
          return;
        }
        case 'start': {
          if (id === undefined) {
            send({ type: 'error', payload: { message: 'missing operation id' } });
            return;
          }
          if (!inited) {
            send({ type: 'error', id, payload: { message: 'connection not initialised' } });
            return;
          }
          if (ops.has(id)) stop(id);
          ops.set(id, null);
          void this.runLegacyOperation(id, msg.payload, ops, send);
          return;
        }
        case 'stop':
          if (id !== undefined) stop(id);
          return;
        case 'connection_terminate':
          ws.close(1000, 'Normal Closure');
          return;
        default:
          send({ type: 'error', id, payload: { message: `unknown message type ${msg.type}` } });
      }
    });

    ws.once('close', () => {
      if (kaTimer) clearInterval(kaTimer);
      for (const id of [...ops.keys()]) stop(id);
    });
  }

  private async runLegacyOperation(
    id: string,
    payload: unknown,
    ops: Map<string, AsyncIterableIterator<ExecutionResult> | null>,
    send: (msg: unknown) => void,
  ): Promise<void> {
    const p = (payload ?? {}) as { query?: unknown; variables?: unknown; operationName?: unknown };
    const active = () => ops.has(id);
    try {
      if (typeof p.query !== 'string') throw new GraphQLError('Must provide query string.');
      let document: DocumentNode;
      try {
        document = parse(p.query);
      } catch (err) {
        send({ type: 'error', id, payload: { message: (err as Error).message } });
        ops.delete(id);
        return;
      }
      const errors = validate(this.schema, document);
      if (errors.length > 0) {
        send({ type: 'error', id, payload: { message: errors.map((e) => e.message).join('; ') } });
        ops.delete(id);
        return;
      }
      const variableValues = (p.variables ?? undefined) as Record<string, unknown> | undefined;
      const operationName = typeof p.operationName === 'string' ? p.operationName : undefined;
      const op = getOperationAST(document, operationName);
      const args = { schema: this.schema, document, variableValues, operationName };
      if (op?.operation === 'subscription') {
        const result = await subscribe(args);
        if (!isAsyncIterable(result)) {
          if (active()) send({ type: 'data', id, payload: result });
        } else {
          if (!active()) {
            void result.return?.();
            return;
          }
          ops.set(id, result);
          for await (const event of result) {
            if (!active()) break;
            send({ type: 'data', id, payload: event });
          }
        }
      } else {
        const result = await execute(args);
        if (active()) send({ type: 'data', id, payload: result });
      }
      if (active()) {
        ops.delete(id);
        send({ type: 'complete', id });
      }
    } catch (err) {
      if (active()) {
        ops.delete(id);
        send({ type: 'error', id, payload: { message: (err as Error).message } });
      }
    }
  }
}
