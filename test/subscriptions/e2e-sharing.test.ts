// Issue 13 end to end, sharing: fifteen clients on both subprotocols hold one upstream socket and
// each gets every event in its own protocol; different variables open another; one completing
// leaves the others flowing; the last one leaving closes the upstream after the linger; other
// subprotocols, and WS_MODE=relay, keep the 1:1 relay.
import t from 'tap';
import { WebSocket } from 'ws';
import { startPair } from '../helpers/pair.js';
import { waitFor } from '../helpers/proxy-process.js';
import { adminOf, EVENTS, EVENTS_AGAIN, metric, streamsOf, wsUrl } from './e2e-helpers.js';
import { libSubscribe, RawClient, type LibSubscription } from './helpers.js';

const LINGER_MS = 1000;

t.test('WS_MODE=share (the default)', async (t) => {
  const { fake, proxy } = await startPair(t, { env: { WS_LINGER_MS: String(LINGER_MS) } });
  const admin = await adminOf(proxy);
  const url = wsUrl(proxy);
  const subscriptions = () => metric(admin, 'bitquery_proxy_ws_subscriptions', 'credentials="default"');
  const clients: RawClient[] = [];
  /** Each hand-written client's subscription id: numbers for legacy (kept as sent), strings for transport. */
  const ids = new Map<RawClient, string | number>();
  const libs: LibSubscription[] = [];
  t.teardown(() => {
    for (const c of clients) c.ws.terminate();
    for (const l of libs) void l.client.dispose();
  });

  await t.test('15 clients, both subprotocols, one query: one upstream socket, every event in each protocol', async (t) => {
    for (let i = 0; i < 5; i++) {
      const legacy = await RawClient.open(url, 'graphql-ws');
      await legacy.init();
      legacy.subscribe(i + 1, i % 2 ? EVENTS_AGAIN : EVENTS, { topic: 'dex' });
      const transport = await RawClient.open(url, 'graphql-transport-ws');
      await transport.init();
      transport.subscribe(`t${i}`, EVENTS, { topic: 'dex' });
      clients.push(legacy, transport);
      ids.set(legacy, i + 1).set(transport, `t${i}`);
      libs.push(libSubscribe(url, EVENTS_AGAIN, { topic: 'dex' }));
    }
    await waitFor(async () => (await subscriptions()) === 15, 15_000, '15 subscriptions at the proxy');
    t.equal(fake.openSockets(), 1, 'exactly one upstream socket');
    t.equal(fake.wsHandshakes.length, 1, 'one upstream handshake');
    t.same(fake.wsHandshakes[0]!.protocols, ['graphql-ws'], 'the proxy speaks legacy graphql-ws upstream');
    t.equal(await metric(admin, 'bitquery_proxy_ws_upstream_streams', 'credentials="default"'), 1);
    const status = (await (await fetch(`${admin}/status.json`)).json()) as { traffic: { subscriptions: number; upstreamStreams: number } };
    t.match(status.traffic, { subscriptions: 15, upstreamStreams: 1 }, 'the status page shows subscriptions against upstream streams');
    t.match(await (await fetch(`${admin}/status`)).text(), />15 on 1<\/div><div class="label">subscriptions on upstream streams</);

    for (let n = 0; n < 3; n++) fake.publish('dex');
    const expected = [1, 2, 3].map((seq) => ({ events: { seq, topic: 'dex' } }));
    for (const c of clients) {
      const id = ids.get(c)!;
      await waitFor(() => c.events(id).length === 3, 10_000, `3 events at a ${c.protocol} client`);
      t.same(c.events(id), expected, `${c.protocol} client ${String(id)}: ${c.legacy ? 'data' : 'next'} messages with its own id`);
      t.equal(typeof c.of(c.legacy ? 'data' : 'next')[0]!.id, c.legacy ? 'number' : 'string', 'the id as the client sent it');
    }
    for (const l of libs) {
      await waitFor(() => l.events.length === 3, 10_000, '3 events at a graphql-ws library client');
      t.same(l.events, expected, 'graphql-ws library client');
    }
  });

  await t.test('one client completing leaves the others flowing; the upstream stream stays', async (t) => {
    const [first, second] = clients;
    first!.complete(1);
    second!.complete('t0');
    await waitFor(async () => (await subscriptions()) === 13, 10_000, '13 subscriptions');
    fake.publish('dex');
    await waitFor(() => clients.slice(2).every((c) => c.events(ids.get(c)!).length === 4), 10_000, 'the 4th event at the others');
    await waitFor(() => libs.every((l) => l.events.length === 4), 10_000, 'the 4th event at the library clients');
    t.equal(first!.events(1).length, 3, 'the completed legacy subscription got no more');
    t.equal(second!.events('t0').length, 3, 'the completed transport subscription got no more');
    t.ok(first!.open && second!.open, 'their sockets stay open');
    t.equal(fake.openSockets(), 1);
    t.equal(streamsOf(fake, 'dex')[0]!.stopRequested, false, 'no stop/complete went upstream');
  });

  await t.test('different variables open a separate upstream stream; the same ones join', async (t) => {
    const a = await RawClient.open(url, 'graphql-transport-ws');
    const b = await RawClient.open(url, 'graphql-ws');
    clients.push(a, b);
    await a.init();
    await b.init();
    a.subscribe('x', EVENTS, { topic: 'nft' });
    await waitFor(() => streamsOf(fake, 'nft').length === 1, 10_000, 'the nft stream upstream');
    b.subscribe('y', EVENTS_AGAIN, { topic: 'nft' });
    await waitFor(async () => (await subscriptions()) === 15, 10_000, '15 subscriptions');
    t.equal(fake.openSockets(), 2, 'two upstream sockets: dex and nft');
    fake.publish('nft');
    await waitFor(() => a.events('x').length === 1 && b.events('y').length === 1, 10_000, 'the nft event at both');
    t.same(a.events('x'), [{ events: { seq: 5, topic: 'nft' } }]);
    a.ws.close();
    b.ws.close();
    await waitFor(() => streamsOf(fake, 'nft').length === 0, 10_000, 'the nft stream closed');
  });

  await t.test('the last subscriber leaving closes the upstream socket after WS_LINGER_MS, not before', async (t) => {
    const socketId = streamsOf(fake, 'dex')[0]!.socketId;
    for (const c of clients) c.ws.close();
    for (const l of libs) l.unsubscribe();
    await waitFor(async () => (await subscriptions()) === 0, 10_000, 'no subscription left');
    const lastLeft = Date.now();
    await waitFor(() => fake.wsCloses.some((c) => c.socketId === socketId), LINGER_MS + 10_000, 'the dex socket closed');
    const closed = fake.wsCloses.find((c) => c.socketId === socketId)!;
    t.equal(closed.code, 1000, 'closed with 1000: billing stops');
    t.ok(closed.at - lastLeft >= LINGER_MS - 50, `closed ${closed.at - lastLeft} ms after the last subscriber left (linger ${LINGER_MS} ms)`);
    const line = await proxy.waitForLog((l) => l.msg === 'shared stream closed' && l.path === '/graphql' && l.subscribers === 15);
    t.match(line, { peakSubscribers: 15, events: 4, reconnects: 0, cause: 'unused', credentials: 'default' });
    t.equal(fake.activeStreams().length, 0, 'nothing billed any more');
  });

  await t.test('a client offering another subprotocol, or none, is relayed 1:1 as before', async (t) => {
    const before = fake.wsHandshakes.length;
    const none = new WebSocket(url);
    const other = new WebSocket(url, ['graphql-transport-ws-v2', 'graphql-ws']);
    t.teardown(() => {
      none.terminate();
      other.terminate();
    });
    await Promise.all([new Promise((r) => none.once('open', r)), new Promise((r) => other.once('open', r))]);
    t.equal(fake.wsHandshakes.length - before, 1, 'the socket without a subprotocol opened its own upstream at the handshake');
    t.same(fake.wsHandshakes.at(-1)!.protocols, []);
    t.equal(other.protocol, 'graphql-ws', 'graphql-ws among others: shared (the first shared one offered is picked)');
    const opened = await proxy.waitForLog((l) => l.msg === 'stream opened');
    t.match(opened, { protocol: '' });
  });
});

t.test('WS_MODE=relay: every socket is relayed 1:1 as today, stop changes nothing upstream', async (t) => {
  const { fake, proxy } = await startPair(t, { env: { WS_MODE: 'relay' } });
  const url = wsUrl(proxy);
  const clients = await Promise.all([RawClient.open(url, 'graphql-ws'), RawClient.open(url, 'graphql-transport-ws'), RawClient.open(url, 'graphql-ws')]);
  t.teardown(() => clients.forEach((c) => c.ws.terminate()));
  t.equal(fake.openSockets(), 3, 'one upstream socket per client');
  t.same(fake.wsHandshakes.map((h) => h.protocols), [['graphql-ws'], ['graphql-transport-ws'], ['graphql-ws']], 'the client’s own subprotocol goes upstream');
  for (const c of clients) {
    await c.init();
    c.subscribe('1', EVENTS, { topic: 'dex' });
  }
  await waitFor(() => streamsOf(fake, 'dex').length === 3, 10_000, 'three billed streams');
  clients[0]!.complete('1');
  await clients[0]!.next((m) => m.type === 'complete', 'the upstream’s complete, relayed');
  fake.publish('dex');
  await waitFor(() => clients.every((c) => c.events('1').length === 1), 10_000, 'the event relayed to all three, the stopped one too (as Bitquery sends it)');
  t.equal(streamsOf(fake, 'dex').length, 3, 'a stop does not end the billed stream');
  await proxy.waitForLog((l) => l.msg === 'stream opened' && l.protocol === 'graphql-transport-ws');
  t.notOk(proxy.logs().some((l) => l.msg === 'shared stream opened'), 'nothing shared');
});
