// Issue 13 end to end, limits and failures: keys in connection_init (none → 4403, nothing opened
// upstream), credential sets kept apart, per-key caps counting subscriptions, the upstream stream
// cap (an error for a new stream, not for joining), a silent upstream reconnected while its
// clients stay, a slow subscriber dropped alone.
import { writeFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { SECRET, startFake, startPair, startProxy } from '../helpers/pair.js';
import { waitFor } from '../helpers/proxy-process.js';
import { adminOf, EVENTS, metric, streamsOf, wsUrl } from './e2e-helpers.js';
import { wsRefusal } from '../helpers/ws-refusal.js';
import { libSubscribe, RawClient } from './helpers.js';

const ALICE = 'alice-share-key-5b7e2c9d41';
const BOB = 'bob-share-key-8f1a6d3e20';
const B_SECRET = 'team-b-secret-2c4e6a8f';

t.test('keys in connection_init, credential sets, per-key caps count subscriptions', async (t) => {
  const fake = await startFake(t);
  fake.addClient('team-b', B_SECRET);
  const dir = mkdtempSync(join(tmpdir(), 'bqp-share-'));
  const config = join(dir, 'gateway.json');
  const set = (clientId: string, clientSecret: string) => ({ clientId, clientSecret, tokenUrl: fake.tokenUrl, upstream: fake.url });
  writeFileSync(
    config,
    JSON.stringify({
      credentials: { 'team-a': set(fake.clientId, SECRET), 'team-b': set('team-b', B_SECRET) },
      keys: { alice: { credentials: 'team-a', maxStreams: 2 }, bob: { credentials: 'team-b' } },
    }),
  );
  const proxy = await startProxy(
    t,
    fake,
    { PROXY_CONFIG: config, PROXY_API_KEYS: `alice:${ALICE},bob:${BOB}`, WS_INIT_TIMEOUT_MS: '500', TOKEN_RETRY_MIN_MS: '20', TOKEN_RETRY_MAX_MS: '200' },
    {},
    [SECRET, B_SECRET, ALICE, BOB],
  );
  const url = wsUrl(proxy);
  const clients: RawClient[] = [];
  const open = async (protocol: 'graphql-ws' | 'graphql-transport-ws', headers: Record<string, string> = {}) => {
    const c = await RawClient.open(url, protocol, { headers });
    clients.push(c);
    return c;
  };
  t.teardown(() => clients.forEach((c) => c.ws.terminate()));

  await t.test('no key, a wrong key, or none in time: 4403 and nothing opened upstream', async (t) => {
    const none = await open('graphql-transport-ws');
    none.send({ type: 'connection_init' });
    t.match(await none.closed, { code: 4403, reason: /^Forbidden: an API key is required/ });
    const legacy = await open('graphql-ws');
    legacy.send({ type: 'connection_init', payload: { apiKey: 'not-a-key-of-this-gateway' } });
    t.match(await legacy.closed, { code: 4403, reason: /^Forbidden: the API key is not valid/ });
    t.match(legacy.of('connection_error')[0], { payload: { message: 'the API key is not valid' } }, 'legacy reads connection_error first');
    const mute = await open('graphql-ws');
    t.match(await mute.closed, { code: 4403, reason: /no API key was presented within 500 ms/ });
    t.equal(fake.wsHandshakes.length, 0, 'nothing was opened upstream');
    t.equal(fake.tokenRequests.length > 0, true);
  });

  await t.test('keys in connection_init (apiKey, Authorization) or the handshake; each credential set its own upstream', async (t) => {
    const alice = await open('graphql-ws');
    await alice.init({ apiKey: ALICE });
    alice.subscribe(1, EVENTS, { topic: 'dex' });
    const bob = libSubscribe(url, EVENTS, { topic: 'dex' }, { Authorization: `Bearer ${BOB}` });
    t.teardown(() => void bob.client.dispose());
    const aliceHeader = await open('graphql-transport-ws', { 'x-api-key': ALICE });
    await aliceHeader.init();
    aliceHeader.subscribe('h', EVENTS, { topic: 'dex' });
    await waitFor(() => streamsOf(fake, 'dex').length === 2, 10_000, 'two upstream streams');
    const byClient = streamsOf(fake, 'dex').map((s) => s.clientId).sort();
    t.same(byClient, ['demo-client', 'team-b'], 'one per credential set, each with its own token');
    t.equal(fake.openSockets(), 2, 'alice’s two subscriptions share one upstream socket');
    await proxy.waitForLog((l) => l.msg === 'shared stream opened' && l.credentials === 'team-b');
    fake.publish('dex');
    await waitFor(() => alice.events(1).length === 1 && bob.events.length === 1 && aliceHeader.events('h').length === 1, 10_000, 'the event at all three');
    t.equal(JSON.stringify(fake.wsHandshakes).includes(ALICE) || JSON.stringify(fake.wsHandshakes).includes(BOB), false, 'keys never go upstream');
  });

  await t.test('alice’s cap (maxStreams 2) counts her subscriptions, joining ones too', async (t) => {
    const alice = clients.find((c) => c.protocol === 'graphql-ws' && c.open)!;
    alice.subscribe(3, EVENTS, { topic: 'dex' });
    const refusal = await alice.next((m) => m.type === 'error' && m.id === 3, 'the refusal');
    t.match(refusal.payload, { message: /the key "alice" has 2 subscriptions open \(its stream limit\)/ });
    await alice.next((m) => m.type === 'complete' && m.id === 3, 'legacy: complete after the error');
    alice.complete(1);
    alice.subscribe(4, EVENTS, { topic: 'dex' });
    fake.publish('dex');
    await waitFor(() => alice.events(4).length === 1, 10_000, 'a freed place is taken again');
    t.equal(alice.of('error', 4).length, 0);
    t.equal(fake.openSockets(), 2);
  });
});

t.test('the stream cap, a silent upstream, a slow subscriber', async (t) => {
  const { fake, proxy } = await startPair(t, {
    fake: { keepAliveMs: 100 },
    env: { WS_MAX_UPSTREAM_STREAMS: '2', WS_UPSTREAM_IDLE_MS: '600', WS_MAX_BUFFERED_BYTES: String(256 * 1024), WS_LINGER_MS: '0' },
  });
  const admin = await adminOf(proxy);
  const url = wsUrl(proxy);
  const clients: RawClient[] = [];
  const open = async (protocol: 'graphql-ws' | 'graphql-transport-ws') => {
    const c = await RawClient.open(url, protocol);
    clients.push(c);
    await c.init();
    return c;
  };
  t.teardown(() => clients.forEach((c) => c.ws.terminate()));
  const a = await open('graphql-transport-ws');
  const b = await open('graphql-ws');

  await t.test('over WS_MAX_UPSTREAM_STREAMS a new stream gets a protocol error; joining one does not', async (t) => {
    a.subscribe('a', EVENTS, { topic: 'a' });
    a.subscribe('b', EVENTS, { topic: 'b' });
    await waitFor(() => fake.activeStreams().length === 2, 10_000, 'two upstream streams');
    a.subscribe('c', EVENTS, { topic: 'c' });
    const refusal = await a.next((m) => m.type === 'error' && m.id === 'c', 'the refusal');
    t.match(refusal.payload, [{ message: /already holds 2 upstream streams, its cap \(WS_MAX_UPSTREAM_STREAMS=2\)/ }]);
    t.ok(a.open, 'the socket stays');
    b.subscribe(1, EVENTS, { topic: 'a' });
    await waitFor(async () => (await metric(admin, 'bitquery_proxy_ws_subscriptions', 'credentials="default"')) === 3, 10_000, 'b joined');
    t.equal(b.of('error').length, 0, 'joining a running stream is not refused');
    t.equal(fake.openSockets(), 2);
    t.equal(await metric(admin, 'bitquery_proxy_ws_cap_refusals_total', 'credentials="default"'), 1);
  });

  await t.test('a silent upstream is reconnected while its clients stay connected', async (t) => {
    const silent = streamsOf(fake, 'a')[0]!.socketId;
    fake.silence((s) => s.id === silent);
    await waitFor(() => streamsOf(fake, 'a').some((s) => s.socketId !== silent), 10_000, 'a new upstream stream for a');
    await waitFor(() => !fake.sockets().some((s) => s.id === silent), 10_000, 'the silent socket closed');
    t.ok(a.open && b.open, 'the clients stayed connected');
    fake.publish('a');
    await waitFor(() => a.events('a').length === 1 && b.events(1).length === 1, 10_000, 'events flow again');
    t.equal(streamsOf(fake, 'b').length, 1, 'the other stream was left alone');
    t.equal(await metric(admin, 'bitquery_proxy_ws_upstream_reconnects_total', 'credentials="default",reason="idle"'), 1);
    t.match(await proxy.waitForLog((l) => l.msg.startsWith('shared stream reconnecting')), { reason: 'idle', subscribers: 2 });
  });

  await t.test('a slow subscriber is dropped with 1013 alone; the others and the upstream keep going', async (t) => {
    a.complete('b');
    await waitFor(() => streamsOf(fake, 'b').length === 0, 10_000, 'b closed (no linger)');
    // Each event carries its topic: 64 KiB a message.
    const topic = 'x'.repeat(64 * 1024);
    const fast = await open('graphql-ws');
    const slow = await open('graphql-transport-ws');
    fast.subscribe(1, EVENTS, { topic });
    slow.subscribe('1', EVENTS, { topic });
    await waitFor(async () => (await metric(admin, 'bitquery_proxy_ws_subscriptions', 'credentials="default"')) === 4, 10_000, 'both subscribed');
    await waitFor(() => streamsOf(fake, topic).length === 1, 10_000, 'the upstream stream');
    const socket = streamsOf(fake, topic)[0]!.socketId;
    slow.ws.pause(); // stops reading its socket
    let sent = 0;
    while (sent < 2000 && (await metric(admin, 'bitquery_proxy_ws_subscriptions', 'credentials="default"')) === 4) {
      sent += 1;
      fake.publish(topic);
      await waitFor(() => fast.events(1).length === sent, 10_000, `event ${sent} at the fast client`);
    }
    t.ok(sent < 2000, `the slow client was dropped after ${sent} events of 64 KiB`);
    slow.ws.resume();
    t.same(await slow.closed, { code: 1013, reason: 'not consuming fast enough' });
    fake.publish(topic);
    await waitFor(() => fast.events(1).length === sent + 1, 10_000, 'the fast client goes on');
    t.equal(streamsOf(fake, topic)[0]!.socketId, socket, 'the same upstream stream, never paused');
    t.ok(a.open && b.open, 'the others stayed');
    t.match(await proxy.waitForLog((l) => l.msg === 'client connection closed' && l.cause === 'slow_client'), { protocol: 'graphql-transport-ws', code: 1013 });
  });

  await t.test('shutdown closes the shared upstream sockets', async (t) => {
    await proxy.stop();
    await waitFor(() => fake.openSockets() === 0, 10_000, 'no upstream socket left');
    t.ok(fake.wsCloses.some((c) => c.code === 1001), 'closed with 1001 (going away)');
  });
});

t.test('WS_MAX_STREAMS counts share-mode client sockets too', async (t) => {
  const { fake, proxy } = await startPair(t, { env: { WS_MAX_STREAMS: '2' } });
  const url = wsUrl(proxy);
  const held = [await RawClient.open(url, 'graphql-ws'), await RawClient.open(url, 'graphql-transport-ws')];
  t.teardown(() => held.forEach((c) => c.ws.terminate()));
  const refused = await wsRefusal(url);
  t.equal(refused.status, 503);
  t.match(refused.body, { error: 'too_many_streams', message: /2 streams are open \(WS_MAX_STREAMS\)/ });
  held[0]!.ws.close();
  await held[0]!.closed;
  const again = await waitFor(() => RawClient.open(url, 'graphql-ws').catch(() => undefined), 10_000, 'room again');
  held.push(again);
  t.equal(fake.wsHandshakes.length, 0, 'share-mode sockets open nothing upstream before a subscription');
});
