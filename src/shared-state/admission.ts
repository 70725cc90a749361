// The per-minute rate limit and the per-key stream cap, shared by all replicas through Redis.
//
// Rate limit: a fixed 60 s window per key name (per client address without keys), counted by
// one script (INCR, and PEXPIRE when the window starts) so the count and its expiry are one
// round trip; the answer has the in-memory limiter's shape, so HTTP sends the same 429 and headers.
//
// Stream cap: a sorted set per key of lease ids scored by their expiry on Redis' clock. Acquiring
// drops expired leases and adds one only under the cap, in one script. The replica holding a
// stream refreshes its leases every third of REDIS_STREAM_LEASE_MS, so the slots of a replica
// that dies come back within that time. A refresh writes every lease held, including those taken
// in memory during an outage, so after one the shared count catches up by itself.
//
// While Redis is unavailable: REDIS_FAILURE=open answers from the in-memory twin (per replica),
// closed throws ProxyError('shared_state_unavailable') for a 503. Sharing resumes with the next call.
import { randomBytes } from 'node:crypto';
import type { Result } from 'ioredis';
import type { Admission, RateDecision, RateSubject, Release } from '../admission/index.js';
import { ProxyError } from '../errors.js';
import { UNAVAILABLE, type RedisLink } from './connection.js';

declare module 'ioredis' {
  interface RedisCommander<Context> {
    bqpRate(key: string, windowMs: number): Result<[number, number], Context>;
    bqpAcquire(key: string, cap: number, leaseMs: number, lease: string): Result<number, Context>;
    bqpRefresh(key: string, leaseMs: number, ...leases: string[]): Result<number, Context>;
  }
}

const WINDOW_MS = 60_000;

/** Counts one request; starts the window (sets its expiry) when the key is new or has none. */
const RATE = `
local count = redis.call('INCR', KEYS[1])
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
return {count, ttl}
`;

/** Redis' own clock in ms, so replicas whose clocks differ agree on when a lease expires. */
const NOW = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
`;

const ACQUIRE = `${NOW}
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
`;

const REFRESH = `${NOW}
local expiry = now + tonumber(ARGV[1])
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], expiry, ARGV[i]) end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return #ARGV - 1
`;

/** The answer while Redis is away in closed mode: 503, worth a retry once Redis is back. */
export const unavailableError = () => new ProxyError('shared_state_unavailable', undefined, { headers: { 'retry-after': '1' } });

/**
 * Rate limit and stream cap through `link`, answering from `fallback` (the in-memory one) in open
 * mode while Redis is away. close() stops refreshing leases (the slots still held expire within
 * the lease time), waits for the releases already sent, and closes `fallback`.
 */
export function createSharedAdmission(link: RedisLink, fallback: Admission): Admission {
  const { failure, streamLeaseMs } = link.config;
  link.define('bqpRate', RATE);
  link.define('bqpAcquire', ACQUIRE);
  link.define('bqpRefresh', REFRESH);
  const replica = randomBytes(6).toString('hex');
  let nextLease = 0;
  /** Leases this replica holds: sorted-set key → lease ids. */
  const held = new Map<string, Set<string>>();
  /** Releases sent and not yet answered, for close() to wait on. */
  const releasing = new Set<Promise<unknown>>();

  const unavailable = <T>(fromMemory: () => Promise<T>): Promise<T> => {
    if (failure === 'closed') throw unavailableError();
    return fromMemory();
  };

  const refresh = () => {
    if (held.size === 0 || !link.up()) return;
    void link.run((c) => {
      const batch = c.pipeline();
      for (const [key, leases] of held) batch.bqpRefresh(key, streamLeaseMs, ...leases);
      return batch.exec();
    });
  };
  const refresher = setInterval(refresh, Math.floor(streamLeaseMs / 3));
  refresher.unref();

  return {
    async take(subject: RateSubject, limitPerMinute: number): Promise<RateDecision> {
      const key = subject.keyName !== undefined ? link.key('rate', 'key', subject.keyName) : link.key('rate', 'addr', subject.address);
      const counted = await link.run((c) => c.bqpRate(key, WINDOW_MS));
      if (counted === UNAVAILABLE) return unavailable(() => fallback.take(subject, limitPerMinute));
      const [count, ttlMs] = counted;
      const resetSec = Math.ceil(ttlMs / 1000);
      const allowed = count <= limitPerMinute;
      return { allowed, limit: limitPerMinute, remaining: Math.max(0, limitPerMinute - count), resetSec, ...(!allowed && { retryAfterSec: resetSec }) };
    },

    async acquireStream(keyName: string, cap: number): Promise<Release | undefined> {
      const key = link.key('streams', keyName);
      const lease = `${replica}:${(nextLease += 1)}`;
      const got = await link.run((c) => c.bqpAcquire(key, cap, streamLeaseMs, lease));
      let releaseLocal: Release | undefined;
      if (got === UNAVAILABLE) {
        releaseLocal = await unavailable(() => fallback.acquireStream(keyName, cap));
        if (!releaseLocal) return undefined;
      } else if (got === 0) {
        return undefined;
      }
      held.set(key, (held.get(key) ?? new Set<string>()).add(lease));
      let holding = true;
      return () => {
        if (!holding) return;
        holding = false;
        const current = held.get(key)!;
        current.delete(lease);
        if (current.size === 0) held.delete(key);
        releaseLocal?.();
        // Not awaited: a release that fails leaves a lease that expires within the lease time.
        const sent = link.run((c) => c.zrem(key, lease));
        releasing.add(sent);
        void sent.then(() => releasing.delete(sent));
      };
    },

    async close() {
      clearInterval(refresher);
      await Promise.all(releasing);
      await fallback.close();
    },
  };
}
