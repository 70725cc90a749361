// One upstream exchange written to every client waiting for it. The exchange (the caller's: token,
// dispatch, the 401 retry) writes its answer into the flight as into one response (AnswerSink);
// the flight writes it on to each client's ServerResponse.
//
// Memory: the body's chunks are held once, shared by reference by every client's socket buffer,
// never copied per client. They are held for late joiners (and the cache) only while the body
// stays within `maxHeldBytes` and the budget shared by all flights has room; past that the
// flight stops taking joiners and keeps nothing.
// Pace: the upstream is read as fast as the fastest client takes the answer; it is paused only
// when every client has a full buffer. A client more than `maxBacklogBytes` behind the fastest
// is cut (its connection destroyed) and the others go on, so one slow client holds no one back
// and costs at most that much. A lone client is never cut: it paces the upstream, as without the
// saver.
import type { OutgoingHttpHeaders, ServerResponse } from 'node:http';
import type { ProxyError } from '../errors.js';
import type { CacheResult } from '../events.js';

export type ResponseHeaders = Record<string, string | string[]>;

/** What an exchange writes its answer into: the shape of one response, whatever the number of clients. */
export interface AnswerSink {
  /** Every client has gone: there is no one left to answer. */
  readonly gone: boolean;
  /** Called once when every client has gone: abort the upstream request. Replaces an earlier listener (one attempt at a time). */
  onGone(listener: () => void): void;
  /** Whether head() has been written: after it, a failure can only cut the clients (destroy()). */
  readonly started: boolean;
  /** The answer's status and headers, hop-by-hop headers already removed. */
  head(status: number, headers: ResponseHeaders): void;
  /** One body chunk, kept by reference (not copied). False: read no more until the onDrain listener runs. */
  write(chunk: Buffer): boolean;
  /** Called once when the sink can take more after write() returned false (one listener at a time). */
  onDrain(listener: () => void): void;
  end(): void;
  /** The answer broke: every client's connection is cut. */
  destroy(): void;
  /**
   * The answer is the proxy's own error, written next, or an upstream failure that the clients
   * are cut for (destroy() next): every client's listener is told, for its request event.
   */
  proxyError(error: ProxyError): void;
}

/** Told how one client is served, for its request event. */
export interface ClientListener {
  /** How the points saver serves the client: called before anything is written to it. */
  decided(cache: CacheResult): void;
  /** The client's answer is the proxy's own error, or was cut for one: called before that. */
  failed(error: ProxyError): void;
}

/**
 * Performs one upstream exchange into `sink`: writes the answer (the upstream's, the kept 401, or
 * the proxy's own error answer) with head/write/end, or destroy() when it breaks after head();
 * proxyError() comes first when the proxy's own error is the answer or the reason for the cut.
 * Resolves once it is done; it should not reject (a rejection cuts the clients and is reported).
 */
export type Exchange = (sink: AnswerSink) => Promise<void>;

/** What the X-Cache header says for a client served by a flight. */
export type FlightRole = 'MISS' | 'COALESCED';

export interface ClientOutcome {
  /** The proxy cut this client for being too slow (more than maxBacklogBytes behind the fastest). */
  cut: boolean;
}

interface Client {
  res: ServerResponse;
  base: OutgoingHttpHeaders;
  role: FlightRole;
  listener: ClientListener | undefined;
  cut: boolean;
  /** A 'drain' listener is on its response. */
  waiting: boolean;
  onDrain(): void;
  resolve(outcome: ClientOutcome): void;
}

/** Bytes held by all flights together, bounded. */
export class HeldBudget {
  used = 0;
  constructor(readonly max: number) {}

  take(bytes: number): boolean {
    if (this.used + bytes > this.max) return false;
    this.used += bytes;
    return true;
  }

  give(bytes: number): void {
    this.used -= bytes;
  }
}

export interface FlightOptions {
  /** The body is held (for joiners and the cache) while it stays within this, and the budget allows. */
  maxHeldBytes: number;
  budget: HeldBudget;
  maxBacklogBytes: number;
  /** Given when the flight takes joiners: called once when that stops (too large to hold, ended, failed, abandoned). */
  onClosed?(): void;
  /** Given when the answer may be cached: called with a whole answer held throughout (headers without Set-Cookie). */
  onComplete?(status: number, headers: ResponseHeaders, body: Buffer, startedAt: number): void;
  /** Counts a client cut for being slow. */
  onCut(): void;
  now(): number;
}

/**
 * The body in one buffer of its own. Not Buffer.concat: a small result would be a slice of Node's
 * shared 8 KiB pool, and keeping it (in the cache) would keep the whole slab alive, so the cache's
 * byte bound would count a fraction of what it holds.
 */
function ownCopy(chunks: Buffer[], size: number): Buffer {
  const body = Buffer.allocUnsafeSlow(size);
  let at = 0;
  for (const chunk of chunks) at += chunk.copy(body, at);
  return body;
}

/** Never handed from one client's answer to another's: it belongs to the client that caused it. */
function withoutSetCookie(headers: ResponseHeaders): ResponseHeaders {
  if (!('set-cookie' in headers)) return headers;
  const { 'set-cookie': _dropped, ...rest } = headers;
  return rest;
}

export class Flight implements AnswerSink {
  private state: 'waiting' | 'streaming' | 'done' = 'waiting';
  private readonly clients = new Set<Client>();
  private status = 0;
  private headers: ResponseHeaders = {};
  private shared: ResponseHeaders = {};
  private startedAt = 0;
  private headWritten = false;
  private chunks?: Buffer[];
  private held = 0;
  private joinable: boolean;
  private goneListener?: () => void;
  private drainListener?: () => void;
  gone = false;

  constructor(private readonly options: FlightOptions) {
    this.joinable = options.onClosed !== undefined;
    if (this.joinable || options.onComplete) this.chunks = [];
  }

  get started(): boolean {
    return this.headWritten;
  }

  /** Adds a client; its answer starts with whatever has arrived so far. Resolves once it is written whole, cut, or gone. */
  add(res: ServerResponse, base: OutgoingHttpHeaders, role: FlightRole, listener?: ClientListener): Promise<ClientOutcome> {
    let resolve!: (outcome: ClientOutcome) => void;
    const done = new Promise<ClientOutcome>((r) => (resolve = r));
    const client: Client = {
      res,
      base,
      role,
      listener,
      cut: false,
      waiting: false,
      onDrain: () => {
        client.waiting = false;
        this.drained();
      },
      resolve,
    };
    this.clients.add(client);
    res.once('close', () => this.leave(client));
    if (this.state === 'streaming') {
      this.start(client);
      for (const chunk of this.chunks!) res.write(chunk);
    }
    return done;
  }

  /** Runs the exchange; a rejection (or returning without finishing the answer) cuts every client. */
  run(exchange: Exchange): Promise<void> {
    const settle = () => {
      if (this.state !== 'done') this.destroy();
    };
    return exchange(this).then(settle, (err: unknown) => {
      settle();
      throw err;
    });
  }

  onGone(listener: () => void): void {
    this.goneListener = listener;
  }

  onDrain(listener: () => void): void {
    this.drainListener = listener;
  }

  head(status: number, headers: ResponseHeaders): void {
    if (this.state !== 'waiting') return;
    this.status = status;
    this.headers = headers;
    this.shared = withoutSetCookie(headers);
    // writeHead validates before writing: a header it refuses throws here, for the first client,
    // before anything is sent, and the exchange answers with its error instead.
    for (const client of this.clients) this.start(client);
    this.state = 'streaming';
    this.headWritten = true;
    this.startedAt = this.options.now();
  }

  write(chunk: Buffer): boolean {
    if (this.state !== 'streaming') return true;
    if (this.chunks) {
      if (this.held + chunk.length <= this.options.maxHeldBytes && this.options.budget.take(chunk.length)) {
        this.chunks.push(chunk);
        this.held += chunk.length;
      } else {
        this.release();
        this.close();
      }
    }
    let ready = false;
    let least = Infinity;
    for (const client of this.clients) {
      if (client.res.write(chunk)) ready = true;
      least = Math.min(least, client.res.writableLength);
    }
    for (const client of this.clients) {
      if (client.res.writableLength - least > this.options.maxBacklogBytes) this.cut(client);
      else if (!ready && !client.waiting) {
        // Every client is full: the first to drain resumes the upstream.
        client.waiting = true;
        client.res.once('drain', client.onDrain);
      }
    }
    return ready;
  }

  end(): void {
    if (this.state !== 'streaming') return;
    this.state = 'done';
    this.close();
    for (const client of this.clients) {
      client.res.end();
      client.resolve({ cut: false });
    }
    const body = this.chunks && this.options.onComplete && ownCopy(this.chunks, this.held);
    this.release();
    if (body) this.options.onComplete!(this.status, this.shared, body, this.startedAt);
  }

  destroy(): void {
    if (this.state === 'done') return;
    this.state = 'done';
    this.close();
    this.release();
    for (const client of this.clients) client.res.destroy();
  }

  proxyError(error: ProxyError): void {
    for (const client of this.clients) client.listener?.failed(error);
  }

  private readonly drained = (): void => {
    const listener = this.drainListener;
    this.drainListener = undefined;
    listener?.();
  };

  private start(client: Client): void {
    const headers = client.role === 'COALESCED' ? this.shared : this.headers;
    client.res.writeHead(this.status, { ...client.base, ...headers, 'x-cache': client.role });
  }

  /** Drops the held chunks and gives their bytes back to the budget. */
  private release(): void {
    this.chunks = undefined;
    this.options.budget.give(this.held);
    this.held = 0;
  }

  private close(): void {
    if (!this.joinable) return;
    this.joinable = false;
    this.options.onClosed!();
  }

  private cut(client: Client): void {
    client.cut = true;
    this.options.onCut();
    client.res.destroy();
    this.leave(client);
  }

  private leave(client: Client): void {
    client.resolve({ cut: client.cut });
    if (client.res.writableFinished || !this.clients.delete(client)) return;
    if (this.clients.size > 0 || this.state === 'done') return;
    this.state = 'done';
    this.gone = true;
    this.close();
    this.release();
    const listener = this.goneListener;
    this.goneListener = undefined;
    listener?.();
  }
}
