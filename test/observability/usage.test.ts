import t, { type Test } from 'tap';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { Writable } from 'node:stream';
import pino from 'pino';
import { Events, type UsageEvent } from '../../src/events.js';
import { BudgetWatch, budgetThresholds, parseUsage, UsagePoller, UsageFormatError } from '../../src/observability/usage.js';
import { waitFor } from '../helpers/proxy-process.js';
import { fakeSet, usage, usageBody } from './helpers.js';

t.test('parseUsage reads the documented answer', async (t) => {
  const polledAt = Date.now();
  t.same(parseUsage(JSON.stringify(usageBody()), polledAt), {
    status: 'active',
    plan: 'Paid plan',
    periodStart: '2026-06-24T00:00:00.000Z',
    periodEnd: '2026-07-23T23:59:59.000Z',
    pointsLimit: 1_000_000,
    pointsUsed: 4458,
    requestsUsed: 184,
    subscriptionLimit: 1000,
    polledAt,
  });
  const noPlan = usageBody();
  (noPlan.billing_period as { plan_name: unknown }).plan_name = null;
  t.equal(parseUsage(JSON.stringify(noPlan), polledAt).plan, '');
});

t.test('parseUsage refuses what is not the documented shape, saying where', async (t) => {
  const broken = (edit: (b: ReturnType<typeof usageBody>) => void) => {
    const body = usageBody();
    edit(body);
    return JSON.stringify(body);
  };
  const cases: [string, string, RegExp][] = [
    ['not JSON', '<html>', /not JSON/],
    ['an array', '[]', /not a JSON object/],
    ['no status', broken((b) => delete (b as Partial<typeof b>).status), /status is not a word/],
    ['a status with markup', broken((b) => (b.status = '<b>x</b>')), /status is not a word/],
    ['no billing period', broken((b) => ((b as { billing_period: unknown }).billing_period = null)), /billing_period is not an object/],
    ['no usage', broken((b) => delete (b.billing_period as Partial<typeof b.billing_period>).usage), /billing_period\.usage is not an object/],
    ['negative points', broken((b) => (b.billing_period.usage.points_usage = -1)), /points_usage is not a number >= 0/],
    ['a string limit', broken((b) => ((b.billing_period.limits as { points_limit: unknown }).points_limit = '100')), /points_limit is not a number/],
    ['a bad date', broken((b) => (b.billing_period.ended_at = 'soon')), /ended_at is not a timestamp/],
  ];
  for (const [name, text, message] of cases) t.throws(() => parseUsage(text, 0), { name: 'UsageFormatError', message }, name);
  t.ok(new UsageFormatError('x') instanceof Error);
});

t.test('thresholds: BUDGET_WARN_PERCENT, then 95 and 100', async (t) => {
  t.same(budgetThresholds(80), [80, 95, 100]);
  t.same(budgetThresholds(95), [95, 100]);
  t.same(budgetThresholds(97), [97, 100]);
  t.same(budgetThresholds(100), [100]);
});

t.test('each threshold warns once per billing period, and again in the next period', async (t) => {
  const watch = new BudgetWatch(budgetThresholds(80));
  const at = (used: number, periodStart = '2026-06-24T00:00:00.000Z') => watch.check(usage({ pointsUsed: used, pointsLimit: 1_000_000, periodStart })).map((w) => w.fields.threshold);
  t.same(at(500_000), [], 'half used: nothing');
  t.same(at(810_000), [80]);
  t.same(at(850_000), [], '80 % is warned once');
  t.same(at(810_000), []);
  t.same(at(960_000), [95]);
  t.same(at(990_000), []);
  t.same(at(1_000_000), [100]);
  t.same(at(1_200_000), [], 'used up is warned once');
  t.same(at(100, '2026-07-24T00:00:00.000Z'), [], 'a new period starts quiet');
  t.same(at(990_000, '2026-07-24T00:00:00.000Z'), [95], 'a jump past two thresholds is one warning, for the higher');
  t.same(at(999_999, '2026-07-24T00:00:00.000Z'), []);

  const [warning] = new BudgetWatch([80, 95, 100]).check(usage({ pointsUsed: 850_000, pointsLimit: 1_000_000 }));
  t.equal(warning!.msg, 'points budget 85% used (850,000 of 1,000,000 points used, 150,000 left): the period ends 2026-07-23T23:59:59.000Z');
  t.match(warning!.fields, { pointsLeft: 150_000, percent: 85, periodEnd: '2026-07-23T23:59:59.000Z' });
  const [usedUp] = new BudgetWatch([100]).check(usage({ pointsUsed: 1_000_100, pointsLimit: 1_000_000 }));
  t.match(usedUp!.msg, /^points budget used up \(1,000,100 of 1,000,000 points used\): Bitquery answers 402 until the period ends 2026-07-23T23:59:59.000Z$/);
  t.equal(usedUp!.fields.pointsLeft, 0);
});

t.test('a limit of 0 means none: no percentage, no warning', async (t) => {
  const watch = new BudgetWatch([80, 95, 100]);
  t.same(watch.check(usage({ pointsLimit: 0, pointsUsed: 5_000_000_000 })), []);
});

t.test('blocked and expired are warnings, once each per period', async (t) => {
  const watch = new BudgetWatch([80, 95, 100]);
  const at = (status: string, periodStart = '2026-06-24T00:00:00.000Z') => watch.check(usage({ status, periodStart })).map((w) => w.msg);
  t.same(at('active'), []);
  t.match(at('blocked'), [/^the Bitquery account is blocked: /]);
  t.same(at('blocked'), []);
  t.match(at('expired'), [/is expired/]);
  t.same(at('grace'), [], 'grace is not a warning');
  t.match(at('blocked', '2026-07-24T00:00:00.000Z'), [/is blocked/], 'again in the next period');
});

/** A stand-in Usage API: answers from a queue (the last answer repeats), records each request. */
async function usageApi(t: Test) {
  const api = {
    answers: [] as ((req: IncomingMessage, res: ServerResponse) => void)[],
    requests: [] as { authorization?: string; method?: string }[],
    url: '',
  };
  const server = createServer((req, res) => {
    api.requests.push({ authorization: req.headers.authorization, method: req.method });
    const answer = api.answers.length > 1 ? api.answers.shift()! : api.answers[0]!;
    answer(req, res);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  api.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/api/usage`;
  t.teardown(() => {
    server.closeAllConnections();
    server.close();
  });
  return api;
}

const json = (body: unknown, status = 200) => (_req: IncomingMessage, res: ServerResponse) => {
  res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
};

function capture() {
  const lines: { level: number; msg: string; [k: string]: unknown }[] = [];
  let raw = '';
  const stream = new Writable({
    write(chunk, _enc, done) {
      raw += String(chunk);
      for (const line of String(chunk).split('\n').filter(Boolean)) lines.push(JSON.parse(line));
      done();
    },
  });
  return { logger: pino({ level: 'debug' }, stream), lines, raw: () => raw };
}

function poller(t: Test, url: string, sets: ReturnType<typeof fakeSet>[], extra: { intervalMs?: number; timeoutMs?: number } = {}) {
  const events = new Events();
  const log = capture();
  const seen: UsageEvent[] = [];
  events.on('usage', (e) => seen.push(e));
  const p = new UsagePoller({ sets, url, intervalMs: extra.intervalMs ?? 20, warnPercent: 80, events, logger: log.logger, timeoutMs: extra.timeoutMs, random: () => 0 });
  t.teardown(() => p.stop());
  return { p, seen, log };
}

t.test('polls each set with its own token, keeps the answer, publishes it, warns once per threshold', async (t) => {
  const api = await usageApi(t);
  api.answers.push(json(usageBody({ used: 850_000 })));
  const sets = [fakeSet('default'), fakeSet('team-b', 'static')];
  const { p, seen, log } = poller(t, api.url, sets);
  p.start();
  await waitFor(() => seen.filter((e) => e.credentials === 'default').length >= 4, 5000, 'four polls');
  t.ok(api.requests.some((r) => r.authorization === 'Bearer tok-default-secret' && r.method === 'GET'));
  t.ok(api.requests.some((r) => r.authorization === 'Bearer tok-team-b-secret'), 'a static-token set is polled too');
  t.equal(p.state('default')!.usage!.pointsUsed, 850_000);
  t.equal(p.state('default')!.failures, 0);
  const warnings = log.lines.filter((l) => l.level === 40);
  t.equal(warnings.filter((l) => l.credentials === 'default').length, 1, 'one warning for 80 % however many polls');
  t.equal(warnings.filter((l) => l.credentials === 'team-b').length, 1);
  t.match(warnings[0], { threshold: 80, pointsLeft: 150_000, msg: /150,000 left/ });

  api.answers.splice(0, 1, json(usageBody({ used: 900_000, started: '2026-07-24T00:00:00Z', ended: '2026-08-23T23:59:59Z' })));
  await waitFor(() => log.lines.filter((l) => l.level === 40 && l.credentials === 'default').length === 2, 5000, 'the next period’s warning');
  t.match(log.lines.filter((l) => l.level === 40 && l.credentials === 'default')[1], { threshold: 80, periodEnd: '2026-08-23T23:59:59.000Z' });
  t.notMatch(log.raw(), 'secret', 'the token is never logged');
});

t.test('a failed poll backs off, warns once, and recovers', async (t) => {
  const api = await usageApi(t);
  api.answers.push(json({ error: 'boom' }, 500), json({ error: 'boom' }, 500), json({ error: 'boom' }, 500), json(usageBody()));
  const { p, seen, log } = poller(t, api.url, [fakeSet('default')]);
  p.start();
  await waitFor(() => seen.length >= 1, 5000, 'a good answer after three failures');
  const failed = log.lines.filter((l) => /usage poll failed/.test(l.msg));
  t.equal(failed.length, 3);
  t.same(failed.map((l) => l.level), [40, 20, 20], 'a warning, then debug lines while it lasts');
  t.match(failed[0], { msg: 'usage poll failed: the Usage API answered HTTP 500', failures: 1 });
  t.ok((failed[2]!.retryInMs as number) > (failed[0]!.retryInMs as number), 'the delay grows');
  t.match(log.lines.find((l) => l.msg === 'usage poll succeeded again'), { failures: 3, level: 30 });
  t.match(p.state('default'), { usage: { pointsUsed: 4458 }, failures: 0 });
  t.notOk(p.state('default')!.lastError, 'the error is cleared');
});

t.test('each kind of failure is described without the token', async (t) => {
  const api = await usageApi(t);
  const cases: [string, (req: IncomingMessage, res: ServerResponse) => void, RegExp, number?][] = [
    ['401', json({ error: 'unauthorized' }, 401), /^the Usage API refused the token \(HTTP 401\)$/],
    ['not the shape', json({ status: 'active' }), /^the Usage API answer is not the documented shape: billing_period is not an object$/],
    ['too large', (_req, res) => res.writeHead(200).end(`{"status":"active","pad":"${'x'.repeat(100_000)}"}`), /not the documented shape: the body is not JSON/],
    ['no answer', () => undefined, /^the Usage API is unreachable: no answer within 150 ms$/, 150],
  ];
  for (const [name, answer, message, timeoutMs] of cases) {
    api.answers.splice(0, api.answers.length, answer);
    const { p, log } = poller(t, api.url, [fakeSet('default')], { intervalMs: 60_000, timeoutMs });
    p.start();
    await waitFor(() => p.state('default')!.lastError, 5000, name);
    t.match(p.state('default'), { lastError: message, failures: 1, lastErrorAt: Number }, name);
    p.stop();
    t.notMatch(log.raw(), 'secret', `${name}: no token in the logs`);
  }

  const closed = await usageApi(t);
  closed.answers.push((req) => req.socket.destroy());
  const { p } = poller(t, closed.url, [fakeSet('default')], { intervalMs: 60_000 });
  p.start();
  await waitFor(() => p.state('default')!.lastError, 5000, 'a reset connection');
  t.match(p.state('default')!.lastError, /^the Usage API is unreachable: /);

  const noToken = fakeSet('default', 'client_credentials', { ready: false, reason: 'no valid token yet' });
  const { p: waiting } = poller(t, api.url, [noToken], { intervalMs: 60_000 });
  waiting.start();
  await waitFor(() => waiting.state('default')!.lastError, 5000, 'no token');
  t.equal(waiting.state('default')!.lastError, 'no token to ask with (no valid token yet)');
});

t.test('polling off, or a set without an account: nothing is polled', async (t) => {
  const api = await usageApi(t);
  api.answers.push(json(usageBody()));
  const { p: off } = poller(t, api.url, [fakeSet('default')], { intervalMs: 0 });
  off.start();
  t.equal(off.state('default'), undefined);
  const { p: other, seen } = poller(t, api.url, [fakeSet('default'), fakeSet('byo', 'passthrough')]);
  other.start();
  await waitFor(() => seen.length >= 2, 5000, 'two polls of the default set');
  t.equal(other.state('byo'), undefined);
  t.ok(api.requests.every((r) => r.authorization === 'Bearer tok-default-secret'), 'only the set with an account was polled');
});

t.test('stop() aborts a poll under way and schedules nothing more', async (t) => {
  const api = await usageApi(t);
  let aborted: (() => void) | undefined;
  const gone = new Promise<void>((resolve) => (aborted = resolve));
  api.answers.push((req) => req.on('close', () => aborted!()));
  const { p, log } = poller(t, api.url, [fakeSet('default')]);
  p.start();
  await waitFor(() => api.requests.length === 1, 5000, 'the first poll');
  p.stop();
  await gone;
  await new Promise((r) => setTimeout(r, 100));
  t.equal(api.requests.length, 1, 'no poll after stop (five intervals later)');
  t.equal(p.state('default')!.lastError, undefined, 'stopping is not a failure');
  t.notOk(log.lines.some((l) => l.level >= 40));
});
