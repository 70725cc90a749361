// Admission: the per-minute request limit and the per-key stream cap, shared by HTTP requests and
// WebSocket handshakes. The proxy paths see only this interface; the in-memory implementation
// (memory.ts) counts per process, and a store shared by replicas can replace it. Every method
// returns a promise, since a shared store answers over the network.

/** Who a limit counts: the key's name when keys are configured, else the client's address. */
export interface RateSubject {
  keyName?: string;
  address: string;
}

export interface RateDecision {
  allowed: boolean;
  /** The limit that applied (requests a minute). */
  limit: number;
  /** Requests left in the current window. */
  remaining: number;
  /** Seconds until the window resets. */
  resetSec: number;
  /** When refused: seconds to wait before trying again. */
  retryAfterSec?: number;
}

/** Frees a place taken under a stream cap; calling it more than once frees it once. */
export type Release = () => void;

export interface Admission {
  /** Counts one request of `subject` against `limitPerMinute` (> 0) and says whether it may go on. */
  take(subject: RateSubject, limitPerMinute: number): Promise<RateDecision>;
  /** Takes a place among the key's streams: its release, or undefined when `cap` (> 0) places are taken. */
  acquireStream(keyName: string, cap: number): Promise<Release | undefined>;
  /** Stops background work (timers, connections). */
  close(): Promise<void>;
}
