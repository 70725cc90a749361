// The observability wired into the daemon, end to end: the proxy started as users start it, with
// ADMIN_PORT=0, against the fake Bitquery (its Usage API included). Metrics move with the traffic
// that should move them, the account gauges equal what the fake reports, the budget warning comes
// once, the status page and its JSON answer, request ids round-trip, and no secret shows anywhere.
import t from 'tap';
import { SECRET, startFake, startProxy, fakeEnv } from '../helpers/pair.js';
import { waitFor } from '../helpers/proxy-process.js';
import { assertNoLeaks } from '../helpers/secrets.js';
import { sample } from './helpers.js';

const KEY = 'alice-key-7c1e9a3f5b';
const QUERY = JSON.stringify({ query: '{ hello }' });

t.test('observability end to end', async (t) => {
  const fake = await startFake(t);
  const proxy = await startProxy(
    t,
    fake,
    { ...fakeEnv(fake), PROXY_API_KEYS: `alice:${KEY}`, BITQUERY_USAGE_URL: fake.usageUrl, USAGE_POLL_MS: '100', BUDGET_WARN_PERCENT: '80' },
    {},
    [SECRET, KEY],
  );
  const started = await proxy.waitForLog((l) => l.msg.startsWith('admin listening on '));
  const admin = started.url as string;
  t.match(admin, /^http:\/\/127\.0\.0\.1:\d+$/, 'the start-up line says where the admin listener is');
  const metrics = async () => (await fetch(`${admin}/metrics`)).text();
  const post = (headers: Record<string, string> = {}) =>
    fetch(`${proxy.url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-api-key': KEY, ...headers }, body: QUERY });

  await t.test('requests move bitquery_proxy_requests_total with bounded labels', async (t) => {
    for (let i = 0; i < 3; i++) t.equal((await post()).status, 200);
    t.equal((await fetch(`${proxy.url}/graphql`, { method: 'POST', body: QUERY })).status, 401, 'no key');
    const text = await waitFor(async () => {
      const m = await metrics();
      return sample(m, 'bitquery_proxy_requests_total', { path: '/graphql', status: '200', key: 'alice', credentials: 'default' }) === 3 && m;
    }, 10_000, 'three requests counted');
    t.equal(sample(text, 'bitquery_proxy_requests_total', { path: '/graphql', status: '401', key: 'none' }), 1, 'the refused one, without a key');
    t.equal(sample(text, 'bitquery_proxy_request_duration_seconds_count', { path: '/graphql' }), 4);
    t.equal(sample(text, 'bitquery_proxy_token_requests_total', { credentials: 'default', result: 'ok' }), 1, 'one token request, ok');
    t.ok((sample(text, 'bitquery_proxy_token_expires_in_seconds', { credentials: 'default' }) ?? 0) > 17_000, 'token expiry gauge');
    t.notOk(text.includes('/healthz'), 'probes are not counted');
  });

  await t.test('a 402 from Bitquery moves upstream_limited_total', async (t) => {
    fake.graphqlScript.push({ status: 402, body: 'Payment Required' });
    t.equal((await post()).status, 402);
    await waitFor(async () => sample(await metrics(), 'bitquery_proxy_upstream_limited_total', { key: 'alice', status: '402' }) === 1, 10_000, 'the 402 counted');
  });

  await t.test('the account gauges equal the Usage API; the budget warning comes once at 80%', async (t) => {
    fake.usage.usage.points_usage = 850_000;
    fake.usage.usage.requests_usage = 4321;
    const warning = await proxy.waitForLog((l) => l.msg.startsWith('points budget'), 10_000);
    t.match(warning.msg, /^points budget 85% used \(850,000 of 1,000,000 points used, 150,000 left\): the period ends /);
    const text = await waitFor(async () => {
      const m = await metrics();
      return sample(m, 'bitquery_account_points_used', { credentials: 'default' }) === 850_000 && m;
    }, 10_000, 'the usage gauge');
    const a = fake.usage;
    t.equal(sample(text, 'bitquery_account_points_limit', { credentials: 'default' }), a.limits.points_limit);
    t.equal(sample(text, 'bitquery_account_requests_used', { credentials: 'default' }), 4321);
    t.equal(sample(text, 'bitquery_account_subscription_limit', { credentials: 'default' }), a.limits.subscription_limit);
    t.equal(sample(text, 'bitquery_account_period_end_timestamp_seconds', { credentials: 'default' }), Math.floor(Date.parse(a.ended_at) / 1000));
    t.equal(sample(text, 'bitquery_account_status', { credentials: 'default', status: 'active' }), 1);
    const polls = fake.usageRequests.length;
    await waitFor(() => fake.usageRequests.length >= polls + 3, 10_000, 'three more polls');
    t.equal(proxy.logs().filter((l) => l.msg.startsWith('points budget')).length, 1, 'warned exactly once');
    t.ok(fake.usageRequests.every((r) => r.authorized), 'polled with the set’s token');
  });

  await t.test('/status.json and /status on the admin port', async (t) => {
    const json = await fetch(`${admin}/status.json`);
    t.equal(json.status, 200);
    const data = (await json.json()) as { credentials: { name: string; mode: string; token: { valid: boolean } }[] };
    t.match(data.credentials, [{ name: 'default', mode: 'client_credentials', token: { valid: true } }]);
    const page = await fetch(`${admin}/status`);
    t.equal(page.status, 200);
    t.match(page.headers.get('content-type'), /^text\/html/);
    t.match(await page.text(), /default/);
    t.equal((await fetch(`${admin}/readyz`)).status, 200);
    t.equal((await fetch(`${admin}/graphql`)).status, 404, 'the admin port never proxies');
  });

  await t.test('X-Request-Id: kept when acceptable, replaced otherwise, on every answer and upstream', async (t) => {
    const kept = await post({ 'x-request-id': 'client-id-42' });
    t.equal(kept.headers.get('x-request-id'), 'client-id-42');
    t.equal(fake.graphqlRequests.at(-1)!.headers['x-request-id'], 'client-id-42', 'forwarded upstream');
    await proxy.waitForLog((l) => l.msg === 'request' && l.reqId === 'client-id-42');
    const long = await post({ 'x-request-id': 'x'.repeat(129) });
    const replaced = long.headers.get('x-request-id')!;
    t.match(replaced, /^[0-9a-f-]{36}$/, 'too long: a new UUID');
    t.equal(fake.graphqlRequests.at(-1)!.headers['x-request-id'], replaced, 'the new id went upstream');
    const refused = await fetch(`${proxy.url}/graphql`, { method: 'POST', body: QUERY, headers: { 'x-request-id': 'refused-1' } });
    t.equal(refused.status, 401);
    t.equal(refused.headers.get('x-request-id'), 'refused-1', 'on an error answer too');
    const missing = await fetch(`${proxy.url}/nowhere`);
    t.match(missing.headers.get('x-request-id'), /^[0-9a-f-]{36}$/, 'made when none came');
  });

  await t.test('no secret on the admin port', async (t) => {
    const secrets = [SECRET, KEY, ...fake.issuedTokens];
    for (const path of ['/metrics', '/status', '/status.json']) {
      const body = await (await fetch(`${admin}${path}`)).text();
      t.doesNotThrow(() => assertNoLeaks(body, secrets, path), path);
    }
  });
});
