// The status page of a running proxy, in a real browser: the proxy started as users start it, with
// inbound keys and the fake Bitquery's Usage API, gets real traffic (queries, a Bitquery 402, a
// local 429, open WebSocket streams); headless Chromium then loads /status from the admin listener
// and the test asserts on what is rendered: traffic, token health, points usage, per-key rows. The
// screenshot is kept under .tap/screenshots/ (ignored by git); docs/status-page.png is a copy of one.
import t from 'tap';
import { existsSync, mkdirSync } from 'node:fs';
import { resolve } from 'node:path';
import type { Browser } from 'playwright-core';
import { WebSocket } from 'ws';
import { chromiumSkip, launchChromium, pageProblems } from '../helpers/chromium.js';
import { fakeEnv, SECRET, startFake, startProxy } from '../helpers/pair.js';
import { waitFor } from '../helpers/proxy-process.js';
import { assertNoLeaks } from '../helpers/secrets.js';

const SCREENSHOT = resolve(import.meta.dirname, '../../.tap/screenshots/status-page-e2e.png');
const ALICE = 'alice-key-5d9e1b7c3a0f2846';
const BOB = 'bob-key-8a2c6e0b4d7f1935';
const QUERY = JSON.stringify({ query: '{ hello }' });

t.test('the status page of a running proxy renders in Chromium', { skip: chromiumSkip }, async (t) => {
  const fake = await startFake(t);
  fake.usage.usage.points_usage = 613_250;
  fake.usage.usage.requests_usage = 20_114;
  const proxy = await startProxy(
    t,
    fake,
    // Relay mode: the page's open streams are relayed sockets (share mode shows subscriptions on
    // upstream streams instead, tested with the sharing end to end).
    { ...fakeEnv(fake), PROXY_API_KEYS: `alice:${ALICE},bob:${BOB}`, RATE_LIMIT_PER_MINUTE: '30', BITQUERY_USAGE_URL: fake.usageUrl, USAGE_POLL_MS: '60000', WS_MODE: 'relay' },
    {},
    [SECRET, ALICE, BOB],
  );
  const admin = (await proxy.waitForLog((l) => l.msg.startsWith('admin listening on '))).url as string;

  const post = async (key: string) => (await fetch(`${proxy.url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-api-key': key }, body: QUERY })).status;
  for (let i = 0; i < 12; i++) t.equal(await post(ALICE), 200);
  fake.graphqlScript.push({ status: 402, body: 'points limit exceeded' });
  t.equal(await post(BOB), 402, 'a Bitquery 402 for bob');
  for (let i = 0; i < 29; i++) await post(BOB);
  t.equal(await post(BOB), 429, 'bob over his 30 a minute');
  const streams: WebSocket[] = [];
  for (let i = 0; i < 2; i++) {
    const ws = new WebSocket(`${proxy.url.replace('http', 'ws')}/graphql`, 'graphql-ws', { headers: { 'x-api-key': ALICE } });
    await new Promise<void>((ok, fail) => {
      ws.once('open', () => ok());
      ws.once('error', fail);
    });
    streams.push(ws);
  }
  t.teardown(() => streams.forEach((ws) => ws.terminate()));
  let last = '';
  await waitFor(async () => {
    last = await (await fetch(`${admin}/status.json`)).text();
    const data = JSON.parse(last) as { traffic: { openStreams: number; requests: number }; credentials: { account?: unknown }[] };
    return data.traffic.openStreams === 2 && data.traffic.requests === 43 && data.credentials[0]?.account;
  }, 10_000, 'the traffic and the first usage poll on /status.json').catch((err: Error) => {
    throw new Error(`${err.message}: ${last}`);
  });

  let browser: Browser | undefined;
  t.teardown(() => browser?.close());
  browser = await launchChromium();
  const page = await browser.newPage({ viewport: { width: 1100, height: 800 } });
  const problems = pageProblems(page);

  const response = await page.goto(`${admin}/status`, { waitUntil: 'load' });
  t.equal(response?.status(), 200);
  t.equal(await page.title(), 'bitquery-proxy status');
  const text = await page.locator('body').innerText();
  t.match(text, /bitquery-proxy \d+\.\d+\.\d+/, 'the version');
  t.match(text, /default\s+client credentials/, 'the credential set and its mode');
  t.match(text, /valid, expires in 4 h 59 min/, 'token health: the fake’s 17999 s token');
  t.match(text, /613,\d{3} of 1,000,000 points used \(61\.\d%\)/, 'the points used, from the Usage API');

  // By the whole label: "requests" is also part of "requests saved".
  const tile = (label: string) => page.locator('.tile').filter({ has: page.getByText(label, { exact: true }) }).locator('.value').innerText();
  t.equal(await tile('requests'), '43', 'requests since start');
  t.equal(await tile('Bitquery 402 (points)'), '1');
  t.equal(await tile('proxy 429 (local limits)'), '1');
  t.equal(await tile('open streams'), '2');
  t.equal(await tile('requests saved'), '0', 'the points saver’s tile');
  const row = (key: string) => page.locator('table.keys tr', { hasText: key }).locator('td').allInnerTexts();
  t.same(await row('alice'), ['alice', '12', '0', '0', '2'], 'alice: requests, limited, local 429, open streams');
  t.same(await row('bob'), ['bob', '31', '1', '1', '0']);
  const bar = await page.locator('.bar').evaluate((el) => (el.firstElementChild as HTMLElement).getBoundingClientRect().width / el.getBoundingClientRect().width);
  t.ok(Math.abs(bar - 0.613) < 0.01, `the points bar is 61.3% wide (${bar})`);
  t.same(problems, [], 'no console error or warning');
  const html = await page.content();
  t.doesNotThrow(() => assertNoLeaks(html, [SECRET, ALICE, BOB, ...fake.issuedTokens]), 'no secret on the page');

  mkdirSync(resolve(SCREENSHOT, '..'), { recursive: true });
  await page.screenshot({ path: SCREENSHOT, fullPage: true });
  t.ok(existsSync(SCREENSHOT));
  t.comment(`screenshot: ${SCREENSHOT}`);
});
