// One upstream attempt whose answer is written straight into the sink of its clients (the points
// saver's flight: one client, or every client sharing it), through undici's dispatch() handler API. undici's request() API wraps every answer in a Readable and
// the reply pipes that Readable again: those two streams and an AbortController per request were
// a large share of the proxy's CPU (the measurement is in "Benchmarks" in the README).
import type { Dispatcher } from 'undici';
import { CappedChunks } from '../read-capped.js';
import type { AnswerSink } from '../savings/flight.js';
import { clientResponseHeaders } from './headers.js';

export type RelayResult =
  /** The answer went into the sink whole. */
  | { kind: 'relayed'; status: number }
  /** The answer had the held status and was kept, not sent: the caller decides what follows. */
  | { kind: 'held'; status: number; headers: Record<string, string | string[]>; body: Buffer }
  /** No client read the answer for readTimeoutMs: every client was cut, the attempt aborted. */
  | { kind: 'cut' }
  /** No answer, or a broken one; `headersSent` says whether the clients have seen part of it. */
  | { kind: 'failed'; error: Error; headersSent: boolean };

export interface RelayOptions {
  upstream: Dispatcher;
  request: Dispatcher.DispatchOptions;
  /** Where the answer goes: every client waiting for it (src/savings/flight.ts). */
  sink: AnswerSink;
  /** An answer with this status is kept, up to `holdLimit` bytes of body, instead of relayed. */
  hold?: number;
  holdLimit: number;
  /** How long the sink may stay full (no client reading) before every client is cut and the attempt aborted. */
  readTimeoutMs: number;
  listener: RelayListener;
  /** Called once when the attempt is over, whatever its result (frees the upstream slot). */
  release(): void;
}

/** What the owner of an attempt is told while it runs. */
export interface RelayListener {
  /** The upstream's status line has arrived. */
  onStatus(status: number): void;
  /** No client read the answer for readTimeoutMs: every client was cut. */
  onReadTimeout(): void;
}

class RelayHandler implements Dispatcher.DispatchHandler {
  private held?: { status: number; headers: Record<string, string | string[]>; body: CappedChunks };
  private settled = false;
  private stalled?: NodeJS.Timeout;
  private status = 0;

  constructor(
    private readonly options: RelayOptions,
    private readonly settle: (result: RelayResult) => void,
  ) {}

  private finish(result: RelayResult): void {
    clearTimeout(this.stalled);
    if (this.settled) return;
    this.settled = true;
    this.options.release();
    this.settle(result);
  }

  onRequestStart(controller: Dispatcher.DispatchController): void {
    const { sink } = this.options;
    // The upstream's work would be wasted once no client is left to take the answer.
    if (sink.gone) return controller.abort(new Error('every client has gone'));
    sink.onGone(() => controller.abort(new Error('every client has gone')));
  }

  // Whatever throws in these callbacks (writeHead refusing a header, say) reaches onResponseError
  // through undici, which ends the attempt as failed.
  onResponseStart(_controller: Dispatcher.DispatchController, status: number, headers: Record<string, string | string[] | undefined>): void {
    const { options } = this;
    options.listener.onStatus(status);
    this.status = status;
    if (status === options.hold) {
      this.held = { status, headers: clientResponseHeaders(headers), body: new CappedChunks(options.holdLimit) };
      return;
    }
    options.sink.head(status, clientResponseHeaders(headers));
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
    const { sink, readTimeoutMs } = this.options;
    if (sink.write(chunk)) return;
    controller.pause();
    this.stalled = setTimeout(() => {
      this.options.listener.onReadTimeout();
      sink.destroy();
      this.finish({ kind: 'cut' });
      controller.abort(new Error('no client read the answer for CLIENT_TIMEOUT_MS'));
    }, readTimeoutMs);
    sink.onDrain(() => {
      clearTimeout(this.stalled);
      controller.resume();
    });
  }

  onResponseEnd(): void {
    if (this.held) return this.finish(this.heldResult());
    this.options.sink.end();
    this.finish({ kind: 'relayed', status: this.status });
  }

  onResponseError(_controller: Dispatcher.DispatchController, error: Error): void {
    this.finish({ kind: 'failed', error, headersSent: this.options.sink.started });
  }

  private heldResult(): RelayResult {
    const { status, headers, body } = this.held!;
    return { kind: 'held', status, headers, body: body.concat() };
  }
}

/** Sends one request upstream; resolves once its answer has been relayed, held, or has failed. */
export function relay(options: RelayOptions): Promise<RelayResult> {
  return new Promise((resolve) => {
    options.upstream.dispatch(options.request, new RelayHandler(options, resolve));
  });
}
