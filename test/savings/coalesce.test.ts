// Coalescing end to end in one process, over real sockets: a scripted node:http upstream, a real
// undici Pool, real ServerResponses in a node:http front calling PointsSaver.handle.
import t from 'tap';
import { connect, type Socket } from 'node:net';
import { Agent, request } from 'undici';
import { createPointsSaver, memoryStoreFor, PointsSaver, settingsProblem } from '../../src/savings/saver.js';
import type { AnswerSink } from '../../src/savings/flight.js';
import { startRig, defaultAnswer, type Rig, type UpstreamRequest } from '../helpers/saver-rig.js';
import { waitFor } from '../helpers/proxy-process.js';

const QUERY = '{ EVM(network: eth) { Blocks(limit: {count: 1}) { Block { Number } } } }';
const BODY = JSON.stringify({ query: QUERY, variables: { a: 1 } });

const agent = new Agent({ connections: 200 });
t.teardown(() => agent.close());

async function send(rig: Rig, body = BODY, headers: Record<string, string> = {}) {
  const res = await request(`${rig.url}/graphql`, { method: 'POST', body, headers: { 'content-type': 'application/json', ...headers }, dispatcher: agent });
  return { status: res.statusCode, headers: res.headers, text: await res.body.text() };
}

/** Holds every upstream request until released, in arrival order. */
function holdAnswers(rig: Rig): UpstreamRequest[] {
  const held: UpstreamRequest[] = [];
  rig.answer = (u) => held.push(u);
  return held;
}

interface RawClient {
  socket: Socket;
  /** Bytes received so far (status line, headers and body). */
  received(): number;
  text(): string;
  closed: Promise<void>;
}

/** A client on a bare socket, so a test can stop reading (pause) or vanish (destroy). */
function rawClient(url: string, body = BODY, paused = false): RawClient {
  const { port } = new URL(url);
  const socket = connect(Number(port), '127.0.0.1');
  const chunks: Buffer[] = [];
  let size = 0;
  socket.on('data', (c: Buffer) => {
    size += c.length;
    if (chunks.length < 64) chunks.push(c);
  });
  socket.on('error', () => {});
  const closed = new Promise<void>((r) => socket.once('close', () => r()));
  socket.write(`POST /graphql HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
  if (paused) socket.pause();
  return { socket, received: () => size, text: () => Buffer.concat(chunks).toString('latin1'), closed };
}

/** Writes `total` bytes in 64 KiB chunks, waiting for drain, then ends. */
function stream(u: UpstreamRequest, total: number, headers: Record<string, string> = {}): void {
  u.res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(total), ...headers });
  const chunk = Buffer.alloc(64 * 1024, 'x');
  let sent = 0;
  const pump = () => {
    while (sent < total) {
      const n = Math.min(chunk.length, total - sent);
      sent += n;
      if (!u.res.write(n === chunk.length ? chunk : chunk.subarray(0, n))) return void u.res.once('drain', pump);
    }
    u.res.end();
  };
  pump();
}

t.test('20 concurrent identical queries while the upstream is slow: one upstream request, all 20 get the answer', async (t) => {
  const rig = await startRig(t);
  const held = holdAnswers(rig);
  const spaced = JSON.stringify({ variables: { a: 1 }, query: `# the same query\n${QUERY.replace(/ /g, '\n  ')}` });
  const answers = Array.from({ length: 20 }, (_, i) => send(rig, i === 7 ? spaced : BODY));
  await waitFor(() => rig.saver.requests.coalesced === 19, 5000, '19 joiners');
  t.equal(rig.upstream.length, 1);
  defaultAnswer(held[0]!);
  const results = await Promise.all(answers);
  t.equal(rig.upstream.length, 1, 'one upstream request');
  t.same(new Set(results.map((r) => `${r.status} ${r.text} ${r.headers['content-type']} ${r.headers['x-front']}`)), new Set(['200 {"data":{"n":1}} application/json yes']));
  t.same(results.map((r) => r.headers['x-cache']).sort(), ['MISS', ...Array(19).fill('COALESCED')].sort());
  t.same(rig.saver.requests, { hit: 0, miss: 1, coalesced: 19, bypass: 0 });
  t.same([...rig.saver.saved], [['default', 19]]);
  t.equal(rig.saver.inFlight, 0, 'the flight is over');
  await waitFor(() => rig.outcomes.length === 20);
  t.ok(rig.outcomes.every((o) => !o.cut));
});

t.test('different variables, credential set, Accept-Encoding, and mutations each go upstream', async (t) => {
  const rig = await startRig(t);
  const held = holdAnswers(rig);
  const first = send(rig);
  await waitFor(() => held.length === 1);
  const others = [
    send(rig, JSON.stringify({ query: QUERY, variables: { a: 2 } })),
    send(rig, BODY, { 'x-test-set': 'other' }),
    send(rig, BODY, { 'accept-encoding': 'gzip' }),
    send(rig, JSON.stringify({ query: 'mutation { a }' })),
  ];
  await waitFor(() => held.length === 5, 5000, 'five upstream requests');
  held.forEach(defaultAnswer);
  const results = await Promise.all([first, ...others]);
  t.same(results.map((r) => r.headers['x-cache']), ['MISS', 'MISS', 'MISS', 'MISS', 'BYPASS']);
  t.same(rig.saver.requests, { hit: 0, miss: 4, coalesced: 0, bypass: 1 });
});

t.test('a joiner after the first bytes gets what arrived so far, then the rest', async (t) => {
  const rig = await startRig(t);
  const held = holdAnswers(rig);
  const leader = await (async () => {
    const pending = request(`${rig.url}/graphql`, { method: 'POST', body: BODY, headers: { 'content-type': 'application/json' }, dispatcher: agent });
    await waitFor(() => held.length === 1);
    held[0]!.res.writeHead(200, { 'content-type': 'application/json', 'set-cookie': 'lb=1' });
    held[0]!.res.write('{"data":{"part":"');
    return pending;
  })();
  const leaderBody = leader.body[Symbol.asyncIterator]();
  t.equal(((await leaderBody.next()).value as Buffer).toString(), '{"data":{"part":"', 'the leader has the first bytes');
  const joiner = send(rig);
  await waitFor(() => rig.saver.requests.coalesced === 1);
  held[0]!.res.end('one"}}');
  const joined = await joiner;
  t.equal(joined.text, '{"data":{"part":"one"}}');
  t.equal(joined.headers['x-cache'], 'COALESCED');
  t.equal(joined.headers['set-cookie'], undefined, "the leader's cookie is not handed to others");
  t.same(leader.headers['set-cookie'], 'lb=1', 'the leader keeps it');
  let rest = '';
  for (let next = await leaderBody.next(); !next.done; next = await leaderBody.next()) rest += (next.value as Buffer).toString();
  t.equal(rest, 'one"}}');
  t.equal(rig.upstream.length, 1);
});

t.test('past the held bound a query takes no joiners: the next one goes upstream on its own', async (t) => {
  const rig = await startRig(t, { maxHeldBytes: 1024, maxBacklogBytes: 4096 });
  const held = holdAnswers(rig);
  const leader = rawClient(rig.url);
  await waitFor(() => held.length === 1);
  held[0]!.res.writeHead(200, { 'content-type': 'application/json' });
  held[0]!.res.write(Buffer.alloc(2000, 'a'));
  await waitFor(() => leader.received() > 2000, 5000, 'the leader to receive 2000 bytes');
  t.equal(rig.saver.inFlight, 0, 'no longer open to joiners');
  const second = send(rig);
  await waitFor(() => held.length === 2);
  defaultAnswer(held[1]!);
  t.equal((await second).headers['x-cache'], 'MISS');
  held[0]!.res.end();
  leader.socket.end();
  t.same(rig.saver.requests, { hit: 0, miss: 2, coalesced: 0, bypass: 0 });
});

t.test('answers in flight hold at most their shared budget: past it a query takes no joiners', async (t) => {
  const rig = await startRig(t, { maxHeldBytes: 2048, maxHeldTotalBytes: 2900, maxBacklogBytes: 8192 });
  const held = holdAnswers(rig);
  const [one, two] = [rawClient(rig.url, JSON.stringify({ query: '{ one }' })), rawClient(rig.url, JSON.stringify({ query: '{ two }' }))];
  await waitFor(() => held.length === 2);
  for (const u of held) {
    u.res.writeHead(200, { 'content-type': 'application/json' });
    u.res.write(Buffer.alloc(1500, 'a'));
  }
  await waitFor(() => one.received() > 1500 && two.received() > 1500, 5000, 'both to have their first bytes');
  t.equal(rig.saver.heldBytes, 1500, 'the first holds its bytes; the second found no room');
  t.equal(rig.saver.inFlight, 1, 'only the first still takes joiners');
  held.forEach((u) => u.res.end());
  await Promise.all([one, two].map((c) => waitFor(() => c.text().endsWith('\r\n0\r\n\r\n'), 5000, 'the answers to end')));
  await waitFor(() => rig.saver.heldBytes === 0, 5000, 'the budget to be given back');
  one.socket.destroy();
  two.socket.destroy();
});

t.test('a client that goes away does not abort the upstream request the others wait for', async (t) => {
  const rig = await startRig(t);
  const held = holdAnswers(rig);
  const leaving = rawClient(rig.url);
  await waitFor(() => held.length === 1);
  const staying = [send(rig), send(rig)];
  await waitFor(() => rig.saver.requests.coalesced === 2);
  held[0]!.res.writeHead(200, { 'content-type': 'application/json' });
  held[0]!.res.write('{"data":');
  await waitFor(() => leaving.text().includes('{"data":'));
  leaving.socket.destroy();
  await waitFor(() => rig.outcomes.length === 1, 5000, "the leaving client's outcome");
  held[0]!.res.end('1}');
  for (const r of await Promise.all(staying)) t.equal(r.text, '{"data":1}');
  t.equal(await held[0]!.aborted, false, 'the upstream answer was read to its end');
});

t.test('when every client has gone, the upstream request is aborted (before or after its head)', async (t) => {
  const rig = await startRig(t);
  const held = holdAnswers(rig);
  const clients = [rawClient(rig.url), rawClient(rig.url), rawClient(rig.url)];
  await waitFor(() => rig.saver.requests.coalesced === 2);
  held[0]!.res.writeHead(200, { 'content-type': 'application/json' });
  held[0]!.res.write('{"data":');
  await waitFor(() => clients.every((c) => c.text().includes('{"data":')));
  clients.forEach((c) => c.socket.destroy());
  t.equal(await held[0]!.aborted, true, 'aborted after the head');
  t.equal(rig.saver.inFlight, 0);

  const waiting = [rawClient(rig.url), rawClient(rig.url)];
  await waitFor(() => held.length === 2 && rig.saver.requests.coalesced === 3);
  waiting.forEach((c) => c.socket.destroy());
  t.equal(await held[1]!.aborted, true, 'aborted while waiting for the head');

  rig.answer = defaultAnswer;
  t.equal((await send(rig)).headers['x-cache'], 'MISS', 'the next one starts afresh');
  t.equal(rig.upstream.length, 3);
});

t.test('a slow client sharing an answer is cut alone; the others get it all at their own pace', async (t) => {
  // What a client has not taken yet is what its response holds in this process: the kernel's
  // socket buffers, which loopback sizes per connection up to several MiB, are not counted. The
  // bound is well above that difference, so a client that reads is never taken for a slow one.
  const rig = await startRig(t, { maxHeldBytes: 16 * 1024, maxBacklogBytes: 16 * 1024 * 1024 });
  const held = holdAnswers(rig);
  // More than the kernel buffers of a reader that stopped hold, plus the bound.
  const total = 64 * 1024 * 1024;
  const slow = rawClient(rig.url, BODY, true);
  await waitFor(() => held.length === 1);
  // Bare sockets that only count what they read: they keep pace with each other even though they
  // share this process's event loop with the proxy and the upstream.
  const fast = [rawClient(rig.url), rawClient(rig.url)];
  await waitFor(() => rig.saver.requests.coalesced === 2);
  stream(held[0]!, total);
  await waitFor(() => fast.every((c) => c.received() > total), 60_000, 'the fast clients to get it all');
  t.equal(await held[0]!.aborted, false, 'the upstream answer was read to its end');
  t.equal(rig.saver.slowClientsCut, 1);
  slow.socket.resume();
  await slow.closed;
  t.ok(slow.received() < total, `the slow client got ${slow.received()} bytes, then its connection was closed`);
  await waitFor(() => rig.outcomes.length === 3);
  t.same(rig.outcomes.map((o) => o.cut).sort(), [false, false, true]);
  for (const client of fast) client.socket.destroy();
});

t.test('a lone slow client is never cut: it pauses the upstream, as without the saver', async (t) => {
  const rig = await startRig(t, { maxHeldBytes: 16 * 1024, maxBacklogBytes: 64 * 1024 });
  // More than the kernel buffers on loopback hold for a reader that stopped (about 4 MiB here).
  const total = 16 * 1024 * 1024;
  rig.answer = (u) => stream(u, total);
  for (const body of [BODY, JSON.stringify({ query: 'mutation { a }' })]) {
    const pausesBefore = rig.pauses;
    const client = rawClient(rig.url, body, true);
    await waitFor(() => rig.pauses > pausesBefore, 60_000, 'the exchange to be paused');
    client.socket.resume();
    await waitFor(() => client.received() > total, 60_000, 'the whole body');
    client.socket.destroy();
  }
  t.equal(rig.saver.slowClientsCut, 0);
  t.same(rig.saver.requests, { hit: 0, miss: 1, coalesced: 0, bypass: 1 });
});

t.test('the 401 retry happens once for the shared exchange', async (t) => {
  const rig = await startRig(t);
  rig.firstToken = 'Bearer stale';
  const held: UpstreamRequest[] = [];
  rig.answer = (u) => (u.authorization === 'Bearer good' ? held.push(u) : defaultAnswer(u));
  const answers = Array.from({ length: 5 }, () => send(rig));
  await waitFor(() => held.length === 1 && rig.saver.requests.coalesced === 4);
  defaultAnswer(held[0]!);
  const results = await Promise.all(answers);
  t.same(new Set(results.map((r) => `${r.status} ${r.text}`)), new Set(['200 {"data":{"n":2}}']));
  t.same(rig.upstream.map((u) => u.authorization), ['Bearer stale', 'Bearer good']);
  t.equal(rig.exchanges, 1);
});

t.test('an upstream that fails before its head: every waiting client gets the same 502', async (t) => {
  const rig = await startRig(t);
  const held = holdAnswers(rig);
  const answers = [send(rig), send(rig), send(rig)];
  await waitFor(() => rig.saver.requests.coalesced === 2);
  held[0]!.req.socket.destroy();
  const results = await Promise.all(answers);
  t.same(results.map((r) => r.status), [502, 502, 502]);
  t.same(results.map((r) => JSON.parse(r.text).error), ['upstream_unreachable', 'upstream_unreachable', 'upstream_unreachable']);
});

t.test('an answer that breaks after its head cuts every client', async (t) => {
  const rig = await startRig(t);
  const held = holdAnswers(rig);
  const clients = [rawClient(rig.url), rawClient(rig.url)];
  await waitFor(() => rig.saver.requests.coalesced === 1);
  held[0]!.res.writeHead(200, { 'content-type': 'application/json', 'content-length': '100' });
  held[0]!.res.write('{"data":');
  await waitFor(() => clients.every((c) => c.text().includes('{"data":')));
  held[0]!.req.socket.destroy();
  await Promise.all(clients.map((c) => c.closed));
  for (const c of clients) t.notOk(c.text().endsWith('}'), 'cut short');
});

/** A query (shared: a flight) and a mutation (never shared: its own sole answer) take different sinks. */
const SINKS = [
  { kind: 'a shared query', body: BODY },
  { kind: 'a mutation (not shared)', body: JSON.stringify({ query: 'mutation { a }' }) },
];

for (const { kind, body } of SINKS) {
  t.test(`${kind}: an exchange that throws, or returns without finishing, cuts its client and is reported`, async (t) => {
    const rig = await startRig(t);
    rig.exchangeOverride = async () => {
      throw new Error('a bug in the exchange');
    };
    const a = rawClient(rig.url, body);
    await a.closed;
    t.equal(a.received(), 0);
    await waitFor(() => rig.errors.length === 1);
    t.match((rig.errors[0] as Error).message, 'a bug in the exchange');

    rig.exchangeOverride = async (sink) => {
      sink.head(200, { 'content-type': 'application/json' });
      sink.write(Buffer.from('{'));
    };
    const b = rawClient(rig.url, body);
    await b.closed;
    t.match(b.text(), /^HTTP\/1.1 200/);
    t.equal(rig.errors.length, 1, 'returning early is no error of its own');

    rig.exchangeOverride = async (sink) => {
      sink.head(200, { 'content-type': 'application/json' });
      sink.destroy();
      sink.destroy();
      sink.end();
    };
    const c = rawClient(rig.url, body);
    await c.closed;
    t.equal(rig.errors.length, 1, 'a destroyed answer is no error either');
  });

  t.test(`${kind}: the sink says when its client has gone, and that nothing was started`, async (t) => {
    const rig = await startRig(t);
    let sink: AnswerSink | undefined;
    let release!: () => void;
    const released = new Promise<void>((r) => (release = r));
    let aborted = 0;
    rig.exchangeOverride = async (s) => {
      sink = s;
      s.onGone(() => (aborted += 1));
      await released;
    };
    const client = rawClient(rig.url, body);
    await waitFor(() => sink);
    t.same([sink!.gone, sink!.started], [false, false]);
    client.socket.destroy();
    await waitFor(() => sink!.gone, 5000, 'the sink to see its client gone');
    t.same([sink!.started, aborted], [false, 1], 'nothing started; the gone listener ran once');
    sink!.head(200, {});
    t.equal(sink!.started, false, 'a head after the client has gone goes nowhere');
    t.equal(sink!.write(Buffer.from('x')), true, 'a write after it is dropped');
    release();
  });
}

t.test('COALESCE=false: identical queries each go upstream, marked BYPASS', async (t) => {
  const rig = await startRig(t, { coalesce: false });
  const held = holdAnswers(rig);
  const answers = [send(rig), send(rig)];
  await waitFor(() => held.length === 2);
  held.forEach(defaultAnswer);
  t.same((await Promise.all(answers)).map((r) => r.headers['x-cache']), ['BYPASS', 'BYPASS']);
  t.same(rig.saver.requests, { hit: 0, miss: 0, coalesced: 0, bypass: 2 });
});

t.test('settings that do not fit are refused; the daemon\'s saver has a cache only when some TTL asks for one', async (t) => {
  const settings = { coalesce: true, cacheTtlMs: 0, cacheMaxBytes: 64 << 20, cacheMaxEntryBytes: 1 << 20, maxBufferedBytes: 4 << 20 };
  t.equal(settingsProblem(settings), undefined);
  t.equal(settingsProblem({ ...settings, maxBufferedBytes: 2 << 20 }), undefined);
  t.equal(settingsProblem({ ...settings, maxBufferedBytes: (2 << 20) - 1 }), 'COALESCE_MAX_BUFFERED_BYTES (2097151) must be at least twice CACHE_MAX_ENTRY_BYTES (1048576)');
  t.equal(settingsProblem({ ...settings, cacheMaxBytes: 1000, cacheMaxEntryBytes: 1001 }), 'CACHE_MAX_ENTRY_BYTES (1001) must not be above CACHE_MAX_BYTES (1000)');
  t.throws(() => new PointsSaver({ coalesce: true, cacheTtlMs: 0, maxHeldBytes: 10, maxHeldTotalBytes: 100, maxBacklogBytes: 10, onError: () => {} }), RangeError);
  t.same(
    [memoryStoreFor(settings, [0, 5000]), memoryStoreFor({ ...settings, cacheTtlMs: 1000 }, []), memoryStoreFor(settings, [0])].map((s) => createPointsSaver(settings, s, () => {}).caching),
    [true, true, false],
  );
  t.equal(createPointsSaver(settings, undefined, () => {}).cacheBytes, 0);
});
