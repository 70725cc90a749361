// One upstream attempt whose answer is written straight into the client's response, through
// undici's dispatch() handler API. undici's request() API wraps every answer in a Readable and
// the reply pipes that Readable again: those two streams and an AbortController per request were
// a large share of the proxy's CPU (the measurement is in "Benchmarks" in the README).
import type { OutgoingHttpHeaders, ServerResponse } from 'node:http';
import type { Dispatcher } from 'undici';
import { CappedChunks } from '../read-capped.js';
import { clientResponseHeaderList, clientResponseHeaders } from './headers.js';

export type RelayResult =
  /** The answer went to the client whole. */
  | { kind: 'relayed'; status: number }
  /** The answer had the held status and was kept, not sent: the caller decides what follows. */
  | { kind: 'held'; status: number; headers: Record<string, string | string[]>; body: Buffer }
  /** No answer, or a broken one; `headersSent` says whether the client has seen part of it. */
  | { kind: 'failed'; error: Error; headersSent: boolean };

export interface RelayOptions {
  upstream: Dispatcher;
  request: Dispatcher.DispatchOptions;
  client: ClientLink;
  /** Headers already set for the client (CORS, rate limit); the upstream's own win a clash. */
  baseHeaders: OutgoingHttpHeaders;
  /** An answer with this status is kept, up to `holdLimit` bytes of body, instead of relayed. */
  hold?: number;
  holdLimit: number;
  /** Called once the upstream's status line has arrived. */
  onStatus(status: number): void;
}

/**
 * The client's response across attempts: when the client goes away, the attempt in flight is
 * aborted, since the upstream's work would be wasted.
 */
export class ClientLink {
  gone = false;
  private current?: RelayHandler;

  /**
   * `readTimeoutMs`: how long the client's socket may stay full (the client not reading) before
   * the connection is cut, which aborts the attempt and frees its upstream connection.
   */
  constructor(
    readonly res: ServerResponse,
    readonly readTimeoutMs: number,
    private readonly onReadTimeout: () => void,
  ) {
    res.once('close', () => {
      if (res.writableFinished) return;
      this.gone = true;
      this.current?.abort(new Error('the client closed the connection'));
    });
  }

  attach(handler: RelayHandler): void {
    this.current = handler;
  }

  /** Calls `resume` once the client has drained what it was sent, or cuts it after `readTimeoutMs`. */
  whenDrained(resume: () => void): void {
    const { res } = this;
    const timer = setTimeout(() => {
      done();
      this.onReadTimeout();
      res.destroy();
    }, this.readTimeoutMs);
    const done = () => {
      clearTimeout(timer);
      res.off('drain', drained);
      res.off('close', done);
    };
    const drained = () => {
      done();
      resume();
    };
    res.once('drain', drained);
    res.once('close', done);
  }
}

class RelayHandler implements Dispatcher.DispatchHandler {
  private controller?: Dispatcher.DispatchController;
  private held?: { status: number; headers: Record<string, string | string[]>; body: CappedChunks };
  private settled = false;

  constructor(
    private readonly options: RelayOptions,
    private readonly settle: (result: RelayResult) => void,
  ) {}

  abort(reason: Error): void {
    this.controller?.abort(reason);
  }

  private finish(result: RelayResult): void {
    if (this.settled) return;
    this.settled = true;
    this.settle(result);
  }

  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.controller = controller;
    if (this.options.client.gone) controller.abort(new Error('the client closed the connection'));
  }

  // Whatever throws in these callbacks (writeHead refusing a header, say) reaches onResponseError
  // through undici, which ends the attempt as failed.
  onResponseStart(_controller: Dispatcher.DispatchController, status: number, headers: Record<string, string | string[] | undefined>): void {
    const { options } = this;
    options.onStatus(status);
    if (status === options.hold) {
      this.held = { status, headers: clientResponseHeaders(headers), body: new CappedChunks(options.holdLimit) };
      return;
    }
    options.client.res.writeHead(status, clientResponseHeaderList(headers, options.baseHeaders) as string[]);
  }

  onResponseData(controller: Dispatcher.DispatchController, chunk: Buffer): void {
    const { held } = this;
    if (held) {
      if (!held.body.push(chunk)) {
        // More than any 401 needs: keep what there is and stop reading.
        this.finish(this.heldResult());
        controller.abort(new Error('held answer too large'));
      }
      return;
    }
    const { res } = this.options.client;
    if (!res.write(chunk)) {
      controller.pause();
      this.options.client.whenDrained(() => controller.resume());
    }
  }

  onResponseEnd(): void {
    if (this.held) return this.finish(this.heldResult());
    this.options.client.res.end();
    this.finish({ kind: 'relayed', status: this.options.client.res.statusCode });
  }

  onResponseError(_controller: Dispatcher.DispatchController, error: Error): void {
    this.finish({ kind: 'failed', error, headersSent: this.options.client.res.headersSent });
  }

  private heldResult(): RelayResult {
    const { status, headers, body } = this.held!;
    return { kind: 'held', status, headers, body: body.concat() };
  }
}

/** Sends one request upstream; resolves once its answer has been relayed, held, or has failed. */
export function relay(options: RelayOptions): Promise<RelayResult> {
  return new Promise((resolve) => {
    const handler = new RelayHandler(options, resolve);
    options.client.attach(handler);
    options.upstream.dispatch(options.request, handler);
  });
}
