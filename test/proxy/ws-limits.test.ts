// Issue 9 item 6: the per-minute limits count WebSocket handshakes as they count HTTP requests
// (and, in share mode, each subscription too), and with inbound keys one key cannot take every
// stream slot by default. End to end against the proxy process and the fake Bitquery; the default
// itself is checked on loadConfig too. The relay tests run with WS_MODE=relay, where a stream is a
// handshake; share mode's own case is the last.
import t, { type Test } from 'tap';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { WebSocket } from 'ws';
import { loadConfig } from '../../src/config/index.js';
import { fakeEnv, SECRET, startFake, startProxy } from '../helpers/pair.js';
import { waitFor } from '../helpers/proxy-process.js';
import { wsRefusal } from '../helpers/ws-refusal.js';
import { sample } from '../observability/helpers.js';

const ALICE = 'alice-key-93be07d1c6a2f548';
const BOB = 'bob-key-6d1f0a8c3e5b7294';
const QUERY = '{"query":"{ hello }"}';
const dir = mkdtempSync(join(tmpdir(), 'bqp-ws-limits-'));

/** Opens a stream with `key`; closed at teardown. */
async function open(t: Test, url: string, key?: string): Promise<WebSocket> {
  const ws = new WebSocket(`${url.replace('http', 'ws')}/graphql`, 'graphql-ws', key ? { headers: { 'x-api-key': key } } : {});
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('unexpected-response', (_req, res) => reject(new Error(`handshake refused with ${res.statusCode}`)));
    ws.once('error', reject);
  });
  t.teardown(() => ws.terminate());
  return ws;
}

const refusal = (url: string, key?: string) => wsRefusal(`${url.replace('http', 'ws')}/graphql`, key ? { headers: { 'x-api-key': key } } : {});

const post = async (url: string, key: string) =>
  (await fetch(`${url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-api-key': key }, body: QUERY })).status;

t.test('handshakes count against RATE_LIMIT_PER_MINUTE and a key’s rateLimitPerMinute: 429 with Retry-After and the rate headers', async (t) => {
  const fake = await startFake(t);
  const config = join(dir, 'tenants.json');
  writeFileSync(config, JSON.stringify({ keys: { bob: { rateLimitPerMinute: 1 } } }));
  const proxy = await startProxy(
    t,
    fake,
    { ...fakeEnv(fake), WS_MODE: 'relay', PROXY_CONFIG: config, PROXY_API_KEYS: `alice:${ALICE},bob:${BOB}`, RATE_LIMIT_PER_MINUTE: '3' },
    {},
    [SECRET, ALICE, BOB],
  );

  t.equal(await post(proxy.url, ALICE), 200);
  t.equal(await post(proxy.url, ALICE), 200);
  await open(t, proxy.url, ALICE);
  const limited = await refusal(proxy.url, ALICE);
  t.equal(limited.status, 429, 'the fourth request of the minute is a handshake: refused');
  t.match(limited.body, { error: 'rate_limited', message: /^3 requests a minute for the key "alice": retry in / });
  t.ok(Number(limited.headers['retry-after']) > 0, `Retry-After: ${limited.headers['retry-after']}`);
  t.equal(limited.headers['x-ratelimit-limit'], '3');
  t.equal(limited.headers['x-ratelimit-remaining'], '0');
  t.ok(Number(limited.headers['x-ratelimit-reset']) > 0, 'x-ratelimit-reset');
  t.equal(fake.wsHandshakes.length, 1, 'the refused handshake never went upstream');
  t.equal(await post(proxy.url, ALICE), 429, 'handshakes and HTTP requests share the window');

  await open(t, proxy.url, BOB);
  const bob = await refusal(proxy.url, BOB);
  t.equal(bob.status, 429, 'bob’s own limit from PROXY_CONFIG');
  t.equal(bob.headers['x-ratelimit-limit'], '1');
  t.equal(fake.wsHandshakes.length, 2);

  const started = await proxy.waitForLog((l) => l.msg.startsWith('admin listening on '));
  const text = await waitFor(async () => {
    const m = await (await fetch(`${started.url as string}/metrics`)).text();
    return sample(m, 'bitquery_proxy_ws_refused_total', { reason: 'rate_limited' }) === 2 && m;
  }, 10_000, 'two refused handshakes counted');
  t.equal(sample(text, 'bitquery_proxy_rate_limited_total', { key: 'alice' }), 2, 'alice: one handshake, one request');
  t.equal(sample(text, 'bitquery_proxy_rate_limited_total', { key: 'bob' }), 1);
});

t.test('without keys, handshakes count per client address', async (t) => {
  const fake = await startFake(t);
  const proxy = await startProxy(t, fake, { ...fakeEnv(fake), WS_MODE: 'relay', RATE_LIMIT_PER_MINUTE: '1' });
  await open(t, proxy.url);
  const limited = await refusal(proxy.url);
  t.equal(limited.status, 429);
  t.match(limited.body, { error: 'rate_limited', message: /^1 requests a minute: retry in / });
  t.equal(limited.headers['x-ratelimit-limit'], '1');
  t.equal(fake.wsHandshakes.length, 1);
});

t.test('with keys and WS_MAX_STREAMS_PER_KEY unset, one key gets a quarter of WS_MAX_STREAMS', async (t) => {
  const fake = await startFake(t);
  const proxy = await startProxy(t, fake, { ...fakeEnv(fake), WS_MODE: 'relay', PROXY_API_KEYS: `alice:${ALICE},bob:${BOB}`, WS_MAX_STREAMS: '4' }, {}, [SECRET, ALICE, BOB]);
  await open(t, proxy.url, ALICE);
  const second = await refusal(proxy.url, ALICE);
  t.equal(second.status, 503);
  t.match(second.body, { error: 'too_many_streams', message: /the key "alice" has 1 streams open/ });
  await open(t, proxy.url, BOB);
  t.equal(fake.wsHandshakes.length, 2, 'bob still had room');
});

t.test('the WS_MAX_STREAMS_PER_KEY default', async (t) => {
  const load = (env: Record<string, string>) => loadConfig({ BITQUERY_TOKEN: 'static-token', ...env }, { dotenvPath: join(dir, 'absent.env') }).wsMaxStreamsPerKey;
  t.equal(load({}), 0, 'no keys: only WS_MAX_STREAMS applies');
  t.equal(load({ PROXY_API_KEYS: `a:${ALICE},b:${BOB}` }), 250, 'keys: a quarter of the default 1000');
  t.equal(load({ PROXY_API_KEYS: `a:${ALICE}`, WS_MAX_STREAMS: '10' }), 3, 'rounded up');
  t.equal(load({ PROXY_API_KEYS: `a:${ALICE}`, WS_MAX_STREAMS_PER_KEY: '0' }), 0, 'set to 0: no per-key cap');
  t.equal(load({ WS_MAX_STREAMS_PER_KEY: '7' }), 7, 'set: kept');
});

t.test('share mode: the handshake and each subscription count against the key’s rateLimitPerMinute', async (t) => {
  const fake = await startFake(t);
  const config = join(dir, 'share-limits.json');
  writeFileSync(config, JSON.stringify({ keys: { alice: { rateLimitPerMinute: 3 } } }));
  const proxy = await startProxy(t, fake, { ...fakeEnv(fake), PROXY_CONFIG: config, PROXY_API_KEYS: `alice:${ALICE}` }, {}, [SECRET, ALICE]);
  t.equal(await post(proxy.url, ALICE), 200, 'one request');
  const ws = await open(t, proxy.url, ALICE);
  const messages: { type: string; id?: string; payload?: { message?: string } }[] = [];
  ws.on('message', (data) => messages.push(JSON.parse(data.toString())));
  ws.send(JSON.stringify({ type: 'connection_init', payload: {} }));
  await waitFor(async () => messages.some((m) => m.type === 'connection_ack'), 10_000, 'connection_ack');
  const subscribe = (id: string, n: number) => ws.send(JSON.stringify({ type: 'start', id, payload: { query: `subscription { count${n} }` } }));
  subscribe('a', 1);
  subscribe('b', 2);
  const refused = await waitFor(async () => messages.find((m) => m.type === 'error' && m.id === 'b'), 10_000, 'the error of the fourth request');
  t.match(JSON.stringify(refused.payload), /3 requests a minute for the key \\"alice\\"/, 'the fourth request of the minute, a subscription, is refused with the limit');
  t.notOk(messages.some((m) => m.type === 'error' && m.id === 'a'), 'the third, a subscription, was not');
  t.equal(await post(proxy.url, ALICE), 429, 'subscriptions and HTTP requests share the window');
  t.equal((await refusal(proxy.url, ALICE)).status, 429, 'and so do handshakes');
});
