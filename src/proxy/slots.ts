// Admission to an upstream pool. undici's Pool queues a request that finds every connection busy
// without any timeout (its headersTimeout starts only once the request is written), so a pool held
// by slow requests would leave every other one waiting without end. Requests take a slot here
// first: at most UPSTREAM_CONNECTIONS are dispatched at once, the rest wait in this queue, and one
// that found no slot within UPSTREAM_TIMEOUT_MS is answered 503 `upstream_busy`.
import { ProxyError } from '../errors.js';

interface Waiter {
  grant(release: () => void): void;
  timer: NodeJS.Timeout;
}

export class UpstreamSlots {
  private inUse = 0;
  private readonly waiting = new Set<Waiter>();

  constructor(
    readonly size: number,
    private readonly waitMs: number,
  ) {}

  /** The slot's release function when a slot is free now, else undefined (nothing is queued). */
  tryAcquire(): (() => void) | undefined {
    if (this.inUse >= this.size) return undefined;
    this.inUse += 1;
    return this.releaser();
  }

  /** Resolves with the slot's release function; rejects with `upstream_busy` after `waitMs`. */
  acquire(): Promise<() => void> {
    const release = this.tryAcquire();
    if (release) return Promise.resolve(release);
    return new Promise((resolve, reject) => {
      const waiter: Waiter = {
        grant: resolve,
        timer: setTimeout(() => {
          this.waiting.delete(waiter);
          reject(new ProxyError('upstream_busy', `all ${this.size} upstream connections stayed busy for UPSTREAM_TIMEOUT_MS (${this.waitMs} ms): try again later`));
        }, this.waitMs),
      };
      this.waiting.add(waiter);
    });
  }

  private releaser(): () => void {
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const next = this.waiting.values().next();
      if (next.done) {
        this.inUse -= 1;
        return;
      }
      // The slot passes straight to the longest waiter.
      this.waiting.delete(next.value);
      clearTimeout(next.value.timer);
      next.value.grant(this.releaser());
    };
  }
}
