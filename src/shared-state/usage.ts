// Usage counters per key name (requests, 402, 429, saved), summed across replicas in one Redis
// hash so the status page shows the gateway's totals. Counting never touches a request's path:
// add() only adds to a local map, sent every second as one pipeline of HINCRBY. While Redis is
// unavailable nothing is sent and the counts wait in that map (one entry per key name), to be
// sent when it is back; a batch that was sent but not acknowledged is lost (and counted as an error).
import { UNAVAILABLE, type RedisLink } from './connection.js';

/** The usage counted per key name. */
export interface UsageCounts {
  requests: number;
  /** Upstream 402 answers (points exhausted). */
  status402: number;
  /** 429 answers (upstream's or the proxy's own limit). */
  status429: number;
  /** Requests answered without going upstream (cache hits, coalesced). */
  saved: number;
}

/** How often the counts of this replica are sent. */
const FLUSH_MS = 1000;
const COUNTERS = ['requests', 'status402', 'status429', 'saved'] as const satisfies readonly (keyof UsageCounts)[];
type Counter = (typeof COUNTERS)[number];

export interface SharedUsage {
  /** Adds to a key's counters; returns at once. Key names only (the configured keys bound their number). */
  add(keyName: string, counts: Partial<UsageCounts>): void;
  /** Every replica's totals per key name, with this replica's unsent counts; undefined while Redis is unavailable. */
  totals(): Promise<Record<string, UsageCounts> | undefined>;
  /** Sends the pending counts now (on shutdown, before closing the connection). */
  flush(): Promise<void>;
  /** Stops the periodic sending. */
  close(): void;
}

const zero = (): UsageCounts => ({ requests: 0, status402: 0, status429: 0, saved: 0 });

export function createSharedUsage(link: RedisLink): SharedUsage {
  const hash = link.key('usage');
  let pending = new Map<string, UsageCounts>();

  const flush = async () => {
    if (pending.size === 0 || !link.up()) return;
    const batch = pending;
    pending = new Map();
    await link.run((c) => {
      const pipeline = c.pipeline();
      for (const [name, counts] of batch) {
        for (const counter of COUNTERS) if (counts[counter] !== 0) pipeline.hincrby(hash, `${name}:${counter}`, counts[counter]);
      }
      return pipeline.exec();
    });
  };
  const timer = setInterval(() => void flush(), FLUSH_MS);
  timer.unref();

  return {
    add(keyName, counts) {
      let entry = pending.get(keyName);
      if (!entry) pending.set(keyName, (entry = zero()));
      for (const counter of COUNTERS) entry[counter] += counts[counter] ?? 0;
    },
    async totals() {
      const fields = await link.run((c) => c.hgetall(hash));
      if (fields === UNAVAILABLE) return undefined;
      // A Map, not an object: a key may be named __proto__.
      const totals = new Map<string, UsageCounts>();
      const into = (name: string) => {
        let entry = totals.get(name);
        if (!entry) totals.set(name, (entry = zero()));
        return entry;
      };
      for (const [field, value] of Object.entries(fields)) {
        const at = field.lastIndexOf(':');
        const counter = field.slice(at + 1) as Counter;
        if (at === -1 || !COUNTERS.includes(counter)) continue;
        into(field.slice(0, at))[counter] += Number(value);
      }
      for (const [name, counts] of pending) for (const counter of COUNTERS) into(name)[counter] += counts[counter];
      return Object.fromEntries(totals);
    },
    flush,
    close() {
      clearInterval(timer);
    },
  };
}
