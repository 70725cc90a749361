// GraphQL subscriptions over WebSocket: each client upgrade on a proxied path becomes one upstream
// WebSocket to the same path, opened with the token (as `?token=`, Bitquery's documented way, and as
// `Authorization: Bearer`). The client is accepted only once the upstream handshake has completed,
// with the subprotocol the upstream picked, so a client sees what it would see talking to Bitquery
// directly: the same subprotocol, the same messages in the same order, the same close codes. A
// handshake the proxy cannot complete is answered with an HTTP status and a JSON body, never left
// hanging.
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import { WebSocket, WebSocketServer, type RawData } from 'ws';
import type { Caller, ResolveCaller } from '../auth/caller.js';
import type { Config } from '../config/index.js';
import { redactUrl } from '../log.js';
import { ProxyError, refuseSocket, upstreamFailure } from '../errors.js';
import { upstreamRequestHeaders, withoutTokenParam } from './headers.js';

export interface WsProxyOptions {
  config: Config;
  /** Key, origin and credential set of a handshake: the same decision as for HTTP requests. */
  resolveCaller: ResolveCaller;
  /** The daemon's logger; a `component: 'ws'` child is made from it. */
  logger: Logger;
}

export interface WsProxy {
  /** The HTTP server's `upgrade` listener. */
  handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void;
  /** Open streams plus handshakes in progress (what WS_MAX_STREAMS counts). */
  readonly size: number;
  /** From now on new handshakes get 503; open streams keep flowing. */
  stopAccepting(): void;
  /**
   * Answers handshakes in progress with 503, closes every stream with 1001 on both sides, and
   * terminates what has not finished closing after `graceMs`. Resolves when every stream is gone.
   */
  close(graceMs: number): Promise<void>;
}

/** ws(s)://host of an upstream origin. */
const wsOrigin = (origin: URL) => `${origin.protocol === 'https:' ? 'wss:' : 'ws:'}//${origin.host}`;

type Side = 'client' | 'upstream';

/** Why the proxy itself ended a stream (absent when a peer closed it). */
type Cause = 'slow_client' | 'slow_upstream' | 'client_ping_timeout' | 'upstream_ping_timeout' | 'shutdown';

/** After a stream starts closing, how long both sides get to finish the closing handshake before they are cut. */
const CLOSE_GRACE_MS = 2000;
/** Upper bound on waiting for the upstream's handshake response once connected (on top of the connect timeout). */
const HANDSHAKE_RESPONSE_MAX_MS = 10_000;
/** At most this much of an upstream refusal's body is read and quoted back in the JSON message. */
const REFUSAL_BODY_MAX = 512;

/** The client's handshake headers that the upstream connection sets for itself. */
const HANDSHAKE_HEADERS = new Set([
  'sec-websocket-key',
  'sec-websocket-version',
  'sec-websocket-extensions',
  'sec-websocket-protocol',
  'sec-websocket-accept',
]);
const KEY = /^[+/0-9A-Za-z]{22}==$/;
/** RFC 7230 token characters: what a subprotocol name may be made of. */
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
const PRINTABLE = /^[\x20-\x7e]*$/;

/** The offered subprotocols in order, or undefined if the header is malformed. */
function offeredProtocols(header: string | undefined): string[] | undefined {
  if (header === undefined) return [];
  const list = header.split(',').map((p) => p.trim());
  if (list.some((p) => !TOKEN.test(p)) || new Set(list).size !== list.length) return undefined;
  return list;
}

/** True for codes a close frame may carry (RFC 6455 7.4, as ws checks them). */
function sendable(code: number): boolean {
  return (code >= 1000 && code <= 1014 && code !== 1004 && code !== 1005 && code !== 1006) || (code >= 3000 && code <= 4999);
}

/**
 * How a close received on one side is passed to the other. Codes that can be sent go through
 * unchanged, reason included. The ones that only exist locally are mapped:
 *  - 1005 (the peer's close frame had no code) becomes a close frame without a code, so the other
 *    side sees 1005 too, exactly as without the proxy;
 *  - 1006 (the connection dropped without a close frame) becomes 1001 "going away": that is what
 *    happened, and it stays a code clients reconnect after. 1011 was not chosen because graphql-ws
 *    and others treat it as fatal and stop retrying, while the 1006 a direct connection would have
 *    seen is retried;
 *  - 1015 (TLS handshake failure) and anything else unsendable become 1011.
 */
function forwardClose(ws: WebSocket, code: number, reason: Buffer, lostReason: string): void {
  if (ws.readyState !== WebSocket.OPEN) return;
  if (code === 1005) ws.close();
  else if (code === 1006) ws.close(1001, lostReason);
  else if (sendable(code)) ws.close(code, reason);
  else ws.close(1011);
}

function closeSide(ws: WebSocket, code: number, reason: string): void {
  if (ws.readyState === WebSocket.OPEN) ws.close(code, reason);
  else if (ws.readyState === WebSocket.CONNECTING) ws.terminate();
}

/**
 * Corks the socket under `ws` until the end of the current tick: ws emits every message of one
 * network read in the same tick, and relayed together they leave in one write instead of one
 * write (one syscall) per message. Returns the function to call before each send.
 */
function batching(ws: WebSocket): () => void {
  const socket = (ws as unknown as { _socket: Duplex })._socket;
  let corked = false;
  const uncork = () => {
    corked = false;
    socket.uncork();
  };
  return () => {
    if (corked) return;
    corked = true;
    socket.cork();
    process.nextTick(uncork);
  };
}

function size(data: RawData): number {
  return Buffer.isBuffer(data) ? data.length : Array.isArray(data) ? data.reduce((n, b) => n + b.length, 0) : data.byteLength;
}

/** How one upstream handshake attempt ended. */
type Outcome =
  | { kind: 'open' }
  | { kind: 'status'; status: number; body: string; retryAfter?: string }
  | { kind: 'error'; err: unknown }
  | { kind: 'timeout' };

interface Attempt {
  ws: WebSocket;
  outcome: Promise<Outcome>;
}

/** Opens the upstream WebSocket; the outcome never rejects and always settles within timeoutMs. */
function attempt(url: string, protocols: string[], headers: Record<string, string | string[]>, timeoutMs: number): Attempt {
  const ws = new WebSocket(url, protocols, { headers, perMessageDeflate: false, followRedirects: false });
  const outcome = new Promise<Outcome>((resolve) => {
    const timer = setTimeout(() => {
      resolve({ kind: 'timeout' });
      ws.terminate();
    }, timeoutMs);
    const settle = (o: Outcome) => {
      clearTimeout(timer);
      resolve(o);
    };
    // Errors after the outcome (a terminate during the handshake, a reset) are the stream's business.
    ws.on('error', (err) => settle({ kind: 'error', err }));
    ws.once('open', () => settle({ kind: 'open' }));
    ws.once('unexpected-response', (_req, res) => {
      const status = res.statusCode ?? 502;
      const retryAfter = res.headers['retry-after'];
      const chunks: Buffer[] = [];
      let length = 0;
      const done = () => {
        const text = Buffer.concat(chunks).toString('utf8').slice(0, REFUSAL_BODY_MAX);
        settle({
          kind: 'status',
          status,
          body: text.replace(/[^\x20-\x7e]+/g, ' ').trim(),
          ...(typeof retryAfter === 'string' && PRINTABLE.test(retryAfter) && { retryAfter }),
        });
        ws.terminate();
      };
      res.on('data', (chunk: Buffer) => {
        if (length < REFUSAL_BODY_MAX) chunks.push(chunk);
        length += chunk.length;
        if (length >= REFUSAL_BODY_MAX) done();
      });
      res.once('end', done);
      res.once('error', done);
      res.once('close', done);
    });
  });
  return { ws, outcome };
}

interface StreamInfo {
  id: number;
  path: string;
  protocol: string;
  /** The caller's key name, when keys are configured. */
  key?: string;
}

/** One client paired with its upstream. Whichever side goes, the other is closed; the pair ends when both have. */
class Stream {
  private readonly started = performance.now();
  private bytesFromClient = 0;
  private bytesToClient = 0;
  private messagesFromClient = 0;
  private messagesToClient = 0;
  private clientAlive = true;
  private upstreamAlive = true;
  private clientClosed = false;
  private upstreamClosed = false;
  private ending = false;
  private closedBy?: Side | 'proxy';
  private cause?: Cause;
  private code?: number;
  private reason = '';
  private grace?: NodeJS.Timeout;

  constructor(
    private readonly client: WebSocket,
    private readonly upstream: WebSocket,
    readonly info: StreamInfo,
    maxBuffered: number,
    private readonly log: Logger,
    private readonly onDone: (stream: Stream) => void,
  ) {
    const toClient = batching(client);
    const toUpstream = batching(upstream);
    client.on('message', (data, isBinary) => {
      this.clientAlive = true;
      if (this.ending) return;
      this.messagesFromClient += 1;
      this.bytesFromClient += size(data);
      toUpstream();
      upstream.send(data as Buffer, { binary: isBinary });
      // The upstream normally reads faster than a client writes; this only bounds memory if it stalls.
      if (upstream.bufferedAmount > maxBuffered) this.end('slow_upstream', 1013, 'upstream not consuming fast enough', 1001, 'too much queued');
    });
    upstream.on('message', (data, isBinary) => {
      this.upstreamAlive = true;
      if (this.ending) return;
      this.messagesToClient += 1;
      this.bytesToClient += size(data);
      toClient();
      client.send(data as Buffer, { binary: isBinary });
      // What the client has not taken yet stays in this process: past the limit the client is
      // dropped with 1013, as Bitquery drops a consumer that falls behind.
      if (client.bufferedAmount > maxBuffered) this.end('slow_client', 1013, 'not consuming fast enough', 1001, 'client not consuming fast enough');
    });
    const clientSeen = () => (this.clientAlive = true);
    const upstreamSeen = () => (this.upstreamAlive = true);
    client.on('ping', clientSeen).on('pong', clientSeen);
    upstream.on('ping', upstreamSeen).on('pong', upstreamSeen);
    client.on('error', (err) => log.debug({ stream: info.id, side: 'client', err: { message: err.message } }, 'stream error'));
    upstream.on('error', (err) => log.debug({ stream: info.id, side: 'upstream', err: { message: err.message } }, 'stream error'));
    client.once('close', (code, reason) => this.sideClosed('client', code, reason));
    upstream.once('close', (code, reason) => this.sideClosed('upstream', code, reason));
  }

  private sideClosed(side: Side, code: number, reason: Buffer): void {
    if (side === 'client') this.clientClosed = true;
    else this.upstreamClosed = true;
    if (!this.ending) {
      this.startEnding();
      this.closedBy = side;
      this.code = code;
      this.reason = reason.toString('utf8');
      if (side === 'client') forwardClose(this.upstream, code, reason, 'client went away');
      else forwardClose(this.client, code, reason, 'upstream went away');
    }
    if (this.clientClosed && this.upstreamClosed) this.finish();
  }

  private startEnding(): void {
    this.ending = true;
    // A peer that never answers the close frame (or never reads it) is cut after the grace.
    this.grace = setTimeout(() => {
      this.client.terminate();
      this.upstream.terminate();
    }, CLOSE_GRACE_MS);
    this.grace.unref();
  }

  /** The proxy ends the stream itself: each side gets its own code. */
  end(cause: Cause, clientCode: number, clientReason: string, upstreamCode: number, upstreamReason: string): void {
    if (this.ending) return;
    this.startEnding();
    this.closedBy = 'proxy';
    this.cause = cause;
    this.code = clientCode;
    this.reason = clientReason;
    closeSide(this.client, clientCode, clientReason);
    closeSide(this.upstream, upstreamCode, upstreamReason);
  }

  /** Cuts both sides now (shutdown deadline). */
  terminate(): void {
    this.client.terminate();
    this.upstream.terminate();
  }

  /**
   * Called every WS_PING_INTERVAL_MS. A side that sent nothing at all (not even a pong) since the
   * previous call is dead: it is terminated, and the other side is closed with 1001.
   */
  heartbeat(): void {
    if (this.ending) return;
    if (!this.clientAlive || !this.upstreamAlive) {
      const dead: Side = this.clientAlive ? 'upstream' : 'client';
      const cause: Cause = dead === 'client' ? 'client_ping_timeout' : 'upstream_ping_timeout';
      const other = dead === 'client' ? this.upstream : this.client;
      const otherReason = dead === 'client' ? 'client not responding' : 'upstream not responding';
      this.startEnding();
      this.closedBy = 'proxy';
      this.cause = cause;
      this.code = 1001;
      this.reason = otherReason;
      (dead === 'client' ? this.client : this.upstream).terminate();
      closeSide(other, 1001, otherReason);
      return;
    }
    this.clientAlive = false;
    this.upstreamAlive = false;
    if (this.client.readyState === WebSocket.OPEN) this.client.ping();
    if (this.upstream.readyState === WebSocket.OPEN) this.upstream.ping();
  }

  private finish(): void {
    clearTimeout(this.grace);
    this.onDone(this);
    const { id, path, protocol, key } = this.info;
    this.log.info(
      {
        stream: id,
        path,
        protocol,
        ...(key && { key }),
        ms: Math.round(performance.now() - this.started),
        closedBy: this.closedBy,
        ...(this.cause && { cause: this.cause }),
        code: this.code,
        ...(this.reason && { reason: this.reason }),
        bytesFromClient: this.bytesFromClient,
        bytesToClient: this.bytesToClient,
        messagesFromClient: this.messagesFromClient,
        messagesToClient: this.messagesToClient,
      },
      'stream closed',
    );
  }
}

/** One handshake in progress, abortable at shutdown. */
interface Pending {
  abort(): void;
}

export function createWsProxy({ config, resolveCaller, logger }: WsProxyOptions): WsProxy {
  const log = logger.child({ component: 'ws' });
  const paths = new Set(config.paths);
  /** Streams and handshakes per key name, for WS_MAX_STREAMS_PER_KEY and keys' maxStreams. */
  const perKey = new Map<string, number>();
  const handshakeTimeoutMs = config.upstreamConnectTimeoutMs + Math.min(config.upstreamTimeoutMs, HANDSHAKE_RESPONSE_MAX_MS);

  const streams = new Set<Stream>();
  const pending = new Set<Pending>();
  let accepting = true;
  let nextId = 1;
  const allGone: (() => void)[] = [];

  // The subprotocol the upstream picked, for the client handshake of the same request.
  const picked = new WeakMap<IncomingMessage, string>();
  const wss = new WebSocketServer({
    noServer: true,
    clientTracking: false,
    perMessageDeflate: false,
    handleProtocols: (_offered, req) => picked.get(req) || false,
  });

  const heartbeat = setInterval(() => {
    for (const stream of streams) stream.heartbeat();
  }, config.wsPingIntervalMs);
  heartbeat.unref();

  const checkGone = () => {
    if (streams.size === 0 && pending.size === 0) for (const resolve of allGone.splice(0)) resolve();
  };

  const refused = (socket: Duplex, path: string, error: ProxyError) => {
    const { status, code } = error;
    if (status >= 500) log.warn({ path, status, error: code }, `stream refused: ${error.message}`);
    else log.info({ path, status, error: code }, `stream refused: ${error.message}`);
    refuseSocket(socket, error);
  };

  /** Counts a handshake (then its stream) against its key until the returned function is called. */
  const hold = (keyName: string | undefined) => {
    if (keyName === undefined) return () => undefined;
    perKey.set(keyName, (perKey.get(keyName) ?? 0) + 1);
    let held = true;
    return () => {
      if (!held) return;
      held = false;
      const left = perKey.get(keyName)! - 1;
      if (left === 0) perKey.delete(keyName);
      else perKey.set(keyName, left);
    };
  };

  async function open(
    req: IncomingMessage,
    socket: Duplex,
    head: Buffer,
    path: string,
    query: string,
    protocols: string[],
    caller: Caller,
    release: () => void,
  ): Promise<void> {
    const { tokens } = caller.credentialSet;
    let handedOver = false;
    let gone = false;
    let current: WebSocket | undefined;
    // Leaving `pending` as soon as the handshake is given up frees its place under WS_MAX_STREAMS
    // and lets shutdown proceed; the awaits still running just find `gone` set and return.
    const leave = () => {
      socket.off('close', onSocketClose);
      if (pending.delete(entry)) checkGone();
    };
    const giveUp = () => {
      if (gone) return false;
      gone = true;
      current?.terminate();
      leave();
      return true;
    };
    const entry: Pending = {
      abort: () => {
        if (giveUp()) refused(socket, path, new ProxyError('shutting_down'));
      },
    };
    // The client hung up while waiting (noticed only if its socket errors or is written to).
    const onSocketClose = () => void giveUp();
    socket.once('close', onSocketClose);
    pending.add(entry);

    try {
      let token: string;
      try {
        token = await tokens.getToken(config.tokenWaitMs);
      } catch (err) {
        if (gone) return;
        if (err instanceof ProxyError) return refused(socket, path, err);
        throw err;
      }
      if (gone) return;

      const rest = withoutTokenParam(query);
      const headers: Record<string, string | string[]> = {};
      for (const [name, value] of Object.entries(upstreamRequestHeaders(req.headers))) {
        if (!HANDSHAKE_HEADERS.has(name)) headers[name] = value;
      }
      // The URL holds the token: it is never logged, nor is any error message that could quote it.
      const connect = (bearer: string) => {
        const url = `${wsOrigin(caller.credentialSet.origin)}${path}${rest ? `${rest}&` : '?'}token=${encodeURIComponent(bearer)}`;
        const a = attempt(url, protocols, { ...headers, authorization: `Bearer ${bearer}` }, handshakeTimeoutMs);
        current = a.ws;
        return a.outcome;
      };

      let attempts = 1;
      let outcome = await connect(token);
      if (outcome.kind === 'status' && outcome.status === 401 && !gone) {
        // Bitquery checks the token at the handshake only: a 401 here means this token is no good.
        const fresh = await tokens.tokenRejected(token, config.tokenWaitMs);
        if (fresh !== undefined && !gone) {
          attempts += 1;
          outcome = await connect(fresh);
        }
      }
      const upstream = current!;
      if (gone) {
        upstream.terminate();
        return;
      }

      switch (outcome.kind) {
        case 'timeout':
          return refused(socket, path, new ProxyError('upstream_timeout', 'the upstream did not complete the WebSocket handshake in time (UPSTREAM_CONNECT_TIMEOUT_MS + UPSTREAM_TIMEOUT_MS, at most 10 s of the latter)'));
        case 'error':
          return refused(socket, path, upstreamFailure(outcome.err));
        case 'status': {
          const { status, body } = outcome;
          // A redirect would send the client to the upstream without a token; a 1xx/2xx is no handshake.
          const passed = status >= 400 && status <= 599 ? status : 502;
          const detail = body ? `: ${body}` : '';
          const message =
            status === 401
              ? `the upstream rejected the token (401) and no other token was to be had${detail}`
              : `the upstream refused the WebSocket handshake with ${status}${detail}`;
          return refused(socket, path, new ProxyError('upstream_rejected', message, { status: passed, ...(outcome.retryAfter && { headers: { 'Retry-After': outcome.retryAfter } }) }));
        }
        case 'open':
          break;
      }

      // Accept the client with the upstream's subprotocol. Nothing is read from the upstream until
      // the client is wired, so no message can arrive before there is somewhere to send it.
      upstream.pause();
      picked.set(req, upstream.protocol);
      socket.off('close', onSocketClose);
      let client: WebSocket | undefined;
      wss.handleUpgrade(req, socket, head, (ws) => (client = ws));
      if (!client) {
        // ws destroyed the socket instead (the client had already hung up).
        closeSide(upstream, 1001, 'client went away');
        return;
      }
      const info: StreamInfo = { id: nextId++, path, protocol: upstream.protocol, key: caller.keyName };
      const stream = new Stream(client, upstream, info, config.wsMaxBufferedBytes, log, (s) => {
        streams.delete(s);
        release();
        checkGone();
      });
      handedOver = true;
      streams.add(stream);
      upstream.resume();
      log.info({ stream: info.id, path, url: redactUrl(req.url ?? ''), protocol: info.protocol, ...(info.key && { key: info.key }), attempts }, 'stream opened');
    } finally {
      if (!handedOver) release();
      leave();
    }
  }

  const handleUpgrade = (req: IncomingMessage, socket: Duplex, head: Buffer): void => {
    socket.on('error', () => {});
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    const path = q === -1 ? url : url.slice(0, q);
    const query = q === -1 ? '' : url.slice(q + 1);

    if (!paths.has(path)) {
      return refused(socket, path, new ProxyError('not_found', `nothing at ${path}; proxied paths: ${config.paths.join(', ')}`));
    }
    if (!accepting) return refused(socket, path, new ProxyError('shutting_down'));
    const protocols = offeredProtocols(req.headers['sec-websocket-protocol']);
    const version = req.headers['sec-websocket-version'];
    if (
      req.method !== 'GET' ||
      req.headers.upgrade?.toLowerCase() !== 'websocket' ||
      !KEY.test(req.headers['sec-websocket-key'] ?? '') ||
      (version !== '13' && version !== '8') ||
      protocols === undefined
    ) {
      return refused(socket, path, new ProxyError('bad_request', 'not a valid WebSocket handshake (only WebSocket upgrades are served)'));
    }
    const caller = resolveCaller(req.headers);
    if (caller instanceof ProxyError) return refused(socket, path, caller);
    if (streams.size + pending.size >= config.wsMaxStreams) {
      return refused(socket, path, new ProxyError('too_many_streams', `${config.wsMaxStreams} streams are open (WS_MAX_STREAMS): try again later`));
    }
    const { keyName } = caller;
    const keyCap = caller.policy.maxStreams ?? config.wsMaxStreamsPerKey;
    if (keyName !== undefined && keyCap > 0 && (perKey.get(keyName) ?? 0) >= keyCap) {
      return refused(socket, path, new ProxyError('too_many_streams', `the key "${keyName}" has ${keyCap} streams open (its stream limit): try again later`));
    }

    open(req, socket, head, path, query, protocols, caller, hold(keyName)).catch((err: Error) => {
      log.error({ path, err: { name: err.name, message: err.message } }, 'WebSocket handshake failed');
      refuseSocket(socket, new ProxyError('internal_error', 'the proxy failed to open the stream'));
    });
  };

  return {
    handleUpgrade,
    get size() {
      return streams.size + pending.size;
    },
    stopAccepting() {
      accepting = false;
    },
    close(graceMs: number) {
      accepting = false;
      clearInterval(heartbeat);
      for (const entry of [...pending]) entry.abort();
      const all = [...streams];
      if (graceMs <= 0) for (const stream of all) stream.terminate();
      else for (const stream of all) stream.end('shutdown', 1001, 'proxy shutting down', 1001, 'proxy shutting down');
      const gone = new Promise<void>((resolve) => {
        allGone.push(resolve);
        checkGone();
      });
      if (graceMs <= 0 || all.length === 0) return gone;
      const cut = setTimeout(() => {
        for (const stream of streams) stream.terminate();
      }, graceMs);
      return gone.finally(() => clearTimeout(cut));
    },
  };
}
