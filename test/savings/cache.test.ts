// The response cache end to end in one process, over real sockets: what is kept, for how long,
// what clients can ask for (no-cache, no-store, max-age), per-key TTLs, credential sets apart,
// content encodings apart, the byte bound, and a store that answers asynchronously (as Redis will).
import t, { type Test } from 'tap';
import { connect } from 'node:net';
import { gunzipSync, gzipSync } from 'node:zlib';
import { Agent, request } from 'undici';
import { MemoryStore, type AnswerStore, type CachedAnswer, type StoreStats } from '../../src/savings/store.js';
import type { SaverOptions } from '../../src/savings/saver.js';
import { startRig, type Rig } from '../helpers/saver-rig.js';
import { waitFor } from '../helpers/proxy-process.js';

const BODY = JSON.stringify({ query: '{ EVM { Blocks { Block { Number } } } }' });
const TTL = 60_000;

const agent = new Agent({ connections: 50 });
t.teardown(() => agent.close());

async function send(rig: Rig, headers: Record<string, string> = {}, body = BODY) {
  const res = await request(`${rig.url}/graphql`, { method: 'POST', body, headers: { 'content-type': 'application/json', ...headers }, dispatcher: agent });
  return { status: res.statusCode, headers: res.headers, raw: Buffer.from(await res.body.arrayBuffer()), get text() { return this.raw.toString(); } };
}

interface Clock {
  now: number;
}

/** The in-memory store, counting what is set in it (so a test can wait for a fill). */
class CountingStore extends MemoryStore {
  sets = 0;
  last?: CachedAnswer;
  override set(key: string, answer: CachedAnswer, ttlMs: number): void {
    this.sets += 1;
    this.last = answer;
    super.set(key, answer, ttlMs);
  }
}

const stores = new WeakMap<Rig, { sets: number; last?: CachedAnswer }>();

async function cachingRig(t: Test, options: Partial<SaverOptions> & { maxBytes?: number } = {}): Promise<{ rig: Rig; clock: Clock }> {
  const clock = { now: 1_700_000_000_000 };
  const now = () => clock.now;
  const store = new CountingStore({ maxBytes: options.maxBytes ?? 64 << 20, maxEntryBytes: options.maxHeldBytes ?? 1 << 20, now });
  const rig = await startRig(t, { cacheTtlMs: TTL, store, now, ...options });
  stores.set(rig, store);
  return { rig, clock };
}

/** Sends and waits until the answer is set in the cache. */
async function fill(rig: Rig, headers: Record<string, string> = {}, body = BODY) {
  const store = stores.get(rig)!;
  const before = store.sets;
  const res = await send(rig, headers, body);
  await waitFor(() => store.sets > before, 5000, 'the answer to be cached');
  return res;
}

t.test('a repeat within the TTL is a HIT with Age; after the TTL it goes upstream again', async (t) => {
  const { rig, clock } = await cachingRig(t);
  rig.answer = (u) => {
    const body = JSON.stringify({ data: { n: u.n } });
    u.res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), 'set-cookie': 'lb=1' }).end(body);
  };
  const miss = await fill(rig);
  t.equal(miss.headers['x-cache'], 'MISS');
  t.equal(miss.headers['set-cookie'], 'lb=1');
  clock.now += 3500;
  const hit = await send(rig);
  t.equal(hit.status, 200);
  t.equal(hit.text, miss.text);
  t.equal(hit.headers['x-cache'], 'HIT');
  t.equal(hit.headers.age, '3');
  t.equal(hit.headers['x-front'], 'yes', "the client's own headers");
  t.equal(hit.headers['content-type'], 'application/json');
  t.equal(hit.headers['content-length'], String(miss.raw.length));
  t.equal(hit.headers['set-cookie'], undefined, 'a cookie is never kept');
  const kept = stores.get(rig)!.last!.body;
  t.equal(kept.buffer.byteLength, kept.length, "the kept body owns its memory (no slice of Node's shared pool, which would hold 8 KiB)");
  t.equal(rig.upstream.length, 1);
  clock.now += TTL;
  t.equal((await send(rig)).headers['x-cache'], 'MISS', 'expired');
  t.equal(rig.upstream.length, 2);
  t.same(rig.saver.requests, { hit: 1, miss: 2, coalesced: 0, bypass: 0 });
  t.same([...rig.saver.saved], [['default', 1]]);
  t.ok(rig.saver.cacheBytes > miss.raw.length);
});

t.test('Cache-Control from the client: max-age, no-cache refreshes, no-store bypasses', async (t) => {
  const { rig, clock } = await cachingRig(t);
  await fill(rig);
  clock.now += 3000;
  t.equal((await send(rig, { 'cache-control': 'max-age=5' })).headers['x-cache'], 'HIT', 'younger than 5 s');
  const stale = await fill(rig, { 'cache-control': 'max-age=2' });
  t.equal(stale.headers['x-cache'], 'MISS', 'older than 2 s');
  t.equal(stale.text, '{"data":{"n":2}}');
  const fresher = await send(rig, { 'cache-control': 'max-age=1' });
  t.same([fresher.headers['x-cache'], fresher.text], ['HIT', '{"data":{"n":2}}'], 'the fresher answer was kept');
  const refreshed = await fill(rig, { 'cache-control': 'no-cache' });
  t.equal(refreshed.headers['x-cache'], 'MISS');
  t.equal(refreshed.text, '{"data":{"n":3}}');
  t.equal((await send(rig)).text, '{"data":{"n":3}}', 'no-cache refreshed the entry');
  const noStore = await send(rig, { 'cache-control': 'no-store' });
  t.equal(noStore.headers['x-cache'], 'BYPASS');
  t.equal(noStore.text, '{"data":{"n":4}}');
  const after = await send(rig);
  t.equal(after.text, '{"data":{"n":3}}', 'no-store left the cache alone');
  t.equal(rig.upstream.length, 4);
});

t.test('only 200 answers without errors are cached', async (t) => {
  const { rig } = await cachingRig(t);
  const answers: [number, string][] = [
    [402, 'points limit exceeded: usage quota reached'],
    [429, 'Too Many Sessions'],
    [500, 'Memory limit'],
    [200, '{"data":null,"errors":[{"message":"boom"}]}'],
  ];
  rig.answer = (u) => {
    const [status, text] = answers[(u.n - 1) >> 1]!;
    u.res.writeHead(status, { 'content-type': status === 200 ? 'application/json' : 'text/plain' }).end(text);
  };
  for (const [status] of answers) {
    t.equal((await send(rig)).status, status);
    const again = await send(rig);
    t.equal(again.headers['x-cache'], 'MISS', `a ${status} is not answered from the cache`);
  }
  t.equal(stores.get(rig)!.sets, 0);
  t.equal(rig.upstream.length, 8);
});

t.test('per-key TTL: 0 never caches, another value overrides CACHE_TTL_MS', async (t) => {
  const { rig, clock } = await cachingRig(t);
  await send(rig, { 'x-test-ttl': '0' });
  t.equal((await send(rig, { 'x-test-ttl': '0' })).headers['x-cache'], 'MISS');
  t.equal(stores.get(rig)!.sets, 0);
  await fill(rig, { 'x-test-ttl': '1000' });
  clock.now += 999;
  t.equal((await send(rig, { 'x-test-ttl': '1000' })).headers['x-cache'], 'HIT');
  t.equal((await send(rig)).headers['x-cache'], 'HIT', 'the entry is shared by keys of the credential set');
  clock.now += 2;
  t.equal((await send(rig)).headers['x-cache'], 'MISS', "expired by the key's own TTL");
});

t.test('one credential set never sees another set’s entries; an encoding never reaches a client that did not ask for it', async (t) => {
  const { rig } = await cachingRig(t);
  rig.answer = (u) => {
    const plain = Buffer.from(JSON.stringify({ data: { n: u.n } }));
    if (u.req.headers['accept-encoding'] === 'gzip') u.res.writeHead(200, { 'content-type': 'application/json', 'content-encoding': 'gzip', vary: 'Accept-Encoding' }).end(gzipSync(plain));
    else u.res.writeHead(200, { 'content-type': 'application/json' }).end(plain);
  };
  await fill(rig, { 'x-test-set': 'a' });
  t.equal((await send(rig, { 'x-test-set': 'b' })).headers['x-cache'], 'MISS');
  const gz = await fill(rig, { 'x-test-set': 'a', 'accept-encoding': 'gzip' });
  t.equal(gz.headers['x-cache'], 'MISS', 'not the plain entry');
  const gzHit = await send(rig, { 'x-test-set': 'a', 'accept-encoding': 'gzip' });
  t.equal(gzHit.headers['x-cache'], 'HIT', 'a gzip answer is cached for gzip clients');
  t.equal(gunzipSync(gzHit.raw).toString(), '{"data":{"n":3}}');
  const plain = await send(rig, { 'x-test-set': 'a' });
  t.same([plain.headers['x-cache'], plain.headers['content-encoding'], plain.text], ['HIT', undefined, '{"data":{"n":1}}']);
});

t.test('with COALESCE=false the cache still answers repeats', async (t) => {
  const { rig } = await cachingRig(t, { coalesce: false });
  await fill(rig);
  t.equal((await send(rig)).headers['x-cache'], 'HIT');
  t.equal(rig.upstream.length, 1);
});

t.test('an answer over CACHE_MAX_ENTRY_BYTES is shared while in flight but never cached', async (t) => {
  const { rig } = await cachingRig(t, { maxHeldBytes: 4096, maxBacklogBytes: 1 << 20 });
  const big = JSON.stringify({ data: { s: 'x'.repeat(5000) } });
  rig.answer = (u) => u.res.writeHead(200, { 'content-type': 'application/json' }).end(big);
  t.equal((await send(rig)).text, big);
  t.equal((await send(rig)).headers['x-cache'], 'MISS');
  t.equal(stores.get(rig)!.sets, 0);
});

t.test('a flood of distinct queries never takes the cache past CACHE_MAX_BYTES', async (t) => {
  const maxBytes = 64 * 1024;
  const { rig } = await cachingRig(t, { maxBytes });
  rig.answer = (u) => {
    const body = JSON.stringify({ data: { n: u.n, pad: 'p'.repeat((u.n * 997) % 3000) } });
    u.res.writeHead(200, { 'content-type': 'application/json' }).end(body);
  };
  let peak = 0;
  for (let i = 0; i < 150; i++) {
    await fill(rig, {}, JSON.stringify({ query: `{ a(i: ${i}) }` }));
    peak = Math.max(peak, rig.saver.cacheBytes);
  }
  t.ok(peak <= maxBytes, `peak ${peak} within ${maxBytes}`);
  t.ok(rig.saver.cacheEntries > 10, `${rig.saver.cacheEntries} entries kept`);
});

/** A store answering through promises, as a Redis tier will. */
class AsyncStore implements AnswerStore, StoreStats {
  readonly inner = new MemoryStore({ maxBytes: 1 << 20, maxEntryBytes: 1 << 16 });
  gate?: Promise<void>;
  gets = 0;
  sets = 0;
  fail = false;
  async get(key: string): Promise<CachedAnswer | undefined> {
    this.gets += 1;
    await this.gate;
    if (this.fail) throw new Error('store unreachable');
    return this.inner.get(key);
  }
  async set(key: string, answer: CachedAnswer, ttlMs: number): Promise<void> {
    if (this.fail) throw new Error('store unreachable');
    this.sets += 1;
    this.inner.set(key, answer, ttlMs);
  }
  get bytes() {
    return this.inner.bytes;
  }
  get entries() {
    return this.inner.entries;
  }
}

t.test('an asynchronous store: hits through promises, failures reported and treated as misses', async (t) => {
  const store = new AsyncStore();
  const rig = await startRig(t, { cacheTtlMs: TTL, store });
  stores.set(rig, store);
  await fill(rig);
  t.equal((await send(rig)).headers['x-cache'], 'HIT');

  store.fail = true;
  t.equal((await send(rig, {}, JSON.stringify({ query: '{ other }' }))).headers['x-cache'], 'MISS');
  await waitFor(() => rig.errors.length === 2, 5000, 'the failed get and set to be reported');
  t.match(rig.errors, [{ message: 'store unreachable' }, { message: 'store unreachable' }]);
  store.fail = false;

  let release!: () => void;
  store.gate = new Promise<void>((r) => (release = r));
  const { port } = new URL(rig.url);
  const socket = connect(Number(port), '127.0.0.1');
  socket.on('error', () => {});
  socket.write(`POST /graphql HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: ${BODY.length}\r\n\r\n${BODY}`);
  const gets = store.gets;
  await waitFor(() => store.gets > gets, 5000, 'the lookup');
  socket.destroy();
  await waitFor(() => rig.responses.at(-1)!.closed, 5000, 'the front to see the client gone');
  const upstreamBefore = rig.upstream.length;
  release();
  await waitFor(() => rig.outcomes.length === rig.responses.length);
  t.same(rig.outcomes.at(-1), { cache: 'bypass', cut: false }, 'a client gone during the lookup gets nothing');
  t.equal(rig.upstream.length, upstreamBefore, 'and nothing went upstream for it');
});
