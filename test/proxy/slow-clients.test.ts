// Slow and stalled clients, end to end: a body that stops coming gets 408, a client that stops
// reading an answer is cut and its upstream connection freed, and a request that finds every
// upstream connection busy gets 503 within UPSTREAM_TIMEOUT_MS instead of waiting without end.
import t, { type Test } from 'tap';
import { connect, type Socket } from 'node:net';
import { once } from 'node:events';
import { request } from 'undici';
import { startPair } from '../helpers/pair.js';
import { waitFor } from '../helpers/proxy-process.js';

const QUERY = JSON.stringify({ query: '{ hello }' });

function open(url: string): Promise<Socket> {
  const { hostname, port } = new URL(url);
  const socket = connect(Number(port), hostname);
  socket.on('error', () => {});
  return once(socket, 'connect').then(() => socket);
}

/** A raw connection closed with the test; `received()` is all it has read so far, as text. */
async function recorded(t: Test, url: string): Promise<{ socket: Socket; received: () => string }> {
  const socket = await open(url);
  t.teardown(() => socket.destroy());
  let text = '';
  socket.setEncoding('utf8');
  socket.on('data', (chunk: string) => (text += chunk));
  return { socket, received: () => text };
}

/** A client that asks for a large answer and never reads it. */
async function stalledReader(url: string, bytes: number): Promise<Socket> {
  const socket = await open(url);
  socket.pause();
  const body = JSON.stringify({ query: '{ blob }', variables: { bytes } });
  socket.write(`POST /graphql HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
  return socket;
}

const post = (url: string) =>
  request(`${url}/graphql`, { method: 'POST', body: QUERY, headers: { 'content-type': 'application/json' }, signal: AbortSignal.timeout(20_000) });

// A body that stops coming, on each route a request can take: Content-Length (the fast path) and
// chunked (Fastify's route).
const STALLED_BODIES = [
  ['a request body', 'Content-Length: 100\r\n\r\n{"query":'],
  ['a chunked body (Fastify\'s route)', 'Transfer-Encoding: chunked\r\n\r\n9\r\n{"query":\r\n'],
] as const;

for (const [what, rest] of STALLED_BODIES) {
  t.test(`${what} that stops coming gets 408 JSON and the connection is closed`, async (t) => {
    const { fake, proxy } = await startPair(t, { env: { CLIENT_TIMEOUT_MS: '300' } });
    const { socket, received } = await recorded(t, proxy.url);
    const closed = once(socket, 'close');
    socket.write(`POST /graphql HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n${rest}`);
    await Promise.race([closed, waitFor(() => false, 10_000, 'the connection to close')]);
    t.match(received(), /^HTTP\/1\.1 408 /);
    t.match(received(), /connection: close/i);
    const body = JSON.parse(received().slice(received().indexOf('\r\n\r\n') + 4));
    t.equal(body.error, 'request_timeout');
    t.match(body.message, /CLIENT_TIMEOUT_MS/);
    t.equal(fake.graphqlRequests.length, 0, 'nothing went upstream');
  });
}

t.test('an upstream slower than CLIENT_TIMEOUT_MS is waited for, on either route, and the connection is kept', async (t) => {
  const { fake, proxy } = await startPair(t, { env: { CLIENT_TIMEOUT_MS: '200', UPSTREAM_TIMEOUT_MS: '10000' } });
  const { socket, received } = await recorded(t, proxy.url);
  const chunked = `${QUERY.length.toString(16)}\r\n${QUERY}\r\n0\r\n\r\n`;
  const requests = [
    `POST /graphql HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: ${QUERY.length}\r\n\r\n${QUERY}`,
    `POST /graphql HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n${chunked}`,
  ];
  for (const [i, raw] of requests.entries()) {
    fake.graphqlScript.push({ status: 200, body: `{"data":{"slow":${i}}}`, delayMs: 800 });
    socket.write(raw);
    await waitFor(() => received().includes(`{"data":{"slow":${i}}}`), 10_000, `answer ${i}`);
  }
  t.equal(received().match(/HTTP\/1\.1 200 /g)?.length, 2, 'both answered 200 on one connection');
  t.notOk(socket.destroyed);
});

t.test('a body sent with pauses shorter than CLIENT_TIMEOUT_MS is forwarded', async (t) => {
  const { fake, proxy } = await startPair(t, { env: { CLIENT_TIMEOUT_MS: '2000' } });
  const { socket, received } = await recorded(t, proxy.url);
  socket.write(`POST /graphql HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: ${QUERY.length}\r\n\r\n`);
  for (const char of QUERY) {
    socket.write(char);
    await new Promise((r) => setTimeout(r, 20));
  }
  await waitFor(() => received().includes('"echo"'), 10_000, 'the answer');
  t.match(received(), /^HTTP\/1\.1 200 /);
  t.equal(fake.graphqlRequests.length, 1);
});

t.test('a client that stops reading is cut after CLIENT_TIMEOUT_MS and the upstream connection is freed', async (t) => {
  const { fake, proxy } = await startPair(t, { env: { UPSTREAM_CONNECTIONS: '1', CLIENT_TIMEOUT_MS: '500' } });
  const reader = await stalledReader(proxy.url, 64 * 1024 * 1024);
  t.teardown(() => reader.destroy());
  await waitFor(() => fake.graphqlRequests.length === 1, 10_000, 'the large request upstream');
  const res = await post(proxy.url);
  t.equal(res.statusCode, 200, 'the only upstream connection served another request');
  t.match(await res.body.text(), /"echo"/);
  t.ok(proxy.logs().some((l) => /stopped reading/.test(l.msg) && l.level === 40), 'the cut is logged at warn');
});

t.test('a request that finds every upstream connection busy gets 503 within UPSTREAM_TIMEOUT_MS', async (t) => {
  const { fake, proxy } = await startPair(t, { env: { UPSTREAM_CONNECTIONS: '1', CLIENT_TIMEOUT_MS: '60000', UPSTREAM_TIMEOUT_MS: '500' } });
  const reader = await stalledReader(proxy.url, 64 * 1024 * 1024);
  t.teardown(() => reader.destroy());
  await waitFor(() => fake.graphqlRequests.length === 1, 10_000, 'the large request upstream');
  const res = await post(proxy.url);
  t.equal(res.statusCode, 503);
  const body = (await res.body.json()) as { error: string; message: string };
  t.equal(body.error, 'upstream_busy');
  t.match(body.message, /UPSTREAM_TIMEOUT_MS/);
  t.equal(fake.graphqlRequests.length, 1, 'the queued request never went upstream');
  t.notOk(proxy.logs().some((l) => /stopped reading/.test(l.msg)), 'the stalled reader still holds the connection');
});
