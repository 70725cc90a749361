import t from 'tap';
import { register as globalRegistry, Histogram, Registry } from 'prom-client';
import { Events } from '../../src/events.js';
import { DURATION_BUCKETS, LightHistogram } from '../../src/observability/metric-parts.js';
import { Metrics } from '../../src/observability/metrics.js';
import { fakeSet, request, usage } from './helpers.js';

function setup() {
  const events = new Events();
  const sets = [fakeSet('default'), fakeSet('team-b', 'client_credentials', { ready: false, reason: 'no valid token yet' }), fakeSet('static-one', 'static', { ready: true })];
  const metrics = new Metrics({ events, paths: ['/graphql', '/eap'], sets, isKnownKey: (name) => name === 'alice' || name === 'bob' });
  return { events, metrics, sets };
}

/** The value of the first series matching `labels`, 0 when there is none. `_bucket`, `_count`, `_sum` name a histogram's parts. */
async function value(metrics: Metrics, name: string, labels: Record<string, string | number> = {}): Promise<number> {
  const part = /_(bucket|count|sum)$/.test(name) && !metrics.registry.getSingleMetric(name);
  const metric = metrics.registry.getSingleMetric(part ? name.replace(/_(bucket|count|sum)$/, '') : name);
  if (!metric) throw new Error(`no metric ${name}`);
  const { values } = await metric.get();
  const found = values.find(
    (v) => (!part || (v as { metricName?: string }).metricName === name) && Object.entries(labels).every(([k, want]) => String((v.labels as Record<string, unknown>)[k]) === String(want)),
  );
  return found?.value ?? 0;
}

t.test('every metric of the documented set is in its own registry, with the default process metrics', async (t) => {
  const { metrics } = setup();
  const text = await metrics.text();
  for (const name of [
    'bitquery_proxy_requests_total',
    'bitquery_proxy_request_duration_seconds',
    'bitquery_proxy_upstream_duration_seconds',
    'bitquery_proxy_upstream_retries_total',
    'bitquery_proxy_upstream_errors_total',
    'bitquery_proxy_upstream_limited_total',
    'bitquery_proxy_rate_limited_total',
    'bitquery_proxy_token_requests_total',
    'bitquery_proxy_token_expires_in_seconds',
    'bitquery_proxy_ws_streams',
    'bitquery_proxy_ws_streams_closed_total',
    'bitquery_proxy_ws_messages_total',
    'bitquery_proxy_ws_refused_total',
    'bitquery_account_points_limit',
    'bitquery_account_points_used',
    'bitquery_account_requests_used',
    'bitquery_account_subscription_limit',
    'bitquery_account_period_end_timestamp_seconds',
    'bitquery_account_status',
    'process_cpu_user_seconds_total',
    'nodejs_heap_size_used_bytes',
  ]) {
    t.match(text, `# TYPE ${name} `, name);
  }
  t.match(metrics.contentType, /^text\/plain; version=0\.0\.4/);
  t.equal(await globalRegistry.getSingleMetric('bitquery_proxy_requests_total'), undefined, 'nothing in the process-global registry');
  t.doesNotThrow(() => setup(), 'a second daemon in the same process gets its own registry');
});

t.test('request events move the request counters and histograms, with bounded labels', async (t) => {
  const { events, metrics } = setup();
  events.emit('request', request({ key: 'alice', credentials: 'default', ms: 0.2, upstreamMs: 0.15 }));
  events.emit('request', request({ key: 'alice', credentials: 'default', ms: 42_000, upstreamMs: 41_000 }));
  events.emit('request', request({ key: 'mallory', credentials: 'default' }));
  events.emit('request', request({ key: undefined, credentials: undefined, status: 401, attempts: 0, upstreamMs: undefined }));
  events.emit('request', request({ path: '/not-configured', credentials: 'nobody' }));
  events.emit('request', request({ path: undefined, url: '/healthz', status: 200, attempts: 0 }));

  t.equal(await value(metrics, 'bitquery_proxy_requests_total', { path: '/graphql', status: 200, key: 'alice', credentials: 'default' }), 2);
  t.equal(await value(metrics, 'bitquery_proxy_requests_total', { path: '/graphql', key: 'other' }), 1, 'an unknown key name is folded into other');
  t.equal(await value(metrics, 'bitquery_proxy_requests_total', { status: 401, key: 'none', credentials: 'none' }), 1, 'no key: none');
  t.equal(await value(metrics, 'bitquery_proxy_requests_total', { path: 'other', credentials: 'other' }), 1, 'unknown path and set: other');
  const text = await metrics.text();
  t.notMatch(text, 'mallory');
  t.notMatch(text, 'not-configured');
  t.notMatch(text, 'healthz', 'probes are not proxied requests');

  t.equal(await value(metrics, 'bitquery_proxy_request_duration_seconds_bucket', { path: '/graphql', le: 0.0001 }), 0);
  t.equal(await value(metrics, 'bitquery_proxy_request_duration_seconds_bucket', { path: '/graphql', le: 0.00025 }), 3, '0.2 ms requests land in a bucket of their own');
  t.equal(await value(metrics, 'bitquery_proxy_request_duration_seconds_bucket', { path: '/graphql', le: 60 }), 4, '42 s lands under 60 s');
  t.equal(await value(metrics, 'bitquery_proxy_request_duration_seconds_bucket', { path: '/graphql', le: 30 }), 3);
  t.equal(await value(metrics, 'bitquery_proxy_upstream_duration_seconds_count', { credentials: 'default' }), 3);
  t.equal(await value(metrics, 'bitquery_proxy_upstream_duration_seconds_bucket', { credentials: 'default', le: 0.00025 }), 2);
  t.ok(DURATION_BUCKETS[0]! <= 0.0002 && DURATION_BUCKETS.at(-1)! > 60, 'buckets span 0.2 ms to past 60 s');
});

t.test('retries, upstream errors, Bitquery limits and local limits', async (t) => {
  const { events, metrics } = setup();
  events.emit('request', request({ credentials: 'default', attempts: 2, upstreamStatus: 200 }));
  events.emit('request', request({ credentials: 'default', key: 'bob', status: 402, upstreamStatus: 402 }));
  events.emit('request', request({ credentials: 'default', key: 'bob', status: 429, upstreamStatus: 429 }));
  events.emit('request', request({ credentials: 'default', key: 'bob', status: 429, error: 'rate_limited', attempts: 0, upstreamMs: undefined }));
  events.emit('request', request({ credentials: 'team-b', status: 504, error: 'upstream_timeout', upstreamMs: undefined }));
  events.emit('request', request({ credentials: 'team-b', status: 502, error: 'upstream_unreachable', upstreamMs: undefined }));
  events.emit('request', request({ credentials: 'team-b', status: 503, error: 'token_unavailable', attempts: 0, upstreamMs: undefined }));

  t.equal(await value(metrics, 'bitquery_proxy_upstream_retries_total', { credentials: 'default' }), 1);
  t.equal(await value(metrics, 'bitquery_proxy_upstream_limited_total', { key: 'bob', status: 402 }), 1);
  t.equal(await value(metrics, 'bitquery_proxy_upstream_limited_total', { key: 'bob', status: 429 }), 1, "the proxy's own 429 is not Bitquery's");
  t.equal(await value(metrics, 'bitquery_proxy_rate_limited_total', { key: 'bob' }), 1);
  t.equal(await value(metrics, 'bitquery_proxy_upstream_errors_total', { credentials: 'team-b', error: 'timeout' }), 1);
  t.equal(await value(metrics, 'bitquery_proxy_upstream_errors_total', { credentials: 'team-b', error: 'unreachable' }), 1);
  t.notMatch(await metrics.text(), /upstream_errors_total\{[^}]*token/, 'a missing token is not an upstream error');
});

t.test('token events count requests; the expiry gauge is read at scrape time', async (t) => {
  const { events, metrics, sets } = setup();
  events.emit('token', { credentials: 'default', result: 'ok', expiresAt: Date.now() + 3600_000 });
  events.emit('token', { credentials: 'default', result: 'failed', reason: 'token endpoint answered HTTP 503' });
  events.emit('token', { credentials: 'team-b', result: 'rejected', reason: 'invalid_client' });
  t.equal(await value(metrics, 'bitquery_proxy_token_requests_total', { credentials: 'default', result: 'ok' }), 1);
  t.equal(await value(metrics, 'bitquery_proxy_token_requests_total', { credentials: 'default', result: 'failed' }), 1);
  t.equal(await value(metrics, 'bitquery_proxy_token_requests_total', { credentials: 'team-b', result: 'rejected' }), 1);

  t.equal(await value(metrics, 'bitquery_proxy_token_expires_in_seconds', { credentials: 'default' }), 3600);
  t.equal(await value(metrics, 'bitquery_proxy_token_expires_in_seconds', { credentials: 'team-b' }), 0, 'no valid token: 0');
  t.match(await metrics.text(), 'bitquery_proxy_token_expires_in_seconds{credentials="static-one"} +Inf', 'static token: no known expiry');
  sets[0]!.state = { ready: true, expiresInSec: 1200 };
  t.equal(await value(metrics, 'bitquery_proxy_token_expires_in_seconds', { credentials: 'default' }), 1200, 'the current value at each scrape');
});

t.test('stream events: open streams, closes, messages, refusals', async (t) => {
  const { events, metrics } = setup();
  const stream = { path: '/graphql', protocol: 'graphql-ws', credentials: 'default', key: 'alice' };
  t.equal(await value(metrics, 'bitquery_proxy_ws_streams', { credentials: 'team-b' }), 0, 'every configured set has a series from the start');
  events.emit('streamOpened', { ...stream, url: '/graphql', id: 1, attempts: 1 });
  events.emit('streamOpened', { ...stream, url: '/graphql', id: 2, attempts: 2 });
  events.emit('streamOpened', { ...stream, url: '/graphql', id: 3, attempts: 1, key: 'bob' });
  const closed = { ms: 10, bytesFromClient: 1, bytesToClient: 2, messagesFromClient: 1, messagesToClient: 2 };
  events.emit('streamClosed', { ...stream, ...closed, id: 1, closedBy: 'client' });
  t.equal(await value(metrics, 'bitquery_proxy_ws_streams', { credentials: 'default' }), 2);
  t.equal(await value(metrics, 'bitquery_proxy_ws_streams_closed_total', { credentials: 'default', closed_by: 'client' }), 1);
  t.equal(await value(metrics, 'bitquery_proxy_upstream_retries_total', { credentials: 'default' }), 1, 'a handshake retried after a 401');

  for (let i = 0; i < 3; i++) events.emit('streamMessage', { direction: 'to_client', bytes: 100 });
  events.emit('streamMessage', { direction: 'to_upstream', bytes: 50 });
  t.equal(await value(metrics, 'bitquery_proxy_ws_messages_total', { direction: 'to_client' }), 3);
  events.emit('streamMessage', { direction: 'to_client', bytes: 100 });
  t.equal(await value(metrics, 'bitquery_proxy_ws_messages_total', { direction: 'to_client' }), 4, 'scrapes add up, not reset');
  t.equal(await value(metrics, 'bitquery_proxy_ws_messages_total', { direction: 'to_upstream' }), 1);

  events.emit('refused', { transport: 'ws', status: 429, error: 'rate_limited', message: 'rate_limited', key: 'alice', path: '/graphql' });
  events.emit('refused', { transport: 'ws', status: 402, error: 'forbidden', message: 'forbidden', key: 'alice', path: '/graphql' });
  events.emit('refused', { transport: 'ws', status: 503, error: 'shutting_down', message: 'shutting_down', path: '/graphql' });
  events.emit('refused', { transport: 'http', status: 429, error: 'rate_limited', message: 'rate_limited', key: 'alice', path: '/graphql' });
  t.equal(await value(metrics, 'bitquery_proxy_ws_refused_total', { reason: 'rate_limited' }), 1, 'HTTP refusals are counted by their request events');
  t.equal(await value(metrics, 'bitquery_proxy_ws_refused_total', { reason: 'shutting_down' }), 1);
  t.equal(await value(metrics, 'bitquery_proxy_rate_limited_total', { key: 'alice' }), 1);
  t.equal(await value(metrics, 'bitquery_proxy_upstream_limited_total', { key: 'alice', status: 402 }), 1, "a handshake refused with Bitquery's 402");
});

t.test('usage events set the account gauges', async (t) => {
  const { events, metrics } = setup();
  t.notMatch(await metrics.text(), /^bitquery_account_points_used\{/m, 'nothing before the first answer');
  events.emit('usage', { credentials: 'default', usage: usage({ pointsUsed: 4458, pointsLimit: 1_000_000 }) });
  events.emit('usage', { credentials: 'team-b', usage: usage({ status: 'blocked', pointsLimit: 0 }) });
  t.equal(await value(metrics, 'bitquery_account_points_used', { credentials: 'default' }), 4458);
  t.equal(await value(metrics, 'bitquery_account_points_limit', { credentials: 'default' }), 1_000_000);
  t.equal(await value(metrics, 'bitquery_account_points_limit', { credentials: 'team-b' }), 0);
  t.equal(await value(metrics, 'bitquery_account_requests_used', { credentials: 'default' }), 184);
  t.equal(await value(metrics, 'bitquery_account_subscription_limit', { credentials: 'default' }), 1000);
  t.equal(await value(metrics, 'bitquery_account_period_end_timestamp_seconds', { credentials: 'default' }), Date.parse('2026-07-23T23:59:59Z') / 1000);
  t.equal(await value(metrics, 'bitquery_account_status', { credentials: 'default', status: 'active' }), 1);
  t.equal(await value(metrics, 'bitquery_account_status', { credentials: 'team-b', status: 'blocked' }), 1);

  events.emit('usage', { credentials: 'default', usage: usage({ status: 'something-new' }) });
  const text = await metrics.text();
  t.match(text, 'bitquery_account_status{credentials="default",status="other"} 1', 'an unknown status is other');
  t.notMatch(text, 'bitquery_account_status{credentials="default",status="active"}', 'only the current status');
});

t.test('traffic() folds the counters for the status page', async (t) => {
  const { events, metrics } = setup();
  events.emit('request', request({ key: 'alice', credentials: 'default', attempts: 2 }));
  events.emit('request', request({ key: 'alice', credentials: 'default', status: 402, upstreamStatus: 402 }));
  events.emit('request', request({ key: 'bob', credentials: 'default', status: 429, upstreamStatus: 429 }));
  events.emit('request', request({ key: 'bob', credentials: 'default', status: 429, error: 'rate_limited' }));
  events.emit('streamOpened', { id: 1, path: '/graphql', url: '/graphql', protocol: 'graphql-ws', credentials: 'default', key: 'bob', attempts: 1 });
  t.same(await metrics.traffic(), {
    requests: 4,
    byStatus: { '200': 1, '402': 1, '429': 2 },
    retries: 1,
    upstream402: 1,
    upstream429: 1,
    rateLimited: 1,
    openStreams: 1,
    keys: [
      { name: 'alice', requests: 2, upstreamLimited: 1, rateLimited: 0, openStreams: 0 },
      { name: 'bob', requests: 2, upstreamLimited: 1, rateLimited: 1, openStreams: 1 },
    ],
  });
});

t.test('close() stops listening; metrics of later issues join the same registry', async (t) => {
  const { events, metrics } = setup();
  const saved = metrics.counter({ name: 'bitquery_proxy_test_saved_total', help: 'test', labelNames: ['credentials'] as const });
  saved.inc({ credentials: metrics.labels.credentials('default') });
  saved.inc({ credentials: metrics.labels.credentials('who-knows') });
  const gauge = metrics.gauge({ name: 'bitquery_proxy_test_bytes', help: 'test' });
  gauge.set(5);
  const histogram = metrics.histogram({ name: 'bitquery_proxy_test_seconds', help: 'test', buckets: [1] });
  histogram.observe(0.5);
  const text = await metrics.text();
  t.match(text, 'bitquery_proxy_test_saved_total{credentials="default"} 1');
  t.match(text, 'bitquery_proxy_test_saved_total{credentials="other"} 1');
  t.match(text, 'bitquery_proxy_test_bytes 5');
  t.match(text, 'bitquery_proxy_test_seconds_count 1');
  t.equal(globalRegistry.getSingleMetric('bitquery_proxy_test_saved_total'), undefined);

  metrics.close();
  events.emit('request', request({ key: 'alice', credentials: 'default' }));
  t.equal(await value(metrics, 'bitquery_proxy_requests_total', {}), 0);
  t.notOk(events.has('request'));
});

t.test("LightHistogram's exposition is prom-client's Histogram's, to the line", async (t) => {
  const observations: [string, number][] = [['/graphql', 0.0002], ['/graphql', 0.0001], ['/eap', 42], ['/graphql', 500], ['/eap', 0.003], ['/graphql', 0]];
  const reference = new Registry();
  const histogram = new Histogram({ name: 'x_seconds', help: 'help text', labelNames: ['path'], buckets: DURATION_BUCKETS, registers: [reference] });
  const light = new Registry();
  const lightHistogram = new LightHistogram('x_seconds', 'help text', 'path', DURATION_BUCKETS);
  light.registerMetric(lightHistogram as unknown as Histogram);
  for (const [path, seconds] of observations) {
    histogram.observe({ path }, seconds);
    lightHistogram.observe(path, seconds);
  }
  t.equal(await light.metrics(), await reference.metrics());
  light.resetMetrics();
  t.equal(await light.metrics(), '# HELP x_seconds help text\n# TYPE x_seconds histogram\n', 'reset empties it');
});
