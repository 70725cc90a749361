// A plain in-memory Admission standing in for the proxy's own, to see when the shared one falls back to it.
import type { Admission, RateDecision } from '../../src/admission/index.js';

export interface CountingAdmission extends Admission {
  calls: { take: number; acquireStream: number; close: number };
  /** Streams held per key. */
  held: Map<string, number>;
}

export function memoryAdmission(): CountingAdmission {
  const counts = new Map<string, number>();
  const held = new Map<string, number>();
  const calls = { take: 0, acquireStream: 0, close: 0 };
  return {
    calls,
    held,
    async take(subject, limit): Promise<RateDecision> {
      calls.take += 1;
      const who = subject.keyName ?? subject.address;
      const count = (counts.get(who) ?? 0) + 1;
      counts.set(who, count);
      const allowed = count <= limit;
      return { allowed, limit, remaining: Math.max(0, limit - count), resetSec: 60, ...(!allowed && { retryAfterSec: 60 }) };
    },
    async acquireStream(keyName, cap) {
      calls.acquireStream += 1;
      if ((held.get(keyName) ?? 0) >= cap) return undefined;
      held.set(keyName, (held.get(keyName) ?? 0) + 1);
      let holding = true;
      return () => {
        if (holding) held.set(keyName, held.get(keyName)! - 1);
        holding = false;
      };
    },
    async close() {
      calls.close += 1;
    },
  };
}
