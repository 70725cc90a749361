// The pieces that wire share mode into the proxy: the upstream stream cap's fallbacks, the status
// totals, and a per-key slot answered later (a shared admission store answers over the network):
// a completion meanwhile gives the slot back, a store failure refuses with its reason.
import t from 'tap';
import { sharedTotals } from '../../src/observability/share-metrics.js';
import { upstreamStreamCap } from '../../src/proxy/ws/share.js';
import type { Acquired } from '../../src/subscriptions/types.js';
import { harness, RawClient, waitFor } from './helpers.js';

const Q = 'subscription Blocks { blocks { n } }';

t.test('WS_MAX_UPSTREAM_STREAMS, else the plan’s subscription_limit, else WS_MAX_STREAMS', async (t) => {
  t.equal(upstreamStreamCap({ wsMaxUpstreamStreams: 7, wsMaxStreams: 1000 }, 100), 7, 'the setting wins');
  t.equal(upstreamStreamCap({ wsMaxUpstreamStreams: 0, wsMaxStreams: 1000 }, 100), 100, 'the plan’s limit when known');
  t.equal(upstreamStreamCap({ wsMaxUpstreamStreams: 0, wsMaxStreams: 1000 }, 0), 1000, 'a plan without a limit: WS_MAX_STREAMS');
  t.equal(upstreamStreamCap({ wsMaxUpstreamStreams: 0, wsMaxStreams: 1000 }, undefined), 1000, 'not polled yet: WS_MAX_STREAMS');
});

t.test('status totals add up every credential set', async (t) => {
  const stats = { credentials: { a: { upstreamStreams: 2, subscriptions: 30 }, b: { upstreamStreams: 1, subscriptions: 4 } }, reconnects: {}, capRefusals: {}, clients: 9 };
  t.same(sharedTotals(stats), { subscriptions: 34, upstreamStreams: 3 });
  t.same(sharedTotals({ credentials: {}, reconnects: {}, capRefusals: {}, clients: 0 }), { subscriptions: 0, upstreamStreams: 0 });
});

t.test('a per-key slot answered asynchronously', async (t) => {
  const pending: { resolve: (a: Acquired) => void; reject: (e: Error) => void }[] = [];
  let released = 0;
  const h = await harness(t, {
    principalFor: (_req, base) => ({
      ...base('default'),
      key: 'grafana',
      acquire: () => new Promise<Acquired>((resolve, reject) => pending.push({ resolve, reject })),
    }),
  });
  const c = await RawClient.open(h.url, 'graphql-transport-ws');
  await c.init();
  t.teardown(() => c.ws.terminate());

  c.subscribe('1', Q);
  await waitFor(() => pending.length === 1);
  pending[0]!.resolve(() => (released += 1));
  await waitFor(() => h.upstream.streams().length === 1, 5000, 'the granted subscription upstream');

  c.subscribe('2', Q);
  await waitFor(() => pending.length === 2);
  c.complete('2');
  pending[1]!.resolve(() => (released += 1));
  await waitFor(() => released === 1, 5000, 'the slot of a subscription completed while it was taken is given back');
  t.equal(h.engine.stats().credentials.default?.subscriptions, 1, 'it never joined');

  c.subscribe('3', Q);
  await waitFor(() => pending.length === 3);
  pending[2]!.reject(new Error('the shared state store is unavailable'));
  const refused = await c.next((m) => m.type === 'error' && m.id === '3', 'the refusal');
  t.same(refused.payload, [{ message: "the key's subscription limit cannot be checked now: the shared state store is unavailable" }]);

  c.subscribe('4', Q);
  await waitFor(() => pending.length === 4);
  pending[3]!.resolve({ refused: 'the key "grafana" has 1 subscriptions open (its stream limit)' });
  t.match((await c.next((m) => m.type === 'error' && m.id === '4', 'the cap refusal')).payload, [{ message: /its stream limit/ }]);

  c.subscribe('5', Q);
  await waitFor(() => pending.length === 5);
  c.ws.terminate();
  await waitFor(() => h.engine.stats().clients === 0, 5000, 'the client gone');
  pending[4]!.resolve(() => (released += 1));
  await waitFor(() => released === 2, 5000, 'a slot granted after the client left is given back');
});
