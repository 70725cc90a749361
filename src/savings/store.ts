// Where cached answers live. The saver sees only AnswerStore (get/set), so a second tier (Redis,
// shared by replicas) can be put behind it without touching the request path; MemoryStore is the
// in-process tier: an LRU bounded by bytes.
import { LRUCache } from 'lru-cache';

/** One answer as it is replayed: the upstream's status, headers and whole body. */
export interface CachedAnswer {
  status: number;
  /** The upstream's response headers as the client gets them (no hop-by-hop, no Set-Cookie, no Content-Length). */
  headers: Record<string, string | string[]>;
  body: Buffer;
  /** Epoch ms at which the upstream's answer began: a hit's `Age` counts from here. */
  storedAt: number;
}

/** A key is `<credential set>:<hash>`: it never holds query text or anything secret. */
export interface AnswerStore {
  /** The live entry for `key`, if any (an expired one is never returned). */
  get(key: string): CachedAnswer | undefined | Promise<CachedAnswer | undefined>;
  /** Keeps `answer` for `ttlMs`; an entry over the store's bounds is silently not kept. */
  set(key: string, answer: CachedAnswer, ttlMs: number): void | Promise<void>;
}

/** What the metrics read: `bitquery_proxy_cache_bytes` and `bitquery_proxy_cache_entries`. */
export interface StoreStats {
  readonly bytes: number;
  readonly entries: number;
}

export interface MemoryStoreOptions {
  /** CACHE_MAX_BYTES: the most the entries may weigh together. */
  maxBytes: number;
  /** CACHE_MAX_ENTRY_BYTES: an entry weighing more is never kept. */
  maxEntryBytes: number;
  /** The clock (epoch ms), for tests; Date.now by default. */
  now?: () => number;
}

/** Bookkeeping per entry (the LRU's own node, the key's copy in its map, the object shells), by estimate. */
const ENTRY_OVERHEAD = 256;

/**
 * What an entry weighs: its body, its headers' text, its key (two bytes a character, the most a
 * JS string takes) and a fixed overhead. Counting the key matters: a flood of distinct queries
 * with tiny answers must fill the bound too.
 */
export function entryWeight(key: string, answer: CachedAnswer): number {
  let headers = 0;
  for (const [name, value] of Object.entries(answer.headers)) {
    for (const v of Array.isArray(value) ? value : [value]) headers += name.length + v.length + 4;
  }
  return answer.body.length + headers + key.length * 2 + ENTRY_OVERHEAD;
}

export class MemoryStore implements AnswerStore, StoreStats {
  private readonly lru: LRUCache<string, CachedAnswer>;

  constructor(options: MemoryStoreOptions) {
    const now = options.now ?? Date.now;
    this.lru = new LRUCache<string, CachedAnswer>({
      maxSize: options.maxBytes,
      maxEntrySize: options.maxEntryBytes,
      sizeCalculation: (answer, key) => entryWeight(key, answer),
      perf: { now },
      // The clock read on every get, not cached behind a timer: exact expiry, no timer per millisecond.
      ttlResolution: 0,
    });
  }

  get(key: string): CachedAnswer | undefined {
    return this.lru.get(key);
  }

  set(key: string, answer: CachedAnswer, ttlMs: number): void {
    this.lru.set(key, answer, { ttl: ttlMs });
  }

  get bytes(): number {
    return this.lru.calculatedSize;
  }

  get entries(): number {
    return this.lru.size;
  }
}
