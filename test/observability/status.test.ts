import t from 'tap';
import { Events } from '../../src/events.js';
import { escapeHtml, formatDuration, renderStatusPage } from '../../src/observability/status-page.js';
import { StatusBoard, type StatusSources, type TrafficSummary } from '../../src/observability/status.js';
import type { UsageState } from '../../src/observability/usage.js';
import { fakeSet, usage } from './helpers.js';

const quietTraffic = (): TrafficSummary => ({ requests: 0, byStatus: {}, retries: 0, upstream402: 0, upstream429: 0, rateLimited: 0, openStreams: 0, keys: [] });

function board(overrides: Partial<StatusSources> = {}, states: Record<string, UsageState> = {}) {
  const events = new Events();
  const sources: StatusSources = {
    version: '1.2.3',
    startedAt: Date.now() - 3 * 3600_000 - 5 * 60_000,
    sets: [fakeSet('default'), fakeSet('team-b', 'static', { ready: false, reason: 'the upstream rejected the static token (401)' })],
    events,
    traffic: async () => quietTraffic(),
    usage: { state: (name) => states[name] },
    budgetWarnPercent: 80,
    ...overrides,
  };
  return { events, status: new StatusBoard(sources) };
}

t.test('status.json: each set with its token state and account, traffic, no secret', async (t) => {
  const { events, status } = board({}, { default: { usage: usage({ pointsUsed: 850_000, pointsLimit: 1_000_000 }), failures: 0 }, 'team-b': { failures: 2, lastError: 'the Usage API refused the token (HTTP 401)', lastErrorAt: Date.now() } });
  events.emit('token', { credentials: 'default', result: 'failed', reason: 'token endpoint answered HTTP 503' });
  events.emit('token', { credentials: 'default', result: 'ok', expiresAt: Date.now() + 3600_000 });
  events.emit('token', { credentials: 'team-b', result: 'rejected' });
  const data = await status.data();
  t.match(data, { version: '1.2.3', uptimeSec: 3 * 3600 + 5 * 60, budgetWarnPercent: 80, traffic: quietTraffic() });
  t.ok(Date.parse(data.generatedAt) - Date.parse(data.startedAt) >= (3 * 3600 + 5 * 60) * 1000);
  const [first, second] = data.credentials;
  t.match(first, {
    name: 'default',
    mode: 'client_credentials',
    token: { valid: true, expiresInSec: 3600, reason: null, lastRenewalAt: String, lastError: 'token endpoint answered HTTP 503', lastErrorAt: String },
    usagePolled: true,
    account: { status: 'active', pointsUsed: 850_000, pointsLimit: 1_000_000, pointsLeft: 150_000, percentUsed: 85, subscriptionLimit: 1000, periodEnd: '2026-07-23T23:59:59.000Z' },
    usageError: null,
  });
  t.match(second, {
    name: 'team-b',
    mode: 'static',
    token: { valid: false, expiresInSec: null, reason: 'the upstream rejected the static token (401)', lastRenewalAt: null, lastError: 'rejected' },
    usagePolled: true,
    account: null,
    usageError: 'the Usage API refused the token (HTTP 401)',
  });
  t.notMatch(JSON.stringify(data), 'secret');
  const page = renderStatusPage(data);
  t.match(page, '<span class="muted">token endpoint answered HTTP 503</span>', 'an error a later renewal fixed is history');
  t.match(page, '<span class="bad">rejected</span>', 'an error without a renewal since is an alarm');

  status.close();
  events.emit('token', { credentials: 'default', result: 'failed', reason: 'after close' });
  t.notMatch(JSON.stringify(await status.data()), 'after close');
});

t.test('a limit of 0 has no percentage; without a poller nothing is polled', async (t) => {
  const { status } = board({}, { default: { usage: usage({ pointsLimit: 0, pointsUsed: 12 }), failures: 0 } });
  const [set] = (await status.data()).credentials;
  t.match(set!.account, { pointsLimit: 0, pointsLeft: null, percentUsed: null });
  const page = renderStatusPage(await status.data());
  t.match(page, '<strong>12</strong> points used (no limit)');
  t.notMatch(page, 'role="progressbar"');

  const { status: unpolled } = board({ usage: undefined });
  const data = await unpolled.data();
  t.same(data.credentials.map((c) => c.usagePolled), [false, false]);
  t.match(renderStatusPage(data), 'points usage is not polled (USAGE_POLL_MS=0)');
});

t.test('the page shows the numbers, the bar, and the token states', async (t) => {
  const traffic: TrafficSummary = {
    requests: 1234,
    byStatus: { '200': 1200, '402': 4, '429': 20, '502': 10 },
    retries: 3,
    upstream402: 4,
    upstream429: 8,
    rateLimited: 12,
    openStreams: 2,
    keys: [
      { name: 'alice', requests: 1000, upstreamLimited: 12, rateLimited: 12, openStreams: 2 },
      { name: 'none', requests: 234, upstreamLimited: 0, rateLimited: 0, openStreams: 0 },
    ],
  };
  const { status } = board(
    { traffic: async () => traffic },
    { default: { usage: usage({ pointsUsed: 961_000, pointsLimit: 1_000_000 }), failures: 1, lastError: 'the Usage API answered HTTP 502' }, 'team-b': { failures: 0 } },
  );
  const page = renderStatusPage(await status.data());
  t.match(page, /^<!doctype html>/);
  t.match(page, '<meta http-equiv="refresh" content="10">');
  t.match(page, 'bitquery-proxy <span class="muted">1.2.3</span>');
  t.match(page, 'up 3 h 5 min');
  t.match(page, '<strong>961,000</strong> of 1,000,000 points used (96.1%), 39,000 left');
  t.match(page, '<span class="bad-bg" style="width:96.1%">', 'past 95 % the bar is red');
  t.match(page, 'period 2026-06-24 00:00 UTC – 2026-07-23 23:59 UTC');
  t.match(page, 'last poll failed: the Usage API answered HTTP 502');
  t.match(page, 'points usage: first poll under way');
  t.match(page, /<span class="ok">valid<\/span>, expires in 1 h 0 min/);
  t.match(page, /<span class="bad">not valid<\/span>: the upstream rejected the static token \(401\)/);
  t.match(page, '<div class="value">1,234</div><div class="label">requests</div>');
  t.match(page, '<td class="bad">502</td><td>10</td>');
  t.match(page, '<td>(no key)</td>');
  t.notMatch(page, 'requests saved', 'no savings tile without the points saver');
  t.notMatch(page, '<script', 'no script');
  t.notMatch(page, /(src|href)="?(https?:)?\/\//, 'no external asset');

  const day = 86400_000;
  const iso = (ms: number) => new Date(ms).toISOString();
  const { status: periods } = board({}, {
    default: { usage: usage({ periodStart: iso(Date.now() - 6 * day), periodEnd: iso(Date.now() + 23 * day + 1800_000) }), failures: 0 },
    'team-b': { usage: usage({ periodStart: iso(Date.now() - 40 * day), periodEnd: iso(Date.now() - 2 * day - 1800_000) }), failures: 0 },
  });
  const both = renderStatusPage(await periods.data());
  t.match(both, '(ends in 23 d 0 h)');
  t.match(both, '(ended 2 d 0 h ago)');

  const { status: quiet } = board({ traffic: async () => ({ ...quietTraffic(), requestsSaved: 40, subscriptions: 15, upstreamStreams: 1 }) }, { default: { usage: usage({ pointsUsed: 850_000, pointsLimit: 1_000_000 }), failures: 0 } });
  const calm = renderStatusPage(await quiet.data());
  t.match(calm, '<span class="warn-bg" style="width:85%">', 'past BUDGET_WARN_PERCENT the bar is amber');
  t.match(calm, '<div class="value ok">40</div><div class="label">requests saved</div>');
  t.match(calm, '15 on 1</div><div class="label">subscriptions on upstream streams');
  t.match(calm, 'no requests yet');
  t.match(calm, 'no traffic yet');
});

t.test('hostile names and messages are escaped everywhere', async (t) => {
  const evil = '<script>alert(1)</script>"\'&';
  const img = '"><img src=x onerror=alert(1)>';
  const { events, status } = board(
    {
      sets: [fakeSet(evil, img, { ready: false, reason: evil })],
      traffic: async () => ({ ...quietTraffic(), requests: 1, byStatus: { [img]: 1 }, keys: [{ name: img, requests: 1, upstreamLimited: 0, rateLimited: 0, openStreams: 0 }] }),
    },
    { [evil]: { usage: usage({ plan: img, status: evil }), failures: 1, lastError: img } },
  );
  events.emit('token', { credentials: evil, result: 'failed', reason: evil });
  const page = renderStatusPage(await status.data());
  t.notMatch(page, '<script');
  t.notMatch(page, '<img');
  t.notMatch(page, 'onerror=alert(1)>');
  t.match(page, '&lt;script&gt;alert(1)&lt;/script&gt;&quot;&#39;&amp;');
  t.match(page, '&quot;&gt;&lt;img src=x onerror=alert(1)&gt;');
  t.equal(escapeHtml(`<>&"'`), '&lt;&gt;&amp;&quot;&#39;');
});

t.test('durations read at a glance', async (t) => {
  t.equal(formatDuration(0), '0 s');
  t.equal(formatDuration(59.9), '59 s');
  t.equal(formatDuration(60), '1 min');
  t.equal(formatDuration(3 * 3600 + 5 * 60), '3 h 5 min');
  t.equal(formatDuration(12 * 86400 + 3 * 3600 + 59), '12 d 3 h');
  t.equal(formatDuration(-5), '0 s');
});
