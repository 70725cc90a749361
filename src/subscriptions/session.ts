// One client socket in share mode: the proxy speaks the client's subprotocol itself (init and its
// timeout, the key in connection_init, keep-alives, subscribe/complete, errors) and hands each
// subscription to the hub, which joins it to the upstream stream for that identity.
//
// Memory per socket: the ws socket (at most `maxBufferedBytes` queued for it: past that it is
// dropped with 1013, never slowing the others or the upstream), one incoming message of at most
// the server's maxPayload, and per subscription a small object with its id and framing prefix (at
// most `maxSubscriptions` of them). No event is ever queued per subscription.
import type { Logger } from 'pino';
import type { RawData, WebSocket } from 'ws';
import type { Events } from '../events.js';
import { graphqlRequest, type GraphqlRequest } from '../graphql/identity.js';
import { batching } from '../ws-batching.js';
import type { Hub } from './hub.js';
import {
  CLOSE,
  complete,
  CONNECTION_ACK,
  connectionError,
  errorMessage,
  fitReason,
  initKey,
  KEEP_ALIVE,
  LEGACY,
  nextPrefix,
  parseClientMessage,
  pong,
  TRANSPORT,
  type ErrorLike,
  type OperationPayload,
  type Protocol,
} from './protocol.js';
import { ClientSubscription, noRelease } from './client-subscription.js';
import type { Acquired, Authenticate, Principal } from './types.js';

export interface SessionSettings {
  /** connection_init must arrive within this (else 4408, or 4403 when a key is still owed). */
  initTimeoutMs: number;
  /** Bytes queued for a client before it is dropped with 1013. */
  maxBufferedBytes: number;
  /** Subscriptions one socket may hold at once. */
  maxSubscriptions: number;
}

export interface SessionContext {
  settings: SessionSettings;
  hub: Hub;
  log: Logger;
  events?: Events;
  authenticate?: Authenticate;
  onClose(session: ClientSession): void;
}

/** Why the proxy closed a client socket itself. */
type Cause = 'protocol_error' | 'forbidden' | 'init_timeout' | 'slow_client' | 'ping_timeout' | 'shutdown';

/** After the proxy closes a client, how long it gets to answer the close frame before its socket is cut. */
const CLOSE_GRACE_MS = 2000;

export class ClientSession {
  /** Set by any message or pong; cleared by each heartbeat. */
  private alive = true;
  private ready = false;
  private closing = false;
  private readonly subs = new Map<string, ClientSubscription>();
  private initTimer?: NodeJS.Timeout;
  private readonly cork: () => void;
  private readonly started = performance.now();
  private subscriptionsTotal = 0;
  private messagesToClient = 0;
  private bytesToClient = 0;
  private closedBy: 'client' | 'proxy' = 'client';
  private cause?: Cause;
  /** What ws found wrong with a client frame, for the close line. */
  private problem?: string;

  constructor(
    readonly id: number,
    private readonly ws: WebSocket,
    readonly protocol: Protocol,
    readonly path: string,
    /** Undefined until a key in connection_init resolves it. */
    private principal: Principal | undefined,
    private readonly ctx: SessionContext,
  ) {
    this.cork = batching(ws);
    ws.on('message', (data, isBinary) => this.received(data, isBinary));
    ws.on('pong', () => (this.alive = true));
    ws.on('error', (err) => {
      // Only frame-level violations reach here (too large, bad UTF-8, bad opcode): ws closes the socket itself.
      this.closedBy = 'proxy';
      this.cause ??= 'protocol_error';
      this.problem = err.message;
      ctx.log.debug({ client: id, err: { message: err.message } }, 'client socket error');
    });
    ws.once('close', (code, reason) => this.closed(code, reason.toString('utf8')));
    this.initTimer = setTimeout(() => {
      if (this.principal) this.close(CLOSE.initTimeout, 'Connection initialisation timeout', 'init_timeout');
      else this.refuseKey(`no API key was presented within ${ctx.settings.initTimeoutMs} ms`);
    }, ctx.settings.initTimeoutMs);
  }

  /** Sends one message; a client that lets too much pile up is dropped. */
  send(data: Buffer | string): void {
    if (this.closing) return;
    this.cork();
    this.ws.send(data, { binary: false });
    this.messagesToClient += 1;
    this.bytesToClient += typeof data === 'string' ? Buffer.byteLength(data) : data.length;
    if (this.ws.bufferedAmount > this.ctx.settings.maxBufferedBytes) this.close(1013, 'not consuming fast enough', 'slow_client');
  }

  /** The stream of `sub` ended: an error (then complete for legacy), or a complete. */
  ended(sub: ClientSubscription, errors?: readonly ErrorLike[]): void {
    if (this.subs.get(sub.id) !== sub) return;
    this.subs.delete(sub.id);
    sub.release();
    if (errors) this.error(sub.idJson, errors);
    else this.send(complete(sub.idJson));
  }

  /** Every WS_PING_INTERVAL_MS: a client that sent nothing, not even a pong, since the last one is cut. */
  heartbeat(): void {
    if (this.closing) return;
    if (!this.alive) {
      this.closedBy = 'proxy';
      this.cause = 'ping_timeout';
      this.leaveAll();
      this.ws.terminate();
      return;
    }
    this.alive = false;
    this.ws.ping();
  }

  /** Legacy clients get `ka` regularly once acknowledged (transport clients ping when they want). */
  keepAlive(): void {
    if (this.ready && this.protocol === LEGACY) this.send(KEEP_ALIVE);
  }

  /** The proxy closes the socket: subscriptions end now, the socket after its closing handshake. */
  close(code: number, reason: string, cause: Cause): void {
    if (this.closing) return;
    this.closedBy = 'proxy';
    this.cause = cause;
    this.leaveAll();
    this.ws.close(code, fitReason(reason));
    setTimeout(() => this.ws.terminate(), CLOSE_GRACE_MS).unref();
  }

  terminate(): void {
    this.ws.terminate();
  }

  private received(data: RawData, isBinary: boolean): void {
    this.alive = true;
    if (this.closing) return;
    const msg = parseClientMessage(this.protocol, data as Buffer, isBinary);
    switch (msg.type) {
      case 'close':
        return this.close(msg.code, msg.reason, 'protocol_error');
      case 'invalid':
        return this.send(errorMessage(LEGACY, msg.idJson, [{ message: msg.message }]));
      case 'init':
        return this.init(msg.payload);
      case 'ping':
        return this.send(pong(msg.payload));
      case 'pong':
        return;
      case 'terminate':
        this.leaveAll();
        this.ws.close(1000, 'Normal Closure');
        return;
      case 'subscribe':
        return this.subscribe(msg.id, msg.idJson, msg.payload);
      case 'complete':
        return this.stop(msg.id);
    }
  }

  private init(payload: Record<string, unknown> | undefined): void {
    if (this.ready) {
      // graphql-transport-ws allows one; subscriptions-transport-ws servers acknowledge again.
      if (this.protocol === TRANSPORT) return this.close(CLOSE.tooManyInits, 'Too many initialisation requests', 'protocol_error');
      return this.send(CONNECTION_ACK);
    }
    if (!this.principal) {
      // The handshake carried no key: it must come here. The payload is never sent upstream.
      const presented = initKey(payload);
      if (presented === undefined) {
        return this.refuseKey('an API key is required: send it in connection_init as {"apiKey": "…"} or {"Authorization": "Bearer …"}');
      }
      const resolved = this.ctx.authenticate!(presented);
      if ('refused' in resolved) return this.refuseKey(resolved.refused);
      this.principal = resolved;
    }
    clearTimeout(this.initTimer);
    this.ready = true;
    this.send(CONNECTION_ACK);
    this.keepAlive();
  }

  private refuseKey(message: string): void {
    if (this.protocol === LEGACY) this.send(connectionError(message));
    this.close(CLOSE.forbidden, `Forbidden: ${message}`, 'forbidden');
  }

  private subscribe(id: string, idJson: string, payload: OperationPayload): void {
    if (!this.ready) {
      if (this.protocol === TRANSPORT) return this.close(CLOSE.unauthorized, 'Unauthorized', 'protocol_error');
      return this.error(idJson, [{ message: 'connection_init must come first' }]);
    }
    if (this.subs.has(id)) {
      if (this.protocol === TRANSPORT) return this.close(CLOSE.duplicateId, `Subscriber for ${id} already exists`, 'protocol_error');
      this.stop(id); // legacy: a start with a running id replaces it
    }
    const { maxSubscriptions } = this.ctx.settings;
    if (this.subs.size >= maxSubscriptions) {
      return this.error(idJson, [{ message: `at most ${maxSubscriptions} subscriptions per connection: complete one first` }]);
    }
    const request = graphqlRequest(payload);
    if (!request) return this.error(idJson, [{ message: 'the query is not a GraphQL document that can run (a syntax error, or no such operation)' }]);
    const principal = this.principal!;
    const sub = new ClientSubscription(this, id, idJson, nextPrefix(this.protocol, idJson));
    // The id is held from now on: a complete (or the socket closing) while the slot is taken ends it.
    this.subs.set(id, sub);
    const taken = principal.acquire?.() ?? noRelease;
    if (typeof taken === 'function' || !('then' in taken)) return this.join(principal, request, sub, taken);
    taken.then(
      (result) => this.join(principal, request, sub, result),
      (err: Error) => this.join(principal, request, sub, { refused: `the key's subscription limit cannot be checked now: ${err.message}` }),
    );
  }

  /** The per-key slot is decided: the subscription joins its stream, or is refused. */
  private join(principal: Principal, request: GraphqlRequest, sub: ClientSubscription, taken: Acquired): void {
    if (this.subs.get(sub.id) !== sub) {
      // Completed, replaced or disconnected meanwhile.
      if (typeof taken === 'function') taken();
      return;
    }
    if (typeof taken !== 'function') {
      this.subs.delete(sub.id);
      this.ctx.events?.emit('streamCapRefused', { credentials: principal.credentials, scope: 'key', ...(principal.key !== undefined && { key: principal.key }) });
      return this.error(sub.idJson, [{ message: taken.refused }]);
    }
    sub.release = taken;
    const joined = this.ctx.hub.subscribe(principal, this.path, request, sub);
    if ('refused' in joined) {
      this.subs.delete(sub.id);
      sub.release();
      return this.error(sub.idJson, [{ message: joined.refused }]);
    }
    sub.stream = joined;
    this.subscriptionsTotal += 1;
  }

  /** The client completed (transport) or stopped (legacy) one subscription: that one only. */
  private stop(id: string): void {
    const sub = this.subs.get(id);
    if (!sub) return;
    this.subs.delete(id);
    sub.stream?.leave(sub);
    sub.release();
  }

  /** An error for one operation: terminal in graphql-transport-ws; legacy gets a complete after it. */
  private error(idJson: string, errors: readonly ErrorLike[]): void {
    this.send(errorMessage(this.protocol, idJson, errors));
    if (this.protocol === LEGACY) this.send(complete(idJson));
  }

  private leaveAll(): void {
    this.closing = true;
    clearTimeout(this.initTimer);
    for (const sub of this.subs.values()) {
      sub.stream?.leave(sub);
      sub.release();
    }
    this.subs.clear();
  }

  private closed(code: number, reason: string): void {
    this.leaveAll();
    this.ctx.onClose(this);
    const p = this.principal;
    this.ctx.log.info(
      {
        client: this.id,
        path: this.path,
        protocol: this.protocol,
        ...(p && { credentials: p.credentials }),
        ...(p?.key !== undefined && { key: p.key }),
        ms: Math.round(performance.now() - this.started),
        closedBy: this.closedBy,
        ...(this.cause && { cause: this.cause }),
        code,
        ...((reason || this.problem) && { reason: reason || this.problem }),
        subscriptions: this.subscriptionsTotal,
        messagesToClient: this.messagesToClient,
        bytesToClient: this.bytesToClient,
      },
      'client connection closed',
    );
  }
}
