// Several replicas, one budget: two proxy processes started as users start them, on one real
// redis-server with a password, in front of one fake Bitquery. Every output is scanned for the
// client secret, the inbound keys, the Redis password and the tokens at teardown.
import t, { type Test } from 'tap';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { request } from 'undici';
import { WebSocket } from 'ws';
import type { FakeBitquery } from '../fake-bitquery/index.js';
import { fakeEnv, SECRET, startFake, startProxy } from '../helpers/pair.js';
import { spawnProxy, waitFor, type ProxyProcess } from '../helpers/proxy-process.js';
import { linkFor, redisConfig, skip, startRedis, type RedisServer } from '../helpers/redis.js';

const ALICE = 'alice-key-7d1e4b9c2a6f3058';
const BOB = 'bob-key-3a8f6c1d9e2b7450';
const PASSWORD = 'redis-password-61c9e0b7f24d';
const QUERY = '{"query":"query LatestBlocks { EVM { Blocks { Block { Number } } } }"}';
/** REDIS_TIMEOUT_MS in the outage tests, and what a busy two-core machine may add to it. */
const DEADLINE_MS = 250;
const MARGIN_MS = 400;
const LEASE_MS = 1500;

interface Replica {
  proxy: ProxyProcess;
  admin: string;
}

const redisUrl = (redis: RedisServer) => `redis://:${PASSWORD}@127.0.0.1:${redis.port}`;

async function startRedisWithPassword(t: Test): Promise<RedisServer> {
  return startRedis(t, ['--requirepass', PASSWORD]);
}

/** Two proxies on one Redis, keys alice and bob, with `env` on top. */
async function replicas(t: Test, fake: FakeBitquery, redis: RedisServer, env: Record<string, string> = {}): Promise<[Replica, Replica]> {
  const start = async (): Promise<Replica> => {
    const proxy = await startProxy(
      t,
      fake,
      // A 5 s deadline unless a test sets one: on a busy machine a call can take longer than 250 ms,
      // which would mark Redis down in tests about sharing (the outage tests set REDIS_TIMEOUT_MS).
      // Relay mode: a stream slot is taken by the handshake (share mode takes one per subscription,
      // through the same admission), so a refusal is the handshake's 503.
      { ...fakeEnv(fake), REDIS_URL: redisUrl(redis), REDIS_TIMEOUT_MS: '5000', WS_MODE: 'relay', PROXY_API_KEYS: `alice:${ALICE},bob:${BOB}`, ...env },
      {},
      [SECRET, ALICE, BOB, PASSWORD],
    );
    const line = await proxy.waitForLog((l) => l.msg.startsWith('admin listening on '));
    return { proxy, admin: line.url as string };
  };
  return [await start(), await start()];
}

async function post(r: Replica, key: string) {
  const started = performance.now();
  const res = await request(`${r.proxy.url}/graphql`, { method: 'POST', body: QUERY, headers: { 'content-type': 'application/json', 'x-api-key': key } });
  return { status: res.statusCode, headers: res.headers, body: await res.body.text(), ms: performance.now() - started };
}

/** A WebSocket handshake with `key`: the open socket, or the refusal's status and body. */
function openStream(r: Replica, key: string): Promise<WebSocket | { status: number; body: string }> {
  return new Promise((resolve) => {
    const ws = new WebSocket(`${r.proxy.url.replace('http', 'ws')}/graphql`, 'graphql-ws', { headers: { 'x-api-key': key } });
    ws.once('open', () => resolve(ws));
    ws.once('unexpected-response', (_req, res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString()));
      res.once('end', () => resolve({ status: res.statusCode!, body }));
    });
  });
}

async function metric(r: Replica, name: string): Promise<number> {
  const text = await (await fetch(`${r.admin}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  return line === undefined ? NaN : Number(line.slice(name.length + 1));
}

interface Gateway {
  available: boolean;
  requests: number;
  saved: number;
  status429: number;
  keys: { name: string; requests: number; status429: number }[];
}

async function gateway(r: Replica): Promise<Gateway> {
  return ((await (await fetch(`${r.admin}/status.json`)).json()) as { gateway: Gateway }).gateway;
}

t.test('a key limited to 4 a minute gets 4 answers across both replicas, then 429 from either; either shows the totals of both', { skip }, async (t) => {
  const fake = await startFake(t);
  const redis = await startRedisWithPassword(t);
  const [a, b] = await replicas(t, fake, redis, { RATE_LIMIT_PER_MINUTE: '4' });
  const answers = [];
  for (const r of [a, b, a, b, a, b]) answers.push(await post(r, ALICE));
  t.same(answers.map((x) => x.status), [200, 200, 200, 200, 429, 429]);
  t.same(answers.slice(0, 4).map((x) => x.headers['x-ratelimit-remaining']), ['3', '2', '1', '0'], 'one count, whichever replica answers');
  for (const refused of answers.slice(4)) {
    t.match(JSON.parse(refused.body), { error: 'rate_limited', message: /^4 requests a minute for the key "alice"/ });
    const retry = Number(refused.headers['retry-after']);
    t.ok(retry >= 1 && retry <= 60, `Retry-After ${retry}`);
  }
  t.equal(fake.graphqlRequests.length, 4, 'four went upstream');
  t.equal((await post(b, BOB)).status, 200, 'another key has its own budget');

  for (const r of [a, b]) {
    const totals = await waitFor(async () => {
      const g = await gateway(r);
      return g.requests === 7 && g;
    }, 10_000, 'the totals of both replicas');
    t.match(totals, { available: true, requests: 7, status429: 2, keys: [{ name: 'alice', requests: 6, status429: 2 }, { name: 'bob', requests: 1, status429: 0 }] });
    const page = await (await fetch(`${r.admin}/status`)).text();
    t.match(page, /Gateway totals \(all replicas, through Redis\)/);
    t.equal(await metric(r, 'bitquery_proxy_redis_up'), 1);
    t.equal(await metric(r, 'bitquery_proxy_redis_errors_total'), 0);
  }
  t.equal((await fetch(`${a.admin}/status.json`).then((r) => r.text())).includes(PASSWORD), false);
});

t.test('per-key stream caps hold across both replicas', { skip }, async (t) => {
  const fake = await startFake(t);
  const redis = await startRedisWithPassword(t);
  const [a, b] = await replicas(t, fake, redis, { WS_MAX_STREAMS_PER_KEY: '2' });
  const first = await openStream(a, ALICE);
  const second = await openStream(b, ALICE);
  t.ok(first instanceof WebSocket && second instanceof WebSocket, 'one stream on each');
  for (const r of [a, b]) {
    const refused = await openStream(r, ALICE);
    t.match(refused, { status: 503, body: /"too_many_streams".*the key \\"alice\\" has 2 streams open/ }, 'the third is refused by either');
  }
  const bob = await openStream(b, BOB);
  t.ok(bob instanceof WebSocket, 'bob has his own');
  (first as WebSocket).close();
  const third = await waitFor(async () => {
    const ws = await openStream(b, ALICE);
    return ws instanceof WebSocket && ws;
  }, 10_000, 'the slot freed on the other replica');
  t.pass('a stream closed on one replica frees a slot on the other');
  for (const ws of [second, third, bob] as WebSocket[]) ws.close();
});

t.test('a replica killed while holding stream slots: they come back within the lease time', { skip }, async (t) => {
  const fake = await startFake(t);
  const redis = await startRedisWithPassword(t);
  const [a, b] = await replicas(t, fake, redis, { WS_MAX_STREAMS_PER_KEY: '2', REDIS_STREAM_LEASE_MS: String(LEASE_MS) });
  const held = [await openStream(a, ALICE), await openStream(a, ALICE)];
  t.ok(held.every((ws) => ws instanceof WebSocket), 'two slots held on one replica');
  for (const ws of held as WebSocket[]) ws.on('error', () => {});
  a.proxy.child.kill('SIGKILL');
  await a.proxy.exited;
  const killed = performance.now();
  t.match(await openStream(b, ALICE), { status: 503 }, 'still taken right after the kill');
  const back = await waitFor(async () => {
    const ws = await openStream(b, ALICE);
    return ws instanceof WebSocket && ws;
  }, LEASE_MS * 4, 'the dead replica’s slots');
  const ms = performance.now() - killed;
  t.ok(ms <= LEASE_MS + MARGIN_MS, `back after ${ms.toFixed(0)} ms (REDIS_STREAM_LEASE_MS=${LEASE_MS})`);
  t.comment(`killed replica's slot back after ${ms.toFixed(0)} ms with REDIS_STREAM_LEASE_MS=${LEASE_MS}`);
  back.close();
});

t.test('a replica stopped normally frees its slots at once and sends its last counts', { skip }, async (t) => {
  const fake = await startFake(t);
  const redis = await startRedisWithPassword(t);
  const [a, b] = await replicas(t, fake, redis, { WS_MAX_STREAMS_PER_KEY: '1' });
  const held = await openStream(a, ALICE);
  t.ok(held instanceof WebSocket, 'the only slot, on one replica');
  (held as WebSocket).on('error', () => {});
  t.match(await openStream(b, ALICE), { status: 503 }, 'taken');
  t.equal((await post(a, ALICE)).status, 200);
  await a.proxy.stop();
  const next = await openStream(b, ALICE);
  t.ok(next instanceof WebSocket, 'free as soon as the stopped replica has exited: released, not left to expire');
  (next as WebSocket).close();
  const totals = await waitFor(async () => {
    const g = await gateway(b);
    return g.requests === 1 && g;
  }, 10_000, 'the stopped replica’s request in the totals');
  t.match(totals, { keys: [{ name: 'alice', requests: 1 }] });
});

t.test('Redis hung, then stopped, under traffic (open mode): nothing fails or waits past the deadline; restarted: sharing resumes', { skip }, async (t) => {
  const fake = await startFake(t);
  const redis = await startRedisWithPassword(t);
  // The password from a file this time, re-read before every reconnection.
  const dir = mkdtempSync(join(tmpdir(), 'bqp-redis-'));
  writeFileSync(join(dir, 'password'), `${PASSWORD}\n`);
  const [a, b] = await replicas(t, fake, redis, {
    REDIS_URL: `redis://127.0.0.1:${redis.port}`,
    REDIS_PASSWORD_FILE: join(dir, 'password'),
    REDIS_TIMEOUT_MS: String(DEADLINE_MS),
    RATE_LIMIT_PER_MINUTE: '100000',
  });
  const results: { status: number; ms: number }[] = [];
  let running = true;
  const traffic = (async () => {
    for (let i = 0; running; i++) results.push(await post(i % 2 ? a : b, ALICE));
  })();
  await waitFor(() => results.length >= 20, 10_000, 'traffic before the outage');
  // SIGSTOP: the connections stay open and nothing is answered, the worst case for a deadline.
  const warnings = (r: Replica) => r.proxy.logs().filter((l) => l.level === 40 && l.component === 'redis').length;
  const before = [warnings(a), warnings(b)];
  redis.pause();
  const stoppedAt = results.length;
  for (const r of [a, b]) await waitFor(async () => (await metric(r, 'bitquery_proxy_redis_up')) === 0, 10_000, 'redis_up 0');
  await waitFor(() => results.length >= stoppedAt + 40, 20_000, 'traffic during the outage');
  running = false;
  await traffic;
  t.same([warnings(a) - before[0]!, warnings(b) - before[1]!], [1, 1], 'one warning for the outage on each');
  // Killing the paused Redis lets it answer for a moment (SIGCONT first): that is a short return, logged as such.
  await redis.stop();
  t.same([...new Set(results.map((r) => r.status))], [200], `all ${results.length} requests answered 200, ${results.length - stoppedAt} of them after Redis hung`);
  // A request that waited on the hung Redis without a deadline would stop the traffic above for
  // good; the margin is what the machine adds (requests took up to 300 ms on a busy one without Redis trouble).
  const slowest = Math.max(...results.map((r) => r.ms));
  t.ok(slowest < DEADLINE_MS + 2 * MARGIN_MS, `slowest request ${slowest.toFixed(0)} ms (REDIS_TIMEOUT_MS=${DEADLINE_MS})`);
  t.comment(`Redis hung under traffic: ${results.length} requests, slowest ${slowest.toFixed(0)} ms`);
  for (const r of [a, b]) {
    t.ok((await metric(r, 'bitquery_proxy_redis_errors_total')) > 0, 'the failed calls are counted');
    t.match(await gateway(r), { available: false, requests: 0, keys: [] }, 'no gateway totals while Redis is away');
    t.match(await (await fetch(`${r.admin}/status`)).text(), /unknown: Redis is unavailable/, 'the status page says so');
  }

  await redis.start();
  for (const r of [a, b]) await waitFor(async () => (await metric(r, 'bitquery_proxy_redis_up')) === 1, 10_000, 'redis_up 1');
  const check = linkFor(t, redisConfig(redisUrl(redis)));
  t.equal(await check.waitUntilUp(5000), true);
  t.equal((await post(a, BOB)).status, 200);
  t.equal((await post(b, BOB)).status, 200);
  t.equal(await check.run((c) => c.get('bitquery-proxy:rate:key:bob')), '2', 'both replicas count in Redis again, without a restart');
});

t.test('closed mode: 503 shared_state_unavailable while Redis is away, for limited requests and capped streams', { skip }, async (t) => {
  const fake = await startFake(t);
  const redis = await startRedisWithPassword(t);
  const [a] = await replicas(t, fake, redis, { REDIS_FAILURE: 'closed', REDIS_TIMEOUT_MS: String(DEADLINE_MS), RATE_LIMIT_PER_MINUTE: '100', WS_MAX_STREAMS_PER_KEY: '1' });
  t.equal((await post(a, ALICE)).status, 200);
  await redis.stop();
  await waitFor(async () => (await metric(a, 'bitquery_proxy_redis_up')) === 0, 10_000, 'redis_up 0');
  const refused = await post(a, ALICE);
  t.equal(refused.status, 503);
  t.match(JSON.parse(refused.body), { error: 'shared_state_unavailable', message: /REDIS_FAILURE=closed/ });
  t.equal(refused.headers['retry-after'], '1');
  t.ok(refused.ms < DEADLINE_MS + MARGIN_MS, `answered in ${refused.ms.toFixed(0)} ms`);
  t.match(await openStream(a, ALICE), { status: 503, body: /"shared_state_unavailable"/ }, 'a capped stream handshake too');
  t.equal(fake.graphqlRequests.length, 1, 'nothing more went upstream');
  await redis.start();
  await a.proxy.waitForLog((l) => l.msg.startsWith('Redis is back'), 10_000);
  t.equal((await post(a, ALICE)).status, 200, 'served again once Redis is back');
});

t.test('with the cache on, a miss on one replica is a hit on the other', { skip }, async (t) => {
  const fake = await startFake(t);
  const redis = await startRedisWithPassword(t);
  const [a, b] = await replicas(t, fake, redis, { CACHE_TTL_MS: '60000' });
  const first = await post(a, ALICE);
  t.equal(first.status, 200);
  t.equal(first.headers['x-cache'], 'MISS', 'a miss on one replica');
  const second = await post(b, BOB);
  t.equal(second.status, 200);
  t.equal(second.headers['x-cache'], 'HIT', 'a hit on the other, for another key of the same credential set');
  t.equal(second.body, first.body, 'the same answer');
  t.equal(fake.graphqlRequests.length, 1, 'one request went upstream');
  const totals = await waitFor(async () => {
    const g = await gateway(a);
    return g.requests === 2 && g;
  }, 10_000, 'the totals');
  t.match(totals, { saved: 1 }, 'the hit counts as a saved request');
});

t.test('a bad REDIS_URL exits 2 with one line that does not repeat it', { skip }, async (t) => {
  const fake = await startFake(t);
  for (const [url, says] of [
    [`http://:${PASSWORD}@redis:6379`, /REDIS_URL must start with redis:\/\/ or rediss:\/\//],
    [`redis://:${PASSWORD}@redis:6379/zero`, /REDIS_URL path must be a database number/],
  ] as const) {
    const proxy = await spawnProxy({ ...fakeEnv(fake), REDIS_URL: url }, { noWait: true });
    t.equal((await proxy.exited).code, 2);
    t.match(proxy.output(), says);
    t.notMatch(proxy.output(), PASSWORD);
  }
});
