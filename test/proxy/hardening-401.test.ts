// A client cannot force token renewals: Authorization goes first, the number of request headers is
// capped, and a 401 is taken as the token's fault only when the token was not seen to work since
// the request was sent. Real revocations are still renewed once.
import t from 'tap';
import { createServer, request as httpRequest } from 'node:http';
import { request } from 'undici';
import { startFake, startPair, startProxy } from '../helpers/pair.js';
import { waitFor } from '../helpers/proxy-process.js';
import { wsOpen, wsRefusal } from '../helpers/ws-refusal.js';

const QUERY = JSON.stringify({ query: '{ hello }' });

async function post(url: string, headers: Record<string, string> = {}) {
  const res = await request(`${url}/graphql`, { method: 'POST', body: QUERY, headers: { 'content-type': 'application/json', ...headers } });
  return { status: res.statusCode, text: await res.body.text() };
}

/** node:http, which sends any number of headers (Node's server keeps up to 2000). */
function rawPost(url: string, headers: Record<string, string>): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(`${url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers } }, (res) => {
      let text = '';
      res.setEncoding('utf8').on('data', (chunk: string) => (text += chunk));
      res.on('end', () => resolve({ status: res.statusCode!, text }));
    });
    req.on('error', reject);
    req.end(QUERY);
  });
}

/**
 * `count` distinct short headers. Node's own parser answers 431 by itself from about 1,000 of
 * them (its 16 KiB header limit counts some bytes per header), so 500 is what reaches the proxy.
 */
const manyHeaders = (count: number) => Object.fromEntries(Array.from({ length: count }, (_, i) => [`h${i.toString(36)}`, '1']));

const wsUrl = (url: string) => `${url.replace(/^http/, 'ws')}/graphql`;

t.test('Authorization is sent first; over 100 request headers get 431 and nothing goes upstream', async (t) => {
  const seen: string[][] = [];
  const upstream = createServer((req, res) => {
    seen.push(req.rawHeaders.filter((_, i) => i % 2 === 0).map((name) => name.toLowerCase()));
    req.resume();
    req.on('end', () => res.writeHead(200, { 'content-type': 'application/json' }).end('{"data":{"hello":"world"}}'));
  });
  upstream.on('upgrade', (_req, socket) => {
    seen.push(['upgrade']);
    socket.destroy();
  });
  await new Promise<void>((resolve) => upstream.listen(0, '127.0.0.1', resolve));
  t.teardown(() => upstream.close());
  const fake = await startFake(t);
  const token = 'static-token-hardening-0123456789';
  const { port } = upstream.address() as { port: number };
  const proxy = await startProxy(t, fake, { BITQUERY_TOKEN: token, BITQUERY_UPSTREAM: `http://127.0.0.1:${port}` }, {}, [token]);

  // Headers with numeric names would come first in any object: the order must hold for them too.
  const ok = await rawPost(proxy.url, { '7': 'a', '12': 'b', 'x-first': 'c', ...manyHeaders(90) });
  t.equal(ok.status, 200, 'a request with 97 headers is forwarded');
  const names = seen[0]!;
  const authorization = names.indexOf('authorization');
  t.ok(authorization >= 0);
  for (const client of ['7', '12', 'x-first', 'h0', 'content-type']) {
    t.ok(authorization < names.indexOf(client), `authorization comes before the client's ${client}`);
  }
  t.same(names.slice(0, authorization).filter((n) => n !== 'host' && n !== 'connection'), [], 'only the Host and Connection undici sets come before it');

  const over = await rawPost(proxy.url, manyHeaders(500));
  t.equal(over.status, 431);
  t.match(JSON.parse(over.text), { error: 'request_header_fields_too_large', message: /^the request has 50\d header lines; at most 100 are accepted$/ });
  const ws = await wsRefusal(wsUrl(proxy.url), { headers: manyHeaders(500) });
  t.equal(ws.status, 431, 'a WebSocket handshake too');
  t.equal(ws.body.error, 'request_header_fields_too_large');
  t.equal(seen.length, 1, 'neither reached the upstream');
});

t.test('a client provoking 401s cannot force renewals while the token works for others; revocations still renew once', async (t) => {
  // Each request its own upstream request (identical queries in flight would share one answer).
  const { fake, proxy } = await startPair(t, { env: { TOKEN_WAIT_MS: '30000', COALESCE: 'false' } });
  t.equal((await post(proxy.url)).status, 200);
  t.equal(fake.tokenRequests.length, 1);

  await t.test('HTTP: the 401 is passed back as it came, no token request', async (t) => {
    const before = fake.graphqlRequests.length;
    // The next request is answered 401, slowly: meanwhile the same token serves other requests.
    fake.graphqlScript.push({ status: 401, body: 'Unauthorized', delayMs: 1500 });
    const provoked = post(proxy.url, { 'x-marker': 'provokes-401' });
    await waitFor(() => fake.graphqlRequests.length > before, 10_000, 'the provoking request upstream');
    const others = await Promise.all(Array.from({ length: 5 }, () => post(proxy.url)));
    t.same(others.map((r) => r.status), [200, 200, 200, 200, 200]);
    const answer = await provoked;
    t.same(answer, { status: 401, text: 'Unauthorized' });
    t.equal(fake.graphqlRequests.filter((r) => r.headers['x-marker'] === 'provokes-401').length, 1, 'not retried');
    t.equal(fake.tokenRequests.length, 1, 'no token request');
  });

  await t.test('WebSocket: a 401 to a handshake while the token works elsewhere renews nothing', async (t) => {
    const before = fake.wsHandshakes.length;
    fake.wsRefusals.push({ status: 401, body: 'Unauthorized', delayMs: 1500 });
    const refused = wsRefusal(wsUrl(proxy.url));
    await waitFor(() => fake.wsHandshakes.length > before, 10_000, 'the handshake upstream');
    t.equal((await post(proxy.url)).status, 200);
    const r = await refused;
    t.equal(r.status, 401);
    t.equal(r.body.error, 'upstream_rejected');
    t.equal(fake.wsHandshakes.length - before, 1, 'not retried');
    t.equal(fake.tokenRequests.length, 1, 'no token request');
  });

  await t.test('a real revocation: forty concurrent 401s, one renewal, every retry succeeds', async (t) => {
    fake.revokeAll();
    const results = await Promise.all(Array.from({ length: 40 }, () => post(proxy.url)));
    t.same(new Set(results.map((r) => r.status)), new Set([200]));
    t.equal(fake.tokenRequests.length, 2, 'one renewal');
    await proxy.waitForLog((l) => /rejected the token \(401\): renewing/.test(l.msg));
    const ws = await wsOpen(wsUrl(proxy.url));
    t.equal(fake.wsHandshakes.at(-1)!.token, fake.issuedTokens[1], 'new streams use the new token');
    ws.close();
    t.equal(fake.tokenRequests.length, 2);
  });
});
