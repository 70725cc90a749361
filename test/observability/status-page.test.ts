// The status page in a real browser: headless Chromium (Debian's `chromium` package) loads it from
// a running admin listener, and the test asserts on what is rendered. A screenshot is kept under
// .tap/screenshots/ (ignored by git) for people to look at.
import t from 'tap';
import { existsSync, mkdirSync } from 'node:fs';
import { resolve } from 'node:path';
import pino from 'pino';
import type { Browser } from 'playwright-core';
import { Events } from '../../src/events.js';
import { startAdmin } from '../../src/observability/admin.js';
import { Metrics } from '../../src/observability/metrics.js';
import { StatusBoard } from '../../src/observability/status.js';
import type { UsageState } from '../../src/observability/usage.js';
import { chromiumSkip, launchChromium, pageProblems } from '../helpers/chromium.js';
import { fakeSet, request, usage } from './helpers.js';

const SCREENSHOT = resolve(import.meta.dirname, '../../.tap/screenshots/status-page.png');
/** A name that would run script if it were not escaped. */
const HOSTILE = 'team-<img src=x onerror="window.pwned=1">';

async function adminWithTraffic() {
  const events = new Events();
  const sets = [
    fakeSet('default', 'client_credentials', { ready: true, expiresInSec: 4 * 3600 + 12 * 60 }),
    fakeSet('research', 'client_credentials', { ready: true, expiresInSec: 26 * 86400 }),
    fakeSet(HOSTILE, 'static', { ready: false, reason: 'the upstream rejected the static token (401): generate a new one' }),
  ];
  const keys = new Set(['alice', 'bob', 'ci-bot']);
  const metrics = new Metrics({ events, paths: ['/graphql', '/eap'], sets, isKnownKey: (name) => keys.has(name) });
  const day = 86400_000;
  const period = { periodStart: new Date(Date.now() - 6 * day).toISOString(), periodEnd: new Date(Date.now() + 23 * day + 1800_000).toISOString() };
  const states: Record<string, UsageState> = {
    default: { usage: usage({ ...period, pointsUsed: 613_250, pointsLimit: 1_000_000, requestsUsed: 20_114, plan: 'Pro' }), failures: 0 },
    research: { usage: usage({ ...period, pointsUsed: 4_810_000, pointsLimit: 5_000_000, requestsUsed: 88_410, plan: 'Scale' }), failures: 0 },
    [HOSTILE]: { failures: 3, lastError: 'the Usage API refused the token (HTTP 401)', lastErrorAt: Date.now() },
  };
  const board = new StatusBoard({
    version: '0.1.0',
    startedAt: Date.now() - (2 * 86400 + 5 * 3600) * 1000,
    sets,
    events,
    traffic: () => metrics.traffic(),
    usage: { state: (name) => states[name] },
    budgetWarnPercent: 80,
  });
  events.emit('token', { credentials: 'default', result: 'ok', expiresAt: Date.now() + 5 * 3600_000 });
  events.emit('token', { credentials: 'research', result: 'failed', reason: 'token endpoint unreachable: no answer within 10000 ms' });
  events.emit('token', { credentials: 'research', result: 'ok', expiresAt: Date.now() + 30 * 86400_000 });
  const traffic: [number, Parameters<typeof request>[0]][] = [
    [812, { key: 'alice', credentials: 'default' }],
    [3, { key: 'alice', credentials: 'default', attempts: 2 }],
    [240, { key: 'bob', credentials: 'research' }],
    [6, { key: 'bob', credentials: 'research', status: 429, upstreamStatus: 429 }],
    [2, { key: 'bob', credentials: 'research', status: 402, upstreamStatus: 402 }],
    [15, { key: 'ci-bot', credentials: 'default', status: 429, error: 'rate_limited', attempts: 0 }],
    [4, { key: 'ci-bot', credentials: 'default', status: 504, error: 'upstream_timeout' }],
  ];
  for (const [times, fields] of traffic) for (let i = 0; i < times; i++) events.emit('request', request(fields));
  for (let id = 1; id <= 3; id++) events.emit('streamOpened', { id, path: '/graphql', url: '/graphql', protocol: 'graphql-ws', credentials: 'default', key: 'alice', attempts: 1 });
  const admin = await startAdmin({
    host: '127.0.0.1',
    port: 0,
    logger: pino({ level: 'silent' }),
    metrics,
    readiness: () => ({ ready: true }),
    status: () => board.data(),
  });
  return admin;
}

t.test('the status page renders in Chromium, readable and self-contained', { skip: chromiumSkip }, async (t) => {
  const admin = await adminWithTraffic();
  t.teardown(() => admin.close());
  let browser: Browser | undefined;
  t.teardown(() => browser?.close());
  browser = await launchChromium();
  const page = await browser.newPage({ viewport: { width: 1100, height: 900 } });
  const problems = pageProblems(page);
  const elsewhere: string[] = [];
  page.on('request', (req) => {
    if (!req.url().startsWith(`${admin.url}/`)) elsewhere.push(req.url());
  });

  const response = await page.goto(`${admin.url}/status`, { waitUntil: 'load' });
  t.equal(response?.status(), 200);
  t.equal(await page.title(), 'bitquery-proxy status');

  const text = await page.locator('body').innerText();
  t.match(text, 'bitquery-proxy 0.1.0');
  t.match(text, 'up 2 d 5 h');
  t.match(text, /default\s+client credentials/);
  t.match(text, 'valid, expires in 4 h 12 min');
  t.match(text, '613,250 of 1,000,000 points used (61.3%), 386,750 left');
  t.match(text, '4,810,000 of 5,000,000 points used (96.2%), 190,000 left');
  t.match(text, 'token endpoint unreachable: no answer within 10000 ms');
  t.match(text, '(ends in 23 d 0 h)');
  t.match(text, 'not valid: the upstream rejected the static token (401)');
  t.match(text, 'points usage unknown: the Usage API refused the token (HTTP 401)');

  const hostile = page.locator('.card h2').nth(2);
  t.match(await hostile.innerText(), HOSTILE, 'a hostile name shows as text');
  t.equal(await page.locator('.card img').count(), 0, 'and makes no element');
  t.equal(await page.evaluate(() => (window as unknown as { pwned?: number }).pwned), undefined, 'and runs nothing');

  const tile = (label: string) => page.locator('.tile', { hasText: label }).locator('.value').innerText();
  t.equal(await tile('requests'), '1,082');
  t.equal(await tile('retries after a 401'), '3');
  t.equal(await tile('Bitquery 402 (points)'), '2');
  t.equal(await tile('Bitquery 429 (rate)'), '6');
  t.equal(await tile('proxy 429 (local limits)'), '15');
  t.equal(await tile('open streams'), '3');
  const bob = await page.locator('table.keys tr', { hasText: 'bob' }).locator('td').allInnerTexts();
  t.same(bob, ['bob', '248', '8', '0', '0']);

  const bars = await page.locator('.bar').evaluateAll((els) =>
    els.map((bar) => {
      const fill = bar.firstElementChild as HTMLElement;
      return { ratio: fill.getBoundingClientRect().width / bar.getBoundingClientRect().width, color: getComputedStyle(fill).backgroundColor };
    }),
  );
  t.equal(bars.length, 2, 'a bar for each account with a limit');
  t.ok(Math.abs(bars[0]!.ratio - 0.613) < 0.01, `the first bar is 61.3% wide (${bars[0]!.ratio})`);
  t.ok(Math.abs(bars[1]!.ratio - 0.962) < 0.01, `the second bar is 96.2% wide (${bars[1]!.ratio})`);
  t.equal(bars[0]!.color, 'rgb(26, 127, 55)', 'under the warning threshold: green');
  t.equal(bars[1]!.color, 'rgb(207, 34, 46)', 'past 95 %: red');

  t.equal(await page.locator('meta[http-equiv="refresh"]').getAttribute('content'), '10', 'it reloads itself');
  t.same(problems, [], 'no console error or warning (a CSP violation would be one)');
  t.same(elsewhere, [], 'nothing fetched from anywhere else');

  mkdirSync(resolve(SCREENSHOT, '..'), { recursive: true });
  await page.screenshot({ path: SCREENSHOT, fullPage: true });
  t.ok(existsSync(SCREENSHOT));
  t.comment(`screenshot: ${SCREENSHOT}`);
});
