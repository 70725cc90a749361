// HTTP forwarding end to end: a real proxy process between a real client and the fake Bitquery.
import t from 'tap';
import { createServer as createHttpServer, request as httpRequest } from 'node:http';
import { mkdtempSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { request, Agent } from 'undici';
import { startFake, startPair, startProxy } from '../helpers/pair.js';
import { closedPort } from '../helpers/ports.js';
import { waitFor } from '../helpers/proxy-process.js';

const QUERY = JSON.stringify({ query: '{ EVM { Blocks { Block { Number } } } }', variables: { limit: 1 }, operationName: null });

async function post(url: string, body: string | Buffer = QUERY, headers: Record<string, string> = {}) {
  const res = await request(url, { method: 'POST', body, headers: { 'content-type': 'application/json', ...headers } });
  return { status: res.statusCode, headers: res.headers, text: await res.body.text() };
}

function rawPost(url: string, body: string, headers: Record<string, string>): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(url, { method: 'POST', headers }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (chunk) => (text += chunk));
      res.on('end', () => resolve({ status: res.statusCode!, text }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

async function get(url: string, headers: Record<string, string> = {}) {
  const res = await request(url, { headers });
  return { status: res.statusCode, headers: res.headers, text: await res.body.text() };
}

t.test('POST /graphql is forwarded with the token, and the answer comes back as sent', async (t) => {
  const { fake, proxy } = await startPair(t);
  const res = await post(`${proxy.url}/graphql`);
  t.equal(res.status, 200);
  t.match(res.headers['content-type'], /application\/json/);
  const echo = JSON.parse(res.text).data.echo;
  t.equal(echo.query, JSON.parse(QUERY).query);
  t.same(echo.variables, { limit: 1 });
  const seen = fake.graphqlRequests.at(-1)!;
  t.equal(seen.authorized, true);
  t.equal(seen.headers.authorization, `Bearer ${fake.issuedTokens[0]}`);
  t.equal(seen.body.toString(), QUERY, 'the body arrives byte for byte');
  t.equal(fake.tokenRequests.length, 1);
  t.same(fake.tokenRequests[0]!.form, { grant_type: 'client_credentials', scope: 'api', client_id: fake.clientId, client_secret: fake.clientSecret });
});

t.test('GET keeps the query string but drops a token parameter; /eap is proxied too', async (t) => {
  const { fake, proxy } = await startPair(t);
  const res = await get(`${proxy.url}/eap?query=%7B%20hello%20%7D&token=client-token&variables=%7B%7D&Token=keep`);
  t.equal(res.status, 200);
  const seen = fake.graphqlRequests.at(-1)!;
  t.equal(seen.path, '/eap');
  t.same(seen.query, { query: '{ hello }', variables: '{}', Token: 'keep' });
  t.equal(seen.token, fake.issuedTokens[0], 'the proxy token, not the client one');
  t.notMatch(proxy.output(), /client-token/, 'the client token is not logged either');
});

t.test('inbound credentials, cookies and hop-by-hop headers are dropped; Host does not pick the target', async (t) => {
  // A Host this proxy answers to (anything else gets 421: test/proxy/site.test.ts), yet not its target.
  const { fake, proxy } = await startPair(t, { env: { ALLOWED_HOSTS: 'evil.example.com' } });
  // node:http, because undici (rightly) refuses to send hop-by-hop headers at all.
  const res = await rawPost(`${proxy.url}/graphql`, QUERY, {
    'content-type': 'application/json',
    authorization: 'Bearer client-supplied',
    'x-api-key': 'client-key',
    cookie: 'session=abc',
    connection: 'keep-alive, x-hop',
    'x-hop': 'gone',
    'keep-alive': 'timeout=5',
    'x-custom': 'kept',
    host: 'evil.example.com',
  });
  t.equal(res.status, 200);
  const h = fake.graphqlRequests.at(-1)!.headers;
  t.equal(h.authorization, `Bearer ${fake.issuedTokens[0]}`);
  t.equal(h['x-api-key'], undefined);
  t.equal(h.cookie, undefined);
  t.equal(h['x-hop'], undefined);
  t.equal(h['keep-alive'], undefined);
  t.equal(h['x-custom'], 'kept');
  t.match(h.host, /^127\.0\.0\.1:\d+$/);
});

t.test('other paths get 404 JSON, other methods 405, and nothing reaches the upstream', async (t) => {
  const { fake, proxy } = await startPair(t);
  const missing = await post(`${proxy.url}/graphql/../admin`);
  t.equal(missing.status, 404);
  const other = await get(`${proxy.url}/v1/graphql?token=abc`);
  t.equal(other.status, 404);
  t.same(JSON.parse(other.text), { error: 'not_found', message: 'nothing at GET /v1/graphql; proxied paths: /graphql, /eap' });
  const put = await request(`${proxy.url}/graphql`, { method: 'PUT', body: '{}' });
  t.equal(put.statusCode, 405);
  t.equal(put.headers.allow, 'GET, POST');
  t.equal((await put.body.json() as { error: string }).error, 'method_not_allowed');
  t.equal(fake.graphqlRequests.length, 0);
});

t.test('a body over BODY_LIMIT gets 413 JSON and is not forwarded', async (t) => {
  const { fake, proxy } = await startPair(t, { env: { BODY_LIMIT: '1000' } });
  const res = await post(`${proxy.url}/graphql`, 'x'.repeat(1001));
  t.equal(res.status, 413);
  t.same(JSON.parse(res.text), { error: 'payload_too_large', message: 'the request body is larger than BODY_LIMIT (1000 bytes)' });
  t.equal((await post(`${proxy.url}/graphql`, 'y'.repeat(1000))).status, 200, 'at the limit is fine');
  t.equal(fake.graphqlRequests.length, 1);
});

t.test('any content type, and no content type, is forwarded as raw bytes', async (t) => {
  const { fake, proxy } = await startPair(t);
  const bytes = Buffer.from([0, 1, 2, 250, 255]);
  t.equal((await post(`${proxy.url}/graphql`, bytes, { 'content-type': 'application/graphql' })).status, 200);
  t.same(fake.graphqlRequests.at(-1)!.body, bytes);
  const raw = await request(`${proxy.url}/graphql`, { method: 'POST', body: '{ hello }' });
  t.equal(raw.statusCode, 200);
  await raw.body.dump();
  t.equal(fake.graphqlRequests.at(-1)!.body.toString(), '{ hello }');
});

t.test('upstream errors pass through unchanged: 402, 403, 429, 500 bodies and headers', async (t) => {
  const { fake, proxy } = await startPair(t);
  const cases: { status: number; body: string; headers?: Record<string, string> }[] = [
    { status: 402, body: 'No active billing period' },
    { status: 403, body: 'Forbidden' },
    { status: 429, body: 'Too Many Sessions', headers: { 'x-ratelimit-limit': '30' } },
    { status: 500, body: 'Too many simultaneous queries' },
    { status: 200, body: '{"errors":[{"message":"Cannot query field"}]}', headers: { 'content-type': 'application/json' } },
  ];
  fake.graphqlScript.push(...cases);
  for (const c of cases) {
    const res = await post(`${proxy.url}/graphql`);
    t.equal(res.status, c.status);
    t.equal(res.text, c.body);
    for (const [k, v] of Object.entries(c.headers ?? {})) t.equal(res.headers[k], v);
  }
  t.equal(fake.tokenRequests.length, 1, 'none of these renews the token');
});

function peakRssKb(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(/VmHWM:\s+(\d+)/.exec(status)![1]);
}

t.test('a 200 MB response streams through without being held in memory', async (t) => {
  const { proxy } = await startPair(t, { env: { LOG_LEVEL: 'info' } });
  await post(`${proxy.url}/graphql`);
  const before = peakRssKb(proxy.child.pid!);
  // Garbage collection lags by tens of MB, so the response must be much larger than that lag.
  const size = 200 * 1024 * 1024;
  const res = await request(`${proxy.url}/graphql`, {
    method: 'POST',
    body: JSON.stringify({ query: '{ blob }', variables: { bytes: size } }),
    headers: { 'content-type': 'application/json' },
  });
  t.equal(res.statusCode, 200);
  let received = 0;
  for await (const chunk of res.body) received += (chunk as Buffer).length;
  t.ok(received > size, `all ${received} bytes arrived`);
  const grown = peakRssKb(proxy.child.pid!) - before;
  t.ok(grown < 100 * 1024, `proxy peak memory grew by ${grown} KiB, well under the 200 MiB response`);
});

t.test('upstream 401: one fresh token, the identical request re-sent once, the second answer returned', async (t) => {
  const { fake, proxy } = await startPair(t);
  await post(`${proxy.url}/graphql`);
  const body = JSON.stringify({ query: '{ hello }', variables: { n: 42 } });
  fake.rejectNextTokens = 1;
  const res = await post(`${proxy.url}/graphql?x=1`, body);
  t.equal(res.status, 200);
  t.equal(fake.tokenRequests.length, 2);
  const [rejected, retried] = fake.graphqlRequests.slice(-2);
  t.equal(rejected!.token, fake.issuedTokens[0]);
  t.equal(retried!.token, fake.issuedTokens[1]);
  t.same(retried!.body, rejected!.body, 'same body');
  t.equal(retried!.body.toString(), body);
  t.same(retried!.query, rejected!.query, 'same query string');
  t.equal(retried!.headers['content-type'], rejected!.headers['content-type']);
});

t.test('never more than two attempts: a second 401 is returned to the client as sent', async (t) => {
  const { fake, proxy } = await startPair(t);
  await post(`${proxy.url}/graphql`);
  const before = fake.graphqlRequests.length;
  fake.rejectNextTokens = 2;
  const res = await post(`${proxy.url}/graphql`);
  t.equal(res.status, 401);
  t.equal(res.text, 'Unauthorized');
  t.equal(fake.graphqlRequests.length - before, 2);
});

t.test('a 401 with a large body is kept only up to 64 KiB: the retry still comes, and without a fresh token the kept part is passed back', async (t) => {
  const big = Buffer.alloc(300 * 1024, 'u');
  const { fake, proxy } = await startPair(t);
  fake.graphqlScript.push({ status: 401, body: big });
  const retried = await post(`${proxy.url}/graphql`);
  t.equal(retried.status, 200, 'renewed and re-sent although the 401 body was not read whole');
  t.equal(JSON.parse(retried.text).data.echo.query, JSON.parse(QUERY).query);

  // Static mode: no other token to be had, so the 401 goes back, cut to what was kept.
  const token = fake.issueToken();
  const staticProxy = await startProxy(t, fake, { BITQUERY_TOKEN: token, BITQUERY_UPSTREAM: fake.url });
  fake.graphqlScript.push({ status: 401, body: big });
  const passed = await post(`${staticProxy.url}/graphql`);
  t.equal(passed.status, 401);
  t.ok(passed.text.length > 0 && passed.text.length <= 64 * 1024, `kept ${passed.text.length} bytes`);
  t.equal(passed.text, 'u'.repeat(passed.text.length), 'the start of the upstream body');
  t.equal(Number(passed.headers['content-length']), passed.text.length);
});

t.test('forty concurrent requests that all hit 401 cause exactly one token request', async (t) => {
  // Forty upstream requests, not one shared by forty clients (that is test/savings/e2e.test.ts).
  const { fake, proxy } = await startPair(t, { env: { COALESCE: 'false' } });
  await post(`${proxy.url}/graphql`);
  fake.revokeAll();
  const results = await Promise.all(Array.from({ length: 40 }, () => post(`${proxy.url}/graphql`)));
  t.same(new Set(results.map((r) => r.status)), new Set([200]));
  t.equal(fake.tokenRequests.length, 2, 'the start-up token and one renewal');
});

t.test('a revoked token is replaced on the next request', async (t) => {
  const { fake, proxy } = await startPair(t);
  await post(`${proxy.url}/graphql`);
  fake.revokeAll();
  t.equal((await post(`${proxy.url}/graphql`)).status, 200);
  t.equal(fake.tokenRequests.length, 2);
  await proxy.waitForLog((l) => /rejected the token \(401\): renewing/.test(l.msg));
});

t.test('the token is renewed ahead of expiry and an expired token is never sent', async (t) => {
  const { fake, proxy } = await startPair(t, { fake: { tokenLifetimeSec: 2 } });
  await waitFor(() => fake.tokenRequests.length >= 3, 8000, 'two renewals');
  const [first, second] = fake.tokenRequests;
  const gap = second!.at - first!.at;
  // Due after 70-80% of the lifetime; it must come before the last 5%, when the token stops being sent.
  t.ok(gap >= 1300 && gap < 1900, `renewed after ${gap} ms of a 2000 ms lifetime`);
  for (let i = 0; i < 20; i += 1) t.equal((await post(`${proxy.url}/graphql`)).status, 200);
  t.ok(fake.graphqlRequests.every((r) => r.authorized), 'every forwarded token was valid');
});

t.test('token endpoint down at start: health is up, readiness and requests say why, then it recovers', async (t) => {
  const { fake, proxy } = await startPair(t, {
    env: { TOKEN_WAIT_MS: '200', TOKEN_RETRY_MIN_MS: '300', TOKEN_RETRY_MAX_MS: '300' },
    fake: {},
  });
  // The first request already happened at start-up; fail the retries for a while.
  t.equal((await get(`${proxy.url}/healthz`)).status, 200);
  fake.tokenFailures.push({ kind: 'status', status: 503 });
  await waitFor(async () => (await get(`${proxy.url}/readyz`)).status === 200, 3000, 'ready');
  fake.revokeAll();
  fake.tokenFailures.push(...Array.from({ length: 4 }, () => ({ kind: 'status' as const, status: 503 })));
  const res = await post(`${proxy.url}/graphql`);
  t.equal(res.status, 401, 'the rejected first answer is returned when no fresh token comes in time');
  const ready = await get(`${proxy.url}/readyz`);
  t.equal(ready.status, 503);
  t.match(JSON.parse(ready.text), { ready: false, reason: /token endpoint answered HTTP 503/ });
  const waited = Date.now();
  const unavailable = await post(`${proxy.url}/graphql`);
  t.equal(unavailable.status, 503);
  t.match(JSON.parse(unavailable.text), { error: 'token_unavailable', message: /HTTP 503/ });
  t.ok(Date.now() - waited < 2000, 'bounded wait');
  await waitFor(async () => (await get(`${proxy.url}/readyz`)).status === 200, 5000, 'recovery');
  t.equal((await post(`${proxy.url}/graphql`)).status, 200);
});

t.test('the first token request failing in every way still ends with a token', async (t) => {
  const { fake, proxy } = await startPair(t, { env: { TOKEN_TIMEOUT_MS: '300' }, spawn: { noWait: true } });
  fake.tokenFailures.push({ kind: 'invalid-json' }, { kind: 'missing-fields' }, { kind: 'reset' }, { kind: 'hang' }, { kind: 'status', status: 500, body: 'oops' });
  await proxy.waitForLog((l) => l.msg === 'obtained a token', 10000);
  const failures = proxy.logs().filter((l) => /^token request failed/.test(l.msg)).map((l) => l.msg);
  t.ok(failures.length >= 4, failures.join('\n'));
  t.match(failures.join('\n'), /not JSON/);
  t.match(failures.join('\n'), /no access_token/);
  t.match(failures.join('\n'), /no answer within 300 ms/);
});

t.test('rejected credentials: one clear line, no secret, slow retries', async (t) => {
  const pair = await startPair(t, { env: { BITQUERY_CLIENT_SECRET: 'wrong-secret-d41d8cd9', TOKEN_REJECTED_RETRY_MS: '400', TOKEN_WAIT_MS: '100' } });
  pair.secrets.push('wrong-secret-d41d8cd9');
  const { fake, proxy } = pair;
  await waitFor(() => fake.tokenRequests.length >= 2, 3000, 'a retry');
  const gap = fake.tokenRequests[1]!.at - fake.tokenRequests[0]!.at;
  t.ok(gap >= 300, `retried after ${gap} ms, not in a tight loop`);
  const line = await proxy.waitForLog((l) => l.level === 50 && /rejected the credentials/.test(l.msg));
  t.match(line.msg, /HTTP 401, invalid_client.*check BITQUERY_CLIENT_ID and BITQUERY_CLIENT_SECRET/);
  const res = await post(`${proxy.url}/graphql`);
  t.equal(res.status, 503);
  t.match(JSON.parse(res.text).message, /rejected the credentials/);
  t.equal(fake.graphqlRequests.length, 0);
});

t.test('HTTP Basic client authentication is an option', async (t) => {
  const { fake, proxy } = await startPair(t, { env: { BITQUERY_AUTH_METHOD: 'basic' }, fake: { authMethod: 'basic' } });
  t.equal((await post(`${proxy.url}/graphql`)).status, 200);
  t.equal(fake.tokenRequests[0]!.form.client_secret, undefined, 'no secret in the form');
  t.match(fake.tokenRequests[0]!.headers.authorization, /^Basic /);
});

t.test('upstream refusing connections: 502 JSON, fast', async (t) => {
  const port = await closedPort();
  const { proxy } = await startPair(t, { env: { BITQUERY_UPSTREAM: `http://127.0.0.1:${port}` } });
  const started = Date.now();
  const res = await post(`${proxy.url}/graphql`);
  t.equal(res.status, 502);
  t.match(JSON.parse(res.text), { error: 'upstream_refused', message: /ECONNREFUSED/ });
  t.ok(Date.now() - started < 2000);
});

t.test('upstream too slow: 504 JSON after UPSTREAM_TIMEOUT_MS', async (t) => {
  const { fake, proxy } = await startPair(t, { env: { UPSTREAM_TIMEOUT_MS: '200' } });
  fake.graphqlDelayMs = 5000;
  const started = Date.now();
  const res = await post(`${proxy.url}/graphql`);
  t.equal(res.status, 504);
  t.match(JSON.parse(res.text), { error: 'upstream_timeout' });
  t.ok(Date.now() - started < 2000);
});

t.test('a client that goes away aborts its upstream request', async (t) => {
  // A bare upstream that never answers and reports when its request's connection closes.
  let upstreamClosed!: () => void;
  const closed = new Promise<void>((resolve) => (upstreamClosed = resolve));
  let arrived!: () => void;
  const reached = new Promise<void>((resolve) => (arrived = resolve));
  const upstream = createHttpServer((req) => {
    req.socket.once('close', upstreamClosed);
    arrived();
  });
  await new Promise<void>((resolve) => upstream.listen(0, '127.0.0.1', resolve));
  t.teardown(() => upstream.close());
  const fake = await startFake(t);
  const { port } = upstream.address() as { port: number };
  const proxy = await startProxy(t, fake, { BITQUERY_TOKEN: 'static-token-1', BITQUERY_UPSTREAM: `http://127.0.0.1:${port}` }, {}, ['static-token-1']);
  const ac = new AbortController();
  const req = request(`${proxy.url}/graphql`, { method: 'POST', body: QUERY, signal: ac.signal }).catch(() => 'aborted');
  await reached;
  ac.abort();
  t.equal(await req, 'aborted');
  await closed;
  t.pass('the upstream request was abandoned');
});

t.test('static token mode never calls the token endpoint; a changed token file is used', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'bqp-static-'));
  const file = join(dir, 'token');
  const fake = await startFake(t);
  const first = fake.issueToken();
  writeFileSync(file, `${first}\n`);
  const proxy = await startProxy(t, fake, { BITQUERY_TOKEN_FILE: file, BITQUERY_UPSTREAM: fake.url, LOG_LEVEL: 'trace' });
  t.equal((await post(`${proxy.url}/graphql`)).status, 200);
  t.equal(fake.graphqlRequests.at(-1)!.token, first);
  // Replace the file the way editors and Kubernetes do: write beside it, then rename over it.
  const second = fake.issueToken();
  writeFileSync(join(dir, 'token.new'), second);
  renameSync(join(dir, 'token.new'), file);
  await proxy.waitForLog((l) => /BITQUERY_TOKEN_FILE changed/.test(l.msg));
  t.equal((await post(`${proxy.url}/graphql`)).status, 200);
  t.equal(fake.graphqlRequests.at(-1)!.token, second);
  // A rejected static token: passed back, readiness says so, no token endpoint call.
  fake.revoke(second);
  t.equal((await post(`${proxy.url}/graphql`)).status, 401);
  const ready = await get(`${proxy.url}/readyz`);
  t.equal(ready.status, 503);
  t.match(JSON.parse(ready.text).reason, /rejected the static token/);
  t.equal(fake.tokenRequests.length, 0);
});

t.test('static token from the environment', async (t) => {
  const fake = await startFake(t);
  const token = fake.issueToken();
  const proxy = await startProxy(t, fake, { BITQUERY_TOKEN: token, BITQUERY_UPSTREAM: fake.url, LOG_LEVEL: 'trace' });
  const ready = await get(`${proxy.url}/readyz`);
  t.same(JSON.parse(ready.text), { ready: true });
  t.equal((await post(`${proxy.url}/graphql`)).status, 200);
  t.equal(fake.graphqlRequests.at(-1)!.token, token);
  t.equal(fake.tokenRequests.length, 0);
});

t.test('health endpoints', async (t) => {
  const { proxy } = await startPair(t);
  const health = await get(`${proxy.url}/healthz`);
  t.equal(health.status, 200);
  t.same(JSON.parse(health.text), { status: 'ok' });
  await waitFor(async () => (await get(`${proxy.url}/readyz`)).status === 200, 3000, 'ready');
  const ready = JSON.parse((await get(`${proxy.url}/readyz`)).text);
  t.equal(ready.ready, true);
  t.ok(ready.expiresInSec > 17000 && ready.expiresInSec <= 17999);
  const probeLine = await proxy.waitForLog((l) => l.msg === 'request' && (l.req as { url: string }).url === '/healthz');
  t.equal(probeLine.level, 20, 'probe access lines are debug, not info');
});

t.test('nothing secret in the logs at trace level, even with secrets in the URL and headers', async (t) => {
  const pair = await startPair(t, { env: { LOG_LEVEL: 'trace' } });
  pair.secrets.push('client-query-token-77', 'client-bearer-88', 'client-api-key-99');
  const { proxy, fake } = pair;
  await post(`${proxy.url}/graphql?token=client-query-token-77`, QUERY, { authorization: 'Bearer client-bearer-88', 'x-api-key': 'client-api-key-99' });
  await get(`${proxy.url}/nowhere?token=client-query-token-77`);
  fake.revokeAll();
  await post(`${proxy.url}/graphql`);
  // Access lines are written once the response is sent: wait for them.
  const access = await waitFor(() => {
    const lines = proxy.logs().filter((l) => l.msg === 'request');
    return lines.length >= 3 && lines;
  }, 3000, 'one access line per request');
  t.match(JSON.stringify(access), /token=\[REDACTED\]/);
});

t.test('SIGTERM: in-flight requests finish, idle keep-alive clients do not hold the process, exit 0', async (t) => {
  const { fake, proxy } = await startPair(t, { env: { SHUTDOWN_TIMEOUT_MS: '5000' } });
  // An idle keep-alive connection...
  const agent = new Agent({ keepAliveTimeout: 60_000 });
  const warm = await request(`${proxy.url}/graphql`, { method: 'POST', body: QUERY, dispatcher: agent });
  await warm.body.dump();
  // ...and one request in flight.
  fake.graphqlScript.push({ status: 200, body: '{"data":{"slow":true}}', delayMs: 500 });
  const slow = post(`${proxy.url}/graphql`);
  await waitFor(() => fake.graphqlRequests.length >= 2, 3000, 'the slow request upstream');
  const stopped = Date.now();
  proxy.child.kill('SIGTERM');
  const res = await slow;
  t.equal(res.status, 200);
  t.equal(res.text, '{"data":{"slow":true}}');
  const { code } = await proxy.exited;
  t.equal(code, 0);
  t.ok(Date.now() - stopped < 5000, `exited ${Date.now() - stopped} ms after SIGTERM, not after the 72 s keep-alive timeout`);
  await agent.close();
});

t.test('SIGTERM: a request longer than SHUTDOWN_TIMEOUT_MS is cut, and the process still exits 0', async (t) => {
  const { fake, proxy } = await startPair(t, { env: { SHUTDOWN_TIMEOUT_MS: '300' } });
  fake.graphqlScript.push({ status: 200, body: '{}', delayMs: 10_000 });
  const hung = new Promise<string>((resolve) => {
    const req = httpRequest(`${proxy.url}/graphql`, { method: 'POST' }, (res) => {
      res.resume();
      res.on('end', () => resolve(`status ${res.statusCode}`));
    });
    req.on('error', () => resolve('cut'));
    req.end(QUERY);
  });
  await waitFor(() => fake.graphqlRequests.length >= 1, 3000, 'the request upstream');
  const stopped = Date.now();
  proxy.child.kill('SIGTERM');
  t.equal((await proxy.exited).code, 0);
  t.ok(Date.now() - stopped < 2000);
  t.equal(await hung, 'cut');
});
