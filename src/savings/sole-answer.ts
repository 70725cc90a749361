// The answer of a request the points saver does not share (X-Cache: BYPASS): the exchange writes
// straight into the one client's response. It behaves as a flight with a single client that
// never takes joiners or holds chunks (flight.ts), without a flight's bookkeeping: no set of
// clients, no held chunks, no backlog to compare. A lone client is never cut; it paces the
// upstream through write() and onDrain().
import type { OutgoingHttpHeaders, ServerResponse } from 'node:http';
import type { ProxyError } from '../errors.js';
import type { AnswerSink, ClientListener, Exchange, ResponseHeaders } from './flight.js';

/** How every such request is served, once its answer is written whole or its client has gone. */
const ANSWERED = Object.freeze({ cache: 'bypass', cut: false } as const);

export class SoleAnswer implements AnswerSink {
  private state: 'waiting' | 'streaming' | 'done' = 'waiting';
  private goneListener?: () => void;
  private resolve!: (outcome: typeof ANSWERED) => void;
  /** Resolves once the answer is written whole, or the client has gone (a lone client is never cut). */
  readonly done: Promise<typeof ANSWERED>;
  gone = false;
  /** Whether head() has been written. */
  started = false;

  constructor(
    private readonly res: ServerResponse,
    private readonly base: OutgoingHttpHeaders,
    private readonly listener: ClientListener | undefined,
  ) {
    this.done = new Promise((resolve) => (this.resolve = resolve));
    res.once('close', this.closed);
  }

  /** Runs the exchange; a rejection (or returning without finishing the answer) cuts the client. */
  run(exchange: Exchange): Promise<void> {
    return exchange(this).then(this.settle, (err: unknown) => {
      this.settle();
      throw err;
    });
  }

  onGone(listener: () => void): void {
    this.goneListener = listener;
  }

  onDrain(listener: () => void): void {
    this.res.once('drain', listener);
  }

  head(status: number, headers: ResponseHeaders): void {
    if (this.state !== 'waiting') return;
    // writeHead validates before writing: a header it refuses throws here, before anything is
    // sent, and the exchange answers with its error instead.
    this.res.writeHead(status, { ...this.base, ...headers, 'x-cache': 'BYPASS' });
    this.state = 'streaming';
    this.started = true;
  }

  write(chunk: Buffer): boolean {
    return this.state !== 'streaming' || this.res.write(chunk);
  }

  end(): void {
    if (this.state !== 'streaming') return;
    this.state = 'done';
    this.res.end();
    this.resolve(ANSWERED);
  }

  destroy(): void {
    if (this.state === 'done') return;
    this.state = 'done';
    this.res.destroy();
  }

  proxyError(error: ProxyError): void {
    this.listener?.failed(error);
  }

  private readonly settle = (): void => {
    if (this.state !== 'done') this.destroy();
  };

  private readonly closed = (): void => {
    this.resolve(ANSWERED);
    if (this.res.writableFinished || this.state === 'done') return;
    this.state = 'done';
    this.gone = true;
    const listener = this.goneListener;
    this.goneListener = undefined;
    listener?.();
  };
}
