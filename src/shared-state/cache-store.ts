// The response cache's second tier: answers kept in Redis so that a miss on one replica is a hit
// on another. TieredStore puts this replica's in-memory LRU in front of it: a hit in memory is
// answered at once, as without Redis; a miss there asks Redis, and an answer found in Redis is
// kept in memory for the rest of its TTL. A stored answer goes to both.
//
// Entries live under `<prefix>cache:<cache key>`; the saver's cache keys are the credential set's
// name and a SHA-256 digest (never a key value, a token or the query itself). Each entry has its
// TTL and at most maxEntryBytes. Redis down or slow: a get is a miss, a set does nothing; neither
// ever throws.
import { MemoryStore, type AnswerStore, type CachedAnswer, type StoreStats } from '../savings/store.js';
import { UNAVAILABLE, type RedisLink } from './connection.js';

interface Meta {
  status: number;
  headers: Record<string, string | string[]>;
  storedAt: number;
}

/** One Redis value: a 4-byte length, the metadata as JSON, then the body as is. */
function encode(answer: CachedAnswer): Buffer {
  const meta: Meta = { status: answer.status, headers: answer.headers, storedAt: answer.storedAt };
  const json = Buffer.from(JSON.stringify(meta));
  const head = Buffer.alloc(4);
  head.writeUInt32BE(json.length);
  return Buffer.concat([head, json, answer.body]);
}

function decode(value: Buffer): CachedAnswer | undefined {
  if (value.length < 4) return undefined;
  const end = 4 + value.readUInt32BE(0);
  if (end > value.length) return undefined;
  try {
    const meta = JSON.parse(value.subarray(4, end).toString()) as Meta;
    if (typeof meta.status !== 'number' || typeof meta.storedAt !== 'number' || typeof meta.headers !== 'object' || meta.headers === null) return undefined;
    // A copy: the body must not pin the whole value Redis sent.
    return { status: meta.status, headers: meta.headers, storedAt: meta.storedAt, body: Buffer.from(value.subarray(end)) };
  } catch {
    return undefined;
  }
}

/** An answer found in Redis, with the time it has left there. */
export interface SharedEntry {
  answer: CachedAnswer;
  ttlMs: number;
}

export interface SharedCacheStore {
  /** The answer stored under `key` and its remaining TTL, or undefined (absent, unreadable, or Redis unavailable). */
  get(key: string): Promise<SharedEntry | undefined>;
  /** Stores the answer for `ttlMs`; skipped when larger than maxEntryBytes or when Redis is unavailable. Never rejects. */
  set(key: string, answer: CachedAnswer, ttlMs: number): Promise<void>;
}

export interface SharedCacheOptions {
  /** CACHE_MAX_ENTRY_BYTES: largest stored value (metadata and body), the bound on one entry in Redis. */
  maxEntryBytes: number;
}

export function createSharedCacheStore(link: RedisLink, { maxEntryBytes }: SharedCacheOptions): SharedCacheStore {
  const keyOf = (key: string) => link.key('cache', key);
  return {
    async get(key) {
      const found = await link.run(async (c) => {
        const [value, ttl] = (await c.multi().getBuffer(keyOf(key)).pttl(keyOf(key)).exec()) ?? [];
        return { value: value?.[1] as Buffer | null | undefined, ttlMs: ttl?.[1] as number | undefined };
      });
      if (found === UNAVAILABLE || !found.value || !(found.ttlMs! > 0)) return undefined;
      const answer = decode(found.value);
      return answer && { answer, ttlMs: found.ttlMs! };
    },
    async set(key, answer, ttlMs) {
      if (ttlMs < 1) return;
      const value = encode(answer);
      if (value.length > maxEntryBytes) return;
      await link.run((c) => c.set(keyOf(key), value, 'PX', Math.ceil(ttlMs)));
    },
  };
}

/** This replica's memory first, then Redis: the store the points saver gets when REDIS_URL is set. */
export class TieredStore implements AnswerStore, StoreStats {
  constructor(
    private readonly memory: MemoryStore,
    private readonly shared: SharedCacheStore,
  ) {}

  /** A memory hit at once (no turn of the event loop), else a promise of Redis' answer. */
  get(key: string): CachedAnswer | undefined | Promise<CachedAnswer | undefined> {
    return this.memory.get(key) ?? this.fromShared(key);
  }

  private async fromShared(key: string): Promise<CachedAnswer | undefined> {
    const found = await this.shared.get(key);
    if (!found) return undefined;
    this.memory.set(key, found.answer, found.ttlMs);
    return found.answer;
  }

  set(key: string, answer: CachedAnswer, ttlMs: number): Promise<void> {
    this.memory.set(key, answer, ttlMs);
    return this.shared.set(key, answer, ttlMs);
  }

  /** The memory tier's weight (`bitquery_proxy_cache_bytes`): Redis' is bounded by its maxmemory. */
  get bytes(): number {
    return this.memory.bytes;
  }

  get entries(): number {
    return this.memory.entries;
  }
}

/** The two tiers as the daemon builds them: this replica's LRU (CACHE_MAX_BYTES) in front of Redis. */
export function tieredStore(link: RedisLink, memory: MemoryStore, maxEntryBytes: number): TieredStore {
  return new TieredStore(memory, createSharedCacheStore(link, { maxEntryBytes }));
}
