// The in-memory admission: a fixed 60 s window per key or address, a bounded map, stream places.
import t from 'tap';
import fc from 'fast-check';
import { MemoryAdmission } from '../../src/admission/index.js';

t.test('a fixed window: the limit, what is left, when it resets, and a new window after 60 s', async (t) => {
  let now = 1_000_000;
  const admission = new MemoryAdmission({ now: () => now });
  const alice = { keyName: 'alice', address: '10.0.0.1' };
  t.same(await admission.take(alice, 2), { allowed: true, limit: 2, remaining: 1, resetSec: 60 });
  now += 20_500;
  t.same(await admission.take(alice, 2), { allowed: true, limit: 2, remaining: 0, resetSec: 40 });
  t.same(await admission.take(alice, 2), { allowed: false, limit: 2, remaining: 0, resetSec: 40, retryAfterSec: 40 });
  t.equal((await admission.take({ keyName: 'bob', address: '10.0.0.1' }, 2)).allowed, true, 'each key its own count, whatever its address');
  t.equal((await admission.take({ address: '10.0.0.1' }, 1)).allowed, true, 'without a key, the address is counted');
  t.equal((await admission.take({ address: '10.0.0.1' }, 1)).allowed, false);
  now += 39_500;
  t.same(await admission.take(alice, 2), { allowed: true, limit: 2, remaining: 1, resetSec: 60 }, 'the window restarts');
});

t.test('the windows held stay under the bound, expired ones dropped first', async (t) => {
  let now = 0;
  const admission = new MemoryAdmission({ maxWindows: 3, now: () => now });
  for (const address of ['a', 'b', 'c', 'd', 'e']) await admission.take({ address }, 10);
  t.equal(admission.size, 3);
  t.equal((await admission.take({ address: 'e' }, 10)).remaining, 8, 'the newest windows are kept');
  now = 60_000;
  await admission.take({ address: 'f' }, 10);
  t.equal(admission.size, 1, 'expired windows are pruned when a window starts');
});

t.test('property: never more than the limit admitted in one window, whatever the order of keys', async () => {
  fc.assert(
    fc.asyncProperty(fc.array(fc.constantFrom('a', 'b', 'c'), { maxLength: 60 }), fc.integer({ min: 1, max: 5 }), async (keys, limit) => {
      const admission = new MemoryAdmission({ now: () => 0 });
      const allowed = new Map<string, number>();
      for (const keyName of keys) {
        const decision = await admission.take({ keyName, address: 'x' }, limit);
        if (decision.allowed) allowed.set(keyName, (allowed.get(keyName) ?? 0) + 1);
        if (decision.remaining < 0 || decision.remaining > limit) return false;
      }
      return [...allowed.values()].every((n) => n <= limit) && [...new Set(keys)].every((k) => allowed.get(k) === Math.min(limit, keys.filter((x) => x === k).length));
    }),
  );
});

t.test('stream places: at most the cap, freed once whatever the number of releases', async (t) => {
  const admission = new MemoryAdmission();
  const first = await admission.acquireStream('alice', 2);
  const second = await admission.acquireStream('alice', 2);
  t.ok(first && second);
  t.equal(await admission.acquireStream('alice', 2), undefined, 'over the cap');
  t.ok(await admission.acquireStream('bob', 2), 'another key has its own');
  first!();
  first!();
  t.ok(await admission.acquireStream('alice', 2), 'one place freed');
  t.equal(await admission.acquireStream('alice', 2), undefined, 'a second release freed nothing');
  await admission.close();
});
