// bitquery_proxy_upstream_errors_total{credentials,error} tells a refused connection from one reset
// before the answer, for HTTP requests and WebSocket handshakes alike, end to end: the proxy
// process against the fake Bitquery (which resets on request) or a port nothing listens on.
import t from 'tap';
import { WebSocket } from 'ws';
import { closedPort } from '../helpers/ports.js';
import { fakeEnv, startFake, startProxy } from '../helpers/pair.js';
import type { ProxyProcess } from '../helpers/proxy-process.js';
import { waitFor } from '../helpers/proxy-process.js';
import { wsRefusal } from '../helpers/ws-refusal.js';
import { sample } from './helpers.js';

const QUERY = JSON.stringify({ query: '{ hello }' });

const post = async (proxy: ProxyProcess) => {
  const res = await fetch(`${proxy.url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: QUERY });
  return { status: res.status, body: (await res.json()) as { error: string; message: string } };
};

/** The admin listener's /metrics, once `ready` holds for it. */
async function metricsOnce(proxy: ProxyProcess, ready: (text: string) => boolean, what: string): Promise<string> {
  const started = await proxy.waitForLog((l) => l.msg.startsWith('admin listening on '));
  return waitFor(async () => {
    const text = await (await fetch(`${started.url as string}/metrics`)).text();
    return ready(text) && text;
  }, 10_000, what);
}

const errors = (text: string, error: string) => sample(text, 'bitquery_proxy_upstream_errors_total', { credentials: 'default', error });

t.test('a refused connection: 502 upstream_refused, counted as refused', async (t) => {
  const fake = await startFake(t);
  const proxy = await startProxy(t, fake, { ...fakeEnv(fake), BITQUERY_UPSTREAM: `http://127.0.0.1:${await closedPort()}` });
  const http = await post(proxy);
  t.equal(http.status, 502);
  t.match(http.body, { error: 'upstream_refused', message: /refused the connection \(ECONNREFUSED\)/ });
  const ws = await wsRefusal(`${proxy.url.replace('http', 'ws')}/graphql`);
  t.equal(ws.status, 502);
  t.equal(ws.body.error, 'upstream_refused');
  const text = await metricsOnce(proxy, (m) => errors(m, 'refused') === 2, 'two refused connections counted');
  t.equal(errors(text, 'reset'), undefined, 'nothing counted as reset');
  t.equal(errors(text, 'unreachable'), undefined, 'nothing counted as unreachable');
  t.equal(sample(text, 'bitquery_proxy_ws_refused_total', { reason: 'upstream_refused' }), 1);
});

t.test('a connection reset before the answer: 502 upstream_reset, counted as reset', async (t) => {
  const fake = await startFake(t);
  const proxy = await startProxy(t, fake, fakeEnv(fake));
  fake.graphqlScript.push({ status: 200, reset: true });
  const http = await post(proxy);
  t.equal(http.status, 502);
  t.match(http.body, { error: 'upstream_reset', message: /closed the connection before answering/ });
  t.equal(fake.graphqlRequests.length, 1, 'not retried');
  fake.wsRefusals.push({ status: 500, reset: true });
  const ws = await wsRefusal(`${proxy.url.replace('http', 'ws')}/graphql`);
  t.equal(ws.status, 502);
  t.equal(ws.body.error, 'upstream_reset');
  const text = await metricsOnce(proxy, (m) => errors(m, 'reset') === 2, 'two resets counted');
  t.equal(errors(text, 'refused'), undefined, 'nothing counted as refused');
  t.equal(sample(text, 'bitquery_proxy_requests_total', { path: '/graphql', status: '502', key: 'none', credentials: 'default' }), 1);

  // And the proxy still serves: the next request goes through.
  t.equal((await post(proxy)).status, 200);
  const stream = new WebSocket(`${proxy.url.replace('http', 'ws')}/graphql`, 'graphql-ws');
  await new Promise<void>((resolve, reject) => {
    stream.once('open', () => resolve());
    stream.once('error', reject);
  });
  stream.close();
});
