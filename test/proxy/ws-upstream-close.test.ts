// An upstream close code is passed to the client unchanged, and the log says what it means: a 4401
// ("Unauthorized") is a subscribe before connection_init, not a bad token.
import { once } from 'node:events';
import t from 'tap';
import { WebSocket } from 'ws';
import { startPair } from '../helpers/pair.js';
import { waitFor } from '../helpers/proxy-process.js';

t.test('a subscribe before connection_init: 4401 to the client, logged as the client bug it is', async (t) => {
  // The relay passes upstream close codes on (WS_MODE=share speaks the protocol itself).
  const { fake, proxy } = await startPair(t, { env: { WS_MODE: 'relay' } });
  const ws = new WebSocket(proxy.url.replace(/^http/, 'ws') + '/graphql', ['graphql-transport-ws']);
  ws.on('error', () => {});
  t.teardown(() => ws.terminate());
  const closed = once(ws, 'close');
  await once(ws, 'open');
  ws.send(JSON.stringify({ id: '1', type: 'subscribe', payload: { query: 'subscription { ticks(count: 1) { n } }' } }));
  await waitFor(() => fake.wsCloses.length === 1, 15_000, 'the upstream close');
  const [code] = (await closed) as [number];
  t.equal(code, 4401);
  const line = await proxy.waitForLog((l) => l.msg === 'stream closed');
  t.equal(line.code, 4401);
  t.equal(line.closedBy, 'upstream');
  t.match(line.meaning, /subscribed before connection_init.*not a token problem/);
  t.notOk(fake.tokenRequests.length > 1, 'no token renewal for it');
});
