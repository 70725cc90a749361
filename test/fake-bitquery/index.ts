/**
 * A controllable fake of Bitquery's token endpoint (Ory Hydra), GraphQL-over-HTTP
 * endpoint, GraphQL-over-WebSocket endpoint and Usage API, for tests over real loopback sockets.
 *
 * Behaviour follows Bitquery's documented API (docs.bitquery.io):
 *  - POST /oauth2/token: client_credentials grant, form body or HTTP Basic credentials,
 *    Hydra-style JSON errors (401 invalid_client, 400 invalid_scope, ...).
 *  - /graphql and /eap (GET, POST): token via `Authorization: Bearer` or `?token=`;
 *    401 answers are the plain text `Unauthorized` (not JSON).
 *  - WebSocket on /graphql and /eap: auth checked at the handshake only (revoking a token leaves
 *    its sockets open); `graphql-ws` (legacy) preferred, `graphql-transport-ws` when it is all the
 *    client offers, legacy when it offers none; both hand-written in ws.ts. Streams are billed as
 *    Bitquery bills them: `stop` / `complete` does not end one, only closing its socket does.
 *  - GET /api/usage (Bitquery's is on account.bitquery.io; here on the same origin, `usageUrl`).
 *
 * API (all on a FakeBitquery from `await FakeBitquery.start(options)`; `close()` when done;
 * `reset()` between subtests clears records and queues, see its comment):
 *
 * Credentials and tokens
 *   clientId / clientSecret (mutable, default demo-client / demo-secret); addClient(id, secret)
 *   accepts more clients on the same fake (one per credential set). Tokens remember the client
 *   that got them. issueToken(lifetimeSec?, clientId?) mints one directly (static tokens);
 *   isValid, revoke, revokeAll, expire; tokenLifetimeSec (expires_in of new tokens, default 17999).
 *   tokenFailures queue, tokenDelayMs; tokenRequests and issuedTokens records.
 *
 * GraphQL over HTTP
 *   Answers 200 {"data":{"echo":{method, path, query, variables, operationName, bodyBytes,
 *   bodySha256}}}, or a streamed {"data":{"blob":"xxx..."}} of variables.bytes x's. graphqlScript
 *   queue of canned answers (`reset: true`: the socket is destroyed without an answer),
 *   graphqlDelayMs, rejectNextTokens (valid tokens answered 401, HTTP and WebSocket handshakes);
 *   graphqlRequests record. endDelays() ends every delay under way at once (hold answers with a
 *   long delay, release them when the test is ready).
 *
 * Usage API: GET /api/usage with `Authorization: Bearer <token>` (no `?token=`)
 *   - A token the fake issued and still valid, else 401 text `Unauthorized`. Other methods: 405.
 *   - 200 JSON as documented: {account_id, payer_id, status, billing_period: {started_at, ended_at,
 *     plan_name, product, limits{points_limit, rate_limit, session_limit, subscription_limit,
 *     time_sec_limit, traffic_bytes_limit, team_slots_limit}, usage{points_usage, requests_usage,
 *     time_sec_usage, traffic_bytes_usage}, description{points_limit, rate_limit, session_limit,
 *     subscription_limit}}}, read from a FakeAccount (same field names, period as started_at/ended_at).
 *   - `usage`: the account every token reports unless it has its own. Defaults: account_id 12345,
 *     status 'active', plan_name 'Pro', product null, points_limit 1000000, rate_limit 90,
 *     session_limit 6, subscription_limit 100, time_sec/traffic_bytes limits 0 (none),
 *     team_slots_limit 5, all usage 0, period from today 00:00:00Z to 30 days later minus 1 s.
 *   - usageFor(key): an account of its own (created from the defaults, account_id 12346, 12347, ...)
 *     for a client id (all tokens of that client) or for a static token (issueToken() without a
 *     client). Lookup for a token: its client's account, else the token's own, else `usage`.
 *   - Charging: every authorized GraphQL HTTP request the fake answers 200 (echo, blob, scripted
 *     200) adds pointsPerQuery (default 5) to points_usage and 1 to requests_usage of the token's
 *     account. 401s and non-200 scripted answers are not charged.
 *   - usageFailures: queue of UsageFailure ({kind:'status', status, body?, contentType?} plain
 *     text by default, {kind:'invalid-json'}, {kind:'hang'}, {kind:'reset'}); each request shifts
 *     one, before the auth check. usageDelayMs delays every answer.
 *   - usageRequests: every request, {at, headers, token, authorized}, in order.
 *
 * WebSocket subscriptions (schema: `subscription { ticks(count: Int) { n at } }`,
 * `subscription { events(topic: String = "default") { seq topic at } }`, `query { hello }`)
 *   - ticks: one event every wsEventIntervalMs (default 50), n = 1, 2, ...; ends after `count`.
 *   - events: only publish(topic?) sends them: {seq, topic, at} to every running `events`
 *     subscription of that topic (of any topic without one); seq counts publish() calls.
 *   - The fake sends no WebSocket-level pings (it answers them, as ws does).
 *   - Legacy `graphql-ws`: connection_init -> connection_ack then `ka` at once and every
 *     keepAliveMs (default 10000); start -> data ... complete; bad JSON closes 4400; `stop` is
 *     answered `complete`, yet `data` for that id keeps coming until the socket closes.
 *   - `graphql-transport-ws` (as graphql-ws's server): connection_init -> connection_ack, then an
 *     unsolicited `pong` every keepAliveMs; ping -> pong (payload echoed); subscribe -> next ...
 *     complete, GraphQL errors as `error` [{message, locations}]; `complete` from the client is not
 *     answered and `next` for that id keeps coming (the id may be reused). Closes: 4400 invalid
 *     message, 4401 subscribe before connection_init, 4408 no connection_init within
 *     connectionInitTimeoutMs (default 3000), 4409 duplicate running id, 4429 second connection_init.
 *   - sockets(): FakeSocketInfo[] {id, path, protocol, token, clientId, openedAt, silenced, streams}
 *     of open sockets; openSockets() their count; wsServerSockets the server-side ws objects.
 *   - activeStreams(): FakeStreamInfo[] {socketId, protocol, path, clientId, id, query (graphql-js
 *     parse + print), variables, operationName, field 'ticks' | 'events', topic, startedAt,
 *     stopRequested}: the running subscriptions, i.e. what Bitquery bills (queries are not streams).
 *   - publish(topic?) -> {seq, delivered}; silence(match?) / unsilence(match?) -> count changed;
 *     terminate(match?) (no close frame, 1006) and closeSockets(code, reason?, match?) -> count;
 *     errorStreams(message, match?) / completeStreams(match?) -> count: server-side `error` or
 *     `complete` for matching streams, which stop; the socket stays. `match` is a predicate on
 *     FakeSocketInfo (sockets) or FakeStreamInfo (streams); omitted: all.
 *   - silence: the socket sends nothing at the protocol level (no events, ka, pong, acks, errors,
 *     completes; events meanwhile are lost) while the connection stays open, incoming messages are
 *     still handled and WebSocket-level pings are still answered. Sockets opened later speak.
 *   - Handshakes: wsHandshakes (RecordedWsHandshake, socketId when accepted), wsRefusals queue
 *     (a ScriptedResponse with `reset: true` destroys the socket without an answer),
 *     rejectNextTokens; 'ws-connection' event (ws, handshake). Closes: wsCloses (RecordedWsClose
 *     {at, socketId, path, protocol, code, reason}) and the 'ws-close' event, both after the socket
 *     left sockets() / openSockets(): wait on either for a socket to close.
 *
 * Random faults, for soak tests (faults.ts; also cli.ts flags)
 *   - setFaults(config) / setFaults(undefined) at run time, or the `faults` option. FaultConfig:
 *     {seed?, tokenError?, tokenTimeout?, http401?, http401Revokes?, http5xx?, httpSlow?,
 *     httpReset?, slowMs? (default 1000)}; rates are probabilities per request (default 0), the
 *     token pair and the GraphQL four each adding up to 1 at most (else RangeError).
 *   - Token endpoint (after tokenFailures, before credentials are checked): tokenError answers 500
 *     Hydra JSON {"error":"server_error",...}; tokenTimeout never answers.
 *   - Authorized GraphQL HTTP requests no graphqlScript entry answered: http401 answers 401 text
 *     `Unauthorized` (token still valid, or revoked with http401Revokes); http5xx answers one of
 *     FIVE_XX_ANSWERS as text/plain (500 `Too many simultaneous queries`, 500 `Memory limit`, 502
 *     `Bad Gateway`, 503 `Service Unavailable`); httpSlow answers normally after slowMs; httpReset
 *     sends 200, the headers and half the body, then a TCP reset. The last two are charged points.
 *   - Deterministic: with the same seed and rates, the n-th token request and the n-th such GraphQL
 *     request since setFaults() get the same fault, whatever the timing; `faults.seed` tells the
 *     seed in force (random when none was given).
 *   - faultCounts {tokenError, tokenTimeout, http401, http5xx, httpSlow, httpReset}; injectedFaults
 *     (InjectedFault {at, kind, n, path, headers, token?, status?, body?}); the 'fault' event.
 *   - recordRequests (option and field, default true): off, the record arrays stop growing (a long
 *     soak keeps the fake's memory flat); counters and events go on.
 *   - GET /_fake/stats: {"seed", "faults": faultCounts, "openSockets", "activeStreams"} (for cli.ts).
 */
import { EventEmitter } from 'node:events';
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import http, { type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { WebSocket } from 'ws';
import {
  WsService,
  type FakeSocketInfo,
  type FakeStreamInfo,
  type RecordedWsClose,
  type SocketMatch,
  type StreamMatch,
} from './ws.js';
import { FAULT_KINDS, FaultSchedule, type FaultConfig, type FaultKind } from './faults.js';

export type { FakeSocketInfo, FakeStreamInfo, RecordedWsClose, SocketMatch, StreamMatch, WsProtocol } from './ws.js';
export { FAULT_KINDS, FIVE_XX_ANSWERS, type FaultConfig, type FaultKind } from './faults.js';

// ---------------------------------------------------------------------------
// Public types
// ---------------------------------------------------------------------------

/** A failure the token endpoint should produce instead of its normal answer. */
export type TokenFailure =
  | { kind: 'status'; status: number; body?: string; contentType?: string } // e.g. 500, 503
  | { kind: 'invalid-json' } // 200 with a non-JSON body
  | { kind: 'missing-fields' } // 200 JSON without access_token/expires_in
  | { kind: 'hang' } // never answers (until close())
  | { kind: 'reset' } // destroys the socket without answering
  | { kind: 'echo'; status: number }; // a Hydra-style error whose error_description quotes the request as received

/** A failure the Usage API should produce instead of its normal answer. */
export type UsageFailure =
  | { kind: 'status'; status: number; body?: string; contentType?: string } // e.g. 500 text, 502 from the gateway
  | { kind: 'invalid-json' } // 200 application/json with a body that is not JSON
  | { kind: 'hang' } // never answers (until the client gives up, or close())
  | { kind: 'reset' }; // destroys the socket without answering

/** Billing-period status as the Usage API reports it. */
export type AccountStatus = 'active' | 'grace' | 'blocked' | 'expired';

/**
 * One Bitquery account as `GET /api/usage` reports it (field names as in the JSON). Mutable:
 * tests set status, limits, usage and the period; GraphQL HTTP traffic adds to `usage`.
 */
export interface FakeAccount {
  account_id: number;
  payer_id: number;
  status: AccountStatus;
  /** Billing period bounds, ISO 8601 as sent (e.g. 2026-06-24T00:00:00Z). */
  started_at: string;
  ended_at: string;
  plan_name: string;
  product: string | null;
  /** 0 means no limit. */
  limits: {
    points_limit: number;
    rate_limit: number;
    session_limit: number;
    subscription_limit: number;
    time_sec_limit: number;
    traffic_bytes_limit: number;
    team_slots_limit: number;
  };
  usage: {
    points_usage: number;
    requests_usage: number;
    time_sec_usage: number;
    traffic_bytes_usage: number;
  };
}

/** A canned answer for one authorized GraphQL HTTP request. */
export interface ScriptedResponse {
  status: number;
  /** Response headers. Without a content-type, JSON-looking bodies get application/json, others text/plain. */
  headers?: Record<string, string>;
  body?: string | Buffer;
  /** Wait this long before answering. */
  delayMs?: number;
  /** Instead of answering, destroy the connection (after delayMs): a reset before the response head. */
  reset?: boolean;
}

export interface FakeBitqueryOptions {
  host?: string; // default '127.0.0.1'
  port?: number; // default 0 (ephemeral)
  clientId?: string; // default 'demo-client'
  clientSecret?: string; // default 'demo-secret'
  tokenLifetimeSec?: number; // expires_in of issued tokens, default 17999
  authMethod?: 'post' | 'basic' | 'any'; // how the client must send credentials; default 'any'
  keepAliveMs?: number; // keep-alive period on WebSockets (legacy `ka`, transport `pong` message), default 10000
  wsEventIntervalMs?: number; // period of `ticks` subscription events, default 50
  connectionInitTimeoutMs?: number; // graphql-transport-ws: close 4408 without connection_init by then, default 3000 (graphql-ws's)
  faults?: FaultConfig; // random faults from the start (see setFaults), default none
  recordRequests?: boolean; // keep the request / handshake / close / fault records, default true
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

/** One request seen by GET /api/usage, authorized or not (recorded before any failure/delay is applied). */
export interface RecordedUsageRequest {
  at: number;
  headers: IncomingHttpHeaders;
  token: string | undefined;
  authorized: boolean;
}

/** One fault injected by the random schedule (setFaults). */
export interface InjectedFault {
  at: number;
  kind: FaultKind;
  /** The request's number in its sequence since setFaults(): token requests, or authorized GraphQL HTTP requests (1, 2, ...). */
  n: number;
  path: string;
  headers: IncomingHttpHeaders;
  /** GraphQL faults: the token the request carried. */
  token?: string;
  /** tokenError, http401, http5xx: the status and body answered. */
  status?: number;
  body?: string;
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
  /** Accepted handshakes: the socket's id (FakeSocketInfo.id). */
  socketId?: number;
}

// ---------------------------------------------------------------------------
// Constants
// ---------------------------------------------------------------------------

const GRAPHQL_PATHS = new Set(['/graphql', '/eap']);
const TOKEN_PATH = '/oauth2/token';
const USAGE_PATH = '/api/usage';
const STATS_PATH = '/_fake/stats';
const TEXT = 'text/plain; charset=utf-8';
const JSON_CT = 'application/json';
/** Headers Hydra puts on token endpoint answers. */
const HYDRA_HEADERS = { 'content-type': JSON_CT, 'cache-control': 'no-store', pragma: 'no-cache' };
const BLOB_CHUNK = Buffer.alloc(64 * 1024, 'x');
const DEFAULT_ACCOUNT_ID = 12345;

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
  server_error: {
    status: 500,
    description:
      'The authorization server encountered an unexpected condition that prevented it from fulfilling the request.',
  },
} as const;
type HydraError = keyof typeof HYDRA_ERRORS;


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

/** The token of an `Authorization: Bearer` header only (the Usage API takes no `?token=`). */
function bearerToken(headers: IncomingHttpHeaders): string | undefined {
  return extractToken(headers, {});
}

/** ISO 8601 without milliseconds, as Bitquery writes period bounds. */
function isoSeconds(ms: number): string {
  return new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');
}

/**
 * A fresh account: active Pro-like plan (1M points, 90 requests a minute, 100 streams), nothing used,
 * a 30-day period that started today at 00:00 UTC.
 */
function defaultAccount(accountId: number): FakeAccount {
  const start = new Date();
  start.setUTCHours(0, 0, 0, 0);
  const startMs = start.getTime();
  return {
    account_id: accountId,
    payer_id: accountId,
    status: 'active',
    started_at: isoSeconds(startMs),
    ended_at: isoSeconds(startMs + 30 * 86_400_000 - 1000),
    plan_name: 'Pro',
    product: null,
    limits: {
      points_limit: 1_000_000,
      rate_limit: 90,
      session_limit: 6,
      subscription_limit: 100,
      time_sec_limit: 0,
      traffic_bytes_limit: 0,
      team_slots_limit: 5,
    },
    usage: { points_usage: 0, requests_usage: 0, time_sec_usage: 0, traffic_bytes_usage: 0 },
  };
}

/** The Usage API's JSON for an account. */
function usageBody(a: FakeAccount): string {
  const { points_limit, rate_limit, session_limit, subscription_limit } = a.limits;
  return JSON.stringify({
    account_id: a.account_id,
    payer_id: a.payer_id,
    status: a.status,
    billing_period: {
      started_at: a.started_at,
      ended_at: a.ended_at,
      plan_name: a.plan_name,
      product: a.product,
      limits: { ...a.limits },
      usage: { ...a.usage },
      description: { points_limit, rate_limit, session_limit, subscription_limit },
    },
  });
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
  /** `${url}/api/usage` (Bitquery's is https://account.bitquery.io/api/usage) */
  readonly usageUrl: string;

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
  /** Queue: each authorized WebSocket handshake shifts one and is refused with it (e.g. 429 Too Many Sessions), after its delayMs. */
  wsRefusals: ScriptedResponse[] = [];
  /** Every token request, in order. */
  readonly tokenRequests: RecordedTokenRequest[] = [];
  /** Every GraphQL HTTP request on /graphql or /eap, in order (including unauthorized ones). */
  readonly graphqlRequests: RecordedGraphqlRequest[] = [];
  /** Every WebSocket handshake on /graphql or /eap, in order (including rejected ones). */
  readonly wsHandshakes: RecordedWsHandshake[] = [];
  /** Every WebSocket that closed, in order (emitted as 'ws-close' too). */
  readonly wsCloses: RecordedWsClose[] = [];
  /** Every fault the random schedule injected, in order (emitted as 'fault' too). */
  readonly injectedFaults: InjectedFault[] = [];
  /** Faults injected by the random schedule, per kind (kept when recordRequests is off). */
  readonly faultCounts: Record<FaultKind, number> = Object.fromEntries(FAULT_KINDS.map((k) => [k, 0])) as Record<FaultKind, number>;
  /**
   * Whether tokenRequests, graphqlRequests, usageRequests, wsHandshakes, wsCloses and injectedFaults
   * grow. A long soak turns it off to keep the fake's memory flat; counters and events go on.
   */
  recordRequests: boolean;
  /** Every token minted (by the endpoint or issueToken()), in order. */
  readonly issuedTokens: string[] = [];
  /**
   * The account every token reports and is charged to unless usageFor() gave its client id (or the
   * static token itself) an account of its own. Mutable; reset() restores the defaults in place.
   */
  readonly usage: FakeAccount = defaultAccount(DEFAULT_ACCOUNT_ID);
  /** Points charged per GraphQL HTTP query answered 200 (Bitquery's realtime rate: 5 a cube). */
  pointsPerQuery = 5;
  /** Delay before answering Usage API requests. */
  usageDelayMs = 0;
  /** Queue: each Usage API request shifts one failure off, if any, and answers with it (before the auth check). */
  usageFailures: UsageFailure[] = [];
  /** Every Usage API request, in order (including unauthorized ones). */
  readonly usageRequests: RecordedUsageRequest[] = [];
  /** Server-side ws objects of currently open WebSocket connections. */
  readonly wsServerSockets = new Set<WebSocket>();
  /** Period of `ticks` subscription events (read when each event is scheduled). */
  wsEventIntervalMs: number;
  /** Keep-alive period for WebSockets opened from now on. */
  keepAliveMs: number;
  /** graphql-transport-ws sockets opened from now on are closed 4408 without connection_init by then (0: never). */
  connectionInitTimeoutMs: number;

  private readonly server: http.Server;
  private readonly tokens = new Map<string, { expiresAt: number; clientId: string | undefined }>();
  /** Client id -> secret of clients accepted besides clientId/clientSecret. */
  private readonly otherClients = new Map<string, string>();
  /** Accounts of their own, by client id or static token (see usageFor). */
  private readonly accounts = new Map<string, FakeAccount>();
  private nextAccountId = DEFAULT_ACCOUNT_ID + 1;
  private readonly httpSockets = new Set<Socket | Duplex>();
  private readonly openResponses = new Set<ServerResponse>();
  private readonly timers = new Map<NodeJS.Timeout, () => void>();
  private readonly ws: WsService;
  private schedule: FaultSchedule | undefined;
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
    this.connectionInitTimeoutMs = opts.connectionInitTimeoutMs ?? 3000;
    this.recordRequests = opts.recordRequests ?? true;
    this.setFaults(opts.faults);
    this.url = '';
    this.wsUrl = '';
    this.tokenUrl = '';
    this.usageUrl = '';

    this.ws = new WsService({
      keepAliveMs: () => this.keepAliveMs,
      connectionInitTimeoutMs: () => this.connectionInitTimeoutMs,
      eventIntervalMs: () => this.wsEventIntervalMs,
    });

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
    const mutable = fake as { -readonly [K in 'url' | 'wsUrl' | 'tokenUrl' | 'usageUrl']: string };
    mutable.url = `http://${origin}`;
    mutable.wsUrl = `ws://${origin}`;
    mutable.tokenUrl = `http://${origin}${TOKEN_PATH}`;
    mutable.usageUrl = `http://${origin}${USAGE_PATH}`;
    return fake;
  }

  // ------------------------------------------------------------------ tokens

  /**
   * Mints a valid token directly (static-token tests); lifetime defaults to tokenLifetimeSec. With a
   * clientId, the token belongs to that client (its account, see usageFor), as if the endpoint minted it.
   */
  issueToken(lifetimeSec: number = this.tokenLifetimeSec, clientId?: string): string {
    const token = `ory_at_${randomBytes(32).toString('base64url')}.${randomBytes(32).toString('base64url')}`;
    this.tokens.set(token, { expiresAt: Date.now() + lifetimeSec * 1000, clientId });
    this.issuedTokens.push(token);
    return token;
  }

  /** True if the token was issued, not revoked and not expired. */
  isValid(token: string): boolean {
    const t = this.tokens.get(token);
    return t !== undefined && Date.now() < t.expiresAt;
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
    const t = this.tokens.get(token);
    if (t) t.expiresAt = Date.now() - 1;
  }

  /**
   * Accepts another client at the token endpoint besides clientId/clientSecret (a second credential
   * set on the same fake); calling it again with the same id changes that client's secret.
   */
  addClient(clientId: string, clientSecret: string): void {
    this.otherClients.set(clientId, clientSecret);
  }

  // ------------------------------------------------------------------ faults

  /**
   * Starts random faults with these probabilities (a fresh generator from config.seed, or a random
   * seed), or stops them (undefined). Throws a RangeError for a probability outside 0..1, token or
   * GraphQL probabilities adding up to more than 1, a seed that is not an integer, a negative slowMs.
   * faultCounts and injectedFaults go on counting.
   */
  setFaults(config: FaultConfig | undefined): void {
    this.schedule = config ? new FaultSchedule(config) : undefined;
  }

  /** The fault configuration in force, with its seed; undefined when off. */
  get faults(): FaultSchedule['config'] | undefined {
    return this.schedule?.config;
  }

  private injectFault(fault: InjectedFault): void {
    this.faultCounts[fault.kind] += 1;
    this.record(this.injectedFaults, fault);
    this.emit('fault', fault);
  }

  private record<T>(list: T[], item: T): void {
    if (this.recordRequests) list.push(item);
  }

  // ------------------------------------------------------------------ usage

  /**
   * The account of its own for `key`, created with the defaults (next account_id) on first use.
   * `key` is a client id (every token minted for that client reports and is charged to it) or a
   * token from issueToken() without a client (a static token). Other tokens use `usage`.
   */
  usageFor(key: string): FakeAccount {
    let account = this.accounts.get(key);
    if (!account) {
      account = defaultAccount(this.nextAccountId++);
      this.accounts.set(key, account);
    }
    return account;
  }

  /** The account a token reports and is charged to. */
  private accountOf(token: string): FakeAccount {
    const clientId = this.tokens.get(token)?.clientId;
    return (clientId !== undefined ? this.accounts.get(clientId) : undefined) ?? this.accounts.get(token) ?? this.usage;
  }

  /** Charges one answered GraphQL HTTP query to the token's account. */
  private charge(token: string): void {
    const { usage } = this.accountOf(token);
    usage.points_usage += this.pointsPerQuery;
    usage.requests_usage += 1;
  }

  // ------------------------------------------------------------------ misc

  /** Currently open WebSocket connections on the fake (for leak tests). */
  openSockets(): number {
    return this.wsServerSockets.size;
  }

  // ------------------------------------------------------------------ WebSocket streams

  /** The open WebSockets, in the order they were accepted. */
  sockets(): FakeSocketInfo[] {
    return this.ws.socketList();
  }

  /**
   * The subscriptions running on open sockets: Bitquery's billed streams. A `stop` / `complete` from
   * the client does not remove one (stopRequested turns true); its socket closing, its natural end
   * (`ticks(count:)`), errorStreams() and completeStreams() do.
   */
  activeStreams(): FakeStreamInfo[] {
    return this.ws.streamList();
  }

  /**
   * Sends one `events` event, `{seq, topic, at}`, to every running `events(topic:)` subscription of
   * that topic (every `events` subscription when topic is omitted), each in its socket's protocol.
   * seq counts publish() calls (1, 2, ...; reset() restarts it). `delivered`: subscriptions that got
   * it (silenced sockets drop it).
   */
  publish(topic?: string): { seq: number; delivered: number } {
    return this.ws.publish(topic);
  }

  /**
   * Matching open sockets stop sending anything at the GraphQL protocol level: no events, `ka`,
   * `pong` (keep-alive or answer), acks, errors or completes; events meanwhile are dropped. The TCP
   * connection stays open, incoming messages are still handled (a subscribe still starts a stream),
   * WebSocket-level pings are still answered. Sockets opened later are not silenced. Returns how many
   * sockets changed.
   */
  silence(match: SocketMatch = () => true): number {
    return this.ws.setSilenced(match, true);
  }

  /** Matching silenced sockets send again (from the next message on). Returns how many changed. */
  unsilence(match: SocketMatch = () => true): number {
    return this.ws.setSilenced(match, false);
  }

  /** Drops matching sockets abruptly: no close frame (the peer sees 1006). Returns how many. */
  terminate(match: SocketMatch = () => true): number {
    return this.ws.terminate(match);
  }

  /** Closes matching sockets with a close frame carrying code and reason. Returns how many. */
  closeSockets(code: number, reason = '', match: SocketMatch = () => true): number {
    return this.ws.closeSockets(match, code, reason);
  }

  /**
   * Ends matching streams from the server side with a protocol `error` carrying message
   * (legacy: payload {message}; transport: payload [{message}]); the socket stays open. Returns how many.
   */
  errorStreams(message: string, match: StreamMatch = () => true): number {
    return this.ws.endStreams(match, message);
  }

  /** Ends matching streams from the server side with `complete`; the socket stays open. Returns how many. */
  completeStreams(match: StreamMatch = () => true): number {
    return this.ws.endStreams(match, undefined);
  }

  /** Emitted after a WebSocket is accepted and its protocol handler attached. */
  override on(event: 'ws-connection', fn: (ws: WebSocket, info: RecordedWsHandshake) => void): this;
  /** Emitted when a WebSocket has closed (after openSockets() and sockets() dropped it). */
  override on(event: 'ws-close', fn: (record: RecordedWsClose) => void): this;
  /** Emitted for each fault the random schedule injects, as it is applied. */
  override on(event: 'fault', fn: (fault: InjectedFault) => void): this;
  override on(event: string | symbol, fn: (...args: any[]) => void): this;
  override on(event: string | symbol, fn: (...args: any[]) => void): this {
    return super.on(event, fn);
  }

  /**
   * Clears records (requests, handshakes, wsCloses, the issuedTokens list) and queues (tokenFailures,
   * graphqlScript, rejectNextTokens, wsRefusals, usageFailures); restores `usage` to the defaults
   * (same object) and forgets the accounts of usageFor(); unsilences sockets and restarts publish()'s
   * seq; turns random faults off and zeroes faultCounts. Issued tokens, open sockets and their streams
   * stay; delays, credentials (addClient too), pointsPerQuery and recordRequests are kept.
   */
  reset(): void {
    this.tokenRequests.length = 0;
    this.wsCloses.length = 0;
    this.injectedFaults.length = 0;
    for (const k of FAULT_KINDS) this.faultCounts[k] = 0;
    this.schedule = undefined;
    this.ws.setSilenced(() => true, false);
    this.ws.resetSequence();
    this.usageRequests.length = 0;
    this.usageFailures.length = 0;
    Object.assign(this.usage, defaultAccount(DEFAULT_ACCOUNT_ID));
    this.accounts.clear();
    this.nextAccountId = DEFAULT_ACCOUNT_ID + 1;
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
      this.endDelays();
      this.ws.close();
      for (const res of this.openResponses) res.destroy();
      this.openResponses.clear();
      const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
      this.server.closeAllConnections();
      for (const s of this.httpSockets) s.destroy();
      await closed;
      this.removeAllListeners();
    })();
    return this.closePromise;
  }

  // ------------------------------------------------------------------ internals

  /** Resolves after ms, or immediately once close() starts. */
  /** Ends every delay under way (graphqlDelayMs, scripted delayMs, tokenDelayMs, usageDelayMs) now; returns how many. */
  endDelays(): number {
    const ended = this.timers.size;
    for (const [t, wake] of this.timers) {
      clearTimeout(t);
      wake();
    }
    this.timers.clear();
    return ended;
  }

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
    if (url.pathname === STATS_PATH && req.method === 'GET') {
      req.resume();
      const stats = {
        seed: this.faults?.seed ?? null,
        faults: this.faultCounts,
        openSockets: this.openSockets(),
        activeStreams: this.activeStreams().length,
      };
      return respond(res, 200, { 'content-type': JSON_CT }, JSON.stringify(stats));
    }
    if (url.pathname === USAGE_PATH) {
      if (req.method === 'GET') return this.handleUsage(req, res);
      req.resume();
      respond(res, 405, { 'content-type': TEXT, allow: 'GET' }, 'Method Not Allowed');
      return;
    }
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
    this.record(this.tokenRequests, { at: Date.now(), headers: req.headers, form });

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
        case 'echo': {
          // What a careless endpoint (or a proxy in front of it) does: quote what it was sent.
          const quoted = `form ${JSON.stringify(form)}, body ${body.toString('utf8')}, authorization ${req.headers.authorization ?? 'none'}`;
          const echo = { error: 'invalid_client', error_description: `cannot authenticate: ${quoted}`, status_code: failure.status };
          respond(res, failure.status, HYDRA_HEADERS, JSON.stringify(echo));
          return;
        }
      }
    }
    const fault = this.schedule?.nextToken();
    if (fault) {
      const n = this.schedule!.tokenDraws;
      if (fault === 'tokenTimeout') {
        this.injectFault({ at: Date.now(), kind: fault, n, path: TOKEN_PATH, headers: req.headers });
        return; // never answered; tracked in openResponses, gone when the client gives up or close()
      }
      const { status, description } = HYDRA_ERRORS.server_error;
      const body = JSON.stringify({ error: 'server_error', error_description: description, status_code: status });
      this.injectFault({ at: Date.now(), kind: fault, n, path: TOKEN_PATH, headers: req.headers, status, body });
      return respond(res, status, HYDRA_HEADERS, body);
    }

    // Hydra (fosite) order: grant_type present, client authentication, grant type, scope.
    if (!form.grant_type) return this.sendHydraError(res, 'invalid_request');
    const clientId = this.authenticateClient(req.headers, form);
    if (clientId === undefined) return this.sendHydraError(res, 'invalid_client');
    if (form.grant_type !== 'client_credentials') return this.sendHydraError(res, 'unsupported_grant_type');
    const scopes = (form.scope ?? '').split(' ').filter(Boolean);
    if (scopes.length === 0 || scopes.some((s) => s !== 'api')) return this.sendHydraError(res, 'invalid_scope');

    const lifetime = this.tokenLifetimeSec;
    const token = this.issueToken(lifetime, clientId);
    const grant = { access_token: token, expires_in: lifetime, scope: 'api', token_type: 'bearer' };
    respond(res, 200, HYDRA_HEADERS, JSON.stringify(grant));
  }

  /** The id of the client the request authenticates as, or undefined. */
  private authenticateClient(headers: IncomingHttpHeaders, form: Record<string, string>): string | undefined {
    let basic: { id: string; secret: string } | undefined;
    const auth = headers.authorization;
    if (typeof auth === 'string') {
      const m = /^Basic\s+(.+)$/i.exec(auth.trim());
      if (m) {
        const decoded = Buffer.from(m[1]!, 'base64').toString('utf8');
        const i = decoded.indexOf(':');
        if (i < 0) return undefined;
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
    if (!creds) return undefined;
    const secret = safeEqual(creds.id, this.clientId) ? this.clientSecret : this.otherClients.get(creds.id);
    return secret !== undefined && safeEqual(creds.secret, secret) ? creds.id : undefined;
  }

  // ---- Usage API

  private async handleUsage(req: IncomingMessage, res: ServerResponse): Promise<void> {
    req.resume();
    const token = bearerToken(req.headers);
    const authorized = token !== undefined && this.isValid(token);
    this.record(this.usageRequests, { at: Date.now(), headers: req.headers, token, authorized });

    await this.delay(this.usageDelayMs);
    if (this.closing) return void res.destroy();

    const failure = this.usageFailures.shift();
    if (failure) {
      switch (failure.kind) {
        case 'status': {
          const text = failure.body ?? `${failure.status} ${http.STATUS_CODES[failure.status] ?? 'Error'}`;
          respond(res, failure.status, { 'content-type': failure.contentType ?? TEXT }, text);
          return;
        }
        case 'invalid-json':
          respond(res, 200, { 'content-type': JSON_CT }, '<html><body>502 Bad Gateway</body></html>');
          return;
        case 'hang':
          return; // tracked in openResponses; close() destroys it
        case 'reset':
          req.socket.destroy();
          return;
      }
    }
    if (!authorized || token === undefined) return respond(res, 401, { 'content-type': TEXT }, 'Unauthorized');
    respond(res, 200, { 'content-type': JSON_CT }, usageBody(this.accountOf(token)));
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
    this.record(this.graphqlRequests, {
      at: Date.now(),
      method: req.method ?? 'GET',
      path: url.pathname,
      query,
      headers: req.headers,
      body,
      token,
      authorized,
    });

    if (!authorized || token === undefined) {
      respond(res, 401, { 'content-type': TEXT }, 'Unauthorized');
      return;
    }

    const scripted = this.graphqlScript.shift();
    if (scripted) {
      await this.delay(scripted.delayMs ?? 0);
      if (this.closing || scripted.reset) return void res.destroy();
      if (scripted.status === 200) this.charge(token);
      const headers: Record<string, string> = { ...(scripted.headers ?? {}) };
      if (!Object.keys(headers).some((h) => h.toLowerCase() === 'content-type')) {
        headers['content-type'] = isJsonLike(scripted.body) ? JSON_CT : TEXT;
      }
      respond(res, scripted.status, headers, scripted.body ?? '');
      return;
    }

    const fault = this.schedule?.nextHttp();
    if (fault) {
      const at = Date.now();
      const base = { at, kind: fault.kind, n: this.schedule!.httpDraws, path: url.pathname, headers: req.headers, token };
      if (fault.kind === 'http401') {
        if (this.schedule!.config.http401Revokes) this.revoke(token);
        this.injectFault({ ...base, status: 401, body: 'Unauthorized' });
        return respond(res, 401, { 'content-type': TEXT }, 'Unauthorized');
      }
      if (fault.kind === 'http5xx') {
        const { status, body: text } = fault.answer!;
        this.injectFault({ ...base, status, body: text });
        return respond(res, status, { 'content-type': TEXT }, text);
      }
      this.injectFault(base);
    }

    await this.delay(this.graphqlDelayMs + (fault?.kind === 'httpSlow' ? this.schedule!.config.slowMs : 0));
    if (this.closing) return void res.destroy();
    this.charge(token);

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

    const echo = Buffer.from(
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
    if (fault?.kind === 'httpReset') {
      // Status, headers and half the body reach the client, then a TCP reset.
      res.writeHead(200, { 'content-type': JSON_CT, 'content-length': String(echo.length) });
      res.write(echo.subarray(0, echo.length >> 1), () => res.socket?.resetAndDestroy());
      return;
    }

    const bytes = (variables as { bytes?: unknown } | null)?.bytes;
    if (req.method === 'POST' && typeof bytes === 'number' && Number.isFinite(bytes) && bytes >= 0) {
      await this.streamBlob(res, Math.floor(bytes));
      return;
    }

    respond(res, 200, { 'content-type': JSON_CT }, echo);
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
    this.record(this.wsHandshakes, info);
    if (!accepted || token === undefined) return reject(401, 'Unauthorized');
    const refusal = this.wsRefusals.shift();
    if (refusal) {
      const text = String(refusal.body ?? http.STATUS_CODES[refusal.status] ?? '');
      void this.delay(refusal.delayMs ?? 0).then(() => (refusal.reset ? socket.destroy() : reject(refusal.status, text, refusal.headers)));
      return;
    }

    const clientId = this.tokens.get(token)?.clientId;
    this.ws.accept(
      req,
      socket,
      head,
      { path: url.pathname, token, clientId },
      (ws, socketInfo) => {
        if (this.closing) return void ws.terminate();
        info.socketId = socketInfo.id;
        this.wsServerSockets.add(ws);
        this.emit('ws-connection', ws, info);
      },
      (ws, record) => {
        this.wsServerSockets.delete(ws);
        this.record(this.wsCloses, record);
        this.emit('ws-close', record);
      },
    );
  }
}
