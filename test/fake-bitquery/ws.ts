/**
 * The fake's WebSocket side: both GraphQL subprotocols, hand-written, over one schema, and the
 * streams they run, billed as Bitquery bills them: a subscription runs (and would be charged) until
 * its socket closes; `stop` / `complete` from the client is acknowledged as each protocol requires
 * and changes nothing else. FakeBitquery (index.ts) does the handshake and exposes the controls;
 * the API is documented there.
 */
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import { WebSocket, WebSocketServer, type RawData } from 'ws';
import {
  buildSchema,
  execute,
  getOperationAST,
  GraphQLError,
  parse,
  print,
  subscribe,
  validate,
  type DocumentNode,
  type ExecutionResult,
  type GraphQLSchema,
} from 'graphql';

export const LEGACY_PROTOCOL = 'graphql-ws';
export const TRANSPORT_PROTOCOL = 'graphql-transport-ws';

/** The protocol a socket is served with (`graphql-ws` also when the client offered none). */
export type WsProtocol = typeof LEGACY_PROTOCOL | typeof TRANSPORT_PROTOCOL;

/** One open WebSocket on the fake. */
export interface FakeSocketInfo {
  /** 1, 2, ... in the order sockets were accepted (RecordedWsHandshake.socketId). */
  id: number;
  path: string;
  protocol: WsProtocol;
  /** The token of the handshake, and the client it was minted for (undefined: static token). */
  token: string;
  clientId: string | undefined;
  openedAt: number;
  /** See FakeBitquery.silence(). */
  silenced: boolean;
  /** Subscriptions running on it. */
  streams: number;
}

/** A subscription running on an open socket: one Bitquery stream, billed until its socket closes. */
export interface FakeStreamInfo {
  socketId: number;
  protocol: WsProtocol;
  path: string;
  clientId: string | undefined;
  /** The operation id the client gave in `start` / `subscribe`. */
  id: string;
  /** The document as graphql-js parse + print normalizes it. */
  query: string;
  variables: Record<string, unknown> | undefined;
  operationName: string | undefined;
  /** The subscription's root field. */
  field: 'ticks' | 'events';
  /** `events` subscriptions: their topic. */
  topic: string | undefined;
  startedAt: number;
  /** The client sent `stop` / `complete` for it: acknowledged, yet it still runs (Bitquery). */
  stopRequested: boolean;
}

/** One closed WebSocket. */
export interface RecordedWsClose {
  at: number;
  socketId: number;
  path: string;
  protocol: WsProtocol;
  /** As ws reports it: 1006 when the connection dropped without a close frame. */
  code: number;
  reason: string;
}

export type SocketMatch = (socket: FakeSocketInfo) => boolean;
export type StreamMatch = (stream: FakeStreamInfo) => boolean;

const SDL = /* GraphQL */ `
  type Query { hello: String }
  type Tick { n: Int, at: String }
  type Event { seq: Int, topic: String, at: String }
  type Subscription {
    ticks(count: Int): Tick
    events(topic: String = "default"): Event
  }
`;

type Message = { type: string; id?: unknown; payload?: unknown };

interface TickPayload {
  ticks: { n: number; at: string };
}
interface EventPayload {
  events: { seq: number; topic: string; at: string };
}

/** A source of events whose finish() ends it at once (a pending next() resolves as done). */
interface Source {
  finish(): void;
}

/** Ticks paced by the consumer: each next() waits one interval. */
class TickIterator implements AsyncIterableIterator<TickPayload>, Source {
  private n = 0;
  private done = false;
  private timer: NodeJS.Timeout | undefined;
  private pending: ((r: IteratorResult<TickPayload>) => void) | undefined;

  constructor(
    private readonly intervalMs: () => number,
    private readonly count: number | null | undefined,
    private readonly onFinish: (s: Source) => void,
  ) {}

  [Symbol.asyncIterator](): this {
    return this;
  }

  next(): Promise<IteratorResult<TickPayload>> {
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

  return(): Promise<IteratorResult<TickPayload>> {
    this.finish();
    return Promise.resolve({ done: true, value: undefined });
  }

  throw(err?: unknown): Promise<IteratorResult<TickPayload>> {
    this.finish();
    return Promise.reject(err);
  }

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

/** Events pushed by publish(), queued until the operation's loop takes them. */
class EventChannel implements AsyncIterableIterator<EventPayload>, Source {
  private readonly queue: EventPayload[] = [];
  private done = false;
  private pending: ((r: IteratorResult<EventPayload>) => void) | undefined;

  constructor(private readonly onFinish: (s: Source) => void) {}

  [Symbol.asyncIterator](): this {
    return this;
  }

  push(value: EventPayload): void {
    if (this.done) return;
    const p = this.pending;
    this.pending = undefined;
    if (p) p({ done: false, value });
    else this.queue.push(value);
  }

  next(): Promise<IteratorResult<EventPayload>> {
    const value = this.queue.shift();
    if (value !== undefined) return Promise.resolve({ done: false, value });
    if (this.done) return Promise.resolve({ done: true, value: undefined });
    return new Promise((resolve) => (this.pending = resolve));
  }

  return(): Promise<IteratorResult<EventPayload>> {
    this.finish();
    return Promise.resolve({ done: true, value: undefined });
  }

  throw(err?: unknown): Promise<IteratorResult<EventPayload>> {
    this.finish();
    return Promise.reject(err);
  }

  finish(): void {
    if (this.done) return;
    this.done = true;
    this.queue.length = 0;
    const p = this.pending;
    this.pending = undefined;
    p?.({ done: true, value: undefined });
    this.onFinish(this);
  }
}

function isAsyncIterable(x: unknown): x is AsyncIterableIterator<ExecutionResult> {
  return typeof x === 'object' && x !== null && Symbol.asyncIterator in x;
}

/** One operation (query or subscription) a client started on a socket. */
interface Operation {
  id: string;
  socket: SocketState;
  query: string;
  variables: Record<string, unknown> | undefined;
  operationName: string | undefined;
  startedAt: number;
  /** Set by the subscribe resolver: the operation is a running stream. */
  field?: 'ticks' | 'events';
  topic?: string;
  source?: Source & Partial<Pick<EventChannel, 'push'>>;
  stopRequested: boolean;
  /** Nothing more is sent for it (natural end, server-side error/complete, socket closed). */
  ended: boolean;
}

interface SocketState {
  readonly ws: WebSocket;
  readonly info: Omit<FakeSocketInfo, 'silenced' | 'streams'>;
  silenced: boolean;
  readonly ops: Set<Operation>;
  readonly timers: NodeJS.Timeout[];
}

export interface WsSettings {
  /** Read when a socket opens. */
  keepAliveMs(): number;
  /** graphql-transport-ws: how long a socket may wait before connection_init; read when it opens. */
  connectionInitTimeoutMs(): number;
  /** Read when each tick is scheduled. */
  eventIntervalMs(): number;
}

export class WsService {
  private readonly sockets = new Map<WebSocket, SocketState>();
  private readonly sources = new Set<Source>();
  private readonly wss: WebSocketServer;
  private readonly schema: GraphQLSchema;
  private nextSocketId = 1;
  private eventSeq = 0;

  constructor(private readonly settings: WsSettings) {
    this.schema = this.buildSchema();
    // graphql-ws (legacy) is preferred, graphql-transport-ws when that is all the client offers, else none (served as legacy).
    this.wss = new WebSocketServer({
      noServer: true,
      perMessageDeflate: false,
      handleProtocols: (offered) =>
        offered.has(LEGACY_PROTOCOL) ? LEGACY_PROTOCOL : offered.has(TRANSPORT_PROTOCOL) ? TRANSPORT_PROTOCOL : false,
    });
  }

  /** Completes an accepted handshake and serves the socket; `opened` and `closed` report it. */
  accept(
    req: IncomingMessage,
    socket: Duplex,
    head: Buffer,
    who: { path: string; token: string; clientId: string | undefined },
    opened: (ws: WebSocket, info: FakeSocketInfo) => void,
    closed: (ws: WebSocket, record: RecordedWsClose) => void,
  ): void {
    this.wss.handleUpgrade(req, socket, head, (ws) => {
      ws.on('error', () => {});
      const protocol: WsProtocol = ws.protocol === TRANSPORT_PROTOCOL ? TRANSPORT_PROTOCOL : LEGACY_PROTOCOL;
      const state: SocketState = {
        ws,
        info: { id: this.nextSocketId++, path: who.path, protocol, token: who.token, clientId: who.clientId, openedAt: Date.now() },
        silenced: false,
        ops: new Set(),
        timers: [],
      };
      this.sockets.set(ws, state);
      ws.once('close', (code, reason) => {
        this.sockets.delete(ws);
        for (const t of state.timers) clearTimeout(t);
        for (const op of state.ops) this.end(op);
        const { id: socketId, path } = state.info;
        closed(ws, { at: Date.now(), socketId, path, protocol, code, reason: reason.toString() });
      });
      if (protocol === TRANSPORT_PROTOCOL) this.serveTransport(state);
      else this.serveLegacy(state);
      opened(ws, this.describe(state));
    });
  }

  // ------------------------------------------------------------------ controls

  socketList(): FakeSocketInfo[] {
    return [...this.sockets.values()].map((s) => this.describe(s));
  }

  streamList(): FakeStreamInfo[] {
    return this.runningOps().map((op) => this.describeOp(op));
  }

  publish(topic: string | undefined): { seq: number; delivered: number } {
    const seq = ++this.eventSeq;
    const at = new Date().toISOString();
    let delivered = 0;
    for (const op of this.runningOps()) {
      if (op.field !== 'events' || (topic !== undefined && op.topic !== topic)) continue;
      op.source!.push!({ events: { seq, topic: op.topic!, at } });
      if (!op.socket.silenced) delivered += 1;
    }
    return { seq, delivered };
  }

  setSilenced(match: SocketMatch, silenced: boolean): number {
    let n = 0;
    for (const s of this.sockets.values()) {
      if (s.silenced === silenced || !match(this.describe(s))) continue;
      s.silenced = silenced;
      n += 1;
    }
    return n;
  }

  /** Drops matching sockets without a close frame. */
  terminate(match: SocketMatch): number {
    return this.eachSocket(match, (s) => s.ws.terminate());
  }

  /** Closes matching sockets with a close frame. */
  closeSockets(match: SocketMatch, code: number, reason: string): number {
    return this.eachSocket(match, (s) => s.ws.close(code, reason));
  }

  /** Sends `error` (message) or `complete` for matching streams and stops them. */
  endStreams(match: StreamMatch, error: string | undefined): number {
    let n = 0;
    for (const op of this.runningOps()) {
      if (!match(this.describeOp(op))) continue;
      this.end(op);
      if (error === undefined) this.sendComplete(op);
      else this.sendError(op, [new GraphQLError(error)]);
      n += 1;
    }
    return n;
  }

  /** Forgets the publish() sequence (reset()). */
  resetSequence(): void {
    this.eventSeq = 0;
  }

  /** Drops every socket and stops every source (close()). */
  close(): void {
    for (const source of [...this.sources]) source.finish();
    for (const ws of this.sockets.keys()) ws.terminate();
    this.wss.close();
  }

  // ------------------------------------------------------------------ internals

  private describe(s: SocketState): FakeSocketInfo {
    let streams = 0;
    for (const op of s.ops) if (op.source && !op.ended) streams += 1;
    return { ...s.info, silenced: s.silenced, streams };
  }

  private describeOp(op: Operation): FakeStreamInfo {
    const { id: socketId, protocol, path, clientId } = op.socket.info;
    return {
      socketId,
      protocol,
      path,
      clientId,
      id: op.id,
      query: op.query,
      variables: op.variables,
      operationName: op.operationName,
      field: op.field!,
      topic: op.topic,
      startedAt: op.startedAt,
      stopRequested: op.stopRequested,
    };
  }

  private runningOps(): Operation[] {
    const out: Operation[] = [];
    for (const s of this.sockets.values()) for (const op of s.ops) if (op.source && !op.ended) out.push(op);
    return out;
  }

  private eachSocket(match: SocketMatch, fn: (s: SocketState) => void): number {
    let n = 0;
    for (const s of [...this.sockets.values()]) {
      if (!match(this.describe(s))) continue;
      fn(s);
      n += 1;
    }
    return n;
  }

  /** Marks an operation ended and stops its source. */
  private end(op: Operation): void {
    op.ended = true;
    op.source?.finish();
  }

  private send(s: SocketState, msg: unknown): void {
    if (!s.silenced && s.ws.readyState === WebSocket.OPEN) s.ws.send(JSON.stringify(msg));
  }

  private sendData(op: Operation, payload: ExecutionResult): void {
    this.send(op.socket, { type: op.socket.info.protocol === LEGACY_PROTOCOL ? 'data' : 'next', id: op.id, payload });
  }

  private sendError(op: Operation, errors: readonly GraphQLError[]): void {
    // Legacy: one {message}; transport: the GraphQLError array.
    const payload =
      op.socket.info.protocol === LEGACY_PROTOCOL
        ? { message: errors.map((e) => e.message).join('; ') }
        : errors.map((e) => e.toJSON());
    this.send(op.socket, { type: 'error', id: op.id, payload });
  }

  private sendComplete(op: Operation): void {
    this.send(op.socket, { type: 'complete', id: op.id });
  }

  private every(s: SocketState, ms: number, fn: () => void): void {
    if (ms > 0 && Number.isFinite(ms)) s.timers.push(setInterval(fn, ms));
  }

  /** The operation with that id the client has not stopped, if any. */
  private liveOp(s: SocketState, id: string): Operation | undefined {
    for (const op of s.ops) if (op.id === id && !op.stopRequested && !op.ended) return op;
    return undefined;
  }

  private parseMessage(raw: RawData): Message | undefined {
    try {
      const msg = JSON.parse(Buffer.isBuffer(raw) ? raw.toString('utf8') : String(raw)) as Message;
      return msg && typeof msg === 'object' && typeof msg.type === 'string' ? msg : undefined;
    } catch {
      return undefined;
    }
  }

  /** Legacy `graphql-ws` (subscriptions-transport-ws); `stop` is answered `complete`, the stream runs on. */
  private serveLegacy(s: SocketState): void {
    let inited = false;
    s.ws.on('message', (raw) => {
      const msg = this.parseMessage(raw);
      if (!msg) return void s.ws.close(4400, 'Invalid message received');
      const id = typeof msg.id === 'string' || typeof msg.id === 'number' ? String(msg.id) : undefined;
      switch (msg.type) {
        case 'connection_init':
          this.send(s, { type: 'connection_ack' });
          if (!inited) {
            inited = true;
            this.send(s, { type: 'ka' });
            this.every(s, this.settings.keepAliveMs(), () => this.send(s, { type: 'ka' }));
          }
          return;
        case 'start': {
          if (id === undefined) return this.send(s, { type: 'error', payload: { message: 'missing operation id' } });
          if (!inited) return this.send(s, { type: 'error', id, payload: { message: 'connection not initialised' } });
          // A start that reuses a running id: the old stream keeps running (billed) beside the new one.
          const old = this.liveOp(s, id);
          if (old) old.stopRequested = true;
          void this.run(s, id, msg.payload);
          return;
        }
        case 'stop': {
          const op = id === undefined ? undefined : this.liveOp(s, id);
          if (op) {
            op.stopRequested = true;
            this.sendComplete(op);
          }
          return;
        }
        case 'connection_terminate':
          s.ws.close(1000, 'Normal Closure');
          return;
        default:
          this.send(s, { type: 'error', id, payload: { message: `unknown message type ${msg.type}` } });
      }
    });
  }

  /** `graphql-transport-ws` as graphql-ws's server speaks it; `complete` from the client changes nothing. */
  private serveTransport(s: SocketState): void {
    let initReceived = false;
    const initTimeout = this.settings.connectionInitTimeoutMs();
    if (initTimeout > 0 && Number.isFinite(initTimeout)) {
      s.timers.push(
        setTimeout(() => {
          if (!initReceived) s.ws.close(4408, 'Connection initialisation timeout');
        }, initTimeout),
      );
    }
    s.ws.on('message', (raw) => {
      const msg = this.parseMessage(raw);
      const id = typeof msg?.id === 'string' && msg.id !== '' ? msg.id : undefined;
      const payloadOk = msg?.payload === undefined || msg.payload === null || typeof msg.payload === 'object';
      if (!msg || !payloadOk) return void s.ws.close(4400, 'Invalid message received');
      switch (msg.type) {
        case 'connection_init':
          if (initReceived) return void s.ws.close(4429, 'Too many initialisation requests');
          initReceived = true;
          this.send(s, { type: 'connection_ack' });
          // Unsolicited `pong` messages as keep-alive, like Bitquery.
          this.every(s, this.settings.keepAliveMs(), () => this.send(s, { type: 'pong' }));
          return;
        case 'ping':
          this.send(s, msg.payload ? { type: 'pong', payload: msg.payload } : { type: 'pong' });
          return;
        case 'pong':
          return;
        case 'subscribe': {
          const query = (msg.payload as { query?: unknown } | null)?.query;
          if (id === undefined || typeof query !== 'string') return void s.ws.close(4400, 'Invalid message received');
          if (!initReceived) return void s.ws.close(4401, 'Unauthorized');
          if (this.liveOp(s, id)) return void s.ws.close(4409, `Subscriber for ${id} already exists`);
          void this.run(s, id, msg.payload);
          return;
        }
        case 'complete': {
          const op = id === undefined ? undefined : this.liveOp(s, id);
          if (op) op.stopRequested = true;
          return;
        }
        default:
          s.ws.close(4400, 'Invalid message received');
      }
    });
  }

  /** Runs one operation to its end, sending in the socket's protocol. */
  private async run(s: SocketState, id: string, payload: unknown): Promise<void> {
    const p = (payload ?? {}) as { query?: unknown; variables?: unknown; operationName?: unknown };
    const variables =
      p.variables !== null && typeof p.variables === 'object' ? (p.variables as Record<string, unknown>) : undefined;
    const operationName = typeof p.operationName === 'string' ? p.operationName : undefined;
    const op: Operation = {
      id,
      socket: s,
      query: typeof p.query === 'string' ? p.query : '',
      variables,
      operationName,
      startedAt: Date.now(),
      stopRequested: false,
      ended: false,
    };
    s.ops.add(op);
    const fail = (errors: readonly GraphQLError[]) => {
      if (op.ended) return;
      op.ended = true;
      this.sendError(op, errors);
    };
    try {
      if (typeof p.query !== 'string') return fail([new GraphQLError('Must provide query string.')]);
      let document: DocumentNode;
      try {
        document = parse(p.query);
      } catch (err) {
        return fail([err as GraphQLError]);
      }
      op.query = print(document);
      const errors = validate(this.schema, document);
      if (errors.length > 0) return fail(errors);
      const operation = getOperationAST(document, operationName);
      if (!operation) return fail([new GraphQLError('Unable to identify operation')]);
      const args = { schema: this.schema, document, variableValues: variables, operationName, contextValue: op };
      if (operation.operation === 'subscription') {
        const result = await subscribe(args);
        if (isAsyncIterable(result)) {
          if (op.ended) return void result.return?.();
          for await (const event of result) {
            if (op.ended) break;
            this.sendData(op, event);
          }
        } else if (!op.ended) {
          this.sendData(op, result);
        }
      } else {
        const result = await execute(args);
        if (!op.ended) this.sendData(op, result);
      }
      if (!op.ended) {
        op.ended = true;
        if (!op.stopRequested) this.sendComplete(op);
      }
    } catch (err) {
      fail([new GraphQLError((err as Error).message)]);
    } finally {
      op.source?.finish();
      s.ops.delete(op);
    }
  }

  private buildSchema(): GraphQLSchema {
    const schema = buildSchema(SDL);
    const fields = schema.getSubscriptionType()!.getFields();
    const track = <T extends Source>(op: Operation, field: 'ticks' | 'events', source: T, topic?: string): T => {
      op.field = field;
      op.topic = topic;
      op.source = source;
      this.sources.add(source);
      return source;
    };
    const forget = (source: Source) => this.sources.delete(source);
    fields.ticks!.subscribe = (_src, args: { count?: number | null }, op: Operation) =>
      track(op, 'ticks', new TickIterator(() => this.settings.eventIntervalMs(), args.count, forget));
    fields.ticks!.resolve = (payload: TickPayload) => payload.ticks;
    fields.events!.subscribe = (_src, args: { topic?: string | null }, op: Operation) =>
      track(op, 'events', new EventChannel(forget), args.topic ?? 'default');
    fields.events!.resolve = (payload: EventPayload) => payload.events;
    schema.getQueryType()!.getFields().hello!.resolve = () => 'world';
    return schema;
  }
}
