// The Redis connection against a real redis-server: health and its log lines, the deadline of
// every call while Redis is gone or hung, reconnection without a new client, and the password
// kept out of every log line.
import t from 'tap';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { UNAVAILABLE, type RedisLink } from '../../src/shared-state/connection.js';
import { closedPort } from '../helpers/ports.js';
import { waitFor } from '../helpers/proxy-process.js';
import { captureLogger, linkFor, redisConfig, skip, startRedis } from '../helpers/redis.js';

/** The deadline used here, and what a timer may be late by on a busy two-core machine. */
const DEADLINE_MS = 200;
/** What a timer may be late by on a busy two-core machine (one run missed 150 ms). */
const MARGIN_MS = 400;

/** Runs `n` calls (half at once, half one after another) and returns the slowest, in ms. */
async function slowestOf(link: RedisLink, n: number): Promise<{ slowest: number; results: unknown[] }> {
  const results: unknown[] = [];
  let slowest = 0;
  const timed = async () => {
    const started = performance.now();
    results.push(await link.run((c) => c.incr('bitquery-proxy:probe')));
    slowest = Math.max(slowest, performance.now() - started);
  };
  await Promise.all(Array.from({ length: n / 2 }, timed));
  for (let i = 0; i < n / 2; i++) await timed();
  return { slowest, results };
}

t.test('connects, says so once, and answers calls', { skip }, async (t) => {
  const redis = await startRedis(t);
  const log = captureLogger();
  const link = linkFor(t, redisConfig(redis.url), log.logger);
  t.equal(await link.waitUntilUp(5000), true);
  t.equal(link.up(), true);
  t.equal(await link.waitUntilUp(0), true, 'at once when up');
  t.equal(await link.run((c) => c.ping()), 'PONG');
  t.equal(link.key('rate', 'key', 'alice'), 'bitquery-proxy:rate:key:alice');
  t.equal(link.errors(), 0);
  t.same(log.lines.map((l) => [l.level, l.msg]), [[30, 'Redis connected: limits, cache and usage are shared']]);
});

t.test('Redis stopped: every call answers at once; restarted: the same client is back', { skip }, async (t) => {
  const redis = await startRedis(t);
  const log = captureLogger();
  const link = linkFor(t, redisConfig(redis.url, { REDIS_TIMEOUT_MS: DEADLINE_MS }), log.logger);
  await link.waitUntilUp(5000);
  const changes: boolean[] = [];
  link.onChange((up) => changes.push(up));

  await redis.stop();
  await waitFor(() => !link.up(), 5000, 'the connection to be seen closed');
  const { slowest, results } = await slowestOf(link, 40);
  t.ok(results.every((r) => r === UNAVAILABLE), 'every call answered UNAVAILABLE');
  t.ok(slowest < DEADLINE_MS + MARGIN_MS, `slowest call ${slowest.toFixed(1)} ms, deadline ${DEADLINE_MS} ms`);
  t.comment(`Redis stopped: slowest of 40 calls ${slowest.toFixed(2)} ms`);
  t.ok(link.errors() >= 40, 'each failed call is counted');

  await redis.start();
  t.equal(await link.waitUntilUp(10_000), true, 'reconnected by itself');
  t.equal(await link.run((c) => c.incr('bitquery-proxy:probe')), 1, 'calls reach the new server');
  t.same(changes, [false, true]);
  const warnings = log.lines.filter((l) => l.level === 40);
  t.equal(warnings.length, 1, 'one warning for the outage, however many calls failed');
  t.match(warnings[0], { msg: /^Redis unavailable: limits count in this replica's memory/, redis: `redis://127.0.0.1:${redis.port}/0` });
  t.equal(log.lines.filter((l) => l.msg.startsWith('Redis is back')).length, 1, 'one info line when it is back');
});

t.test('Redis hung (accepts, never answers): calls end at the deadline, then at once', { skip }, async (t) => {
  const redis = await startRedis(t);
  const log = captureLogger();
  const link = linkFor(t, redisConfig(redis.url, { REDIS_TIMEOUT_MS: DEADLINE_MS }), log.logger);
  await link.waitUntilUp(5000);
  redis.pause();
  t.teardown(() => redis.resume());
  const first = performance.now();
  t.equal(await link.run((c) => c.get('x')), UNAVAILABLE);
  const firstMs = performance.now() - first;
  t.ok(firstMs >= DEADLINE_MS - 5 && firstMs < DEADLINE_MS + MARGIN_MS, `the first call ends at the deadline (${firstMs.toFixed(1)} ms)`);
  t.equal(link.up(), false, 'marked down');
  const { slowest, results } = await slowestOf(link, 40);
  t.ok(results.every((r) => r === UNAVAILABLE));
  t.ok(slowest < DEADLINE_MS + MARGIN_MS, `then no call waits for it (slowest ${slowest.toFixed(1)} ms)`);
  t.comment(`Redis hung: first call ${firstMs.toFixed(2)} ms, slowest of the next 40 ${slowest.toFixed(2)} ms`);
  t.match(log.lines.filter((l) => l.level === 40), [{ reason: /timed out|no answer within REDIS_TIMEOUT_MS/ }]);

  redis.resume();
  t.equal(await link.waitUntilUp(10_000), true, 'a probe finds it again on the same connection');
  t.equal(await link.run((c) => c.ping()), 'PONG');
});

t.test('unreachable from the start: one warning, calls refused at once', { skip }, async (t) => {
  const log = captureLogger();
  const link = linkFor(t, redisConfig(`redis://127.0.0.1:${await closedPort()}`, { REDIS_FAILURE: 'closed' }), log.logger);
  t.equal(await link.waitUntilUp(300), false);
  await waitFor(() => log.lines.length > 0, 5000, 'the warning');
  t.equal(await link.run((c) => c.ping()), UNAVAILABLE);
  // Attempts at 100, 200, 400 and 800 ms: none of them adds a line.
  await new Promise((resolve) => setTimeout(resolve, 1600));
  t.match(log.lines, [{ level: 40, msg: /^Redis unreachable: limited requests are answered 503/, reason: /ECONNREFUSED/ }]);
  t.equal(log.lines.length, 1, 'reconnection attempts are not logged one by one');
});

t.test('an error Redis answers counts, is logged once a minute, and is no outage', { skip }, async (t) => {
  const redis = await startRedis(t);
  const log = captureLogger();
  const link = linkFor(t, redisConfig(redis.url), log.logger);
  await link.waitUntilUp(5000);
  await link.run((c) => c.set('text', 'not a number'));
  t.equal(await link.run((c) => c.incr('text')), UNAVAILABLE);
  t.equal(await link.run((c) => c.incr('text')), UNAVAILABLE);
  t.equal(link.errors(), 2);
  t.equal(link.up(), true, 'still up');
  t.match(log.lines.filter((l) => l.level === 40), [{ msg: /^Redis refused a call/, reason: /not an integer/ }]);
  t.equal(log.lines.filter((l) => l.level === 40).length, 1);
});

t.test('closed: calls answer UNAVAILABLE and nothing more is logged', { skip }, async (t) => {
  const redis = await startRedis(t);
  const log = captureLogger();
  const link = linkFor(t, redisConfig(redis.url), log.logger);
  await link.waitUntilUp(5000);
  let changed = false;
  const unsubscribe = link.onChange(() => (changed = true));
  unsubscribe();
  link.close();
  t.equal(link.up(), false);
  t.equal(await link.run((c) => c.ping()), UNAVAILABLE);
  t.equal(changed, false, 'an unsubscribed listener is not called');
  t.equal(log.lines.filter((l) => l.level >= 40).length, 0);
});

t.test('a password from the URL or a file (re-read before reconnecting), never in a log line', { skip }, async (t) => {
  const password = 'p4ss-w0rd-s3cret';
  const redis = await startRedis(t, ['--requirepass', password]);
  const fromUrl = linkFor(t, redisConfig(`redis://:${password}@127.0.0.1:${redis.port}`));
  t.equal(await fromUrl.waitUntilUp(5000), true, 'from the URL');

  const file = join(mkdtempSync(join(tmpdir(), 'bqp-redis-')), 'password');
  writeFileSync(file, 'wrong-one\n');
  const log = captureLogger();
  const fromFile = linkFor(t, redisConfig(redis.url, { REDIS_PASSWORD_FILE: file }), log.logger);
  await waitFor(() => log.lines.some((l) => l.level === 40), 5000, 'the refusal');
  t.match(log.lines[0], { msg: /^Redis unreachable/, reason: /WRONGPASS|invalid|NOAUTH/ });
  writeFileSync(file, `${password}\n`);
  t.equal(await fromFile.waitUntilUp(10_000), true, 'the new password is used by the next attempt');
  rmSync(file);
  await redis.stop();
  await redis.start();
  await waitFor(() => log.lines.filter((l) => l.msg.startsWith('Redis is back')).length === 1, 10_000, 'the reconnection');
  t.pass('a password file that went away leaves the last password in use');

  const wrong = captureLogger();
  const withWrong = linkFor(t, redisConfig(`redis://:${password}-old@127.0.0.1:${redis.port}`), wrong.logger);
  await waitFor(() => wrong.lines.length > 0, 5000, 'the refusal');
  t.equal(withWrong.up(), false);
  t.notMatch(log.text() + wrong.text(), 'p4ss-w0rd', 'no password in any line');
});
