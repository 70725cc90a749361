// The cache's second tier and the usage counters on a real redis-server, and what Redis ends up
// holding: every key under REDIS_PREFIX, named by key names, set names and digests only.
import t from 'tap';
import { createHash } from 'node:crypto';
import { createSharedAdmission } from '../../src/shared-state/admission.js';
import { createSharedCacheStore, tieredStore } from '../../src/shared-state/cache-store.js';
import { createSharedUsage } from '../../src/shared-state/usage.js';
import { MemoryStore } from '../../src/savings/store.js';
import { memoryAdmission } from '../helpers/memory-admission.js';
import { waitFor } from '../helpers/proxy-process.js';
import { linkFor, redisConfig, skip, startRedis } from '../helpers/redis.js';

const DEADLINE_MS = 200;
/** What a timer may be late by on a busy two-core machine (one run missed 150 ms). */
const MARGIN_MS = 400;

const answer = (body: string | Buffer) => ({
  status: 200,
  headers: { 'content-type': 'application/json', 'set-cookie': ['a=1', 'b=2'] },
  body: Buffer.from(body),
  storedAt: 1_700_000_000_000,
});

/** Cache keys as the saver makes them: the credential set's name and a digest. */
const cacheKey = (set: string, query: string) => `${set}:${createHash('sha256').update(query).digest('base64url')}`;

t.test('cache: a miss on one replica, then a hit on another', { skip }, async (t) => {
  const redis = await startRedis(t);
  const [a, b] = [linkFor(t, redisConfig(redis.url)), linkFor(t, redisConfig(redis.url))];
  await Promise.all([a.waitUntilUp(5000), b.waitUntilUp(5000)]);
  const [storeA, storeB] = [createSharedCacheStore(a, { maxEntryBytes: 1024 }), createSharedCacheStore(b, { maxEntryBytes: 1024 })];
  const blocks = cacheKey('team-a', '{ blocks }');
  t.equal(await storeA.get(blocks), undefined, 'a miss');
  const binary = Buffer.from([0, 1, 2, 255, 254, 10, 13]);
  await storeA.set(blocks, answer(binary), 60_000);
  const found = await storeB.get(blocks);
  t.same(found?.answer, answer(binary), 'the other replica gets status, headers, body and storedAt back');
  t.ok(found!.ttlMs > 55_000 && found!.ttlMs <= 60_000, 'with the TTL it has left');
  t.equal(await storeB.get(cacheKey('team-b', '{ blocks }')), undefined, 'another credential set does not see it');

  await storeA.set('team-a:short-lived', answer('{}'), 50);
  await waitFor(async () => (await storeB.get('team-a:short-lived')) === undefined, 5000, 'the TTL to end it');
  await storeA.set('team-a:no-time', answer('{}'), 0);
  t.equal(await storeB.get('team-a:no-time'), undefined, 'a TTL under 1 ms is not stored');

  await storeA.set('team-a:big', answer('x'.repeat(1024)), 60_000);
  t.equal(await storeB.get('team-a:big'), undefined, 'an entry over maxEntryBytes is not stored');
  await storeA.set('team-a:fits', answer('x'.repeat(900)), 60_000);
  t.ok(await storeB.get('team-a:fits'), 'one within it is');

  for (const [what, value] of [
    ['too short', Buffer.from([0, 0])],
    ['a length past the end', Buffer.from([0, 0, 1, 0, 123])],
    ['no JSON', Buffer.concat([Buffer.from([0, 0, 0, 3]), Buffer.from('abc')])],
    ['JSON of another shape', Buffer.concat([Buffer.from([0, 0, 0, 2]), Buffer.from('{}')])],
  ] as const) {
    await a.run((c) => c.set(`bitquery-proxy:cache:team-a:${what}`, value, 'PX', 60_000));
    t.equal(await storeB.get(`team-a:${what}`), undefined, `a value with ${what} is a miss`);
  }
  await a.run((c) => c.set('bitquery-proxy:cache:team-a:no-expiry', Buffer.concat([Buffer.from([0, 0, 0, 2]), Buffer.from('{}')])));
  t.equal(await storeB.get('team-a:no-expiry'), undefined, 'a value without an expiry (not written by a proxy) is a miss');
});

t.test('cache: Redis down is a miss and a skipped store, within the deadline', { skip }, async (t) => {
  const redis = await startRedis(t);
  const link = linkFor(t, redisConfig(redis.url, { REDIS_TIMEOUT_MS: DEADLINE_MS }));
  await link.waitUntilUp(5000);
  const store = createSharedCacheStore(link, { maxEntryBytes: 1024 });
  await store.set('team-a:q', answer('{}'), 60_000);
  redis.pause();
  t.teardown(() => redis.resume());
  const started = performance.now();
  t.equal(await store.get('team-a:q'), undefined, 'a hung Redis: a miss at the deadline');
  t.ok(performance.now() - started < DEADLINE_MS + MARGIN_MS);
  await redis.stop();
  const again = performance.now();
  t.equal(await store.get('team-a:q'), undefined);
  await store.set('team-a:q', answer('{}'), 60_000);
  t.ok(performance.now() - again < DEADLINE_MS + MARGIN_MS, 'then within the deadline too (at once: Redis is known to be down)');
});

t.test('tiered store: memory first and at once, then Redis, whose hits are kept in memory for their TTL', { skip }, async (t) => {
  const redis = await startRedis(t);
  const [a, b] = [linkFor(t, redisConfig(redis.url)), linkFor(t, redisConfig(redis.url))];
  await Promise.all([a.waitUntilUp(5000), b.waitUntilUp(5000)]);
  const memory = () => new MemoryStore({ maxBytes: 64 * 1024, maxEntryBytes: 4096 });
  const [tierA, tierB] = [tieredStore(a, memory(), 4096), tieredStore(b, memory(), 4096)];
  const key = cacheKey('team-a', '{ blocks }');
  t.equal(await tierB.get(key), undefined, 'a miss in both tiers');
  await tierA.set(key, answer('{"data":1}'), 60_000);
  t.same(tierA.get(key), answer('{"data":1}'), 'the replica that stored it answers from memory, synchronously');
  t.equal(tierB.entries, 0, 'the other has nothing in memory yet');
  const fromRedis = tierB.get(key);
  t.type(fromRedis, Promise, 'a memory miss asks Redis');
  t.same(await fromRedis, answer('{"data":1}'), 'and Redis has it: a hit on another replica');
  t.same(tierB.get(key), answer('{"data":1}'), 'kept in memory: the next get answers at once');
  t.ok(tierB.entries === 1 && tierB.bytes > 0, 'the stats are the memory tier’s');

  const short = cacheKey('team-a', 'short');
  await tierA.set(short, answer('{}'), 60_000);
  await a.run((c) => c.pexpire(`bitquery-proxy:cache:${short}`, 300));
  t.ok(await tierB.get(short), 'found in Redis with 300 ms left');
  await waitFor(async () => (await tierB.get(short)) === undefined, 5000, 'the copy in memory to expire with it');
  t.pass('a copy in memory lives no longer than the entry in Redis');

  const big = cacheKey('team-a', 'big');
  await tierA.set(big, answer('x'.repeat(5000)), 60_000);
  t.equal(await b.run((c) => c.exists(`bitquery-proxy:cache:${big}`)), 0, 'an entry over CACHE_MAX_ENTRY_BYTES is kept in neither tier');
  t.equal(await tierA.get(big), undefined);
});

t.test('tiered store: Redis down, the memory tier still answers and stores', { skip }, async (t) => {
  const redis = await startRedis(t);
  const link = linkFor(t, redisConfig(redis.url, { REDIS_TIMEOUT_MS: DEADLINE_MS }));
  await link.waitUntilUp(5000);
  const tier = tieredStore(link, new MemoryStore({ maxBytes: 64 * 1024, maxEntryBytes: 4096 }), 4096);
  await redis.stop();
  await waitFor(() => !link.up(), 5000, 'the outage to be seen');
  const started = performance.now();
  t.equal(await tier.get('team-a:x'), undefined, 'a miss');
  await tier.set('team-a:x', answer('{}'), 60_000);
  t.ok(performance.now() - started < DEADLINE_MS + MARGIN_MS, 'at once');
  t.same(tier.get('team-a:x'), answer('{}'), 'stored in memory all the same');
});

t.test('usage: each replica adds, either reads the totals of both', { skip }, async (t) => {
  const redis = await startRedis(t);
  const [a, b] = [linkFor(t, redisConfig(redis.url)), linkFor(t, redisConfig(redis.url))];
  await Promise.all([a.waitUntilUp(5000), b.waitUntilUp(5000)]);
  const [usageA, usageB] = [createSharedUsage(a), createSharedUsage(b)];
  t.teardown(() => (usageA.close(), usageB.close()));
  usageA.add('alice', { requests: 3, status429: 1 });
  usageA.add('alice', { requests: 1, saved: 1 });
  usageB.add('alice', { requests: 2, status402: 1 });
  usageB.add('__proto__', { requests: 1 });
  t.same(await usageA.totals(), { alice: { requests: 4, status402: 0, status429: 1, saved: 1 } }, 'before sending: this replica’s own counts');
  await Promise.all([usageA.flush(), usageB.flush()]);
  const expected = { alice: { requests: 6, status402: 1, status429: 1, saved: 1 }, ['__proto__']: { requests: 1, status402: 0, status429: 0, saved: 0 } };
  const fromB = await usageB.totals();
  t.same(fromB, expected, 'the totals of both');
  t.same(Object.keys(fromB!), ['alice', '__proto__'], 'a key named __proto__ is a key like any other');
  t.same(await usageA.totals(), expected);
  await a.run((c) => c.hset('bitquery-proxy:usage', 'stray', '5', 'alice:unknown', '9'));
  t.same(await usageA.totals(), expected, 'fields it did not write are ignored');
  usageB.add('bob', { requests: 1 });
  await waitFor(async () => (await usageA.totals())?.bob?.requests === 1, 5000, 'the periodic send');
  t.pass('sent within a second without a flush');
});

t.test('usage: counts wait while Redis is away and are sent when it is back', { skip }, async (t) => {
  const redis = await startRedis(t);
  const link = linkFor(t, redisConfig(redis.url));
  await link.waitUntilUp(5000);
  const usage = createSharedUsage(link);
  t.teardown(() => usage.close());
  await redis.stop();
  await waitFor(() => !link.up(), 5000, 'the outage to be seen');
  usage.add('alice', { requests: 5 });
  await usage.flush();
  t.equal(await usage.totals(), undefined, 'no gateway totals while Redis is away');
  await redis.start();
  await link.waitUntilUp(10_000);
  await waitFor(async () => (await link.run((c) => c.hget('bitquery-proxy:usage', 'alice:requests'))) === '5', 5000, 'the counts to be sent');
  t.pass('kept and sent after the outage');
});

t.test('Redis holds no secret: every key is under REDIS_PREFIX and named by names and digests', { skip }, async (t) => {
  const password = 'redis-pass-9f8e7d';
  const redis = await startRedis(t, ['--requirepass', password]);
  const secretQuery = '{ wallet(privateKey: "0xdeadbeefcafe") }';
  for (const prefix of ['gateway-a:', 'gateway-b:']) {
    const link = linkFor(t, redisConfig(`redis://:${password}@127.0.0.1:${redis.port}`, { REDIS_PREFIX: prefix }));
    await link.waitUntilUp(5000);
    const admission = createSharedAdmission(link, memoryAdmission());
    t.teardown(() => admission.close());
    await admission.take({ keyName: 'alice', address: '10.1.2.3' }, 5);
    await admission.take({ address: '10.1.2.3' }, 5);
    await admission.acquireStream('alice', 5);
    await createSharedCacheStore(link, { maxEntryBytes: 4096 }).set(cacheKey('team-a', secretQuery), answer('{"data":{}}'), 60_000);
    const usage = createSharedUsage(link);
    usage.add('alice', { requests: 1 });
    await usage.flush();
    usage.close();
  }
  const check = linkFor(t, redisConfig(`redis://:${password}@127.0.0.1:${redis.port}`));
  await check.waitUntilUp(5000);
  const keys: string[] = [];
  let cursor = '0';
  do {
    const page = await check.run((c) => c.scan(cursor, 'COUNT', 100));
    if (typeof page === 'symbol') throw new Error('SCAN failed');
    [cursor] = page;
    keys.push(...page[1]);
  } while (cursor !== '0');
  keys.sort();
  const pattern = (prefix: string) => [
    `${prefix}cache:${cacheKey('team-a', secretQuery)}`,
    `${prefix}rate:addr:10.1.2.3`,
    `${prefix}rate:key:alice`,
    `${prefix}streams:alice`,
    `${prefix}usage`,
  ];
  t.same(keys, [...pattern('gateway-a:'), ...pattern('gateway-b:')], 'two gateways, two prefixes, nothing else');
  t.notMatch(keys.join('\n'), /deadbeef|privateKey|redis-pass/, 'no query text and no password in a key name');
  const rate = await check.run((c) => c.get('gateway-a:rate:key:alice'));
  t.equal(rate, '1', 'the two gateways count apart');
});
