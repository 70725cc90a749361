import t from 'tap';
import { connect } from 'node:net';
import { once } from 'node:events';
import { networkInterfaces } from 'node:os';
import { Writable } from 'node:stream';
import pino from 'pino';
import { request as undiciRequest } from 'undici';
import { Events } from '../../src/events.js';
import { buildAdmin, startAdmin, type AdminOptions } from '../../src/observability/admin.js';
import { Metrics } from '../../src/observability/metrics.js';
import { StatusBoard } from '../../src/observability/status.js';
import { fakeSet, request, usage } from './helpers.js';

const hasIpv6Loopback = () => Object.values(networkInterfaces()).some((list) => list?.some((i) => i.address === '::1'));

function parts() {
  const events = new Events();
  const sets = [fakeSet('default')];
  const metrics = new Metrics({ events, paths: ['/graphql'], sets, isKnownKey: (name) => name === 'alice' });
  const board = new StatusBoard({
    version: '1.2.3',
    startedAt: Date.now(),
    sets,
    events,
    traffic: () => metrics.traffic(),
    usage: { state: () => ({ usage: usage(), failures: 0 }) },
    budgetWarnPercent: 80,
  });
  let ready = true;
  const lines: string[] = [];
  const logger = pino(
    { level: 'debug' },
    new Writable({
      write(chunk, _enc, done) {
        lines.push(String(chunk));
        done();
      },
    }),
  );
  const options: AdminOptions = {
    host: '127.0.0.1',
    port: 0,
    logger,
    metrics,
    readiness: () => (ready ? { ready: true, expiresInSec: 3600 } : { ready: false, reason: 'no valid token yet' }),
    status: () => board.data(),
  };
  return { events, metrics, options, lines, setReady: (value: boolean) => (ready = value) };
}

t.test('the admin routes answer, and nothing else does', async (t) => {
  const { events, options, setReady } = parts();
  events.emit('request', request({ key: 'alice', credentials: 'default' }));
  events.emit('usage', { credentials: 'default', usage: usage() });
  const app = await buildAdmin(options);
  t.teardown(() => app.close());

  const metrics = await app.inject('/metrics');
  t.equal(metrics.statusCode, 200);
  t.equal(metrics.headers['content-type'], 'text/plain; version=0.0.4; charset=utf-8');
  t.match(metrics.body, 'bitquery_proxy_requests_total{path="/graphql",status="200",key="alice",credentials="default"} 1');
  t.match(metrics.body, 'bitquery_account_points_used{credentials="default"} 4458');
  t.equal(metrics.headers['cache-control'], 'no-store');

  t.same((await app.inject('/healthz')).json(), { status: 'ok' });
  const ready = await app.inject('/readyz');
  t.equal(ready.statusCode, 200);
  t.same(ready.json(), { ready: true, expiresInSec: 3600 });
  setReady(false);
  const notReady = await app.inject('/readyz');
  t.equal(notReady.statusCode, 503);
  t.same(notReady.json(), { ready: false, reason: 'no valid token yet' });

  const json = await app.inject('/status.json');
  t.equal(json.statusCode, 200);
  t.match(json.json(), { version: '1.2.3', credentials: [{ name: 'default', account: { pointsUsed: 4458 } }], traffic: { requests: 1 } });

  const page = await app.inject('/status');
  t.equal(page.statusCode, 200);
  t.equal(page.headers['content-type'], 'text/html; charset=utf-8');
  t.match(page.headers['content-security-policy'], "default-src 'none'; style-src 'unsafe-inline'");
  t.equal(page.headers['x-content-type-options'], 'nosniff');
  t.match(page.body, '<strong>4,458</strong> of 1,000,000 points used');

  for (const [method, url] of [['GET', '/graphql'], ['POST', '/metrics'], ['GET', '/'], ['GET', '/metrics/x?y=1']] as const) {
    const res = await app.inject({ method, url });
    t.equal(res.statusCode, 404, `${method} ${url}`);
    t.match(res.json(), { error: 'not_found', message: /on the admin port; it serves GET \/metrics, \/healthz, \/readyz, \/status, \/status\.json$/ });
  }
  for (const res of [metrics, json, page]) t.notMatch(res.body, 'secret', 'no token on the admin endpoints');
});

t.test('a failure inside a route is a 500 JSON, logged', async (t) => {
  const { options, lines } = parts();
  const app = await buildAdmin({ ...options, status: async () => Promise.reject(new Error('broken source')) });
  t.teardown(() => app.close());
  const res = await app.inject('/status.json');
  t.equal(res.statusCode, 500);
  t.same(res.json(), { error: 'internal_error', message: 'the admin listener failed to answer' });
  t.ok(lines.some((l) => /admin request failed/.test(l) && /broken source/.test(l)));
});

t.test('startAdmin listens where it says, over real HTTP', async (t) => {
  const { options, lines } = parts();
  const admin = await startAdmin(options);
  t.teardown(() => admin.close());
  t.match(admin.url, /^http:\/\/127\.0\.0\.1:\d+$/);
  const started = lines.map((l) => JSON.parse(l) as { msg: string; url?: string; component?: string }).find((l) => l.msg.startsWith('admin listening'));
  t.match(started, { url: admin.url, component: 'admin', msg: `admin listening on ${admin.url}: /metrics, /healthz, /readyz, /status, /status.json` });
  const res = await undiciRequest(`${admin.url}/metrics`);
  t.equal(res.statusCode, 200);
  t.match(await res.body.text(), '# TYPE bitquery_proxy_requests_total counter');

  await admin.close();
  await t.rejects(undiciRequest(`${admin.url}/healthz`), 'closed');
});

t.test('an IPv6 host is written in brackets', { skip: !hasIpv6Loopback() && 'no IPv6 loopback on this machine' }, async (t) => {
  const { options } = parts();
  const admin = await startAdmin({ ...options, host: '::1' });
  t.teardown(() => admin.close());
  t.match(admin.url, /^http:\/\/\[::1\]:\d+$/);
});

t.test('a client that goes silent in the middle of its request is cut off', async (t) => {
  const { options } = parts();
  const admin = await startAdmin({ ...options, idleTimeoutMs: 300 });
  t.teardown(() => admin.close());
  const socket = connect(Number(new URL(admin.url).port), '127.0.0.1');
  await once(socket, 'connect');
  socket.write('GET /metrics HTTP/1.1\r\nHost: x\r\n');
  const started = Date.now();
  await once(socket, 'close');
  t.ok(Date.now() - started < 5000, `closed after the idle timeout (${Date.now() - started} ms), not Node's 60 s for headers`);
});
