// The points saver end to end (issue 12): the proxy started as users start it (dist/cli.js), two
// credential sets from PROXY_CONFIG, against the fake Bitquery, which counts the requests it gets
// and holds its answers until the test releases them (graphqlDelayMs, endDelays()). Coalescing,
// the response cache, the per-key TTL, the byte bound under a flood, X-Cache and Age on every
// answer, the access line, the metrics and the status page; no secret in any output.
import t, { type Test } from 'tap';
import { once } from 'node:events';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { request } from 'undici';
import type { FakeBitquery } from '../fake-bitquery/index.js';
import { SECRET, startFake, startProxy } from '../helpers/pair.js';
import { waitFor, type ProxyProcess } from '../helpers/proxy-process.js';
import { sample } from '../observability/helpers.js';

const KEYS = {
  alice: 'alice-key-3f8a1c5e7b9d2046',
  carol: 'carol-key-8d2e6b0a4c1f9735',
  bob: 'bob-key-5c7e9a1b3d0f2468',
  bot: 'bot-key-1a3c5e7b9d2f4680',
  board: 'board-key-6e8a0c2d4f1b3579',
  fast: 'fast-key-9b1d3f5a7c0e2468',
};
type KeyName = keyof typeof KEYS;
const SECRET_B = 'team-b-secret-9e4d1a7c';
const SECRETS = [SECRET, SECRET_B, ...Object.values(KEYS)];

const QUERY = 'query Latest($network: String) { EVM(network: $network) { Blocks { Block { Number } } } }';
const body = (variables: Record<string, unknown>, query = QUERY) => JSON.stringify({ query, variables });

interface Answer {
  status: number;
  cache: string | undefined;
  age: string | undefined;
  text: string;
}

interface Running {
  fake: FakeBitquery;
  proxy: ProxyProcess;
  ask(key: KeyName, payload: string, headers?: Record<string, string>): Promise<Answer>;
  metrics(): Promise<string>;
  /** The value of a saver metric now. */
  count(name: string, labels?: Record<string, string>): Promise<number>;
  /** Upstream GraphQL requests so far. */
  upstream(): number;
  /** The fake holds its answers until release() (or the end of `t`, so a failure holds nothing up). */
  hold(t: Test): void;
  release(): void;
}

/** A fake with a second client, and a proxy with team-a (most keys) and team-b (bob) on it. */
async function start(t: Test, env: Record<string, string> = {}): Promise<Running> {
  const fake = await startFake(t);
  fake.addClient('team-b', SECRET_B);
  const dir = mkdtempSync(join(tmpdir(), 'bqp-saver-'));
  const file = join(dir, 'gateway.json');
  const set = (clientId: string, clientSecret: string) => ({ clientId, clientSecret, tokenUrl: fake.tokenUrl, upstream: fake.url });
  writeFileSync(
    file,
    JSON.stringify({
      credentials: { 'team-a': set(fake.clientId, SECRET), 'team-b': set('team-b', SECRET_B) },
      defaultCredentials: 'team-a',
      keys: { bob: { credentials: 'team-b' }, bot: { cacheTtlMs: 0 }, board: { cacheTtlMs: 60_000 }, fast: { cacheTtlMs: 1000 } },
    }),
  );
  const apiKeys = Object.entries(KEYS).map(([name, key]) => `${name}:${key}`).join(',');
  const proxy = await startProxy(t, fake, { PROXY_CONFIG: file, PROXY_API_KEYS: apiKeys, LOG_LEVEL: 'trace', ...env }, {}, SECRETS);
  const admin = (await proxy.waitForLog((l) => l.msg.startsWith('admin listening on '))).url as string;
  const metrics = async () => (await request(`${admin}/metrics`)).body.text();
  const release = () => {
    fake.graphqlDelayMs = 0;
    fake.endDelays();
  };
  return {
    fake,
    proxy,
    metrics,
    async ask(key, payload, headers = {}) {
      const res = await request(`${proxy.url}/graphql`, { method: 'POST', body: payload, headers: { 'content-type': 'application/json', 'x-api-key': KEYS[key], ...headers } });
      const one = (name: string) => res.headers[name] as string | undefined;
      return { status: res.statusCode, cache: one('x-cache'), age: one('age'), text: await res.body.text() };
    },
    count: async (name, labels = {}) => sample(await metrics(), name, labels) ?? 0,
    upstream: () => fake.graphqlRequests.length,
    hold(t) {
      fake.graphqlDelayMs = 60_000;
      t.teardown(release);
    },
    release,
  };
}

const requestsBy = (saver: Running, result: string) => saver.count('bitquery_proxy_cache_requests_total', { result });

t.test('coalescing (CACHE_TTL_MS=0)', async (t) => {
  const saver = await start(t);
  const { fake } = saver;

  await t.test('20 concurrent identical queries while the upstream is slow: one upstream request, every client gets the answer; a whitespace variant joins', async (t) => {
    saver.hold(t);
    const payload = body({ network: 'eth' });
    const answers = Array.from({ length: 20 }, () => saver.ask('alice', payload));
    await waitFor(async () => (await requestsBy(saver, 'coalesced')) === 19, 20_000, 'nineteen queries joined the first');
    // Other spacing, commas, a comment, variables written in another order: the same query.
    const variant = JSON.stringify({ variables: { network: 'eth' }, query: '# the latest blocks\nquery   Latest( $network : String ) {EVM(network:$network){Blocks{Block{Number,}}}}' });
    answers.push(saver.ask('alice', variant));
    await waitFor(async () => (await requestsBy(saver, 'coalesced')) === 20, 20_000, 'the variant joined');
    t.equal(saver.upstream(), 1, 'one upstream request while they waited');
    saver.release();
    const all = await Promise.all(answers);
    t.same(new Set(all.map((a) => a.status)), new Set([200]));
    t.equal(new Set(all.map((a) => a.text)).size, 1, 'the same answer for all 21');
    t.match(JSON.parse(all[0]!.text), { data: { echo: { variables: { network: 'eth' } } } });
    t.same(all.map((a) => a.cache).sort(), ['MISS', ...Array(20).fill('COALESCED')].sort());
    t.equal(saver.upstream(), 1, 'still one upstream request');
    t.equal(await requestsBy(saver, 'miss'), 1);
    t.equal(await saver.count('bitquery_proxy_upstream_requests_saved_total', { credentials: 'team-a' }), 20);
    const lines = await waitFor(() => {
      const found = saver.proxy.logs().filter((l) => l.msg === 'request' && l.cache !== undefined);
      return found.length === 21 && found;
    }, 10_000, '21 access lines');
    t.same(lines.map((l) => l.cache).sort(), ['miss', ...Array(20).fill('coalesced')].sort(), 'the access line says how each was answered');
    t.match(lines.find((l) => l.cache === 'miss'), { attempts: 1, upstreamStatus: 200 });
    t.ok(lines.filter((l) => l.cache === 'coalesced').every((l) => l.attempts === 0 && l.upstreamStatus === undefined), 'joiners made no attempt');
  });

  await t.test('other variables, another credential set, another Accept-Encoding do not join; the same set with another key does', async (t) => {
    const before = saver.upstream();
    const joined = await requestsBy(saver, 'coalesced');
    saver.hold(t);
    const payload = body({ network: 'bsc' });
    const first = saver.ask('alice', payload);
    await waitFor(() => saver.upstream() === before + 1, 10_000, 'the first upstream');
    const others = [
      saver.ask('alice', body({ network: 'polygon' })),
      saver.ask('bob', payload),
      saver.ask('alice', payload, { 'accept-encoding': 'gzip' }),
      saver.ask('carol', payload),
    ];
    await waitFor(async () => saver.upstream() === before + 4 && (await requestsBy(saver, 'coalesced')) === joined + 1, 10_000, 'three more upstream, one joined');
    saver.release();
    const [a, variables, otherSet, gzip, sameSet] = await Promise.all([first, ...others]);
    t.same([a, variables, otherSet, gzip, sameSet].map((x) => x!.status), [200, 200, 200, 200, 200]);
    t.same([a, variables, otherSet, gzip].map((x) => x!.cache), ['MISS', 'MISS', 'MISS', 'MISS']);
    t.equal(sameSet!.cache, 'COALESCED', 'carol uses team-a too: she shares alice’s answer');
    t.equal(saver.upstream(), before + 4);
    const sent = fake.graphqlRequests.slice(before);
    t.equal(new Set(sent.map((r) => r.token)).size, 2, 'team-b’s query went with team-b’s token');
    t.equal(sent.filter((r) => r.headers['accept-encoding'] === 'gzip').length, 1);
    t.equal(await saver.count('bitquery_proxy_upstream_requests_saved_total', { credentials: 'team-b' }), 0);
  });

  await t.test('a revoked token: the shared exchange renews once and retries once for all its clients', async (t) => {
    const before = saver.upstream();
    const renewals = fake.tokenRequests.length;
    const joined = await requestsBy(saver, 'coalesced');
    fake.revokeAll();
    saver.hold(t);
    const payload = body({ network: 'revoked' });
    const answers = Array.from({ length: 5 }, () => saver.ask('alice', payload));
    await waitFor(async () => saver.upstream() === before + 2 && (await requestsBy(saver, 'coalesced')) === joined + 4, 20_000, 'the 401, the retry, four joined');
    saver.release();
    t.same((await Promise.all(answers)).map((a) => a.status), [200, 200, 200, 200, 200]);
    t.same(fake.graphqlRequests.slice(before).map((r) => r.authorized), [false, true]);
    t.equal(fake.tokenRequests.length, renewals + 1, 'one renewal');
  });

  await t.test('what is not a query the saver can read passes through as BYPASS', async (t) => {
    const before = saver.upstream();
    const mutation = await saver.ask('alice', JSON.stringify({ query: 'mutation { touch }' }));
    const noStore = await saver.ask('alice', body({ network: 'eth' }), { 'cache-control': 'no-store' });
    const text = await saver.ask('alice', '{ hello }', { 'content-type': 'text/plain' });
    t.same([mutation, noStore, text].map((a) => [a.status, a.cache]), [[200, 'BYPASS'], [200, 'BYPASS'], [200, 'BYPASS']]);
    t.equal(saver.upstream(), before + 3);
  });

  await t.test('a key with its own cacheTtlMs has a cache even with CACHE_TTL_MS=0; other keys do not', async (t) => {
    const before = saver.upstream();
    const payload = body({ network: 'arbitrum' });
    const board = [await saver.ask('board', payload), await saver.ask('board', payload)];
    t.same(board.map((a) => a.cache), ['MISS', 'HIT']);
    t.equal(board[1]!.age, '0', 'a hit carries Age');
    t.equal(board[1]!.text, board[0]!.text);
    t.equal((await saver.ask('alice', payload)).cache, 'MISS', 'alice’s requests are not answered from the cache');
    t.equal(saver.upstream(), before + 2);
    t.equal(await saver.count('bitquery_proxy_cache_entries'), 1);
  });
});

t.test('the proxy’s own error as a shared answer: every client sharing it gets it, and each access line names it', async (t) => {
  const saver = await start(t, { UPSTREAM_TIMEOUT_MS: '2000' });
  saver.hold(t);
  const payload = body({ network: 'slow' });
  const answers = Array.from({ length: 5 }, () => saver.ask('alice', payload));
  await waitFor(async () => (await requestsBy(saver, 'coalesced')) === 4, 10_000, 'four joined the first');
  const all = await Promise.all(answers);
  t.same(all.map((a) => a.status), [504, 504, 504, 504, 504], 'UPSTREAM_TIMEOUT_MS passed for all five');
  t.ok(all.every((a) => JSON.parse(a.text).error === 'upstream_timeout'));
  t.same(all.map((a) => a.cache).sort(), ['COALESCED', 'COALESCED', 'COALESCED', 'COALESCED', 'MISS']);
  t.equal(saver.upstream(), 1);
  const lines = await waitFor(() => {
    const found = saver.proxy.logs().filter((l) => l.msg === 'request' && l.status === 504);
    return found.length === 5 && found;
  }, 10_000, 'five access lines');
  t.same(lines.map((l) => l.error), Array(5).fill('upstream_timeout'), 'the joiners’ lines name the error too, not only the leader’s');
  t.same(lines.map((l) => l.cache).sort(), ['coalesced', 'coalesced', 'coalesced', 'coalesced', 'miss']);
});

t.test('the response cache (CACHE_TTL_MS=60000)', async (t) => {
  const saver = await start(t, { CACHE_TTL_MS: '60000' });
  const { fake } = saver;

  await t.test('a repeat is a hit with Age; another credential set never sees it', async (t) => {
    const payload = body({ network: 'eth' });
    const first = await saver.ask('alice', payload);
    const again = await saver.ask('carol', payload);
    t.same([first.cache, again.cache], ['MISS', 'HIT']);
    t.equal(again.text, first.text);
    t.match(again.age, /^\d+$/);
    t.equal(first.age, undefined, 'a miss has no Age');
    t.equal((await saver.ask('bob', payload)).cache, 'MISS', 'team-b has its own entries');
    t.equal(saver.upstream(), 2);
    t.equal(await requestsBy(saver, 'hit'), 1);
    t.equal(await saver.count('bitquery_proxy_cache_entries'), 2);
    t.ok((await saver.count('bitquery_proxy_cache_bytes')) > first.text.length * 2);
  });

  await t.test('a 402, and a 200 with errors, are not cached', async (t) => {
    const before = saver.upstream();
    fake.graphqlScript.push({ status: 402, body: 'points limit exceeded' });
    const payload = body({ network: 'payments' });
    const paid = await saver.ask('alice', payload);
    t.same([paid.status, paid.cache], [402, 'MISS']);
    const next = await saver.ask('alice', payload);
    t.same([next.status, next.cache], [200, 'MISS'], 'the 402 was not kept');
    t.same([(await saver.ask('alice', payload)).cache], ['HIT'], 'the 200 after it was');

    fake.graphqlScript.push({ status: 200, body: '{"data":null,"errors":[{"message":"Limit for result exceeded"}]}' });
    const failing = body({ network: 'errors' });
    const errors = await saver.ask('alice', failing);
    t.same([errors.status, errors.cache], [200, 'MISS']);
    t.match(errors.text, /"errors"/);
    const retried = await saver.ask('alice', failing);
    t.same([retried.cache, JSON.parse(retried.text).errors], ['MISS', undefined], 'the answer with errors was not kept');
    t.equal((await saver.ask('alice', failing)).cache, 'HIT');
    t.equal(saver.upstream(), before + 4);
  });

  await t.test('no-cache refreshes the entry, no-store leaves it alone, max-age bounds the age accepted', async (t) => {
    const before = saver.upstream();
    const payload = body({ network: 'refresh' });
    t.equal((await saver.ask('alice', payload)).cache, 'MISS');
    fake.graphqlScript.push({ status: 200, body: '{"data":{"v":2}}' });
    const fresh = await saver.ask('alice', payload, { 'cache-control': 'no-cache' });
    t.same([fresh.cache, fresh.text], ['MISS', '{"data":{"v":2}}']);
    t.same(await saver.ask('alice', payload), { status: 200, cache: 'HIT', age: '0', text: '{"data":{"v":2}}' }, 'the refreshed answer is kept');
    fake.graphqlScript.push({ status: 200, body: '{"data":{"v":3}}' });
    const notKept = await saver.ask('alice', payload, { pragma: 'no-cache', 'cache-control': 'no-store' });
    t.same([notKept.cache, notKept.text], ['BYPASS', '{"data":{"v":3}}']);
    t.equal((await saver.ask('alice', payload)).text, '{"data":{"v":2}}', 'no-store left the entry alone');
    const tooOld = await saver.ask('alice', payload, { 'cache-control': 'max-age=0' });
    t.equal(tooOld.cache, 'MISS', 'max-age=0 accepts no entry');
    t.match(JSON.parse(tooOld.text), { data: { echo: {} } });
    const youngEnough = await saver.ask('alice', payload, { 'cache-control': 'max-age=3600' });
    t.same([youngEnough.cache, youngEnough.text], ['HIT', tooOld.text]);
    t.equal(saver.upstream(), before + 4);
  });

  await t.test('per key: cacheTtlMs 0 is never answered from the cache; a short cacheTtlMs expires', async (t) => {
    const before = saver.upstream();
    const payload = body({ network: 'eth' });
    t.equal((await saver.ask('alice', payload)).cache, 'HIT', 'cached for alice');
    t.same([(await saver.ask('bot', payload)).cache, (await saver.ask('bot', payload)).cache], ['MISS', 'MISS']);
    t.equal(saver.upstream(), before + 2);

    const short = body({ network: 'short-lived' });
    const stored = Date.now();
    t.equal((await saver.ask('fast', short)).cache, 'MISS');
    t.equal((await saver.ask('fast', short)).cache, 'HIT');
    await waitFor(async () => (await saver.ask('fast', short)).cache === 'MISS', 10_000, 'the 1 s entry to expire');
    t.ok(Date.now() - stored >= 1000, 'not before its TTL');
    t.equal(saver.upstream(), before + 4);
  });

  await t.test('the status page shows the requests saved; the metrics add up', async (t) => {
    const text = await saver.metrics();
    const hits = sample(text, 'bitquery_proxy_cache_requests_total', { result: 'hit' })!;
    t.ok(hits >= 8);
    t.equal(sample(text, 'bitquery_proxy_upstream_requests_saved_total', { credentials: 'team-a' }), hits);
    const admin = (await saver.proxy.waitForLog((l) => l.msg.startsWith('admin listening on '))).url as string;
    const status = (await (await request(`${admin}/status.json`)).body.json()) as { traffic: { requestsSaved: number } };
    t.equal(status.traffic.requestsSaved, hits);
    t.match(await (await request(`${admin}/status`)).body.text(), 'requests saved');
  });
});

t.test('the cache stays within CACHE_MAX_BYTES under a flood of distinct queries', async (t) => {
  const bound = 32 * 1024;
  const saver = await start(t, { CACHE_TTL_MS: '60000', CACHE_MAX_BYTES: String(bound), CACHE_MAX_ENTRY_BYTES: '4096', COALESCE_MAX_BUFFERED_BYTES: '65536' });
  let largest = 0;
  const flood = 400;
  for (let i = 0; i < flood; i += 20) {
    const batch = await Promise.all(Array.from({ length: 20 }, (_, j) => saver.ask('alice', body({ n: i + j }))));
    t.ok(batch.every((a) => a.status === 200 && a.cache === 'MISS'), `batch ${i / 20} all went upstream`);
    largest = Math.max(largest, await saver.count('bitquery_proxy_cache_bytes'));
  }
  const entries = await saver.count('bitquery_proxy_cache_entries');
  t.ok(largest > bound / 2 && largest <= bound, `cache_bytes peaked at ${largest}, within ${bound}`);
  t.ok(entries > 0 && entries < flood / 4, `${entries} entries kept of ${flood}`);
  t.equal((await saver.ask('alice', body({ n: flood - 1 }))).cache, 'HIT', 'the latest is kept');
  t.equal((await saver.ask('alice', body({ n: 0 }))).cache, 'MISS', 'the oldest was evicted');

  const before = saver.upstream();
  const large = JSON.stringify({ query: '{ blob }', variables: { bytes: 8000 } });
  const answers = [await saver.ask('alice', large), await saver.ask('alice', large)];
  t.same(answers.map((a) => [a.status, a.cache, a.text.length]), [[200, 'MISS', 8020], [200, 'MISS', 8020]], 'over CACHE_MAX_ENTRY_BYTES: never kept');
  t.equal(saver.upstream(), before + 2);
  t.ok((await saver.count('bitquery_proxy_cache_bytes')) <= bound);
});

t.test('a client that falls COALESCE_MAX_BUFFERED_BYTES behind the others sharing its answer is cut alone', async (t) => {
  const saver = await start(t, { CACHE_MAX_BYTES: '65536', CACHE_MAX_ENTRY_BYTES: '16384', COALESCE_MAX_BUFFERED_BYTES: '65536' });
  const bytes = 16 * 1024 * 1024;
  const payload = JSON.stringify({ query: '{ blob }', variables: { bytes } });
  saver.hold(t);
  const reader = saver.ask('alice', payload);
  await waitFor(() => saver.upstream() === 1, 10_000, 'the first upstream');
  // The same query from a client that never reads its answer.
  const { hostname, port } = new URL(saver.proxy.url);
  const stalled = connect(Number(port), hostname);
  stalled.on('error', () => {});
  t.teardown(() => stalled.destroy());
  await once(stalled, 'connect');
  stalled.pause();
  stalled.write(`POST /graphql HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nX-API-Key: ${KEYS.alice}\r\nContent-Length: ${payload.length}\r\n\r\n${payload}`);
  await waitFor(async () => (await requestsBy(saver, 'coalesced')) === 1, 10_000, 'the stalled client joined');
  saver.release();
  const answer = await reader;
  t.same([answer.status, answer.cache, answer.text.length], [200, 'MISS', bytes + 20], 'the reading client got all of it');
  await saver.proxy.waitForLog((l) => /fell more than COALESCE_MAX_BUFFERED_BYTES behind/.test(l.msg), 10_000);
  let received = 0;
  stalled.on('data', (chunk: Buffer) => (received += chunk.length));
  const closed = once(stalled, 'close');
  stalled.resume();
  await closed;
  t.ok(received > 0 && received < bytes, `the stalled client was cut after ${received} bytes`);
  t.equal(saver.upstream(), 1);
});
