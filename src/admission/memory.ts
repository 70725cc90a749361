// Admission counted in this process: a fixed 60-second window per key (per address without keys),
// as @fastify/rate-limit's local store counted before, and a count of open streams per key.
import type { Admission, RateDecision, RateSubject, Release } from './admission.js';

export interface MemoryAdmissionOptions {
  /** Most windows held at once; past it expired windows are dropped, then the oldest. */
  maxWindows?: number;
  /** The clock, in ms; tests pin it. */
  now?: () => number;
}

const WINDOW_MS = 60_000;
const MAX_WINDOWS = 5000;

interface Window {
  startedAt: number;
  count: number;
}

export class MemoryAdmission implements Admission {
  /** Insertion order is window start order: a window restarted is moved to the end. */
  private readonly windows = new Map<string, Window>();
  private readonly streams = new Map<string, number>();
  private readonly maxWindows: number;
  private readonly now: () => number;

  constructor(options: MemoryAdmissionOptions = {}) {
    this.maxWindows = options.maxWindows ?? MAX_WINDOWS;
    this.now = options.now ?? Date.now;
  }

  /** Windows held now (bounded by maxWindows). */
  get size(): number {
    return this.windows.size;
  }

  take(subject: RateSubject, limit: number): Promise<RateDecision> {
    return Promise.resolve(this.count(subject, limit));
  }

  private count(subject: RateSubject, limit: number): RateDecision {
    const id = subject.keyName === undefined ? `address ${subject.address}` : `key ${subject.keyName}`;
    const now = this.now();
    let window = this.windows.get(id);
    if (window === undefined || now - window.startedAt >= WINDOW_MS) {
      this.windows.delete(id);
      this.prune(now);
      window = { startedAt: now, count: 0 };
      this.windows.set(id, window);
    }
    window.count += 1;
    const resetSec = Math.ceil((window.startedAt + WINDOW_MS - now) / 1000);
    if (window.count > limit) return { allowed: false, limit, remaining: 0, resetSec, retryAfterSec: resetSec };
    return { allowed: true, limit, remaining: limit - window.count, resetSec };
  }

  /** Drops expired windows (the oldest come first), then the oldest live one if the map is full. */
  private prune(now: number): void {
    for (const [id, window] of this.windows) {
      if (now - window.startedAt < WINDOW_MS) break;
      this.windows.delete(id);
    }
    if (this.windows.size >= this.maxWindows) this.windows.delete(this.windows.keys().next().value!);
  }

  acquireStream(keyName: string, cap: number): Promise<Release | undefined> {
    return Promise.resolve(this.acquire(keyName, cap));
  }

  private acquire(keyName: string, cap: number): Release | undefined {
    const held = this.streams.get(keyName) ?? 0;
    if (held >= cap) return undefined;
    this.streams.set(keyName, held + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const left = this.streams.get(keyName)! - 1;
      if (left === 0) this.streams.delete(keyName);
      else this.streams.set(keyName, left);
    };
  }

  close(): Promise<void> {
    this.windows.clear();
    return Promise.resolve();
  }
}
