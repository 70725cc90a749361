// GraphQL subscriptions through the proxy process over real loopback sockets: token injection,
// both subprotocols, handshake failures, close codes, backpressure, keep-alive, limits, shutdown.
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { request, type ClientRequest, type IncomingHttpHeaders, type IncomingMessage } from 'node:http';
import net, { type AddressInfo } from 'node:net';
import { randomBytes } from 'node:crypto';
import t, { type Test } from 'tap';
import { createClient } from 'graphql-ws';
import { WebSocket, type ClientOptions } from 'ws';
import { FakeBitquery, type FakeBitqueryOptions } from '../fake-bitquery/index.js';
import { fakeEnv, SECRET, startPair, type Pair } from '../helpers/pair.js';
import { spawnProxy, waitFor, type LogLine, type ProxyProcess } from '../helpers/proxy-process.js';
import { assertNoLeaks } from '../helpers/secrets.js';

// ---------------------------------------------------------------------------------------------
// helpers

interface Closed {
  code: number;
  reason: string;
}

interface Conn {
  ws: WebSocket;
  received: { data: Buffer; isBinary: boolean }[];
  closed: Promise<Closed>;
}

function wsUrl(proxy: ProxyProcess, pathAndQuery = '/graphql'): string {
  return proxy.url.replace(/^http/, 'ws') + pathAndQuery;
}

function closedOf(ws: WebSocket): Promise<Closed> {
  return new Promise((resolve) => ws.once('close', (code, reason) => resolve({ code, reason: reason.toString() })));
}

/** Opens a client WebSocket and records everything it receives. */
async function connect(url: string, protocols: string[] = ['graphql-ws'], options: ClientOptions = {}): Promise<Conn> {
  const ws = new WebSocket(url, protocols, options);
  const received: Conn['received'] = [];
  ws.on('message', (data, isBinary) => received.push({ data: data as Buffer, isBinary }));
  const closed = closedOf(ws);
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('error', reject);
  });
  ws.on('error', () => {});
  return { ws, received, closed };
}

interface Refusal {
  status: number;
  headers: IncomingHttpHeaders;
  body: { error: string; message: string };
  ms: number;
}

/** Opens a client WebSocket that must be refused; resolves with the HTTP answer. */
function refusal(url: string, protocols: string[] = ['graphql-ws'], options: ClientOptions = {}): Promise<Refusal> {
  const started = Date.now();
  const ws = new WebSocket(url, protocols, options);
  return new Promise((resolve, reject) => {
    ws.on('error', (err) => reject(err));
    ws.once('open', () => {
      ws.terminate();
      reject(new Error('the handshake was accepted'));
    });
    ws.once('unexpected-response', (_req: ClientRequest, res: IncomingMessage) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.once('end', () => {
        ws.removeAllListeners('error');
        ws.on('error', () => {});
        ws.terminate();
        try {
          const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as Refusal['body'];
          resolve({ status: res.statusCode!, headers: res.headers, body, ms: Date.now() - started });
        } catch (err) {
          reject(err);
        }
      });
    });
  });
}

const messages = (c: Conn) => c.received.filter((m) => !m.isBinary).map((m) => JSON.parse(m.data.toString('utf8')) as { type: string; id?: string; payload?: any });
const ticks = (c: Conn, id = '1') => messages(c).filter((m) => m.type === 'data' && m.id === id).map((m) => m.payload.data.ticks.n as number);

/** Legacy graphql-ws: connection_init → connection_ack. */
async function legacyInit(c: Conn): Promise<void> {
  c.ws.send(JSON.stringify({ type: 'connection_init', payload: {} }));
  await waitFor(() => messages(c).some((m) => m.type === 'connection_ack'), 3000, 'connection_ack');
}

function legacyStart(c: Conn, id: string, query: string): void {
  c.ws.send(JSON.stringify({ type: 'start', id, payload: { query } }));
}

/** The fake's server-side socket of the next connection. */
function nextServerSocket(fake: FakeBitquery): Promise<WebSocket> {
  return new Promise((resolve) => fake.once('ws-connection', (ws: WebSocket) => resolve(ws)));
}

async function noUpstreamSockets(fake: FakeBitquery): Promise<void> {
  await waitFor(() => fake.openSockets() === 0, 3000, 'the fake to have no open WebSocket');
}

function memoryKb(pid: number): { rss: number; hwm: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const field = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(status)?.[1]);
  return { rss: field('VmRSS'), hwm: field('VmHWM') };
}

const wsLogs = (proxy: ProxyProcess, msg: string) => proxy.logs().filter((l: LogLine) => l.component === 'ws' && l.msg === msg);

/** These tests are about the 1:1 relay (share mode's are in test/subscriptions/). */
const RELAY = { WS_MODE: 'relay' };

/** Like startPair, but the fake can be prepared before the proxy starts. */
async function startPreparedPair(t: Test, prepare: (fake: FakeBitquery) => void, env: Record<string, string>, fakeOptions: FakeBitqueryOptions = {}): Promise<Pair> {
  const fake = await FakeBitquery.start({ clientSecret: SECRET, ...fakeOptions });
  prepare(fake);
  const proxy = await spawnProxy({ ...fakeEnv(fake), ...RELAY, ...env });
  const pair: Pair = { fake, proxy, secrets: [SECRET] };
  t.teardown(async () => {
    await proxy.stop();
    await fake.close();
    assertNoLeaks(proxy.output(), [...pair.secrets, ...fake.issuedTokens]);
  });
  return pair;
}

// ---------------------------------------------------------------------------------------------
// Proxy processes take a while to start on a small machine, so each one serves several subtests.
// The token refresher renews on a 401 at most once a second, which is why the 401 subtests sit in
// different processes.

t.test('default settings', async (t) => {
  const pair = await startPair(t, { fake: { keepAliveMs: 60_000 }, env: RELAY });
  const { fake, proxy } = pair;
  const CLIENT_TOKEN = 'client-own-token-7c1e9a';
  const CLIENT_KEY = 'client-api-key-3b8d52';
  pair.secrets.push(CLIENT_TOKEN, CLIENT_KEY);

  t.afterEach(() => noUpstreamSockets(fake));

  await t.test('the token goes upstream, the client credentials do not; legacy graphql-ws streams', async (t) => {
    const before = fake.wsHandshakes.length;
    const c = await connect(wsUrl(proxy, `/graphql?network=eth&token=${CLIENT_TOKEN}&x=1`), ['graphql-ws'], {
      headers: { Authorization: `Bearer ${CLIENT_TOKEN}`, 'X-API-KEY': CLIENT_KEY, 'User-Agent': 'ws-test' },
    });
    t.equal(c.ws.protocol, 'graphql-ws', 'the client gets the subprotocol');

    const handshakes = fake.wsHandshakes.slice(before);
    t.equal(handshakes.length, 1, 'one upstream handshake');
    const h = handshakes[0]!;
    t.ok(h.accepted, 'the upstream accepted it');
    t.equal(h.path, '/graphql');
    t.ok(fake.issuedTokens.includes(h.query.token!), 'the token query parameter is an issued token');
    t.equal(h.headers.authorization, `Bearer ${h.query.token}`, 'and the same token as Bearer');
    t.equal(h.headers['x-api-key'], undefined, 'X-API-KEY dropped');
    t.same({ network: h.query.network, x: h.query.x }, { network: 'eth', x: '1' }, 'other query parameters kept');
    t.equal(h.headers['user-agent'], 'ws-test', 'ordinary headers kept');
    t.notOk(JSON.stringify(h).includes(CLIENT_TOKEN), 'the client token reached the upstream nowhere');
    t.same(h.protocols, ['graphql-ws']);

    await legacyInit(c);
    legacyStart(c, '1', 'subscription { ticks(count: 3) { n } }');
    await waitFor(() => messages(c).some((m) => m.type === 'complete' && m.id === '1'), 3000, 'complete');
    t.same(ticks(c), [1, 2, 3], 'start → data, in order');

    c.ws.close(1000, 'done');
    t.same(await c.closed, { code: 1000, reason: 'done' });

    const opened = await proxy.waitForLog((l) => l.component === 'ws' && l.msg === 'stream opened');
    t.match(opened, { path: '/graphql', protocol: 'graphql-ws', attempts: 1 });
    t.notOk(String(opened.url).includes(CLIENT_TOKEN), 'the logged URL is redacted');
    const closed = await proxy.waitForLog((l) => l.component === 'ws' && l.msg === 'stream closed');
    t.match(closed, { path: '/graphql', protocol: 'graphql-ws', closedBy: 'client', code: 1000, ms: Number });
    t.ok((closed.bytesToClient as number) > 0 && (closed.bytesFromClient as number) > 0, 'bytes each way are logged');
  });

  await t.test('graphql-transport-ws through graphql-ws createClient: subscribe → next', async (t) => {
    const before = fake.wsHandshakes.length;
    let protocol: string | undefined;
    const client = createClient({
      url: wsUrl(proxy),
      webSocketImpl: WebSocket,
      retryAttempts: 0,
      on: { connected: (socket) => void (protocol = (socket as WebSocket).protocol) },
    });
    const seen: number[] = [];
    for await (const result of client.iterate<{ ticks: { n: number } }>({ query: 'subscription { ticks(count: 3) { n } }' })) {
      seen.push(result.data!.ticks.n);
    }
    t.same(seen, [1, 2, 3], 'next events arrive');
    t.equal(protocol, 'graphql-transport-ws');
    t.same(fake.wsHandshakes[before]!.protocols, ['graphql-transport-ws']);
    await client.dispose();
  });

  await t.test('all offered subprotocols go upstream; the client gets the one the upstream picked', async (t) => {
    const before = fake.wsHandshakes.length;
    // The fake (like Bitquery) prefers legacy graphql-ws even when listed second.
    const both = await connect(wsUrl(proxy), ['graphql-transport-ws', 'graphql-ws']);
    t.equal(both.ws.protocol, 'graphql-ws');
    t.same(fake.wsHandshakes[before]!.protocols, ['graphql-transport-ws', 'graphql-ws']);
    const none = await connect(wsUrl(proxy, '/eap'), []);
    t.equal(none.ws.protocol, '', 'no subprotocol offered, none picked');
    t.equal(fake.wsHandshakes[before + 1]!.path, '/eap', '/eap is proxied too');
    both.ws.close();
    none.ws.close();
    await Promise.all([both.closed, none.closed]);
  });

  await t.test('close codes and reasons pass both ways', async (t) => {
    const logged = wsLogs(proxy, 'stream closed').length;
    const pairUp = async () => {
      const server = nextServerSocket(fake);
      const c = await connect(wsUrl(proxy));
      const s = await server;
      return { c, s, sClosed: closedOf(s) };
    };

    let p = await pairUp();
    p.s.close(4403, 'forbidden');
    t.same(await p.c.closed, { code: 4403, reason: 'forbidden' }, 'upstream 4403 reaches the client');

    p = await pairUp();
    p.c.ws.close(4000, 'bye');
    t.same(await p.sClosed, { code: 4000, reason: 'bye' }, 'client 4000 reaches the upstream');

    p = await pairUp();
    p.s.close(1013, 'try later');
    t.same(await p.c.closed, { code: 1013, reason: 'try later' }, 'upstream 1013 passes');

    p = await pairUp();
    p.s.close(1001, 'restarting');
    t.same(await p.c.closed, { code: 1001, reason: 'restarting' }, 'upstream 1001 passes');

    p = await pairUp();
    p.s.close();
    t.same(await p.c.closed, { code: 1005, reason: '' }, 'a close frame without a code stays without a code (1005)');

    p = await pairUp();
    p.s.terminate();
    t.same(await p.c.closed, { code: 1001, reason: 'upstream went away' }, 'upstream dropped (1006) → client 1001');

    p = await pairUp();
    p.c.ws.terminate();
    t.same(await p.sClosed, { code: 1001, reason: 'client went away' }, 'client dropped (1006) → upstream 1001');

    await waitFor(() => wsLogs(proxy, 'stream closed').length === logged + 7, 3000, 'seven "stream closed" lines');
    const closedBy = wsLogs(proxy, 'stream closed').slice(logged).map((l) => [l.closedBy, l.code]);
    t.same(
      closedBy,
      [
        ['upstream', 4403],
        ['client', 4000],
        ['upstream', 1013],
        ['upstream', 1001],
        ['upstream', 1005],
        ['upstream', 1006],
        ['client', 1006],
      ],
      'the log says who closed, with which code',
    );
  });

  await t.test('binary and text messages pass unchanged and in order', async (t) => {
    const server = nextServerSocket(fake);
    const c = await connect(wsUrl(proxy));
    const s = await server;
    const atServer: { data: Buffer; isBinary: boolean }[] = [];
    s.on('message', (data, isBinary) => atServer.push({ data: data as Buffer, isBinary }));

    const blob = Buffer.concat([Buffer.from([0, 255, 0xc3, 0x28]), randomBytes(200_000)]);
    s.send(blob, { binary: true });
    s.send('text ü ✓', { binary: false });
    for (let i = 0; i < 500; i++) s.send(`#${i}`);
    await waitFor(() => c.received.length === 502, 5000, '502 messages');
    t.ok(c.received[0]!.isBinary && c.received[0]!.data.equals(blob), 'binary upstream → client, byte for byte');
    t.same([c.received[1]!.isBinary, c.received[1]!.data.toString()], [false, 'text ü ✓'], 'text stays text');
    t.same(c.received.slice(2).map((m) => m.data.toString()), Array.from({ length: 500 }, (_, i) => `#${i}`), 'in order');

    // The fake parses whatever arrives as JSON, so the binary message is a valid one.
    const init = Buffer.from('{"type":"connection_init","payload":{}}');
    c.ws.send(init, { binary: true });
    c.ws.send('{"type":"connection_init"}');
    await waitFor(() => atServer.length === 2, 3000, 'two messages at the upstream');
    t.ok(atServer[0]!.isBinary && atServer[0]!.data.equals(init), 'binary client → upstream, byte for byte');
    t.same([atServer[1]!.isBinary, atServer[1]!.data.toString()], [false, '{"type":"connection_init"}']);

    c.ws.close();
    await c.closed;
  });

  await t.test('open streams survive token renewal and revocation; new streams use the new token', async (t) => {
    const first = fake.wsHandshakes.length;
    const c = await connect(wsUrl(proxy));
    await legacyInit(c);
    legacyStart(c, '1', 'subscription { ticks { n } }');
    await waitFor(() => ticks(c).length >= 2, 3000, 'first events');
    const oldToken = fake.wsHandshakes[first]!.token!;

    fake.revokeAll();
    const atRevoke = ticks(c).length;
    await waitFor(() => ticks(c).length >= atRevoke + 3, 3000, 'events after the revocation');

    const c2 = await connect(wsUrl(proxy));
    const later = fake.wsHandshakes.slice(first + 1);
    t.same(later.map((h) => h.accepted), [false, true], 'the revoked token got 401, a fresh one was fetched');
    t.not(later[1]!.token, oldToken, 'the new stream uses the new token');
    t.ok(fake.isValid(later[1]!.token!));
    t.notOk(fake.isValid(oldToken), 'the old token is revoked...');
    const atNew = ticks(c).length;
    await waitFor(() => ticks(c).length >= atNew + 3, 3000, 'events on the old stream after the new one opened');
    t.equal(c.ws.readyState, WebSocket.OPEN, '...and its stream still flows');

    c.ws.close();
    c2.ws.close();
    await Promise.all([c.closed, c2.closed]);
  });

  await t.test('upgrades elsewhere get 404 JSON; HTTP still works', async (t) => {
    for (const path of ['/other', '/graphql/x', '/healthz']) {
      const r = await refusal(wsUrl(proxy, path));
      t.equal(r.status, 404, `${path}: 404`);
      t.equal(r.body.error, 'not_found');
      t.match(r.headers['content-type'], /^application\/json/);
    }
    const res = await fetch(`${proxy.url}/healthz`);
    t.equal(res.status, 200, 'plain HTTP is unaffected by the upgrade handler');

    // Node hands every Upgrade request to the upgrade handler: one that is not a WebSocket
    // handshake is answered, not left hanging.
    const h2c = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = request(`${proxy.url}/graphql`, { headers: { connection: 'Upgrade, HTTP2-Settings', upgrade: 'h2c', 'http2-settings': '' } });
      req.once('response', (r) => {
        let body = '';
        r.setEncoding('utf8').on('data', (c: string) => (body += c)).once('end', () => resolve({ status: r.statusCode!, body }));
      });
      req.once('error', reject);
      req.end();
    });
    t.equal(h2c.status, 400, 'an h2c upgrade gets 400');
    t.match(JSON.parse(h2c.body), { error: 'bad_request' });
  });
});

t.test('WS_MAX_STREAMS=2, WS_MAX_BUFFERED_BYTES=1 MiB, SHUTDOWN_TIMEOUT_MS=3000', async (t) => {
  const { fake, proxy } = await startPair(t, {
    env: { ...RELAY, WS_MAX_STREAMS: '2', WS_MAX_BUFFERED_BYTES: String(1 << 20), SHUTDOWN_TIMEOUT_MS: '3000' },
  });
  await waitFor(() => fake.issuedTokens.length === 1, 3000, 'the first token');

  await t.test('upstream 401 twice: the client gets 401 JSON', async (t) => {
    fake.rejectNextTokens = 2;
    const r = await refusal(wsUrl(proxy));
    t.equal(r.status, 401);
    t.equal(r.body.error, 'upstream_rejected');
    t.same(fake.wsHandshakes.map((h) => h.accepted), [false, false], 'exactly two handshakes, the second with a fresh token');
    t.not(fake.wsHandshakes[1]!.token, fake.wsHandshakes[0]!.token);
    t.equal(fake.openSockets(), 0);
  });

  await t.test('other upstream refusals keep their status, body and Retry-After; no token renewal', async (t) => {
    const before = fake.wsHandshakes.length;
    const tokens = fake.tokenRequests.length;
    fake.wsRefusals.push({ status: 429, body: 'Too Many Sessions', headers: { 'Retry-After': '5' } }, { status: 403, body: 'Forbidden' });
    const limited = await refusal(wsUrl(proxy));
    t.equal(limited.status, 429);
    t.equal(limited.headers['retry-after'], '5');
    t.same(limited.body, { error: 'upstream_rejected', message: 'the upstream refused the WebSocket handshake with 429: Too Many Sessions' });
    const forbidden = await refusal(wsUrl(proxy));
    t.equal(forbidden.status, 403);
    t.match(forbidden.body.message, /with 403: Forbidden/);
    t.equal(fake.wsHandshakes.length - before, 2, 'one upstream handshake each: only a 401 is retried');
    t.equal(fake.tokenRequests.length, tokens);
  });

  await t.test('over WS_MAX_STREAMS the handshake gets 503', async (t) => {
    const a = await connect(wsUrl(proxy));
    const b = await connect(wsUrl(proxy));
    const before = fake.wsHandshakes.length;
    const r = await refusal(wsUrl(proxy));
    t.equal(r.status, 503);
    t.equal(r.body.error, 'too_many_streams');
    t.equal(fake.wsHandshakes.length, before, 'the refused one never reached the upstream');

    a.ws.close();
    await a.closed;
    await proxy.waitForLog((l) => l.msg === 'stream closed');
    const c = await connect(wsUrl(proxy));
    t.pass('a place freed up is usable again');
    b.ws.close();
    c.ws.close();
    await Promise.all([b.closed, c.closed]);
    await noUpstreamSockets(fake);
  });

  await t.test('a client that does not read is closed with 1013 and memory stays bounded', async (t) => {
    const server = nextServerSocket(fake);
    const c = await connect(wsUrl(proxy));
    const s = await server;
    const sClosed = closedOf(s);
    c.ws.pause(); // stops reading its socket
    const pid = proxy.child.pid!;
    const before = memoryKb(pid);

    // Push up to 256 MiB as fast as the proxy takes it: without a bound it would all pile up there.
    const chunk = Buffer.alloc(256 * 1024, 0x61);
    let sent = 0;
    while (s.readyState === WebSocket.OPEN && sent < 256 * 1024 * 1024) {
      s.send(chunk, { binary: true });
      sent += chunk.length;
      while (s.readyState === WebSocket.OPEN && s.bufferedAmount > 4 * 1024 * 1024) await new Promise((r) => setTimeout(r, 1));
    }
    const upstreamSide = await sClosed;
    t.same(upstreamSide, { code: 1001, reason: 'client not consuming fast enough' }, 'the upstream side is closed with the client');
    t.ok(sent < 128 * 1024 * 1024, `the proxy stopped taking data (${(sent / 2 ** 20).toFixed(1)} MiB sent)`);
    const after = memoryKb(pid);
    const grewMb = (after.hwm - before.hwm) / 1024;
    t.ok(grewMb < 64, `peak RSS grew by ${grewMb.toFixed(1)} MiB (VmHWM ${before.hwm} → ${after.hwm} kB)`);

    c.ws.resume();
    t.same(await c.closed, { code: 1013, reason: 'not consuming fast enough' }, 'the client reads 1013 once it reads again');
    t.match(await proxy.waitForLog((l) => l.msg === 'stream closed' && l.cause !== undefined), {
      closedBy: 'proxy',
      cause: 'slow_client',
      code: 1013,
    });
    await noUpstreamSockets(fake);
  });

  await t.test('SIGTERM: HTTP drains, then streams close with 1001 on both sides, exit 0', async (t) => {
    const logged = proxy.logs().length;
    let server = nextServerSocket(fake);
    const live = await connect(wsUrl(proxy));
    const liveServer = closedOf(await server);
    await legacyInit(live);
    legacyStart(live, '1', 'subscription { ticks { n } }');
    await waitFor(() => ticks(live).length >= 1, 3000, 'events');

    // A client that will not answer the close: cut after the grace, without holding up the exit.
    server = nextServerSocket(fake);
    const stuck = await connect(wsUrl(proxy));
    const stuckServer = closedOf(await server);
    stuck.ws.pause();

    fake.graphqlDelayMs = 600;
    const http = fetch(`${proxy.url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"query":"{ hello }"}' });
    await waitFor(() => fake.graphqlRequests.length === 1, 3000, 'the HTTP request upstream');

    const started = Date.now();
    proxy.child.kill('SIGTERM');
    const atSignal = ticks(live).length;
    await waitFor(() => ticks(live).length >= atSignal + 3, 3000, 'events while HTTP drains');
    const res = await http;
    t.equal(res.status, 200, 'the in-flight request completed');
    await res.arrayBuffer();

    t.same(await live.closed, { code: 1001, reason: 'proxy shutting down' }, 'client gets 1001');
    t.same(await liveServer, { code: 1001, reason: 'proxy shutting down' }, 'upstream gets 1001');
    t.equal((await stuckServer).code, 1001, 'the stuck client’s upstream gets 1001 too');
    const exit = await proxy.exited;
    const ms = Date.now() - started;
    t.same(exit, { code: 0, signal: null }, 'exit 0');
    t.ok(ms < 3000, `within SHUTDOWN_TIMEOUT_MS (${ms} ms)`);
    stuck.ws.terminate();
    await noUpstreamSockets(fake);

    const logs = proxy.logs().slice(logged);
    const request = logs.findIndex((l) => l.msg === 'request');
    const firstClose = logs.findIndex((l) => l.msg === 'stream closed');
    t.ok(request !== -1 && request < firstClose, 'streams were closed after the HTTP request finished');
    t.match(logs[firstClose], { cause: 'shutdown', code: 1001 });
  });
});

t.test('WS_PING_INTERVAL_MS=250', async (t) => {
  const { fake, proxy } = await startPair(t, { fake: { keepAliveMs: 60_000 }, env: { ...RELAY, WS_PING_INTERVAL_MS: '250' } });
  await waitFor(() => fake.issuedTokens.length === 1, 3000, 'the first token');
  t.afterEach(() => noUpstreamSockets(fake));

  await t.test('upstream 401 at the handshake: one retry with a fresh token', async (t) => {
    fake.rejectNextTokens = 1;
    const c = await connect(wsUrl(proxy));
    t.same(fake.wsHandshakes.map((h) => h.accepted), [false, true], 'rejected, then accepted');
    t.equal(fake.issuedTokens.length, 2, 'a fresh token was fetched');
    t.equal(fake.wsHandshakes[1]!.token, fake.issuedTokens[1], 'and used for the retry');
    t.equal(c.ws.protocol, 'graphql-ws');
    c.ws.close();
    await c.closed;
    t.match(await proxy.waitForLog((l) => l.msg === 'stream opened'), { attempts: 2 });
  });

  await t.test('keep-alive: quiet streams live, dead peers are dropped', async (t) => {
    // Quiet but healthy: nothing but pings for several intervals.
    const quiet = await connect(wsUrl(proxy));
    let pings = 0;
    quiet.ws.on('ping', () => (pings += 1));
    await waitFor(() => pings >= 4, 5000, 'four pings');
    t.equal(quiet.ws.readyState, WebSocket.OPEN, 'a quiet stream that answers pings stays open');
    t.equal(fake.openSockets(), 1);

    // A client that does not answer pings.
    let server = nextServerSocket(fake);
    const mute = await connect(wsUrl(proxy), ['graphql-ws'], { autoPong: false });
    let s = await server;
    t.same(await closedOf(s), { code: 1001, reason: 'client not responding' }, 'dead client: upstream closed with 1001');
    t.equal((await mute.closed).code, 1006, 'and the dead client cut');

    // An upstream that does not answer pings (stops reading).
    server = nextServerSocket(fake);
    const orphan = await connect(wsUrl(proxy));
    s = await server;
    s.pause();
    t.same(await orphan.closed, { code: 1001, reason: 'upstream not responding' }, 'dead upstream: client closed with 1001');
    s.resume();

    quiet.ws.close();
    await quiet.closed;
    for (const cause of ['client_ping_timeout', 'upstream_ping_timeout']) {
      t.match(await proxy.waitForLog((l) => l.msg === 'stream closed' && l.cause === cause), { closedBy: 'proxy', code: 1001 }, `logged: ${cause}`);
    }
  });
});

t.test('token endpoint failing, then upstream unreachable or silent', async (t) => {
  // The token endpoint is the fake; the upstream is a bare TCP server that resets or hangs.
  const held = new Set<net.Socket>();
  let mode: 'reset' | 'hang' = 'reset';
  const upstream = net.createServer((sock) => {
    if (mode === 'reset') return void sock.destroy();
    held.add(sock);
    sock.on('error', () => {});
  });
  upstream.listen(0, '127.0.0.1');
  await once(upstream, 'listening');
  t.teardown(() => {
    for (const s of held) s.destroy();
    upstream.close();
  });
  const { port } = upstream.address() as AddressInfo;
  const { fake, proxy } = await startPreparedPair(
    t,
    (fake) => (fake.tokenFailures = Array.from({ length: 10_000 }, () => ({ kind: 'status' as const, status: 503 }))),
    { TOKEN_WAIT_MS: '300', BITQUERY_UPSTREAM: `http://127.0.0.1:${port}`, UPSTREAM_CONNECT_TIMEOUT_MS: '200', UPSTREAM_TIMEOUT_MS: '300' },
  );

  await t.test('no valid token: 503 JSON within TOKEN_WAIT_MS, never hanging', async (t) => {
    const r = await refusal(wsUrl(proxy));
    t.equal(r.status, 503);
    t.equal(r.body.error, 'token_unavailable');
    // At once when the next retry is due after the deadline, else once the wait is over.
    t.ok(r.ms < 3000, `answered within the bounded wait (${r.ms} ms)`);
  });

  fake.tokenFailures.length = 0;
  await waitFor(() => fake.issuedTokens.length === 1, 3000, 'a token once the endpoint recovers');

  await t.test('upstream resetting the connection: 502 JSON', async (t) => {
    const r = await refusal(wsUrl(proxy));
    t.equal(r.status, 502);
    t.equal(r.body.error, 'upstream_reset');
  });

  await t.test('upstream silent: 504 JSON after the handshake timeout', async (t) => {
    mode = 'hang';
    const r = await refusal(wsUrl(proxy));
    t.equal(r.status, 504);
    t.equal(r.body.error, 'upstream_timeout');
    t.ok(r.ms >= 450 && r.ms < 3000, `after UPSTREAM_CONNECT_TIMEOUT_MS + UPSTREAM_TIMEOUT_MS (${r.ms} ms)`);
  });
});
