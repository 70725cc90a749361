// GraphQL subscriptions over WebSocket: each client upgrade on a proxied path becomes one upstream
// WebSocket to the same path, opened with the token. The client is accepted only once the upstream
// handshake has completed, with the subprotocol the upstream picked, so a client sees what it
// would see talking to Bitquery directly: the same subprotocol, the same messages in the same
// order, the same close codes. A handshake the proxy cannot complete is answered with an HTTP
// status and a JSON body, never left hanging. This file admits handshakes (path, shutdown,
// validity, caller, stream caps) and shuts the streams down; handshake.ts, upstream.ts and
// stream.ts do the rest.
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import { WebSocketServer, type WebSocket } from 'ws';
import { countRequest, type Admission, type Release } from '../../admission/index.js';
import { rateLimitOf, type Caller, type ResolveCaller } from '../../auth/caller.js';
import type { Config } from '../../config/index.js';
import { ProxyError, refuseSocket } from '../../errors.js';
import type { Events } from '../../events.js';
import { redactUrl } from '../../log.js';
import { REQUEST_ID_HEADER, requestId } from '../../observability/request-id.js';
import { presentedKey } from '../../auth/keys.js';
import { headerLimit } from '../headers.js';
import { validHandshake } from './handshake.js';
import { closeSide, Stream, type Side } from './stream.js';
import type { TakeOver } from './take-over.js';
import { openUpstream } from './upstream.js';

/** A client handshake that passed admission, on its way to the relay. */
interface Handshake {
  req: IncomingMessage;
  socket: Duplex;
  head: Buffer;
  path: string;
  /** The query string, without the `?`. */
  query: string;
  /** The subprotocols the client offered, in its order (validated). */
  protocols: string[];
  caller: Caller;
  /** Frees the handshake's place under the per-key stream cap; call it once the client's stream ends. */
  release: Release;
}

export interface WsProxyOptions {
  config: Config;
  /** Key, origin and credential set of a handshake: the same decision as for HTTP requests. */
  resolveCaller: ResolveCaller;
  /** The per-key stream cap, shared with other replicas when the store is. */
  admission: Admission;
  /** The daemon's logger; a `component: 'ws'` child is made from it. */
  logger: Logger;
  /** Where streamOpened, streamClosed, streamMessage and refused (ws) are published. */
  events: Events;
  takeOver?: TakeOver;
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

/** Upper bound on waiting for the upstream's handshake response once connected (on top of the connect timeout). */
const HANDSHAKE_RESPONSE_MAX_MS = 10_000;


/** One handshake in progress, abortable at shutdown. */
interface Pending {
  abort(): void;
}

/** The socket of a handshake may error before it is answered; what matters then is its close. */
function ignoreSocketError(): void {}

/** Nothing to free: no per-key cap applies. */
function noRelease(): void {}

export function createWsProxy({ config, resolveCaller, admission, logger, events, takeOver }: WsProxyOptions): WsProxy {
  const log = logger.child({ component: 'ws' });
  const paths = new Set(config.paths);
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
    // ws counts the fragments of an unfinished message too, so this bounds what one client can pin.
    maxPayload: config.wsMaxMessageBytes,
    handleProtocols: (_offered, req) => picked.get(req) || false,
  });

  const heartbeat = setInterval(() => {
    for (const stream of streams) stream.heartbeat();
  }, config.wsPingIntervalMs);
  heartbeat.unref();

  const checkGone = () => {
    if (streams.size === 0 && pending.size === 0) for (const resolve of allGone.splice(0)) resolve();
  };

  /** Every handshake the proxy answers itself goes through here. */
  const refused = (socket: Duplex, path: string, error: ProxyError, caller?: Caller) => {
    if (events.has('refused')) {
      const known = paths.has(path) ? path : undefined;
      events.emit('refused', { transport: 'ws', status: error.status, error: error.code, message: error.message, path: known, key: caller?.keyName, credentials: caller?.credentialSet.name });
    }
    refuseSocket(socket, error);
  };
  const publishMessage = (direction: 'to_client' | 'to_upstream', bytes: number) => {
    if (events.has('streamMessage')) events.emit('streamMessage', { direction, bytes });
  };

  /** A place among the key's streams (WS_MAX_STREAMS_PER_KEY or the key's maxStreams), held until released. */
  const acquire = (caller: Caller): Promise<Release | undefined> => {
    const cap = caller.policy.maxStreams ?? config.wsMaxStreamsPerKey;
    if (caller.keyName === undefined || cap === 0) return Promise.resolve(noRelease);
    return admission.acquireStream(caller.keyName, cap);
  };

  /** Wires an accepted client to its upstream. */
  function pairUp(req: IncomingMessage, client: WebSocket, upstream: WebSocket, h: Handshake, attempts: number): void {
    const info = { id: nextId++, path: h.path, protocol: upstream.protocol, credentials: h.caller.credentialSet.name, key: h.caller.keyName };
    const stream = new Stream(client, upstream, config.wsMaxBufferedBytes, {
      message: publishMessage,
      error: (side: Side, err: Error) => log.debug({ stream: info.id, side, err: { message: err.message } }, 'stream error'),
      closed: (s, ending, counts, ms) => {
        streams.delete(s);
        h.release();
        checkGone();
        if (events.has('streamClosed')) {
          events.emit('streamClosed', { ...info, ms, closedBy: ending.closedBy, cause: ending.cause, code: ending.code, reason: ending.reason || undefined, ...counts });
        }
      },
    });
    streams.add(stream);
    upstream.resume();
    if (events.has('streamOpened')) events.emit('streamOpened', { ...info, url: redactUrl(req.url ?? ''), attempts });
  }

  /**
   * An admitted handshake, from its place under the key's stream cap to the stream: offered to
   * takeOver, else the upstream is opened and the client accepted with the upstream's subprotocol.
   * Counted under WS_MAX_STREAMS (`pending`) from the start, and abandoned at once when the client
   * hangs up or the proxy shuts down; the awaits still running then find `gone` set and return.
   */
  async function serve(req: IncomingMessage, socket: Duplex, head: Buffer, path: string, query: string, protocols: string[], caller: Caller): Promise<void> {
    let release: Release | undefined;
    let handedOver = false;
    let gone = false;
    let current: WebSocket | undefined;
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
        if (giveUp()) refused(socket, path, new ProxyError('shutting_down'), caller);
      },
    };
    // The client hung up while waiting (noticed only if its socket errors or is written to).
    const onSocketClose = () => void giveUp();
    socket.once('close', onSocketClose);
    pending.add(entry);

    try {
      release = await acquire(caller);
      if (gone) return;
      if (release === undefined) {
        const cap = caller.policy.maxStreams ?? config.wsMaxStreamsPerKey;
        return refused(socket, path, new ProxyError('too_many_streams', `the key "${caller.keyName}" has ${cap} streams open (its stream limit): try again later`), caller);
      }
      const handshake: Handshake = { req, socket, head, path, query, protocols, caller, release };
      const result = await openUpstream({
        caller,
        path,
        query,
        protocols,
        headers: req.headers,
        tokenWaitMs: config.tokenWaitMs,
        timeoutMs: handshakeTimeoutMs,
        maxPayload: config.wsMaxUpstreamMessageBytes,
        abandoned: () => gone,
        onAttempt: (ws) => (current = ws),
      });
      if ('abandoned' in result) return;
      if ('refusal' in result) return refused(socket, path, result.refusal, caller);
      const { ws: upstream, attempts } = result;

      // Nothing is read from the upstream until the client is wired, so no message can arrive
      // before there is somewhere to send it.
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
      handedOver = true;
      pairUp(req, client, upstream, handshake, attempts);
    } finally {
      if (!handedOver) release?.();
      leave();
    }
  }

  /**
   * Path, shutdown, validity, caller and WS_MAX_STREAMS: refused here, before anything is awaited.
   * A missing key comes back as the caller's error when a taker may still get it from the client.
   */
  function admit(req: IncomingMessage, path: string): { protocols: string[]; caller: Caller | ProxyError } | ProxyError {
    // A fragment is never sent by a conforming client, and would end up in the upstream URL.
    if (req.url?.includes('#')) return new ProxyError('bad_request', 'the URL must not hold a fragment (#)');
    if (!paths.has(path)) return new ProxyError('not_found', `nothing at ${path}; proxied paths: ${config.paths.join(', ')}`);
    if (!accepting) return new ProxyError('shutting_down');
    const protocols = validHandshake(req);
    if (protocols instanceof ProxyError) return protocols;
    const caller = resolveCaller(req);
    const keyOwed = takeOver !== undefined && caller instanceof ProxyError && caller.code === 'unauthorized' && presentedKey(req.headers) === undefined;
    if (caller instanceof ProxyError && !keyOwed) return caller;
    const tooMany = headerLimit(req.rawHeaders);
    if (tooMany) return tooMany;
    return full() ?? { protocols, caller };
  }

  /** The refusal of a handshake while WS_MAX_STREAMS streams (relayed, in progress or shared sockets) are open. */
  function full(): ProxyError | undefined {
    if (streams.size + pending.size + (takeOver?.size ?? 0) < config.wsMaxStreams) return undefined;
    return new ProxyError('too_many_streams', `${config.wsMaxStreams} streams are open (WS_MAX_STREAMS): try again later`);
  }

  const handleUpgrade = (req: IncomingMessage, socket: Duplex, head: Buffer): void => {
    socket.on('error', ignoreSocketError);
    req.headers[REQUEST_ID_HEADER] = requestId(req.headers[REQUEST_ID_HEADER]);
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    const path = q === -1 ? url : url.slice(0, q);
    const admitted = admit(req, path);
    if (admitted instanceof ProxyError) return refused(socket, path, admitted);
    const { protocols, caller } = admitted;
    const failed = (err: Error) => {
      // A refusal of the admission itself (shared_state_unavailable) is answered as it is.
      if (err instanceof ProxyError) return refused(socket, path, err, caller instanceof ProxyError ? undefined : caller);
      log.error({ path, err: { name: err.name, message: err.message } }, 'WebSocket handshake failed');
      refused(socket, path, new ProxyError('internal_error', 'the proxy failed to open the stream'));
    };
    const proceed = () => {
      if (takeOver?.take({ req, socket, head, path, protocols, caller: caller instanceof ProxyError ? undefined : caller })) return;
      if (caller instanceof ProxyError) return refused(socket, path, caller);
      serve(req, socket, head, path, q === -1 ? '' : url.slice(q + 1), protocols, caller).catch(failed);
    };
    // A key owed in connection_init (share mode) is counted with each subscription instead.
    if (caller instanceof ProxyError) return proceed();
    // A handshake is one request under RATE_LIMIT_PER_MINUTE (or the key's rateLimitPerMinute).
    const limit = rateLimitOf(caller, config);
    if (limit === 0) return proceed();
    countRequest(admission, { keyName: caller.keyName, address: req.socket.remoteAddress ?? '' }, limit).then((rate) => {
      if (socket.destroyed) return;
      if (rate instanceof ProxyError) return refused(socket, path, rate, caller);
      if (!accepting) return refused(socket, path, new ProxyError('shutting_down'), caller);
      // Others may have been admitted while this one was counted: the bound holds all the same.
      const tooMany = full();
      if (tooMany) return refused(socket, path, tooMany, caller);
      proceed();
    }, failed);
  };

  return {
    handleUpgrade,
    get size() {
      return streams.size + pending.size + (takeOver?.size ?? 0);
    },
    stopAccepting() {
      accepting = false;
      takeOver?.stopAccepting();
    },
    close(graceMs: number) {
      accepting = false;
      const taken = takeOver?.close(graceMs);
      clearInterval(heartbeat);
      for (const entry of [...pending]) entry.abort();
      const all = [...streams];
      if (graceMs <= 0) for (const stream of all) stream.terminate();
      else for (const stream of all) stream.end('shutdown', 1001, 'proxy shutting down', 1001, 'proxy shutting down');
      const relayed = new Promise<void>((resolve) => {
        allGone.push(resolve);
        checkGone();
      });
      const gone = taken ? Promise.all([relayed, taken]).then(() => undefined) : relayed;
      if (graceMs <= 0 || all.length === 0) return gone;
      const cut = setTimeout(() => {
        for (const stream of streams) stream.terminate();
      }, graceMs);
      return gone.finally(() => clearTimeout(cut));
    },
  };
}
