// The Redis client is loaded only when REDIS_URL is set: a proxy without it (the laptop and the
// sidecar) carries none of its modules.
import t from 'tap';
import { resolve } from 'node:path';
import { startFake, startProxy, fakeEnv } from '../helpers/pair.js';
import { closedPort } from '../helpers/ports.js';
import { CLI } from '../helpers/proxy-process.js';

const REPORT = resolve(import.meta.dirname, '../fixtures/report-ioredis.cjs');

for (const withRedis of [false, true]) {
  t.test(withRedis ? 'with REDIS_URL the Redis client is loaded' : 'without REDIS_URL the Redis client is never loaded', async (t) => {
    const fake = await startFake(t);
    const env = { ...fakeEnv(fake), ...(withRedis && { REDIS_URL: `redis://127.0.0.1:${await closedPort()}` }) };
    const proxy = await startProxy(t, fake, env, { entry: ['--require', REPORT, CLI] });
    await proxy.stop();
    const report = proxy.logs().find((l) => l.msg === 'ioredis loaded');
    t.equal(report?.loaded, withRedis);
  });
}
