// The WebSocket metrics move with WebSocket traffic, end to end: the proxy process, real ws
// clients speaking graphql-ws, the fake Bitquery. ws_streams goes up and down with open streams,
// ws_streams_closed_total says who closed, ws_messages_total counts relayed messages each way, and
// ws_refused_total counts refused handshakes by reason.
import t from 'tap';
import { WebSocket } from 'ws';
import { fakeEnv, SECRET, startFake, startProxy } from '../helpers/pair.js';
import { waitFor } from '../helpers/proxy-process.js';
import { wsRefusal } from '../helpers/ws-refusal.js';
import { sample } from './helpers.js';

const KEY = 'alice-key-2b8e5d0f7a4c1963';

interface Client {
  ws: WebSocket;
  received: { type: string }[];
  closed: Promise<number>;
}

t.test('WebSocket metrics move with the traffic', async (t) => {
  const fake = await startFake(t);
  const proxy = await startProxy(t, fake, { ...fakeEnv(fake), WS_MODE: 'relay', PROXY_API_KEYS: `alice:${KEY}`, WS_MAX_STREAMS: '2', WS_MAX_STREAMS_PER_KEY: '2' }, {}, [SECRET, KEY]);
  const started = await proxy.waitForLog((l) => l.msg.startsWith('admin listening on '));
  const metrics = async () => (await fetch(`${started.url as string}/metrics`)).text();
  const until = (what: string, ready: (text: string) => boolean) =>
    waitFor(async () => {
      const text = await metrics();
      return ready(text) && text;
    }, 10_000, what);
  const wsUrl = `${proxy.url.replace('http', 'ws')}/graphql`;

  /** A graphql-ws client with one `ticks` subscription of `count` events, complete received. */
  const subscribe = async (count: number): Promise<Client> => {
    const ws = new WebSocket(wsUrl, 'graphql-ws', { headers: { 'x-api-key': KEY } });
    const received: { type: string }[] = [];
    const closed = new Promise<number>((resolve) => ws.once('close', (code) => resolve(code)));
    ws.on('message', (data) => received.push(JSON.parse(String(data)) as { type: string }));
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('error', reject);
    });
    ws.send(JSON.stringify({ type: 'connection_init', payload: {} }));
    ws.send(JSON.stringify({ id: '1', type: 'start', payload: { query: `subscription { ticks(count: ${count}) { n } }` } }));
    await waitFor(() => received.some((m) => m.type === 'complete'), 10_000, 'the subscription to complete');
    return { ws, received, closed };
  };

  const before = await metrics();
  t.equal(sample(before, 'bitquery_proxy_ws_streams', { credentials: 'default' }) ?? 0, 0, 'no stream open yet');

  const a = await subscribe(3);
  const b = await subscribe(2);
  let text = await until('two open streams', (m) => sample(m, 'bitquery_proxy_ws_streams', { credentials: 'default' }) === 2);
  // Each client sent connection_init and start; it received connection_ack, ka (one or more), data and complete.
  t.equal(sample(text, 'bitquery_proxy_ws_messages_total', { direction: 'to_upstream' }), 4, 'two messages from each client');
  const toClient = a.received.length + b.received.length;
  text = await until('every message to the clients counted', (m) => (sample(m, 'bitquery_proxy_ws_messages_total', { direction: 'to_client' }) ?? 0) >= toClient);
  t.ok(toClient >= 2 * 3 + 3 + 2, `${toClient} messages relayed to the clients`);

  await t.test('refused handshakes, by reason', async (t) => {
    t.equal((await wsRefusal(wsUrl, { headers: { 'x-api-key': KEY } })).status, 503, 'over WS_MAX_STREAMS');
    t.equal((await wsRefusal(wsUrl)).status, 401, 'no key');
    const m = await until('two refusals counted', (m) => sample(m, 'bitquery_proxy_ws_refused_total', { reason: 'unauthorized' }) === 1);
    t.equal(sample(m, 'bitquery_proxy_ws_refused_total', { reason: 'too_many_streams' }), 1);
    t.equal(sample(m, 'bitquery_proxy_ws_streams', { credentials: 'default' }), 2, 'refusals open nothing');
  });

  await t.test('closed by the client, then by the upstream', async (t) => {
    a.ws.close(1000);
    t.equal(await a.closed, 1000);
    let m = await until('one stream closed by its client', (m) => sample(m, 'bitquery_proxy_ws_streams_closed_total', { credentials: 'default', closed_by: 'client' }) === 1);
    t.equal(sample(m, 'bitquery_proxy_ws_streams', { credentials: 'default' }), 1);

    t.equal(fake.closeSockets(4500, 'upstream closes'), 1);
    t.equal(await b.closed, 4500, 'the upstream close code passed on');
    m = await until('one stream closed by the upstream', (m) => sample(m, 'bitquery_proxy_ws_streams_closed_total', { credentials: 'default', closed_by: 'upstream' }) === 1);
    t.equal(sample(m, 'bitquery_proxy_ws_streams', { credentials: 'default' }), 0, 'none open');
    t.equal(sample(m, 'bitquery_proxy_ws_streams_closed_total', { credentials: 'default', closed_by: 'proxy' }) ?? 0, 0);
  });
});
