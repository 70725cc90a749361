// Issue 9 item 1: a web page elsewhere must not spend the user's points through the proxy. A
// DNS-rebinding page (a Host naming the attacker's site) gets 421, a request the browser marks
// cross-site without an allowed Origin (an `<img>`, a no-cors fetch) gets 403, both before anything
// goes upstream, over HTTP and WebSocket alike; plain clients and the probes keep working.
import t from 'tap';
import http from 'node:http';
import { WebSocket } from 'ws';
import { fakeEnv, startFake, startProxy } from '../helpers/pair.js';
import { raw } from '../helpers/raw-socket.js';
import { wsRefusal } from '../helpers/ws-refusal.js';
import { hostAllowed } from '../../src/auth/caller.js';
import type { Config } from '../../src/config/index.js';

interface Answer {
  status: number;
  body: string;
}

/** A GET with exactly these headers (node:http lets a test set Host). */
function get(url: string, path: string, headers: Record<string, string>): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = http.request(`${url}${path}`, { headers }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode!, body }));
    });
    req.on('error', reject);
    req.end();
  });
}


const QUERY = '/graphql?query=%7B%20hello%20%7D';

/** No subprotocol: relayed whatever WS_MODE is, so an accepted handshake reaches the upstream at once. */
function wsOpens(url: string, headers: Record<string, string>): Promise<void> {
  const ws = new WebSocket(`${url.replace('http', 'ws')}/graphql`, [], { headers });
  return new Promise((resolve, reject) => {
    ws.once('open', () => {
      ws.close();
      resolve();
    });
    ws.once('error', reject);
  });
}

t.test('on loopback: wrong Host 421, cross-site without Origin 403, nothing upstream; plain clients and probes pass', async (t) => {
  const fake = await startFake(t);
  const proxy = await startProxy(t, fake, fakeEnv(fake));
  const { port } = new URL(proxy.url);

  const img = await get(proxy.url, QUERY, { host: `127.0.0.1:${port}`, 'sec-fetch-site': 'cross-site', 'sec-fetch-mode': 'no-cors', 'sec-fetch-dest': 'image' });
  t.equal(img.status, 403, 'an <img> from another site');
  t.match(JSON.parse(img.body), { error: 'cross_site', message: /CORS_ORIGINS/ });
  const sameSite = await get(proxy.url, QUERY, { host: `127.0.0.1:${port}`, 'sec-fetch-site': 'same-site', 'sec-fetch-mode': 'no-cors' });
  t.equal(sameSite.status, 403, 'same-site without an Origin');
  const rebinding = await get(proxy.url, QUERY, { host: `evil.example:${port}`, 'sec-fetch-site': 'same-origin' });
  t.equal(rebinding.status, 421, 'a DNS-rebinding page');
  t.match(JSON.parse(rebinding.body), { error: 'misdirected_request', message: /evil\.example.*ALLOWED_HOSTS/ });
  const duplicate = await raw(proxy.url, `GET ${QUERY} HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n`);
  t.match(duplicate, /^HTTP\/1\.1 400 /, 'two Host headers');
  t.match(duplicate, /"error":"bad_request","message":"the request has more than one Host header"/);
  const wsRebinding = await wsRefusal(`${proxy.url.replace('http', 'ws')}/graphql`, { headers: { host: 'evil.example' } });
  t.equal(wsRebinding.status, 421, 'a WebSocket handshake with a wrong Host');
  t.equal(wsRebinding.body.error, 'misdirected_request');
  const wsCross = await wsRefusal(`${proxy.url.replace('http', 'ws')}/graphql`, { headers: { 'sec-fetch-site': 'cross-site' } });
  t.equal(wsCross.status, 403, 'a cross-site WebSocket handshake without an Origin');
  t.equal(wsCross.body.error, 'cross_site');
  t.equal(fake.graphqlRequests.length, 0, 'no HTTP request reached the upstream');
  t.equal(fake.wsHandshakes.length, 0, 'no handshake reached the upstream');

  for (const host of [`127.0.0.1:${port}`, `localhost:${port}`, 'LOCALHOST', `[::1]:${port}`, '127.0.0.1']) {
    t.equal((await get(proxy.url, QUERY, { host })).status, 200, `Host ${host}`);
  }
  t.equal((await get(proxy.url, QUERY, { host: 'localhost', 'sec-fetch-site': 'none' })).status, 200, 'typed into the address bar');
  t.equal((await get(proxy.url, QUERY, { host: 'localhost', 'sec-fetch-site': 'cross-site', origin: 'http://localhost:3000' })).status, 200, 'cross-site from an allowed origin');
  t.equal((await get(proxy.url, '/healthz', { host: 'evil.example' })).status, 200, '/healthz takes any Host');
  t.equal((await get(proxy.url, '/readyz', { host: '10.0.0.7:8080', 'sec-fetch-site': 'cross-site' })).status, 200, '/readyz too');
  await wsOpens(proxy.url, { host: `localhost:${port}` });
  t.equal(fake.graphqlRequests.length, 7);
  t.equal(fake.wsHandshakes.length, 1);
});

t.test('ALLOWED_HOSTS adds names; a non-loopback HOST accepts any Host unless it is set', async (t) => {
  const fake = await startFake(t);
  const named = await startProxy(t, fake, { ...fakeEnv(fake), ALLOWED_HOSTS: 'bitquery-proxy, Proxy.Example.com' });
  t.equal((await get(named.url, QUERY, { host: 'bitquery-proxy:8080' })).status, 200, 'a compose service name');
  t.equal((await get(named.url, QUERY, { host: 'proxy.example.com' })).status, 200, 'in any letter case');
  t.equal((await get(named.url, QUERY, { host: 'localhost' })).status, 200, 'loopback names still');
  t.equal((await get(named.url, QUERY, { host: 'evil.example' })).status, 421);
  await wsOpens(named.url, { host: 'bitquery-proxy' });

  // (A non-loopback HOST with ALLOWED_HOSTS set follows the same list: see test/config.test.ts.)
  const network = await startProxy(t, fake, { ...fakeEnv(fake), HOST: '0.0.0.0', PROXY_ALLOW_UNAUTHENTICATED: 'true' });
  const networkUrl = `http://127.0.0.1:${new URL(network.url).port}`;
  t.equal((await get(networkUrl, QUERY, { host: 'gateway.team.internal' })).status, 200, 'a network gateway accepts any Host by default');
  t.equal((await get(networkUrl, QUERY, { host: 'gateway.team.internal', 'sec-fetch-site': 'cross-site' })).status, 403, 'but not cross-site browser requests');
});

t.test('hostAllowed: loopback names on any port, listed names, * for any', async (t) => {
  const config = (allowedHosts: string[] | '*') => ({ allowedHosts }) as Config;
  t.ok(hostAllowed(config([]), '[::1]:8080'));
  t.ok(hostAllowed(config([]), '127.0.0.2'));
  t.notOk(hostAllowed(config([]), '::1'), 'an unbracketed IPv6 address is no Host');
  t.notOk(hostAllowed(config([]), 'localhost.evil.example'));
  t.notOk(hostAllowed(config([]), ''));
  t.ok(hostAllowed(config(['[fd00::1]']), '[FD00::1]:80'));
  t.ok(hostAllowed(config('*'), 'anything.example'));
});
