// UpstreamSlots on its own: at most `size` held, the longest waiter served first, a wait bounded.
import t from 'tap';
import { ProxyError } from '../../src/errors.js';
import { UpstreamSlots } from '../../src/proxy/slots.js';

t.test('a freed slot goes to the longest waiter; a second release is ignored', async (t) => {
  const slots = new UpstreamSlots(1, 10_000);
  const release = await slots.acquire();
  const order: string[] = [];
  const first = slots.acquire().then((r) => (order.push('first'), r));
  const second = slots.acquire().then((r) => (order.push('second'), r));
  release();
  release();
  const releaseFirst = await first;
  t.same(order, ['first'], 'one release serves one waiter');
  releaseFirst();
  (await second)();
  t.same(order, ['first', 'second']);
  const again = await slots.acquire();
  again();
});

t.test('a waiter without a slot by the deadline is refused upstream_busy', async (t) => {
  const slots = new UpstreamSlots(1, 20);
  const release = await slots.acquire();
  const err = await slots.acquire().catch((e: unknown) => e);
  t.ok(err instanceof ProxyError);
  t.equal((err as ProxyError).code, 'upstream_busy');
  t.equal((err as ProxyError).status, 503);
  release();
  (await slots.acquire())();
});

t.test('tryAcquire takes a free slot at once, and queues nothing when there is none', async (t) => {
  const slots = new UpstreamSlots(1, 10_000);
  const release = slots.tryAcquire();
  t.type(release, 'function');
  t.equal(slots.tryAcquire(), undefined, 'none free: no slot, and no wait');
  const waiter = slots.acquire();
  release!();
  const granted = await waiter;
  t.equal(slots.tryAcquire(), undefined, 'the freed slot went to the waiter');
  granted();
  t.type(slots.tryAcquire(), 'function');
});
