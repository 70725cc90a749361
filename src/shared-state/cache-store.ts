// The response cache's second tier: answers kept in Redis so that a miss on one replica is a hit
// on another. Entries live under the credential set's name and a SHA-256 digest of the cache key
// (never a key value, a token or the query itself), each with its TTL and at most
// maxEntryBytes. Redis down or slow: a get is a miss, a set does nothing; neither ever throws.
import { createHash } from 'node:crypto';
import { UNAVAILABLE, type RedisLink } from './connection.js';
import type { CachedAnswer } from './contracts.js';

export interface SharedCacheStore {
  /** The answer stored under `key` for the credential set, or undefined (absent, unreadable, or Redis unavailable). */
  get(credentials: string, key: string): Promise<CachedAnswer | undefined>;
  /** Stores the answer for `ttlMs`; skipped when larger than maxEntryBytes or when Redis is unavailable. */
  set(credentials: string, key: string, answer: CachedAnswer, ttlMs: number): Promise<void>;
}

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
    return { status: meta.status, headers: meta.headers, storedAt: meta.storedAt, body: value.subarray(end) };
  } catch {
    return undefined;
  }
}

export interface SharedCacheOptions {
  /** Largest stored value (metadata and body) in bytes: the bound on one entry in Redis. */
  maxEntryBytes: number;
}

export function createSharedCacheStore(link: RedisLink, { maxEntryBytes }: SharedCacheOptions): SharedCacheStore {
  const keyOf = (credentials: string, key: string) => link.key('cache', credentials, createHash('sha256').update(key).digest('hex'));
  return {
    async get(credentials, key) {
      const value = await link.run((c) => c.getBuffer(keyOf(credentials, key)));
      return value === UNAVAILABLE || value === null ? undefined : decode(value);
    },
    async set(credentials, key, answer, ttlMs) {
      if (ttlMs < 1) return;
      const value = encode(answer);
      if (value.length > maxEntryBytes) return;
      await link.run((c) => c.set(keyOf(credentials, key), value, 'PX', Math.ceil(ttlMs)));
    },
  };
}
