// The two routes a proxied request can take: the fast path (src/proxy/fast-path.ts: a GET, or a
// POST with a JSON body of known length, no Origin) and Fastify's routes (every other request).
// End to end, the same request sent both ways must get the same answer, the same upstream
// request and the same access line; in-process, which requests the fast path takes.
import t from 'tap';
import { EventEmitter } from 'node:events';
import { Readable } from 'node:stream';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { request } from 'undici';
import type { Config } from '../../src/config/index.js';
import { ProxyError } from '../../src/errors.js';
import { Events } from '../../src/events.js';
import { FastPath } from '../../src/proxy/fast-path.js';
import type { HttpForwarder } from '../../src/proxy/http.js';
import { startPair } from '../helpers/pair.js';
import type { LogLine } from '../helpers/proxy-process.js';

const QUERY = JSON.stringify({ query: '{ EVM { Blocks { Block { Number } } } }', variables: { limit: 1 } });
const KEY = 'parity-key-5d1e9a';

/** The same POST, sent so that it takes the fast path (Content-Length) or Fastify's route (chunked). */
async function post(url: string, route: 'fast' | 'fastify', headers: Record<string, string> = {}) {
  const body = route === 'fast' ? QUERY : Readable.from([Buffer.from(QUERY)]);
  const res = await request(`${url}/graphql`, { method: 'POST', body, headers: { 'content-type': 'application/json', ...headers } });
  return { status: res.statusCode, headers: res.headers, text: await res.body.text() };
}

/** Response headers that differ between any two answers: when, and the request's own id. */
function comparable(headers: Record<string, string | string[] | undefined>): Record<string, unknown> {
  const { date: _date, 'x-request-id': id, ...rest } = headers;
  return { ...rest, 'x-request-id': typeof id === 'string' && id.length > 0 };
}

/** An access line without what differs between two requests (time, id, durations). */
function accessFacts(line: LogLine): Record<string, unknown> {
  const { time: _time, reqId: _id, ms: _ms, upstreamMs: _up, ...rest } = line;
  return rest;
}

async function accessLines(proxy: { logs(): LogLine[] }, count: number): Promise<LogLine[]> {
  const deadline = Date.now() + 5000;
  for (;;) {
    const lines = proxy.logs().filter((l) => l.msg === 'request');
    if (lines.length >= count) return lines;
    if (Date.now() > deadline) throw new Error(`${count} access lines did not come: ${lines.length}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

t.test('a query answered through either route: the same answer, upstream request and access line', async (t) => {
  const { fake, proxy } = await startPair(t, { env: { LOG_LEVEL: 'info' } });
  const fast = await post(proxy.url, 'fast');
  const slow = await post(proxy.url, 'fastify');
  t.equal(fast.status, 200);
  t.equal(slow.status, fast.status);
  t.equal(slow.text, fast.text);
  t.same(comparable(slow.headers), comparable(fast.headers));
  t.equal(fast.headers.vary, 'Origin', 'Vary: Origin as CORS sets it');
  t.equal(fast.headers['x-cache'], 'MISS');
  const [first, second] = fake.graphqlRequests;
  t.equal(first!.body.toString(), QUERY);
  t.equal(second!.body.toString(), QUERY);
  const upstream = (h: Record<string, unknown>) => {
    const { 'content-length': _l, 'transfer-encoding': _t, 'x-request-id': _id, ...rest } = h;
    return rest;
  };
  t.same(upstream(second!.headers), upstream(first!.headers), 'the same headers upstream, the token included');
  const [fastLine, slowLine] = await accessLines(proxy, 2);
  t.same(accessFacts(slowLine!), accessFacts(fastLine!));
  t.equal(fastLine!.bytesIn, QUERY.length);
  t.equal(fastLine!.reqId, fast.headers['x-request-id']);
});

t.test('refusals through either route: a missing key, then the per-minute limit', async (t) => {
  const { fake, proxy } = await startPair(t, { env: { PROXY_API_KEYS: `ops:${KEY}`, RATE_LIMIT_PER_MINUTE: '2', LOG_LEVEL: 'info' } });
  const noKey = [await post(proxy.url, 'fast'), await post(proxy.url, 'fastify')];
  t.equal(noKey[0]!.status, 401);
  t.equal(noKey[1]!.text, noKey[0]!.text);
  t.same(comparable(noKey[1]!.headers), comparable(noKey[0]!.headers));

  const auth = { authorization: `Bearer ${KEY}` };
  const admitted = [await post(proxy.url, 'fast', auth), await post(proxy.url, 'fastify', auth)];
  t.equal(admitted[0]!.status, 200);
  t.equal(admitted[1]!.status, 200);
  t.same(Object.keys(admitted[1]!.headers).sort(), Object.keys(admitted[0]!.headers).sort(), 'the same headers, the limit ones included');
  t.ok(Object.keys(admitted[0]!.headers).some((name) => /ratelimit/.test(name)), 'the limit headers on an admitted answer');
  const limited = [await post(proxy.url, 'fast', auth), await post(proxy.url, 'fastify', auth)];
  t.equal(limited[0]!.status, 429);
  t.equal(limited[1]!.text, limited[0]!.text);
  t.same(comparable(limited[1]!.headers), comparable(limited[0]!.headers));
  t.equal(fake.graphqlRequests.length, 2, 'only the admitted requests went upstream');

  const lines = await accessLines(proxy, 6);
  t.same(accessFacts(lines[1]!), accessFacts(lines[0]!), 'the 401 lines');
  t.same(accessFacts(lines[3]!), accessFacts(lines[2]!), 'the admitted lines');
  t.same(accessFacts(lines[5]!), accessFacts(lines[4]!), 'the 429 lines');
  t.equal(lines[4]!.error, 'rate_limited');
});

/** A request as Node hands it over, with what FastPath.take reads. */
function incoming(method: string, url: string, headers: Record<string, string> = {}): IncomingMessage {
  return { method, url, headers: { ...headers }, socket: { bytesWritten: 0 } } as unknown as IncomingMessage;
}

t.test('which requests the fast path takes', async (t) => {
  const admitted: string[] = [];
  const forwarder = { admit: (request: { url: string }) => void admitted.push(request.url) } as unknown as HttpForwarder;
  const config = { paths: ['/graphql', '/eap'], bodyLimit: 1000 } as Config;
  const fast = new FastPath({ config, forwarder, events: new Events(), log: {} as never });
  const res = { on: () => {} } as unknown as ServerResponse;
  const json = { 'content-type': 'application/json', 'content-length': '10' };
  const takes = (req: IncomingMessage) => fast.take(req, res);

  t.ok(takes(incoming('POST', '/graphql', json)));
  t.ok(takes(incoming('POST', '/eap?x=1', { ...json, 'content-type': 'application/json; charset=UTF-8' })));
  t.ok(takes(incoming('GET', '/graphql?query=%7Bx%7D')));
  t.ok(takes(incoming('POST', '/graphql', { ...json, 'content-length': '1000' })), 'a body of exactly BODY_LIMIT');
  t.same(admitted, ['/graphql', '/eap?x=1', '/graphql?query=%7Bx%7D', '/graphql']);

  const left: [string, IncomingMessage][] = [
    ['another path', incoming('POST', '/graphql/', json)],
    ['a path Fastify would decode', incoming('POST', '/graph%71l', json)],
    ['a fragment', incoming('GET', '/graphql?x#y')],
    ['an Origin (CORS)', incoming('POST', '/graphql', { ...json, origin: 'https://app.example' })],
    ['another method', incoming('PUT', '/graphql', json)],
    ['HEAD', incoming('HEAD', '/graphql')],
    ['OPTIONS (a preflight)', incoming('OPTIONS', '/graphql')],
    ['a body over BODY_LIMIT', incoming('POST', '/graphql', { ...json, 'content-length': '1001' })],
    ['an empty body', incoming('POST', '/graphql', { ...json, 'content-length': '0' })],
    ['no length (chunked)', incoming('POST', '/graphql', { 'content-type': 'application/json', 'transfer-encoding': 'chunked' })],
    ['a length that is not a number', incoming('POST', '/graphql', { ...json, 'content-length': '1e3' })],
    ['no content type', incoming('POST', '/graphql', { 'content-length': '10' })],
    ['another content type', incoming('POST', '/graphql', { ...json, 'content-type': 'text/plain' })],
    ['a JSON type with other parameters', incoming('POST', '/graphql', { ...json, 'content-type': 'application/json; charset=latin1' })],
  ];
  for (const [what, req] of left) t.notOk(takes(req), what);

  fast.close();
  t.notOk(takes(incoming('POST', '/graphql', json)), 'none once the proxy is shutting down');
  t.equal(admitted.length, 4);
});

/** A request taken by the fast path in-process, with a forwarder that admits it and then does `forward`. */
function takenWith(forward: () => Promise<void>) {
  const raw = Object.assign(new EventEmitter(), incoming('POST', '/graphql', { 'content-type': 'application/json', 'content-length': '2' }));
  const written: { status?: number; headers?: Record<string, unknown>; body?: string } = {};
  const res = {
    on: () => {},
    writeHead(status: number, headers: Record<string, unknown>) {
      Object.assign(written, { status, headers });
      return { end: (body: Buffer) => void (written.body = body.toString()) };
    },
  } as unknown as ServerResponse;
  const logged: unknown[] = [];
  const forwarder = { admit: (_q: unknown, _r: unknown, _p: string, next: () => void) => next(), forward } as unknown as HttpForwarder;
  const log = { error: (fields: unknown, msg: string) => void logged.push([fields, msg]) } as never;
  const config = { paths: ['/graphql'], bodyLimit: 1000 } as Config;
  t.ok(new FastPath({ config, forwarder, events: new Events(), log }).take(raw, res));
  return { raw, written, logged };
}

t.test('the fast path answers what goes wrong as Fastify’s error handler does', async (t) => {
  const broken = takenWith(() => Promise.reject(new Error('boom')));
  broken.raw.emit('data', Buffer.from('{}'));
  broken.raw.emit('end');
  await new Promise((r) => setImmediate(r));
  t.equal(broken.written.status, 500);
  t.equal(JSON.parse(broken.written.body!).error, 'internal_error');
  t.equal(typeof broken.written.headers!['x-request-id'], 'string');
  t.match(broken.logged, [[{ err: { message: 'boom' } }, 'unexpected error']]);

  const refused = takenWith(() => Promise.reject(new ProxyError('upstream_timeout')));
  refused.raw.emit('data', Buffer.from('{}'));
  refused.raw.emit('end');
  await new Promise((r) => setImmediate(r));
  t.equal(refused.written.status, 504);
  t.same(refused.logged, [], 'a ProxyError is an answer, not an unexpected error');

  const cut = takenWith(() => Promise.resolve());
  cut.raw.emit('error', new Error('aborted'));
  t.equal(cut.written.status, 400);
  t.same(JSON.parse(cut.written.body!), { error: 'bad_request', message: 'aborted' });
});
