// The shared-gateway rules end to end: inbound keys, per-team credentials, rate limits, CORS and
// the access log, against real proxy processes and fake Bitquery services.
import t from 'tap';
import { createHash } from 'node:crypto';
import { mkdtempSync, renameSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { request } from 'undici';
import { WebSocket } from 'ws';
import { fakeEnv, SECRET, startFake, startProxy } from './helpers/pair.js';
import { spawnProxy, waitFor } from './helpers/proxy-process.js';

const ALICE = 'alice-key-5f2b8c1e9d7a4630';
const BOB = 'bob-key-0c4e7a9b2d6f8e13';
const QUERY = '{"query":"query LatestBlocks { EVM { Blocks { Block { Number } } } }"}';

async function post(url: string, headers: Record<string, string> = {}, body = QUERY) {
  const res = await request(`${url}/graphql`, { method: 'POST', body, headers: { 'content-type': 'application/json', ...headers } });
  return { status: res.statusCode, headers: res.headers, text: await res.body.text() };
}

const tmp = () => mkdtempSync(join(tmpdir(), 'bqp-gw-'));

t.test('keys: missing or wrong gets 401 and nothing goes upstream; both header forms work; the key stays here', async (t) => {
  const fake = await startFake(t);
  const secrets = [SECRET, ALICE, BOB];
  const bobHash = createHash('sha256').update(BOB).digest('hex');
  // WS_MODE=relay: the keyless handshake refusal below is the relay's (share mode takes the key in connection_init).
  const proxy = await startProxy(t, fake, { ...fakeEnv(fake), WS_MODE: 'relay', PROXY_API_KEYS: `alice:${ALICE},bob:sha256:${bobHash}` }, {}, secrets);

  const none = await post(proxy.url);
  t.equal(none.status, 401);
  t.same(JSON.parse(none.text), { error: 'unauthorized', message: 'an API key is required: send Authorization: Bearer <key> or X-API-Key: <key>' });
  const wrong = await post(proxy.url, { authorization: `Bearer ${ALICE}x` });
  t.equal(wrong.status, 401);
  t.same(JSON.parse(wrong.text), { error: 'unauthorized', message: 'the API key is not valid' });
  t.equal(fake.graphqlRequests.length, 0, 'nothing reached the upstream');

  t.equal((await post(proxy.url, { authorization: `Bearer ${ALICE}` })).status, 200);
  t.equal((await post(proxy.url, { 'x-api-key': BOB })).status, 200, 'X-API-Key, and a sha256: key');
  for (const seen of fake.graphqlRequests) {
    t.equal(seen.headers.authorization, `Bearer ${fake.issuedTokens[0]}`);
    t.equal(seen.headers['x-api-key'], undefined);
    t.notMatch(JSON.stringify(seen.headers), /alice-key|bob-key/);
  }

  const access = await waitFor(() => {
    const lines = proxy.logs().filter((l) => l.msg === 'request' && l.status === 200);
    return lines.length === 2 && lines;
  }, 3000, 'two access lines');
  t.same(access.map((l) => l.key), ['alice', 'bob'], 'the access log names the key');
  t.match(access[0], { operation: 'LatestBlocks', upstreamStatus: 200, attempts: 1, bytesIn: QUERY.length });
  t.ok((access[0]!.bytesOut as number) > 0);

  const ws = new WebSocket(`${proxy.url.replace('http', 'ws')}/graphql`, 'graphql-ws');
  const [status] = await new Promise<[number]>((resolve) => ws.on('unexpected-response', (_req, res) => resolve([res.statusCode!])));
  t.equal(status, 401, 'a WebSocket handshake without a key is refused too');
  t.equal(fake.wsHandshakes.length, 0);

  const health = await request(`${proxy.url}/readyz`);
  t.equal(health.statusCode, 200, 'probes need no key');
  t.notMatch(await health.body.text(), /alice|bob/);
});

t.test('the key file is re-read on change; a broken file keeps the keys in force', async (t) => {
  const fake = await startFake(t);
  const dir = tmp();
  const file = join(dir, 'keys');
  writeFileSync(file, `# keys\nalice:${ALICE}\n`);
  const proxy = await startProxy(t, fake, { ...fakeEnv(fake), PROXY_API_KEYS_FILE: file }, {}, [SECRET, ALICE, BOB]);
  t.equal((await post(proxy.url, { 'x-api-key': BOB })).status, 401);

  writeFileSync(join(dir, 'keys.new'), `alice:${ALICE}\nbob:${BOB}\n`);
  renameSync(join(dir, 'keys.new'), file);
  await proxy.waitForLog((l) => /PROXY_API_KEYS_FILE changed: 2 keys in force/.test(l.msg));
  t.equal((await post(proxy.url, { 'x-api-key': BOB })).status, 200);

  writeFileSync(file, `alice:${ALICE}\nbob:oops\n`);
  const line = await proxy.waitForLog((l) => /PROXY_API_KEYS_FILE is not valid/.test(l.msg));
  t.match(line.msg, /line 2: a key must be at least 16 characters.*keeping the 2 keys in force/);
  t.equal((await post(proxy.url, { 'x-api-key': BOB })).status, 200, 'bob still works');
});

t.test('a network-facing HOST without keys refuses to start; the override starts it', async (t) => {
  const fake = await startFake(t);
  const refused = await spawnProxy({ ...fakeEnv(fake), HOST: '0.0.0.0' }, { noWait: true });
  t.equal((await refused.exited).code, 2);
  t.match(refused.output(), /HOST=0\.0\.0\.0 is reachable from the network and no inbound keys are set: set PROXY_API_KEYS .* PROXY_ALLOW_UNAUTHENTICATED=true/);
  const open = await startProxy(t, fake, { ...fakeEnv(fake), HOST: '0.0.0.0', PROXY_ALLOW_UNAUTHENTICATED: 'true' });
  const port = new URL(open.url).port;
  t.equal((await post(`http://127.0.0.1:${port}`)).status, 200);
});

t.test('two teams get tokens from their own credentials; one team’s bad secret does not touch the other', async (t) => {
  const fakeA = await startFake(t, { clientId: 'team-a', clientSecret: 'secret-a-3e9f1c' });
  const fakeB = await startFake(t, { clientId: 'team-b', clientSecret: 'secret-b-7d2a6b' });
  const dir = tmp();
  const config = join(dir, 'tenants.json');
  writeFileSync(join(dir, 'b-secret'), 'wrong-secret-b-000\n');
  writeFileSync(
    config,
    JSON.stringify({
      credentials: {
        'team-a': { clientId: 'team-a', clientSecret: 'secret-a-3e9f1c', tokenUrl: fakeA.tokenUrl, upstream: fakeA.url },
        'team-b': { clientId: 'team-b', clientSecretFile: join(dir, 'b-secret'), tokenUrl: fakeB.tokenUrl, upstream: fakeB.url },
      },
      keys: { alice: { credentials: 'team-a' }, bob: { credentials: 'team-b' } },
    }),
  );
  const proxy = await startProxy(
    t,
    fakeA,
    { PROXY_CONFIG: config, PROXY_API_KEYS: `alice:${ALICE},bob:${BOB}`, TOKEN_WAIT_MS: '300', TOKEN_REJECTED_RETRY_MS: '60000', LOG_LEVEL: 'trace' },
    {},
    ['secret-a-3e9f1c', 'secret-b-7d2a6b', 'wrong-secret-b-000', ALICE, BOB],
  );
  t.equal((await post(proxy.url, { authorization: `Bearer ${ALICE}` })).status, 200);
  t.equal(fakeA.graphqlRequests.at(-1)!.token, fakeA.issuedTokens[0]);
  t.equal(fakeA.tokenRequests[0]!.form.client_id, 'team-a');

  const bob = await post(proxy.url, { authorization: `Bearer ${BOB}` });
  t.equal(bob.status, 503, 'team-b has no token: its credentials were rejected');
  t.match(JSON.parse(bob.text).message, /rejected the credentials/);
  t.equal(fakeB.graphqlRequests.length, 0);
  t.equal(fakeA.graphqlRequests.length, 1, 'bob’s request did not go to team-a’s upstream');

  const ready = await request(`${proxy.url}/readyz`);
  t.equal(ready.statusCode, 200, 'ready while one team can be served');
  const body = (await ready.body.json()) as { ready: boolean; credentials: Record<string, { ready: boolean; reason?: string }> };
  t.equal(body.credentials['team-a']!.ready, true);
  t.equal(body.credentials['team-b']!.ready, false);
  t.match(body.credentials['team-b']!.reason, /rejected the credentials/);

  // Team b fixes its secret file: its own refresher picks it up.
  fakeB.clientSecret = 'secret-b-7d2a6b';
  writeFileSync(join(dir, 'b-secret'), 'secret-b-7d2a6b\n');
  await waitFor(async () => (await post(proxy.url, { authorization: `Bearer ${BOB}` })).status === 200, 5000, 'team-b recovers');
  t.equal(fakeB.graphqlRequests.at(-1)!.token, fakeB.issuedTokens[0]);
  t.equal(fakeA.tokenRequests.length, 1, 'team-a was never renewed meanwhile');
});

t.test('rate limit per key: 429 with Retry-After before anything goes upstream', async (t) => {
  const fake = await startFake(t);
  const config = join(tmp(), 'tenants.json');
  writeFileSync(config, JSON.stringify({ keys: { bob: { rateLimitPerMinute: 1 } } }));
  const proxy = await startProxy(
    t,
    fake,
    { ...fakeEnv(fake), PROXY_CONFIG: config, PROXY_API_KEYS: `alice:${ALICE},bob:${BOB}`, RATE_LIMIT_PER_MINUTE: '3' },
    {},
    [SECRET, ALICE, BOB],
  );
  const alice = { authorization: `Bearer ${ALICE}` };
  for (let i = 0; i < 3; i += 1) {
    const ok = await post(proxy.url, alice);
    t.equal(ok.status, 200);
    // Set by the rate limiter before the answer streams through: they must survive the relay.
    t.equal(ok.headers['x-ratelimit-limit'], '3');
    t.equal(ok.headers['x-ratelimit-remaining'], String(2 - i));
  }
  const limited = await post(proxy.url, alice);
  t.equal(limited.status, 429);
  t.ok(Number(limited.headers['retry-after']) > 0, `Retry-After: ${limited.headers['retry-after']}`);
  t.match(JSON.parse(limited.text), { error: 'rate_limited', message: /3 requests a minute for the key "alice"/ });
  t.equal(fake.graphqlRequests.length, 3);

  const bob = { 'x-api-key': BOB };
  t.equal((await post(proxy.url, bob)).status, 200, 'each key has its own budget');
  t.equal((await post(proxy.url, bob)).status, 429, 'and its own limit from PROXY_CONFIG');
  t.equal(fake.graphqlRequests.length, 4);
});

t.test('CORS: loopback origins by default, preflights answered here, other origins refused', async (t) => {
  const fake = await startFake(t);
  const proxy = await startProxy(t, fake, fakeEnv(fake));
  const preflight = (origin: string) =>
    request(`${proxy.url}/graphql`, {
      method: 'OPTIONS',
      headers: { origin, 'access-control-request-method': 'POST', 'access-control-request-headers': 'content-type' },
    });
  const allowed = await preflight('http://localhost:3000');
  t.equal(allowed.statusCode, 204);
  t.equal(allowed.headers['access-control-allow-origin'], 'http://localhost:3000');
  t.match(allowed.headers['access-control-allow-methods'], /POST/);
  await allowed.body.dump();
  const refused = await preflight('https://evil.example.com');
  t.equal(refused.headers['access-control-allow-origin'], undefined);
  await refused.body.dump();

  const fromApp = await post(proxy.url, { origin: 'http://127.0.0.1:5173' });
  t.equal(fromApp.status, 200);
  t.equal(fromApp.headers['access-control-allow-origin'], 'http://127.0.0.1:5173');
  const fromElsewhere = await post(proxy.url, { origin: 'https://evil.example.com' }, 'query=x');
  t.equal(fromElsewhere.status, 403, 'a page elsewhere cannot spend the points even with a simple request');
  t.equal(JSON.parse(fromElsewhere.text).error, 'forbidden_origin');
  t.equal(fake.graphqlRequests.length, 1, 'only the allowed request went upstream');
});

t.test('CORS_ORIGINS replaces the default', async (t) => {
  const fake = await startFake(t);
  const proxy = await startProxy(t, fake, { ...fakeEnv(fake), CORS_ORIGINS: 'https://app.example.com' });
  t.equal((await post(proxy.url, { origin: 'https://app.example.com' })).status, 200);
  t.equal((await post(proxy.url, { origin: 'http://localhost:3000' })).status, 403);
});

t.test('upstream 402 and 429 pass through unchanged, counted per key with a warning', async (t) => {
  const fake = await startFake(t);
  const proxy = await startProxy(t, fake, { ...fakeEnv(fake), PROXY_API_KEYS: `alice:${ALICE}` }, {}, [SECRET, ALICE]);
  fake.graphqlScript.push({ status: 402, body: 'points limit exceeded: usage quota reached' }, { status: 429, body: 'Too Many Sessions' }, { status: 429, body: 'Too Many Sessions' });
  const alice = { authorization: `Bearer ${ALICE}` };
  const paid = await post(proxy.url, alice);
  t.same([paid.status, paid.text], [402, 'points limit exceeded: usage quota reached']);
  t.equal((await post(proxy.url, alice)).text, 'Too Many Sessions');
  t.equal((await post(proxy.url, alice)).status, 429);
  const warnings = await waitFor(() => {
    const lines = proxy.logs().filter((l) => l.level === 40 && l.key === 'alice' && typeof l.upstreamStatus === 'number');
    return lines.length === 3 && lines;
  }, 3000, 'three warnings');
  t.match(warnings[0]!.msg, /upstream answered 402: Bitquery points exhausted or no active billing period/);
  t.match(warnings[2], { upstreamStatus: 429, count: 2, msg: /rate, session or stream limit/ });
});

t.test('WebSocket streams per key are capped', async (t) => {
  const fake = await startFake(t);
  // WS_MODE=relay: a relayed socket takes a place at its handshake (share mode counts subscriptions: test/subscriptions/).
  const proxy = await startProxy(t, fake, { ...fakeEnv(fake), WS_MODE: 'relay', PROXY_API_KEYS: `alice:${ALICE},bob:${BOB}`, WS_MAX_STREAMS_PER_KEY: '1' }, {}, [SECRET, ALICE, BOB]);
  const open = (key: string) =>
    new Promise<WebSocket | number>((resolve) => {
      const ws = new WebSocket(`${proxy.url.replace('http', 'ws')}/graphql`, 'graphql-ws', { headers: { 'x-api-key': key } });
      ws.once('open', () => resolve(ws));
      ws.once('unexpected-response', (_req, res) => resolve(res.statusCode!));
    });
  const first = await open(ALICE);
  t.type(first, WebSocket);
  t.equal(await open(ALICE), 503, 'alice’s second stream is over her cap');
  const other = await open(BOB);
  t.type(other, WebSocket, 'bob has his own');
  t.equal(fake.wsHandshakes.length, 2);
  t.equal(fake.wsHandshakes.some((h) => JSON.stringify(h.headers).includes('-key-')), false, 'keys never reach the upstream');
  (first as WebSocket).close();
  (other as WebSocket).close();
  await waitFor(async () => {
    const again = await open(ALICE);
    if (again instanceof WebSocket) again.close();
    return again instanceof WebSocket;
  }, 3000, 'a freed place');
});
