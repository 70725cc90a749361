// The in-memory response store: its byte bounds under floods, its per-entry bound, its TTLs.
import t from 'tap';
import { entryWeight, MemoryStore, type CachedAnswer } from '../../src/savings/store.js';

function answer(bodyBytes: number, headers: Record<string, string | string[]> = { 'content-type': 'application/json' }): CachedAnswer {
  return { status: 200, headers, body: Buffer.alloc(bodyBytes, 'x'), storedAt: 0 };
}

t.test('an entry weighs its body, headers, key and a fixed overhead', async (t) => {
  const a = answer(1000, { 'content-type': 'application/json', 'set-x': ['a', 'bb'] });
  // 'content-type' 12 + 16 + 4, 'set-x' 5 + 1 + 4 and 5 + 2 + 4
  t.equal(entryWeight('k'.repeat(10), a), 1000 + 32 + 10 + 11 + 20 + 256);
});

t.test('a flood of distinct entries never takes more than maxBytes, and the newest stay', async (t) => {
  const maxBytes = 256 * 1024;
  const store = new MemoryStore({ maxBytes, maxEntryBytes: 64 * 1024 });
  let peak = 0;
  let seed = 7;
  for (let i = 0; i < 20_000; i++) {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    // Tiny answers under long keys as well as large answers under short ones.
    const key = `default:${i}:${'q'.repeat(seed % 2000)}`;
    store.set(key, answer(seed % 60_000), 60_000);
    peak = Math.max(peak, store.bytes);
  }
  t.ok(peak <= maxBytes, `peak ${peak} within ${maxBytes}`);
  t.ok(store.entries > 0);
  t.ok(store.get(`default:19999:${'q'.repeat(seed % 2000)}`), 'the last one set is there');
  t.equal(store.get('default:0:'), undefined, 'the first ones were evicted');
});

t.test('an entry over maxEntryBytes is never kept, and does not evict others', async (t) => {
  const store = new MemoryStore({ maxBytes: 1 << 20, maxEntryBytes: 10_000 });
  store.set('a', answer(100), 1000);
  store.set('big', answer(10_000), 1000);
  t.equal(store.get('big'), undefined);
  t.ok(store.get('a'));
  t.equal(store.entries, 1);
  t.equal(store.bytes, entryWeight('a', answer(100)));
});

t.test('entries live for their own TTL', async (t) => {
  let now = 1_000_000;
  const store = new MemoryStore({ maxBytes: 1 << 20, maxEntryBytes: 1 << 16, now: () => now });
  store.set('short', answer(10), 1000);
  store.set('long', answer(10), 5000);
  now += 999;
  t.ok(store.get('short'), 'alive just before its TTL');
  now += 2;
  t.equal(store.get('short'), undefined, 'gone just after');
  t.ok(store.get('long'));
  now += 4000;
  t.equal(store.get('long'), undefined);
  t.equal(store.entries, 0, 'an expired entry read is dropped');
});
