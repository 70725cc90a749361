// WebSocket message bounds, end to end: a message over WS_MAX_MESSAGE_BYTES from a client, or over
// WS_MAX_UPSTREAM_MESSAGE_BYTES from the upstream, closes the stream with 1009, and the fragments
// of a message not finished yet count toward the bound (what an attacker would use to pin memory).
import { once } from 'node:events';
import t from 'tap';
import { WebSocket } from 'ws';
import { startPair } from '../helpers/pair.js';
import { waitFor } from '../helpers/proxy-process.js';

const KiB = 1024;
// These bounds are the relay's (WS_MODE=relay); share mode's are tested in test/subscriptions/.

async function open(url: string): Promise<{ ws: WebSocket; closed: Promise<{ code: number; reason: string }> }> {
  const ws = new WebSocket(url.replace(/^http/, 'ws') + '/graphql', ['graphql-ws']);
  ws.on('error', () => {});
  const closed = once(ws, 'close').then(([code, reason]) => ({ code: code as number, reason: String(reason) }));
  await once(ws, 'open');
  return { ws, closed };
}

/** `promise`, or a failure naming `what` once the deadline has passed. */
function within<T>(promise: Promise<T>, what: string): Promise<T> {
  const timeout = waitFor(() => false, 15_000, what).then((): never => {
    throw new Error(what);
  });
  return Promise.race([promise, timeout]);
}

t.test('fragments of an unfinished client message past WS_MAX_MESSAGE_BYTES: the client gets 1009, the upstream 1001', async (t) => {
  const { fake, proxy } = await startPair(t, { env: { WS_MODE: 'relay', WS_MAX_MESSAGE_BYTES: String(256 * KiB) } });
  const { ws, closed } = await open(proxy.url);
  t.teardown(() => ws.terminate());
  await waitFor(() => fake.openSockets() === 1, 5000, 'the upstream socket');
  const fragment = Buffer.alloc(64 * KiB, 'x');
  // Never finished: only the fragments' sum can trip the bound.
  for (let i = 0; i < 5; i += 1) ws.send(fragment, { fin: false });
  const got = await within(closed, 'the client close');
  t.equal(got.code, 1009);
  const upstreamClose = await waitFor(() => fake.wsCloses[0], 15_000, 'the upstream close');
  t.equal(upstreamClose.code, 1001, 'the upstream is told the client went away');
  const line = await proxy.waitForLog((l) => l.msg === 'stream closed');
  t.equal(line.cause, 'client_message_too_large');
  t.equal(line.code, 1009);
});

t.test('a message under WS_MAX_MESSAGE_BYTES, fragmented, goes through', async (t) => {
  const { fake, proxy } = await startPair(t, { env: { WS_MODE: 'relay', WS_MAX_MESSAGE_BYTES: String(256 * KiB) } });
  const { ws } = await open(proxy.url);
  t.teardown(() => ws.terminate());
  await waitFor(() => fake.openSockets() === 1, 5000, 'the upstream socket');
  const [server] = fake.wsServerSockets;
  const message = JSON.stringify({ type: 'connection_init', payload: { pad: 'y'.repeat(200 * KiB) } });
  const received = once(server!, 'message');
  ws.send(message.slice(0, 100 * KiB), { fin: false });
  ws.send(message.slice(100 * KiB), { fin: true });
  const [data] = await within(received, 'the message upstream');
  t.equal(String(data), message);
});

t.test('an upstream message past WS_MAX_UPSTREAM_MESSAGE_BYTES: both sides get 1009', async (t) => {
  const { fake, proxy } = await startPair(t, { env: { WS_MODE: 'relay', WS_MAX_UPSTREAM_MESSAGE_BYTES: String(128 * KiB) } });
  const { ws, closed } = await open(proxy.url);
  t.teardown(() => ws.terminate());
  await waitFor(() => fake.openSockets() === 1, 5000, 'the upstream socket');
  const [server] = fake.wsServerSockets;
  const fragment = Buffer.alloc(64 * KiB, 'z');
  for (let i = 0; i < 3; i += 1) server!.send(fragment, { fin: false });
  const got = await within(closed, 'the client close');
  t.equal(got.code, 1009);
  t.equal(got.reason, 'upstream message too large');
  const upstreamClose = await waitFor(() => fake.wsCloses[0], 15_000, 'the upstream close');
  t.equal(upstreamClose.code, 1009);
  const line = await proxy.waitForLog((l) => l.msg === 'stream closed');
  t.equal(line.cause, 'upstream_message_too_large');
});
