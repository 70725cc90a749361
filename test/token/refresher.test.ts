import t from 'tap';
import pino from 'pino';
import { backoffMs, isUsable, renewalDelayMs, TokenRefresher, type TokenFetcher } from '../../src/token/refresher.js';
import { setLongTimeout } from '../../src/token/timer.js';
import { TokenRequestError, TokenUnavailableError, type Token } from '../../src/token/types.js';
import { waitFor } from '../helpers/proxy-process.js';

const logger = pino({ level: 'silent' });
const HOUR = 3600_000;

t.test('renewal comes ahead of expiry for every lifetime Bitquery issues', async (t) => {
  const lifetimes = { 'five minutes': 300, '17999 s': 17999, '12 hours': 43200, '30 days': 2627999 };
  for (const [name, seconds] of Object.entries(lifetimes)) {
    const ms = seconds * 1000;
    const earliest = renewalDelayMs(ms, 0.2, () => 0.999999);
    const latest = renewalDelayMs(ms, 0.2, () => 0);
    t.ok(latest <= ms * 0.8 && earliest >= ms * 0.7 - 1, `${name}: renews between 70% and 80% of the lifetime`);
    t.ok(ms - latest >= 60_000, `${name}: at least a minute of margin`);
  }
  t.equal(renewalDelayMs(1000, 0.5, () => 1), 250, 'the largest margin still renews after a quarter of the lifetime');
});

t.test('backoff doubles, is capped, and has jitter', async (t) => {
  t.equal(backoffMs(1, 1000, 60000, () => 0), 500);
  t.equal(backoffMs(1, 1000, 60000, () => 1), 1000);
  t.equal(backoffMs(3, 1000, 60000, () => 1), 4000);
  t.equal(backoffMs(20, 1000, 60000, () => 1), 60000);
  t.equal(backoffMs(5000, 1000, 60000, () => 1), 60000, 'no overflow after many failures');
});

t.test('a token near its expiry is no longer used', async (t) => {
  const now = Date.now();
  t.ok(isUsable({ value: 'a', obtainedAt: now, expiresAt: now + HOUR }, now));
  t.notOk(isUsable({ value: 'a', obtainedAt: now - HOUR, expiresAt: now + 5000 }, now), '5 s left of an hour');
  t.notOk(isUsable({ value: 'a', obtainedAt: now - HOUR, expiresAt: now - 1 }, now), 'expired');
  t.ok(isUsable({ value: 'a', obtainedAt: now, expiresAt: Infinity }, now), 'unknown expiry');
});

t.test('a delay beyond setTimeout’s 24.8-day limit does not fire at once', async (t) => {
  let fired = false;
  const timer = setLongTimeout(() => (fired = true), 2627999 * 1000 * 0.95);
  const control = setLongTimeout(() => undefined, 0);
  await new Promise((r) => setTimeout(r, 50));
  t.notOk(fired, 'a 29-day timer is still pending');
  timer.cancel();
  control.cancel();
  let short = false;
  setLongTimeout(() => (short = true), 5);
  await waitFor(() => short, 1000, 'a short timer');
  t.ok(short);
});

/** A scripted token source: each call takes the next step (a token lifetime in ms, or an error). */
function source(steps: (number | Error)[], delayMs = 5) {
  let n = 0;
  const fetcher: TokenFetcher & { calls: number } = {
    calls: 0,
    async fetch(): Promise<Token> {
      fetcher.calls += 1;
      const step = steps[Math.min(n++, steps.length - 1)]!;
      await new Promise((r) => setTimeout(r, delayMs));
      if (step instanceof Error) throw step;
      const now = Date.now();
      return { value: `token-${fetcher.calls}`, obtainedAt: now, expiresAt: now + step };
    },
  };
  return fetcher;
}

function refresher(fetcher: TokenFetcher, overrides: Partial<ConstructorParameters<typeof TokenRefresher>[0]> = {}) {
  return new TokenRefresher({ source: fetcher, logger, refreshMargin: 0.2, retryMinMs: 10, retryMaxMs: 40, rejectedRetryMs: 200, ...overrides });
}

t.test('forty concurrent callers share one token request', async (t) => {
  const f = source([HOUR], 30);
  const r = refresher(f);
  const tokens = await Promise.all(Array.from({ length: 40 }, () => r.getToken(1000)));
  t.equal(f.calls, 1);
  t.same(new Set(tokens), new Set(['token-1']));
  r.stop();
});

t.test('forty concurrent 401s on the same token cause exactly one renewal', async (t) => {
  const f = source([HOUR]);
  const r = refresher(f);
  r.start();
  const first = await r.getToken(1000);
  const fresh = await Promise.all(Array.from({ length: 40 }, () => r.tokenRejected(first, 1000, performance.now())));
  t.equal(f.calls, 2);
  t.same(new Set(fresh), new Set(['token-2']));
  t.equal(await r.tokenRejected(first, 1000, performance.now()), 'token-2', 'a late 401 on the old token gets the new one without a request');
  t.equal(f.calls, 2);
  r.stop();
});

t.test('401s force at most one renewal a second', async (t) => {
  const f = source([HOUR]);
  const r = refresher(f);
  const first = await r.getToken(1000);
  const second = await r.tokenRejected(first, 1000, performance.now());
  t.equal(second, 'token-2');
  t.equal(await r.tokenRejected(second!, 1000, performance.now()), undefined, 'the fresh token is rejected too: no third request now');
  t.equal(f.calls, 2);
  r.stop();
});

t.test('renews in the background before expiry', async (t) => {
  const f = source([300]);
  const r = refresher(f);
  r.start();
  await waitFor(() => f.calls >= 3, 2000, 'two renewals');
  t.ok(r.readiness().ready);
  r.stop();
});

t.test('failures back off, keep serving the valid token, and recover', async (t) => {
  const down = new TokenRequestError('token endpoint answered HTTP 503');
  const f = source([HOUR, down, down, down, HOUR]);
  const r = refresher(f, { refreshMargin: 0.5 });
  r.start();
  t.equal(await r.getToken(1000), 'token-1');
  // Force a renewal to enter the failure path while token-1 stays valid.
  (r as unknown as { start(): void }).start();
  await waitFor(() => f.calls >= 3, 2000, 'retries');
  t.equal(await r.getToken(0), 'token-1', 'still serving the valid token between failures');
  await waitFor(async () => (await r.getToken(0)) === 'token-5', 2000, 'recovery');
  t.equal(f.calls, 5, 'no more requests once recovered');
  r.stop();
});

t.test('no token: waits a bounded time, then says why', async (t) => {
  const f = source([new TokenRequestError('token endpoint unreachable: ECONNREFUSED')]);
  const r = refresher(f, { retryMinMs: 10_000, retryMaxMs: 10_000 });
  r.start();
  const started = Date.now();
  await t.rejects(r.getToken(150), TokenUnavailableError);
  t.ok(Date.now() - started < 1000);
  await t.rejects(r.getToken(0), { message: /ECONNREFUSED/ });
  t.same(r.readiness(), { ready: false, reason: 'no valid token: token endpoint unreachable: ECONNREFUSED' });
  t.equal(f.calls, 1, 'waiting requests do not force requests during a backoff');
  r.stop();
});

t.test('rejected credentials retry slowly, not in a loop', async (t) => {
  const f = source([new TokenRequestError('token endpoint rejected the credentials', true)], 1);
  const r = refresher(f, { retryMinMs: 1, retryMaxMs: 1, rejectedRetryMs: 150 });
  r.start();
  await waitFor(() => f.calls >= 2, 1000, 'one slow retry');
  t.equal(f.calls, 2, 'the retry waited rejectedRetryMs, not retryMinMs');
  r.stop();
});

t.test('an expired token is renewed on demand (timers do not run while a laptop sleeps)', async (t) => {
  const f = source([60]);
  const r = refresher(f);
  r.start();
  await r.getToken(1000);
  r.stop();
  await new Promise((resolve) => setTimeout(resolve, 80));
  t.equal(await r.getToken(1000), 'token-2');
});
