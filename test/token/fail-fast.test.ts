// A request waits for a token only while one can still come in time: after the token endpoint
// rejected the credentials, or when the next retry is due after the request's deadline, it is
// answered 503 at once with the reason. Static tokens known to be rejected likewise.
import t from 'tap';
import pino from 'pino';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { request } from 'undici';
import { TokenRefresher, type TokenFetcher } from '../../src/token/refresher.js';
import { StaticTokenProvider } from '../../src/token/static-token.js';
import { TokenRequestError, TokenUnavailableError, type Token } from '../../src/token/types.js';
import { fakeEnv, startFake, startPair, startProxy } from '../helpers/pair.js';
import { waitFor } from '../helpers/proxy-process.js';
import { wsOpen, wsRefusal } from '../helpers/ws-refusal.js';

const logger = pino({ level: 'silent' });
const HOUR = 3600_000;
const rejected = () => new TokenRequestError('token endpoint rejected the credentials (HTTP 401, invalid_client)', true);
const down = () => new TokenRequestError('token endpoint answered HTTP 503');

/** A scripted token source: each call takes the next step (a token lifetime in ms, or an error). */
function source(steps: (number | (() => Error))[], delayMs = 5) {
  let n = 0;
  const fetcher: TokenFetcher & { calls: number } = {
    calls: 0,
    async fetch(): Promise<Token> {
      fetcher.calls += 1;
      const step = steps[Math.min(n++, steps.length - 1)]!;
      await new Promise((r) => setTimeout(r, delayMs));
      if (typeof step === 'function') throw step();
      const now = Date.now();
      return { value: `token-${fetcher.calls}`, obtainedAt: now, expiresAt: now + step };
    },
  };
  return fetcher;
}

function refresher(fetcher: TokenFetcher, overrides: Partial<ConstructorParameters<typeof TokenRefresher>[0]> = {}) {
  return new TokenRefresher({ source: fetcher, logger, refreshMargin: 0.2, retryMinMs: 10, retryMaxMs: 40, rejectedRetryMs: 60_000, ...overrides });
}

/** How long `promise` takes to settle, and how. */
async function timed<T>(promise: Promise<T>): Promise<{ ms: number; value?: T; error?: Error }> {
  const started = performance.now();
  try {
    const value = await promise;
    return { ms: performance.now() - started, value };
  } catch (error) {
    return { ms: performance.now() - started, error: error as Error };
  }
}

t.test('refresher: rejected credentials answer at once, with the reason and when the next try comes', async (t) => {
  const f = source([rejected]);
  const r = refresher(f);
  r.start();
  // The first request is under way: this one waits for it, then learns the outcome.
  const first = await timed(r.getToken(30_000));
  t.type(first.error, TokenUnavailableError);
  t.match(first.error!.message, /^no valid Bitquery token: token endpoint rejected the credentials \(HTTP 401, invalid_client\); next token request in (59|60) s$/);
  t.ok(first.ms < 15_000, `answered after ${Math.round(first.ms)} ms of a 30 s wait`);
  const later = await timed(r.getToken(30_000));
  t.type(later.error, TokenUnavailableError);
  t.ok(later.ms < 15_000, `and again after ${Math.round(later.ms)} ms`);
  t.equal(f.calls, 1, 'no token request forced by waiting requests');
  r.stop();
});

t.test('refresher: a retry due after the deadline answers at once; one due before it is waited for', async (t) => {
  const slow = refresher(source([down]), { retryMinMs: 60_000, retryMaxMs: 60_000 });
  slow.start();
  const now = await timed(slow.getToken(20_000));
  t.match(now.error?.message, /HTTP 503; next token request in \d+ s/);
  t.ok(now.ms < 10_000, `answered after ${Math.round(now.ms)} ms: the retry (30-60 s) is after the 20 s deadline`);

  const f = source([down, HOUR]);
  const soon = refresher(f, { retryMinMs: 200, retryMaxMs: 200 });
  soon.start();
  await waitFor(() => soon.readiness().reason?.includes('HTTP 503'), 5000, 'the first failure');
  t.equal(f.calls, 1, 'in the backoff');
  t.equal(await soon.getToken(20_000), 'token-2', 'waited for the retry (100-200 ms) and got its token');
  slow.stop();
  soon.stop();
});

t.test('refresher: a retry whose timer did not run (a laptop asleep) is made on demand', async (t) => {
  const f = source([down, HOUR]);
  const r = refresher(f, { retryMinMs: 20, retryMaxMs: 20 });
  r.start();
  await waitFor(() => r.readiness().reason?.includes('HTTP 503'), 5000, 'the first failure');
  r.stop(); // cancels the retry timer, as a sleeping machine would not run it
  await new Promise((resolve) => setTimeout(resolve, 50)); // past the retry's due time (at most 20 ms)
  t.equal(await r.getToken(1000), 'token-2');
});

t.test('refresher: a 401 after the token worked since the request was sent renews nothing', async (t) => {
  const f = source([HOUR]);
  const r = refresher(f);
  const token = await r.getToken(1000);
  const sentAt = performance.now();
  r.tokenWorked(token);
  t.equal(await r.tokenRejected(token, 1000, sentAt), undefined, 'the 401 is passed back');
  t.equal(f.calls, 1, 'no token request');
  t.equal(await r.getToken(0), token, 'the token is kept');

  const later = performance.now();
  r.tokenWorked('some-other-token');
  t.equal(await r.tokenRejected(token, 1000, later), 'token-2', 'no success of this token since the request was sent: renewed');
  t.equal(f.calls, 2);
  r.stop();
});

t.test('refresher: a 401 to a token past its expiry waits for the next token, even if that token worked since', async (t) => {
  // The soak's case: a request took a token just before it ran out, waited for an upstream
  // connection, and went out with it expired while its renewal was still under way.
  let release: (token: Token) => void = () => {};
  const fetcher: TokenFetcher & { calls: number } = {
    calls: 0,
    fetch(): Promise<Token> {
      fetcher.calls += 1;
      const now = Date.now();
      if (fetcher.calls === 1) return Promise.resolve({ value: 'short-lived', obtainedAt: now, expiresAt: now + 300 });
      return new Promise((resolve) => (release = resolve));
    },
  };
  const r = refresher(fetcher);
  const token = await r.getToken(1000);
  const sentAt = performance.now();
  r.tokenWorked(token);
  await waitFor(() => fetcher.calls === 2 && !r.readiness().ready, 5000, 'the token expired, its renewal under way');
  const fresh = r.tokenRejected(token, 5000, sentAt);
  const now = Date.now();
  release({ value: 'renewed', obtainedAt: now, expiresAt: now + HOUR });
  t.equal(await fresh, 'renewed', 'retried with the renewed token, not the 401 passed back');
  t.equal(fetcher.calls, 2, 'no extra token request');
  r.stop();
});

t.test('static token: once rejected, answered at once, with one request a second let through to recheck', async (t) => {
  const p = new StaticTokenProvider({ token: { value: 'static-1' }, initial: 'static-1', logger });
  p.start();
  t.teardown(() => p.stop());
  const worked = performance.now();
  p.tokenWorked('static-1');
  t.equal(await p.tokenRejected('static-1', 0, worked), undefined);
  t.ok(p.readiness().ready, 'a 401 to a request sent before a success does not mark the token rejected');

  t.equal(await p.tokenRejected('static-1', 0, performance.now()), undefined);
  t.same(p.readiness().ready, false);
  await t.rejects(p.getToken(), { name: 'TokenUnavailableError', message: /rejected the static token \(401\): generate a new one/ });
  await new Promise((resolve) => setTimeout(resolve, 1000)); // the recheck interval
  t.equal(await p.getToken(), 'static-1', 'after a second one request goes upstream again');
  await t.rejects(p.getToken(), TokenUnavailableError, '...and only one');
  p.tokenWorked('static-1');
  t.ok(p.readiness().ready, 'it worked: the token is in use again');
  t.equal(await p.getToken(), 'static-1');
});

// ---------------------------------------------------------------------------------------------
// End to end: the proxy process, real clients, the fake Bitquery.

const WAIT_MS = 60_000;
const QUERY = JSON.stringify({ query: '{ hello }' });

async function post(url: string) {
  const started = performance.now();
  const res = await request(`${url}/graphql`, { method: 'POST', body: QUERY, headers: { 'content-type': 'application/json' } });
  const text = await res.body.text();
  return { status: res.statusCode, text, ms: performance.now() - started };
}

const wsUrl = (url: string) => `${url.replace(/^http/, 'ws')}/graphql`;

t.test('rejected credentials: requests and handshakes get 503 at once with the reason, not after TOKEN_WAIT_MS', async (t) => {
  const pair = await startPair(t, { env: { BITQUERY_CLIENT_SECRET: 'wrong-secret-5e8a1f2b', TOKEN_WAIT_MS: String(WAIT_MS) } });
  pair.secrets.push('wrong-secret-5e8a1f2b');
  const { fake, proxy } = pair;
  await proxy.waitForLog((l) => /rejected the credentials/.test(l.msg), 30_000);

  const results = await Promise.all([post(proxy.url), post(proxy.url), wsRefusal(wsUrl(proxy.url)), wsRefusal(wsUrl(proxy.url))]);
  for (const r of results) {
    t.equal(r.status, 503);
    const body = 'body' in r ? r.body : JSON.parse(r.text);
    t.equal(body.error, 'token_unavailable');
    t.match(body.message, /rejected the credentials \(HTTP 401, invalid_client.*; next token request in \d+ s/);
    t.ok(r.ms < WAIT_MS / 2, `answered in ${Math.round(r.ms)} ms with TOKEN_WAIT_MS=${WAIT_MS}`);
  }
  t.equal(fake.tokenRequests.length, 1, 'no token request forced by the waiting clients');
  t.equal(fake.graphqlRequests.length + fake.wsHandshakes.length, 0, 'nothing went upstream');
});

t.test('a request waits, and gets its answer, when a token request is due within the wait', async (t) => {
  const fake = await startFake(t);
  fake.tokenFailures.push({ kind: 'status', status: 503 });
  // The retry comes 5-10 s after the failure, well inside TOKEN_WAIT_MS.
  const proxy = await startProxy(t, fake, { ...fakeEnv(fake), TOKEN_WAIT_MS: String(WAIT_MS), TOKEN_RETRY_MIN_MS: '10000', TOKEN_RETRY_MAX_MS: '10000' });
  await proxy.waitForLog((l) => /^token request failed/.test(l.msg), 30_000);
  t.equal(fake.tokenRequests.length, 1, 'the clients come during the backoff');
  const [http, ws] = await Promise.all([post(proxy.url), wsOpen(wsUrl(proxy.url))]);
  t.equal(http.status, 200);
  t.equal(ws.readyState, ws.OPEN, 'the handshake waited too, and was accepted');
  ws.close();
  t.equal(fake.tokenRequests.length, 2, 'served by the scheduled retry');
});

t.test('a rejected static token: 503 at once with what to do, until the token file holds a new one', async (t) => {
  const fake = await startFake(t);
  const dir = mkdtempSync(join(tmpdir(), 'bqp-static-'));
  const file = join(dir, 'token');
  const revoked = fake.issueToken();
  writeFileSync(file, revoked);
  const proxy = await startProxy(t, fake, { BITQUERY_TOKEN_FILE: file, BITQUERY_UPSTREAM: fake.url, TOKEN_WAIT_MS: String(WAIT_MS) });
  fake.revoke(revoked);
  t.equal((await post(proxy.url)).status, 401, 'the first 401 is passed back as it came');

  // One request a second still goes upstream to recheck; the others are answered at once.
  const answers: Awaited<ReturnType<typeof post>>[] = [];
  for (let i = 0; i < 20 && !answers.some((a) => a.status === 503); i += 1) answers.push(await post(proxy.url));
  const unavailable = answers.find((a) => a.status === 503);
  t.ok(unavailable, `a 503 among ${answers.length} requests`);
  t.match(JSON.parse(unavailable!.text), { error: 'token_unavailable', message: /rejected the static token \(401\): generate a new one and update BITQUERY_TOKEN or BITQUERY_TOKEN_FILE/ });
  t.ok(unavailable!.ms < WAIT_MS / 2);
  t.ok(fake.graphqlRequests.length < answers.length + 1, `${fake.graphqlRequests.length} of ${answers.length + 1} requests went upstream`);

  const fresh = fake.issueToken();
  writeFileSync(file, fresh);
  // Seen by the file watcher, or by the once-a-second recheck, whose 401 re-reads the file.
  await waitFor(async () => (await post(proxy.url)).status === 200, 30_000, 'the new token in use');
  t.equal(fake.graphqlRequests.at(-1)!.token, fresh);
  t.equal(fake.tokenRequests.length, 0);
});
