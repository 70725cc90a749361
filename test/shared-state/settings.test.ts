// REDIS_* settings: what is accepted, and refusals that name what to set without repeating a password.
import t from 'tap';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigError } from '../../src/config/index.js';
import { redisConfigFrom, type RedisRaw } from '../../src/shared-state/settings.js';

const DEFAULTS: RedisRaw = { REDIS_PREFIX: 'bitquery-proxy:', REDIS_TIMEOUT_MS: 250, REDIS_FAILURE: 'open', REDIS_STREAM_LEASE_MS: 30000 };
const from = (raw: Partial<RedisRaw>) => redisConfigFrom({ ...DEFAULTS, ...raw });
const dir = mkdtempSync(join(tmpdir(), 'bqp-redis-'));

t.test('no REDIS_URL: nothing is shared', async (t) => {
  t.equal(from({}), undefined);
  t.throws(() => from({ REDIS_PASSWORD_FILE: '/x' }), /REDIS_PASSWORD_FILE is set but REDIS_URL is not/);
});

t.test('redis:// and rediss:// URLs', async (t) => {
  const plain = from({ REDIS_URL: 'redis://redis' })!;
  t.match(plain, { host: 'redis', port: 6379, db: 0, tls: false, prefix: 'bitquery-proxy:', timeoutMs: 250, failure: 'open', streamLeaseMs: 30000 });
  t.equal(plain.password, undefined);
  t.equal(plain.display, 'redis://redis/0');
  const tls = from({ REDIS_URL: 'rediss://gateway:p%40ss%3Aword@cache.internal:6380/3', REDIS_FAILURE: 'closed' })!;
  t.match(tls, { host: 'cache.internal', port: 6380, db: 3, tls: true, username: 'gateway', password: { value: 'p@ss:word' }, failure: 'closed' });
  t.equal(tls.display, 'rediss://cache.internal:6380/3', 'shown without credentials');
  t.equal(from({ REDIS_URL: 'redis://[::1]:7000' })!.host, '::1');
  t.equal(from({ REDIS_URL: 'redis://:only-password@redis/' })!.username, undefined);
});

t.test('a password file', async (t) => {
  const file = join(dir, 'password');
  writeFileSync(file, 'from-file\n');
  t.same(from({ REDIS_URL: 'redis://redis', REDIS_PASSWORD_FILE: file })!.password, { file });
  t.throws(() => from({ REDIS_URL: 'redis://:pw@redis', REDIS_PASSWORD_FILE: file }), /use one of them/);
  t.throws(() => from({ REDIS_URL: 'redis://redis', REDIS_PASSWORD_FILE: join(dir, 'missing') }), /REDIS_PASSWORD_FILE=.* cannot be read \(ENOENT\)/);
  writeFileSync(join(dir, 'empty'), '\n');
  t.throws(() => from({ REDIS_URL: 'redis://redis', REDIS_PASSWORD_FILE: join(dir, 'empty') }), /REDIS_PASSWORD_FILE=.* is empty/);
});

t.test('refusals name the setting and never repeat the URL', async (t) => {
  const cases: [string, RegExp][] = [
    ['http://:hunter2@redis:6379', /REDIS_URL must start with redis:\/\/ or rediss:\/\/ \(TLS\), not http:/],
    ['redis//:hunter2@nowhere', /REDIS_URL must be a URL like redis:\/\/redis:6379/],
    ['redis://:hunter2@redis:6379/zero', /REDIS_URL path must be a database number/],
    ['redis://:hunter2@redis:6379/0?tls=true', /REDIS_URL takes no query string/],
    ['redis://:hunter2@:6379', /REDIS_URL must be a URL|REDIS_URL names no host/],
  ];
  for (const [url, message] of cases) {
    const err = t.throws(() => from({ REDIS_URL: url })) as Error;
    t.ok(err instanceof ConfigError, `${message}: a ConfigError (exit 2)`);
    t.match(err.message, message);
    t.notMatch(err.message, 'hunter2', 'the password is not repeated');
  }
  t.throws(() => from({ REDIS_URL: 'redis://redis', REDIS_PREFIX: 'has space' }), /REDIS_PREFIX must be 1 to 100 printable ASCII characters/);
});
