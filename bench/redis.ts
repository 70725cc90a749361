// What one shared limit check costs: the in-memory admission against the Redis one (one Lua
// script round trip), in this process, one call at a time and 64 at once. Needs a redis-server:
//
//   redis-server --port 6391 --save '' &
//   node --import tsx bench/redis.ts redis://127.0.0.1:6391
//
// The whole-proxy figures are `npm run bench` with and without REDIS_URL (README, Several replicas).
import pino from 'pino';
import { MemoryAdmission, type Admission } from '../src/admission/index.js';
import { createSharedAdmission } from '../src/shared-state/admission.js';
import { connectRedis } from '../src/shared-state/connection.js';
import { redisConfigFrom } from '../src/shared-state/settings.js';

const CALLS = 5000;
const AT_ONCE = 64;

async function measure(name: string, admission: Admission): Promise<void> {
  const subject = { address: '127.0.0.1' };
  const cpu = process.cpuUsage();
  let started = performance.now();
  for (let i = 0; i < CALLS; i++) await admission.take(subject, 1e9);
  const sequential = ((performance.now() - started) * 1000) / CALLS;
  const used = process.cpuUsage(cpu);
  started = performance.now();
  for (let i = 0; i < CALLS / AT_ONCE; i++) await Promise.all(Array.from({ length: AT_ONCE }, () => admission.take(subject, 1e9)));
  const concurrent = ((performance.now() - started) * 1000) / CALLS;
  console.log(`${name}: ${sequential.toFixed(1)} µs a call one at a time (${((used.user + used.system) / CALLS).toFixed(1)} µs CPU), ${concurrent.toFixed(1)} µs a call ${AT_ONCE} at once`);
}

const url = process.argv[2] ?? 'redis://127.0.0.1:6379';
const config = redisConfigFrom({ REDIS_URL: url, REDIS_PREFIX: 'bench:', REDIS_TIMEOUT_MS: 1000, REDIS_FAILURE: 'closed', REDIS_STREAM_LEASE_MS: 30_000 })!;
const link = connectRedis(config, pino({ level: 'silent' }));
if (!(await link.waitUntilUp(2000))) throw new Error(`no Redis at ${config.display}`);
const shared = createSharedAdmission(link, new MemoryAdmission());
const memory = new MemoryAdmission();
for (let round = 1; round <= 3; round++) {
  await measure(`round ${round}, memory`, memory);
  await measure(`round ${round}, Redis `, shared);
}
await shared.close();
link.close();
