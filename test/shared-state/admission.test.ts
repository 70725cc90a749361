// Shared limits across replicas: two SharedAdmission instances, each with its own connection (as
// two proxy processes have), on one real redis-server.
import t, { type Test } from 'tap';
import type { Admission } from '../../src/admission/index.js';
import { ProxyError } from '../../src/errors.js';
import { createSharedAdmission } from '../../src/shared-state/admission.js';
import type { RedisLink } from '../../src/shared-state/connection.js';
import type { RedisRaw } from '../../src/shared-state/settings.js';
import { memoryAdmission, type CountingAdmission } from '../helpers/memory-admission.js';
import { waitFor } from '../helpers/proxy-process.js';
import { linkFor, redisConfig, skip, startRedis, type RedisServer } from '../helpers/redis.js';

const DEADLINE_MS = 200;
/** What a timer may be late by on a busy two-core machine (one run missed 150 ms). */
const MARGIN_MS = 400;
const LEASE_MS = 1500;

interface Replica {
  link: RedisLink;
  admission: Admission;
  memory: CountingAdmission;
}

async function replica(t: Test, redis: RedisServer, raw: Partial<RedisRaw> = {}): Promise<Replica> {
  const link = linkFor(t, redisConfig(redis.url, { REDIS_STREAM_LEASE_MS: LEASE_MS, ...raw }));
  const memory = memoryAdmission();
  const admission = createSharedAdmission(link, memory);
  t.teardown(() => admission.close());
  t.equal(await link.waitUntilUp(5000), true);
  return { link, admission, memory };
}

const alice = { keyName: 'alice', address: '10.0.0.1' };

t.test('two replicas count one budget per key, with the in-memory limiter’s answers', { skip }, async (t) => {
  const redis = await startRedis(t);
  const [a, b] = [await replica(t, redis), await replica(t, redis)];
  const answers = [];
  for (const r of [a, b, a, b, a, b]) answers.push(await r.admission.take(alice, 4));
  t.match(answers.slice(0, 4), [
    { allowed: true, limit: 4, remaining: 3, resetSec: 60 },
    { allowed: true, remaining: 2 },
    { allowed: true, remaining: 1 },
    { allowed: true, remaining: 0 },
  ]);
  for (const refused of answers.slice(4)) {
    t.match(refused, { allowed: false, limit: 4, remaining: 0 });
    t.ok(refused.retryAfterSec! >= 59 && refused.retryAfterSec! <= 60 && refused.retryAfterSec === refused.resetSec, 'Retry-After is the rest of the window');
  }
  t.equal(answers[0]!.retryAfterSec, undefined, 'no Retry-After when allowed');
  t.match(await b.admission.take({ keyName: 'bob', address: '10.0.0.1' }, 4), { allowed: true, remaining: 3 }, 'another key has its own budget');
  t.match(await a.admission.take({ address: '10.0.0.1' }, 2), { allowed: true, remaining: 1 }, 'without a key name, the address is counted');
  t.match(await b.admission.take({ address: '10.0.0.1' }, 2), { allowed: true, remaining: 0 });
  t.match(await a.admission.take({ address: '10.0.0.2' }, 2), { allowed: true, remaining: 1 }, 'another address has its own');
  t.same([a.memory.calls.take, b.memory.calls.take], [0, 0], 'memory is not used while Redis answers');

  const ttl = await a.link.run((c) => c.pttl('bitquery-proxy:rate:key:alice'));
  t.ok(typeof ttl === 'number' && ttl > 58_000 && ttl <= 60_000, 'a fixed 60 s window');
  await a.link.run((c) => c.pexpire('bitquery-proxy:rate:key:alice', 50));
  await waitFor(async () => (await a.admission.take(alice, 4)).allowed, 5000, 'the next window');
  t.pass('a new window starts when the last one has ended');
});

t.test('a window that lost its expiry gets one back', { skip }, async (t) => {
  const redis = await startRedis(t);
  const a = await replica(t, redis);
  await a.link.run((c) => c.set('bitquery-proxy:rate:key:alice', '7'));
  t.match(await a.admission.take(alice, 10), { allowed: true, remaining: 2, resetSec: 60 });
});

t.test('stream slots are shared across replicas and come back on release', { skip }, async (t) => {
  const redis = await startRedis(t);
  const [a, b] = [await replica(t, redis), await replica(t, redis)];
  const first = await a.admission.acquireStream('alice', 2);
  const second = await b.admission.acquireStream('alice', 2);
  t.ok(first && second, 'two slots, one on each replica');
  t.equal(await a.admission.acquireStream('alice', 2), undefined, 'the third is refused on one');
  t.equal(await b.admission.acquireStream('alice', 2), undefined, 'and on the other');
  t.ok(await b.admission.acquireStream('bob', 1), 'another key has its own slots');
  first!();
  first!();
  await waitFor(async () => {
    const again = await b.admission.acquireStream('alice', 2);
    return again !== undefined;
  }, 5000, 'the released slot');
  t.pass('a released slot is free for the other replica');
  t.equal(await a.admission.acquireStream('alice', 2), undefined, 'a double release frees one slot only');
});

t.test('close() waits for the releases sent, so a replica that stops cleanly leaves no slot behind', { skip }, async (t) => {
  const redis = await startRedis(t);
  const [a, b] = [await replica(t, redis), await replica(t, redis)];
  const slots = [await a.admission.acquireStream('alice', 2), await a.admission.acquireStream('alice', 2)];
  for (const release of slots) release!();
  await a.admission.close();
  t.equal(await b.link.run((c) => c.zcard('bitquery-proxy:streams:alice')), 0, 'both leases gone when close() resolves');
});

t.test('a replica that dies without releasing: its slots come back within the lease time', { skip }, async (t) => {
  const redis = await startRedis(t);
  const [a, b] = [await replica(t, redis), await replica(t, redis)];
  t.ok(await a.admission.acquireStream('alice', 2));
  t.ok(await a.admission.acquireStream('alice', 2));
  // The crash: no more refreshes, no releases, the connection gone.
  await a.admission.close();
  t.equal(a.memory.calls.close, 1, 'closing closes the in-memory fallback too');
  a.link.close();
  const died = performance.now();
  t.equal(await b.admission.acquireStream('alice', 2), undefined, 'the slots are still taken right after');
  await waitFor(async () => (await b.admission.acquireStream('alice', 2)) !== undefined, LEASE_MS * 3, 'the dead replica’s slots');
  const back = performance.now() - died;
  t.ok(back <= LEASE_MS + MARGIN_MS, `a slot was back after ${back.toFixed(0)} ms (lease ${LEASE_MS} ms)`);
  t.comment(`dead replica's slot back after ${back.toFixed(0)} ms with REDIS_STREAM_LEASE_MS=${LEASE_MS}`);
});

t.test('a live replica keeps its slots past the lease time by refreshing them', { skip }, async (t) => {
  const redis = await startRedis(t);
  const [a, b] = [await replica(t, redis), await replica(t, redis)];
  t.ok(await a.admission.acquireStream('alice', 1));
  const until = performance.now() + LEASE_MS * 2.5;
  let checks = 0;
  await waitFor(async () => {
    t.equal(await b.admission.acquireStream('alice', 1), undefined);
    checks += 1;
    return performance.now() > until;
  }, LEASE_MS * 4, 'two and a half lease times');
  t.ok(checks > 10, `refused all along (${checks} checks)`);
});

t.test('Redis stopped, open mode: answers come from memory within the deadline', { skip }, async (t) => {
  const redis = await startRedis(t);
  const a = await replica(t, redis, { REDIS_TIMEOUT_MS: DEADLINE_MS });
  const held = await a.admission.acquireStream('alice', 1);
  await redis.stop();
  await waitFor(() => !a.link.up(), 5000, 'the outage to be seen');
  let slowest = 0;
  const timed = async <T>(call: () => Promise<T>) => {
    const started = performance.now();
    const value = await call();
    slowest = Math.max(slowest, performance.now() - started);
    return value;
  };
  const decisions = [];
  for (let i = 0; i < 3; i++) decisions.push(await timed(() => a.admission.take(alice, 2)));
  t.match(decisions, [{ allowed: true }, { allowed: true }, { allowed: false }], 'this replica’s own count');
  t.equal(a.memory.calls.take, 3);
  const fromMemory = await timed(() => a.admission.acquireStream('bob', 1));
  t.ok(fromMemory, 'a slot from memory');
  t.equal(await timed(() => a.admission.acquireStream('bob', 1)), undefined, 'the in-memory cap holds');
  fromMemory!();
  t.equal(a.memory.held.get('bob'), 0, 'released in memory');
  held!();
  t.ok(slowest < DEADLINE_MS + MARGIN_MS, `slowest call ${slowest.toFixed(1)} ms`);
  t.comment(`Redis stopped, open mode: slowest limit call ${slowest.toFixed(2)} ms`);
});

t.test('Redis stopped, closed mode: unavailable, for a 503', { skip }, async (t) => {
  const redis = await startRedis(t);
  const a = await replica(t, redis, { REDIS_FAILURE: 'closed', REDIS_TIMEOUT_MS: DEADLINE_MS });
  await redis.stop();
  await waitFor(() => !a.link.up(), 5000, 'the outage to be seen');
  const started = performance.now();
  await t.rejects(a.admission.take(alice, 2), ProxyError);
  const err = await a.admission.acquireStream('alice', 2).catch((e: unknown) => e);
  t.match(err, { code: 'shared_state_unavailable', status: 503, message: /REDIS_FAILURE=closed/, headers: { 'retry-after': '1' } });
  t.ok(performance.now() - started < DEADLINE_MS + MARGIN_MS);
  t.same(a.memory.calls, { take: 0, acquireStream: 0, close: 0 }, 'memory is never asked');
});

t.test('Redis restarted: sharing resumes, and the slots held meanwhile are written back', { skip }, async (t) => {
  const redis = await startRedis(t);
  const [a, b] = [await replica(t, redis), await replica(t, redis)];
  t.ok(await a.admission.acquireStream('alice', 2), 'a slot held in Redis');
  await redis.stop();
  await waitFor(() => !a.link.up() && !b.link.up(), 5000, 'the outage to be seen');
  t.ok(await a.admission.acquireStream('alice', 2), 'a slot held in memory during the outage');
  await redis.start(); // no persistence: the restarted Redis knows nothing
  t.equal(await a.link.waitUntilUp(10_000), true);
  t.equal(await b.link.waitUntilUp(10_000), true);
  await waitFor(async () => {
    const slot = await b.admission.acquireStream('alice', 2);
    slot?.();
    return slot === undefined;
  }, LEASE_MS * 4, 'the refresh to write both slots back');
  t.pass('both of the replica’s slots count again in Redis');
  t.match(await a.admission.take(alice, 2), { allowed: true, remaining: 1 });
  t.match(await b.admission.take(alice, 2), { allowed: true, remaining: 0 }, 'one budget again');
  t.match(await a.admission.take(alice, 2), { allowed: false });
});
