// Share mode in process over real loopback sockets: the engine behind an HTTP server's upgrade
// listener, a real legacy graphql-ws upstream that ignores `stop` as Bitquery does, and real clients
// on both subprotocols (hand-written ones and the graphql-ws library).
import t from 'tap';
import { WebSocket } from 'ws';
import { harness, libSubscribe, RawClient, waitFor, type Harness } from './helpers.js';

const Q = 'subscription Trades($a: Int, $b: Int) { trades(a: $a, b: $b) { id } }';
/** The same subscription written differently: whitespace, a comment, variables in another order. */
const Q_AGAIN = `# the same
subscription   Trades($a: Int,
  $b: Int) {
  trades(a: $a, b: $b) { id }
}`;
const Q2 = 'subscription Blocks { blocks { n } }';

const streamsOf = (h: Harness, credentials = 'default') => h.engine.stats().credentials[credentials] ?? { upstreamStreams: 0, subscriptions: 0 };

async function legacy(h: Harness): Promise<RawClient> {
  const c = await RawClient.open(h.url, 'graphql-ws');
  await c.init();
  return c;
}

async function transport(h: Harness): Promise<RawClient> {
  const c = await RawClient.open(h.url, 'graphql-transport-ws');
  await c.init();
  return c;
}

t.test('fifteen clients on both subprotocols share one upstream socket and each gets every event in its own protocol', async (t) => {
  const h = await harness(t);
  const legacyClients = await Promise.all(Array.from({ length: 5 }, () => legacy(h)));
  const transportClients = await Promise.all(Array.from({ length: 5 }, () => transport(h)));
  legacyClients.forEach((c, i) => c.subscribe(i === 0 ? 7 : 'op', i % 2 ? Q_AGAIN : Q, i % 2 ? { b: 2, a: 1 } : { a: 1, b: 2 }));
  transportClients.forEach((c, i) => c.subscribe(`s${i}`, i % 2 ? Q_AGAIN : Q, { a: 1, b: 2 }));
  const lib = Array.from({ length: 5 }, () => libSubscribe(h.url, Q_AGAIN, { b: 2, a: 1 }));

  await waitFor(() => streamsOf(h).subscriptions === 15, 5000, '15 subscriptions');
  await waitFor(() => h.upstream.streams().length === 1, 5000, 'the upstream subscription');
  t.equal(h.upstream.conns.length, 1, 'exactly one upstream socket');
  t.same(streamsOf(h), { upstreamStreams: 1, subscriptions: 15 });
  const [conn] = h.upstream.conns;
  t.equal(conn!.token, 'token-1', 'the token as ?token=');
  t.equal(conn!.authorization, 'Bearer token-1', 'and as Authorization');
  t.equal(conn!.path, '/graphql');
  t.same(conn!.started, { query: 'subscription Trades($a: Int, $b: Int) {\n  trades(a: $a, b: $b) {\n    id\n  }\n}', variables: { a: 1, b: 2 } }, 'the normalized document upstream');
  t.same(
    conn!.received.map((m) => m.type),
    ['connection_init', 'start'],
    'legacy graphql-ws upstream: init, then start after the ack',
  );

  for (let n = 1; n <= 3; n++) t.equal(h.upstream.publish({ trades: { id: n } }), 1);
  const expected = [1, 2, 3].map((n) => ({ trades: { id: n } }));
  for (const [i, c] of legacyClients.entries()) {
    const id = i === 0 ? 7 : 'op';
    await waitFor(() => c.events(id).length === 3, 5000, 'legacy events');
    t.same(c.events(id), expected, `legacy client ${i}: data messages with its own id`);
  }
  t.same(legacyClients[0]!.messages.find((m) => m.type === 'data')!.id, 7, 'a numeric legacy id goes back as a number');
  for (const [i, c] of transportClients.entries()) {
    await waitFor(() => c.events(`s${i}`).length === 3, 5000, 'transport events');
    t.same(c.events(`s${i}`), expected, `transport client ${i}: next messages`);
    t.same(c.of('data'), [], 'no legacy messages');
  }
  for (const s of lib) {
    await waitFor(() => s.events.length === 3, 5000, 'library events');
    t.same(s.events, expected, 'graphql-ws library client');
  }

  for (const c of [...legacyClients, ...transportClients]) c.ws.close();
  for (const s of lib) await s.client.dispose();
  await conn!.closed;
  const line = await waitFor(() => h.logs.find((l) => l.msg === 'shared stream closed'));
  t.match(line, { subscribers: 15, peakSubscribers: 15, events: 3, reconnects: 0, cause: 'unused', credentials: 'default', path: '/graphql', operation: undefined });
  t.notOk(h.raw().includes('token-1'), 'the token is never logged');
  t.same(
    h.events.map((e) => e.name),
    ['sharedStreamOpened', 'sharedStreamClosed'],
  );
  t.same(h.engine.stats().credentials, {}, 'nothing left open');
});

t.test('different variables, documents, operation names, paths or credential sets open separate upstream sockets', async (t) => {
  const h = await harness(t);
  const a = await legacy(h);
  const b = await RawClient.open(h.url, 'graphql-transport-ws', { headers: { 'x-set': 'team-b' } });
  await b.init();
  const eap = await RawClient.open(h.url.replace('/graphql', '/eap?x=1'), 'graphql-ws');
  await eap.init();
  const twoOps = 'subscription One { a } subscription Two { b }';
  a.subscribe('1', Q, { a: 1, b: 2 });
  a.subscribe('2', Q, { a: 1, b: 3 });
  a.subscribe('3', Q2);
  a.subscribe('4', twoOps, undefined, 'One');
  a.subscribe('5', twoOps, undefined, 'Two');
  a.subscribe('6', Q, { a: 1, b: 2 }); // the same as 1, on the same socket: shared
  b.subscribe('1', Q, { a: 1, b: 2 }); // as 1, but another credential set
  eap.subscribe('1', Q, { a: 1, b: 2 }); // as 1, but another path
  await waitFor(() => h.upstream.streams().length === 7, 5000, '7 upstream subscriptions');
  t.equal(h.upstream.conns.length, 7);
  t.same(h.engine.stats().credentials, { default: { upstreamStreams: 6, subscriptions: 7 }, 'team-b': { upstreamStreams: 1, subscriptions: 1 } });
  t.same(h.upstream.conns.map((c) => c.path).sort(), ['/eap', ...Array(6).fill('/graphql')], 'the client’s query string is not forwarded');

  t.equal(h.upstream.publish({ v: 3 }, (c) => c.started!.variables?.b === 3), 1);
  t.equal(h.upstream.publish({ two: true }, (c) => c.started!.operationName === 'Two'), 1);
  await waitFor(() => a.events('2').length === 1 && a.events('5').length === 1);
  t.same(a.events('2'), [{ v: 3 }]);
  t.same(a.events('5'), [{ two: true }]);
  t.same([a.events('1'), a.events('3'), a.events('4'), a.events('6'), b.events('1'), eap.events('1')], [[], [], [], [], [], []], 'nobody else got them');
});

t.test('a subscription named by operationName and the same one sent without it share one upstream stream', async (t) => {
  const h = await harness(t);
  const a = await legacy(h);
  const b = await transport(h);
  a.subscribe('1', Q, { a: 1, b: 2 }, 'Trades');
  b.subscribe('1', Q, { a: 1, b: 2 });
  await waitFor(() => streamsOf(h).subscriptions === 2 && h.upstream.streams().length === 1, 5000, 'two subscriptions on one stream');
  t.same(streamsOf(h), { upstreamStreams: 1, subscriptions: 2 });
  t.equal(h.upstream.conns[0]!.started!.operationName, 'Trades', 'sent upstream as the first client sent it');
  t.equal(h.upstream.publish({ trades: { id: 1 } }), 1);
  await waitFor(() => a.events('1').length === 1 && b.events('1').length === 1, 5000, 'both got the event');
});

t.test('a client completing one subscription ends that one only; the others keep flowing; nothing is sent upstream', async (t) => {
  const h = await harness(t);
  const a = await transport(h);
  const b = await legacy(h);
  a.subscribe('x', Q, { a: 1 });
  a.subscribe('y', Q2);
  b.subscribe('x', Q, { a: 1 });
  await waitFor(() => h.upstream.streams().length === 2);
  h.upstream.publish({ n: 1 });
  await waitFor(() => a.events('x').length === 1 && a.events('y').length === 1 && b.events('x').length === 1);

  a.complete('x');
  await waitFor(() => streamsOf(h).subscriptions === 2, 5000, 'the completed subscription gone');
  h.upstream.publish({ n: 2 });
  await waitFor(() => a.events('y').length === 2 && b.events('x').length === 2);
  t.same(a.events('x'), [{ n: 1 }], 'the completed subscription gets no more events');
  t.same(b.events('x'), [{ n: 1 }, { n: 2 }], 'the other subscriber of the same stream keeps flowing');
  t.same(a.events('y'), [{ n: 1 }, { n: 2 }], 'the same client’s other subscription keeps flowing');
  t.equal(h.upstream.openConns().length, 2, 'the shared stream is still open for b');
  a.complete('unknown'); // ignored

  b.complete('x');
  const closed = await h.upstream.conns.find((c) => c.started!.variables?.a === 1)!.closed;
  t.same(closed, { code: 1000, reason: 'no more subscribers' }, 'the last one out closes the upstream socket');
  for (const c of h.upstream.conns) {
    t.same(c.received.map((m) => m.type).filter((type) => type !== 'connection_init' && type !== 'start'), [], 'no stop or complete is ever sent upstream');
  }
  t.ok(a.open && b.open, 'client sockets stay open');
});

t.test('a late joiner gets the events from then on', async (t) => {
  const h = await harness(t);
  const a = await legacy(h);
  a.subscribe('1', Q2);
  await waitFor(() => h.upstream.streams().length === 1);
  h.upstream.publish({ n: 1 });
  await waitFor(() => a.events('1').length === 1);
  const b = await transport(h);
  b.subscribe('1', Q2);
  await waitFor(() => streamsOf(h).subscriptions === 2);
  h.upstream.publish({ n: 2 });
  await waitFor(() => a.events('1').length === 2 && b.events('1').length === 1);
  t.same(b.events('1'), [{ n: 2 }]);
  t.equal(h.upstream.conns.length, 1);
});

t.test('linger: the upstream socket stays for WS_LINGER_MS after the last subscriber, is reused by a rejoin, then closed', async (t) => {
  const h = await harness(t, { settings: { lingerMs: 400 } });
  const a = await legacy(h);
  a.subscribe('1', Q2);
  await waitFor(() => h.upstream.streams().length === 1);
  a.complete('1');
  await waitFor(() => streamsOf(h).subscriptions === 0, 5000, 'no subscription');
  t.equal(h.upstream.openConns().length, 1, 'still open right after the last subscriber left');
  t.same(streamsOf(h), { upstreamStreams: 1, subscriptions: 0 }, 'a lingering stream still counts');
  a.subscribe('2', Q2);
  await waitFor(() => streamsOf(h).subscriptions === 1);
  h.upstream.publish({ n: 1 });
  await waitFor(() => a.events('2').length === 1);
  t.equal(h.upstream.conns.length, 1, 'the rejoin reused the lingering socket');

  const started = Date.now();
  a.ws.close(); // a disconnect leaves like a complete
  const closed = await h.upstream.conns[0]!.closed;
  t.equal(closed.code, 1000, 'closed, not stopped');
  t.ok(Date.now() - started >= 300, 'not before the linger');
  t.equal(h.upstream.conns.length, 1);
});

t.test('an upstream error or complete goes to every subscriber and ends the stream; the next subscription opens a new one', async (t) => {
  const h = await harness(t);
  const a = await legacy(h);
  const b = await transport(h);
  const lib = libSubscribe(h.url, Q2);
  a.subscribe('1', Q2);
  b.subscribe('1', Q2);
  await waitFor(() => streamsOf(h).subscriptions === 3 && h.upstream.streams().length === 1);
  const first = h.upstream.conns[0]!;
  h.upstream.send(first, { type: 'error', id: '1', payload: { message: 'boom', extensions: { code: 'X' } } });
  await waitFor(() => a.of('complete', '1').length === 1 && b.of('error', '1').length === 1 && lib.error !== undefined);
  t.same(a.of('error', '1')[0]!.payload, { message: 'boom', extensions: { code: 'X' } }, 'legacy: the error as sent');
  t.same(b.of('error', '1')[0]!.payload, [{ message: 'boom', extensions: { code: 'X' } }], 'transport: a list of errors');
  t.same(b.of('complete'), [], 'transport: error is terminal, no complete');
  t.match(lib.error, [{ message: 'boom' }], 'the library client gets the error');
  t.equal((await first.closed).code, 1000, 'the upstream socket is closed');
  t.same(h.engine.stats().credentials, {});

  a.subscribe('2', Q2);
  b.subscribe('2', Q2);
  await waitFor(() => h.upstream.streams().length === 1 && h.upstream.conns.length === 2, 5000, 'a new stream');
  h.upstream.send(h.upstream.conns[1]!, { type: 'complete', id: '1' });
  await waitFor(() => a.of('complete', '2').length === 1 && b.of('complete', '2').length === 1);
  t.same(a.of('error', '2'), [], 'a complete is no error');
  await h.upstream.conns[1]!.closed;
  const causes = h.events.filter((e) => e.name === 'sharedStreamClosed').map((e) => e.event.cause);
  t.same(causes, ['upstream_error', 'upstream_complete']);
  t.ok(a.open && b.open);
});

t.test('upstream noise (not JSON, binary, other ids, a second ack) is ignored', async (t) => {
  const h = await harness(t);
  const a = await legacy(h);
  a.subscribe('1', Q2);
  await waitFor(() => h.upstream.streams().length === 1);
  const conn = h.upstream.conns[0]!;
  conn.ws.send('not json');
  conn.ws.send('null');
  conn.ws.send(Buffer.from('{"type":"data","id":"1","payload":{"data":{"binary":true}}}'), { binary: true });
  for (const type of ['data', 'error', 'complete']) h.upstream.send(conn, { type, id: '2', payload: { data: { other: true } } });
  h.upstream.send(conn, { type: 'connection_ack' });
  h.upstream.send(conn, { type: 'data', id: '1' });
  h.upstream.publish({ n: 1 });
  await waitFor(() => a.of('data', '1').length === 2, 5000, 'the real event');
  t.same(a.of('data', '1').map((m) => m.payload), [null, { data: { n: 1 } }], 'a data without payload passes as null; nothing else got through');
  t.same(a.of('error'), []);
  t.equal(h.upstream.conns.length, 1);
  t.equal(conn.received.filter((m) => m.type === 'start').length, 1, 'a second ack starts nothing');
});

t.test('a silent upstream is reconnected and subscribed again while its clients stay connected', async (t) => {
  const h = await harness(t, { settings: { idleMs: 300 }, kaMs: 50 });
  const a = await legacy(h);
  const b = await transport(h);
  a.subscribe('1', Q2);
  b.subscribe('1', Q2);
  await waitFor(() => h.upstream.streams().length === 1);
  h.upstream.publish({ n: 1 });
  await waitFor(() => a.events('1').length === 1 && b.events('1').length === 1);
  const first = h.upstream.conns[0]!;

  // ka every 50 ms keeps a quiet stream alive; total silence does not.
  h.upstream.silent = true;
  h.upstream.once('conn', () => (h.upstream.silent = false));
  const started = await new Promise<typeof first>((resolve) => h.upstream.once('started', resolve));
  t.not(started, first, 'a new upstream socket');
  t.equal((await first.closed).code, 1006, 'the silent one was cut');
  h.upstream.publish({ n: 2 });
  await waitFor(() => a.events('1').length === 2 && b.events('1').length === 2);
  t.ok(a.open && b.open, 'the clients never noticed');
  t.same(h.engine.stats().reconnects, { default: { idle: 1 } });
  t.same(h.events.filter((e) => e.name === 'upstreamReconnect').map((e) => e.event), [{ credentials: 'default', reason: 'idle' }]);
  t.match(h.logs.find((l) => l.msg.startsWith('shared stream reconnecting')), { reason: 'idle', attempt: 1, subscribers: 2, msg: /no message from the upstream for 300 ms/ });
});

t.test('a dropped upstream socket is reconnected; a 401 on the way gets a fresh token', async (t) => {
  const h = await harness(t);
  const a = await legacy(h);
  a.subscribe('1', Q2);
  await waitFor(() => h.upstream.streams().length === 1);
  h.upstream.tokens.clear();
  h.upstream.tokens.add('token-2');
  h.tokens.fresh = 'token-2';
  h.upstream.conns[0]!.ws.terminate();
  await waitFor(() => h.upstream.conns.length === 2 && h.upstream.streams().length === 1, 5000, 'resubscribed');
  t.same(h.tokens.rejected, ['token-1'], 'tokenRejected told which token got the 401');
  const last = h.upstream.conns.at(-1)!;
  t.equal(last.token, 'token-2');
  t.equal(last.authorization, 'Bearer token-2');
  h.upstream.publish({ n: 1 });
  await waitFor(() => a.events('1').length === 1);
  t.same(h.engine.stats().reconnects, { default: { dropped: 1, unauthorized: 1 } });
  t.notOk(/token-[12]/.test(h.raw()), 'no token in the logs');
});

t.test('an upstream message over the size bound breaks the connection, which is reconnected', async (t) => {
  const h = await harness(t, { settings: { maxMessageBytes: 1024 } });
  const a = await transport(h);
  a.subscribe('1', Q2);
  await waitFor(() => h.upstream.streams().length === 1);
  h.upstream.publish({ big: 'x'.repeat(2048) });
  await waitFor(() => h.upstream.conns.length === 2 && h.upstream.streams().length === 1, 5000, 'reconnected');
  h.upstream.publish({ small: 1 });
  await waitFor(() => a.events('1').length === 1);
  t.same(a.events('1'), [{ small: 1 }]);
  t.match(h.logs.find((l) => l.msg.startsWith('shared stream reconnecting')), { reason: 'dropped', msg: /an upstream message was larger than 1024 bytes/ });
});

t.test('retryable handshake refusals are retried (Retry-After honoured); connection_error too', async (t) => {
  const h = await harness(t);
  h.upstream.refusals.push({ status: 503 }, { status: 429, retryAfter: '0' });
  const a = await legacy(h);
  a.subscribe('1', Q2);
  await waitFor(() => h.upstream.streams().length === 1, 5000, 'subscribed after two refusals');
  h.upstream.rejectInit = true;
  h.upstream.conns.at(-1)!.ws.terminate();
  await waitFor(() => h.engine.stats().reconnects.default?.connection_error === 1, 5000, 'connection_error counted');
  h.upstream.rejectInit = false;
  await waitFor(() => h.upstream.streams().length === 1, 5000, 'subscribed again');
  h.upstream.publish({ n: 1 });
  await waitFor(() => a.events('1').length === 1);
  t.same(h.engine.stats().reconnects, { default: { refused: 2, dropped: 1, connection_error: 1 } });
  t.match(h.logs.find((l) => l.reason === 'connection_error'), { msg: /init refused/ });
});

t.test('after WS_RECONNECT_ATTEMPTS failures in a row every subscriber gets a protocol error saying why', async (t) => {
  const h = await harness(t, { settings: { reconnectAttempts: 2 } });
  const a = await legacy(h);
  const b = await transport(h);
  const lib = libSubscribe(h.url, Q2);
  a.subscribe('1', Q2);
  b.subscribe('1', Q2);
  await waitFor(() => streamsOf(h).subscriptions === 3 && h.upstream.streams().length === 1);
  h.upstream.refusals.push({ status: 502, body: 'bad gateway' }, { status: 500 }, { status: 503 });
  h.upstream.conns[0]!.ws.terminate();
  await waitFor(() => a.of('complete', '1').length === 1 && b.of('error', '1').length === 1 && lib.error !== undefined, 5000, 'errors');
  const why = /^the subscription's upstream stream failed: the upstream refused the WebSocket handshake with 500, and 2 reconnect attempts in a row failed$/;
  t.match(a.of('error', '1')[0]!.payload, { message: why }, 'legacy: error…');
  t.same(a.of('complete', '1').length, 1, '…then complete');
  t.match(b.of('error', '1')[0]!.payload, [{ message: why }], 'transport: error (terminal)');
  t.match(lib.error, [{ message: why }]);
  t.ok(a.open && b.open, 'client sockets stay open');
  t.same(h.engine.stats().credentials, {}, 'the stream is gone');
  t.equal(h.upstream.refusals.length, 1, 'exactly two reconnect attempts were made');
  t.match(h.events.find((e) => e.name === 'sharedStreamClosed')!.event, { cause: 'failed', reconnects: 2, subscribers: 3 });

  // A subscription can start again once the upstream is back.
  h.upstream.refusals.length = 0;
  a.subscribe('2', Q2);
  await waitFor(() => h.upstream.streams().length === 1);
});

t.test('failures that retrying cannot fix, and ones with nothing to retry for', async (t) => {
  await t.test('a 403 at the handshake fails the subscription at once, without retries', async (t) => {
    const h = await harness(t);
    h.upstream.refusals.push({ status: 403, body: 'forbidden\nplan' });
    const a = await transport(h);
    a.subscribe('1', Q2);
    const error = await a.next((m) => m.type === 'error');
    t.same(error.payload, [{ message: "the subscription's upstream stream failed: the upstream refused the WebSocket handshake with 403: forbidden plan" }]);
    t.equal(h.upstream.conns.length, 0);
    t.same(h.engine.stats().reconnects, {});
  });

  await t.test('no token: token_unavailable; with 0 attempts the first failure is final', async (t) => {
    const h = await harness(t, { settings: { reconnectAttempts: 0 } });
    h.tokens.unavailable = true;
    const a = await legacy(h);
    a.subscribe('1', Q2);
    const error = await a.next((m) => m.type === 'error');
    t.same(error.payload, { message: "the subscription's upstream stream failed: no token could be had (no token (test))" });
  });

  await t.test('an unreachable upstream: reconnect attempts, then an error naming the cause', async (t) => {
    const { closedPort } = await import('../helpers/ports.js');
    const h = await harness(t, { settings: { reconnectAttempts: 1 }, origin: `http://127.0.0.1:${await closedPort()}` });
    const a = await legacy(h);
    a.subscribe('1', Q2);
    const error = await a.next((m) => m.type === 'error');
    t.match(error.payload, { message: /could not be reached \(ECONNREFUSED\), and 1 reconnect attempt in a row failed/ });
    t.same(h.engine.stats().reconnects, { default: { unreachable: 1 } });
  });

  await t.test('an upstream that accepts TCP but never answers the handshake: timeout', async (t) => {
    const net = await import('node:net');
    const sockets: import('node:net').Socket[] = [];
    const mute = net.createServer((s) => sockets.push(s.on('error', () => {})));
    await new Promise<void>((resolve) => mute.listen(0, '127.0.0.1', resolve));
    t.teardown(() => {
      for (const s of sockets) s.destroy();
      mute.close();
    });
    const h = await harness(t, { settings: { reconnectAttempts: 1, connectTimeoutMs: 100 }, origin: `http://127.0.0.1:${(mute.address() as import('node:net').AddressInfo).port}` });
    const a = await transport(h);
    a.subscribe('1', Q2);
    const error = await a.next((m) => m.type === 'error');
    t.match(error.payload, [{ message: /did not complete the WebSocket handshake within 100 ms/ }]);
    t.same(h.engine.stats().reconnects, { default: { timeout: 1 } });
  });

  await t.test('a failure while lingering ends the stream instead of reconnecting', async (t) => {
    const h = await harness(t, { settings: { lingerMs: 60_000 } });
    const a = await legacy(h);
    a.subscribe('1', Q2);
    await waitFor(() => h.upstream.streams().length === 1);
    a.complete('1');
    await waitFor(() => streamsOf(h).subscriptions === 0);
    h.upstream.conns[0]!.ws.terminate();
    await waitFor(() => streamsOf(h).upstreamStreams === 0, 5000, 'the stream gone');
    t.equal(h.upstream.conns.length, 1, 'no reconnect for nobody');
    t.same(h.engine.stats().reconnects, {});
  });

  await t.test('the last subscriber leaving while a reconnect waits for its token ends it quietly', async (t) => {
    const h = await harness(t);
    const a = await legacy(h);
    a.subscribe('1', Q2);
    await waitFor(() => h.upstream.streams().length === 1);
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    const getToken = h.tokens.getToken.bind(h.tokens);
    h.tokens.getToken = async () => {
      await gate;
      return getToken();
    };
    h.upstream.conns[0]!.ws.terminate();
    await waitFor(() => h.engine.stats().reconnects.default?.dropped === 1);
    a.complete('1');
    await waitFor(() => streamsOf(h).upstreamStreams === 0);
    release();
    await new Promise((r) => setTimeout(r, 50));
    t.equal(h.upstream.conns.length, 1, 'no socket opened after the stream ended');
  });
});

t.test('WS_MAX_UPSTREAM_STREAMS: a new distinct subscription over the cap gets an error naming it; joining a running one works', async (t) => {
  const h = await harness(t, { maxUpstreamStreams: (c) => (c === 'default' ? 1 : 0) });
  const a = await legacy(h);
  a.subscribe('1', Q2);
  await waitFor(() => h.upstream.streams().length === 1);
  a.subscribe('2', Q, { a: 1 });
  const refused = await a.next((m) => m.type === 'error' && m.id === '2');
  t.match(refused.payload, { message: /already holds 1 upstream streams, its cap \(WS_MAX_UPSTREAM_STREAMS=1\)/ });
  t.equal(a.of('complete', '2').length, 1);

  const b = await transport(h);
  b.subscribe('1', Q2);
  await waitFor(() => streamsOf(h).subscriptions === 2, 5000, 'joined');
  h.upstream.publish({ n: 1 });
  await waitFor(() => b.events('1').length === 1 && a.events('1').length === 1);

  const other = await RawClient.open(h.url, 'graphql-ws', { headers: { 'x-set': 'team-b' } });
  await other.init();
  other.subscribe('1', Q, { a: 1 });
  await waitFor(() => streamsOf(h, 'team-b').upstreamStreams === 1, 5000, 'another credential set has its own cap');

  t.same(h.engine.stats().capRefusals, { default: 1 });
  t.same(h.events.filter((e) => e.name === 'streamCapRefused').map((e) => e.event), [{ credentials: 'default', scope: 'credentials' }]);

  a.complete('1');
  b.complete('1');
  await waitFor(() => streamsOf(h).upstreamStreams === 0);
  a.subscribe('3', Q, { a: 1 });
  await waitFor(() => streamsOf(h).upstreamStreams === 1, 5000, 'room again once the stream closed');
});

t.test('per-key caps count the key’s subscriptions through acquire/release', async (t) => {
  let held = 0;
  const h = await harness(t, {
    maxUpstreamStreams: () => 2,
    principalFor: (_req, base) => ({
      ...base('default'),
      key: 'grafana',
      acquire: () => {
        if (held >= 3) return { refused: 'the key "grafana" has 3 subscriptions open (its stream limit)' };
        held += 1;
        return () => (held -= 1);
      },
    }),
  });
  const a = await transport(h);
  a.subscribe('1', Q2);
  a.subscribe('2', Q2); // the same upstream stream, but another subscription of the key
  a.subscribe('3', Q, { a: 1 });
  a.subscribe('4', Q, { a: 2 });
  const refused = await a.next((m) => m.type === 'error' && m.id === '4');
  t.same(refused.payload, [{ message: 'the key "grafana" has 3 subscriptions open (its stream limit)' }]);
  t.equal(held, 3);
  t.same(streamsOf(h), { upstreamStreams: 2, subscriptions: 3 });
  t.match(h.events.find((e) => e.name === 'streamCapRefused')!.event, { scope: 'key', key: 'grafana' });
  a.complete('2');
  await waitFor(() => held === 2, 5000, 'released on complete');
  a.subscribe('4', Q, { a: 2 });
  const overCap = await a.next((m) => m.type === 'error' && m.id === '4' && Array.isArray(m.payload) && /WS_MAX/.test(m.payload[0].message));
  t.match(overCap.payload, [{ message: /WS_MAX_UPSTREAM_STREAMS=2/ }]);
  t.equal(held, 2, 'a refusal by the stream cap gives the key’s slot back');
  await waitFor(() => h.upstream.streams().length === 2);
  h.upstream.send(h.upstream.streams().find((c) => c.started!.query.includes('blocks'))!, { type: 'complete', id: '1' });
  await waitFor(() => held === 1, 5000, 'released when the upstream completes');
  a.ws.close();
  await waitFor(() => held === 0, 5000, 'released on disconnect');
});

t.test('keys in connection_init for sockets whose handshake carried none', async (t) => {
  const KEY = 'good-key-0123456789';
  const h = await harness(t, {
    settings: { initTimeoutMs: 300 },
    principalFor: () => undefined,
    authenticate: (base) => (presented) => (presented === KEY ? { ...base('default'), key: 'alice' } : { refused: 'the API key is not valid' }),
  });

  await t.test('no key in connection_init: 4403, nothing upstream', async (t) => {
    const c = await RawClient.open(h.url, 'graphql-ws');
    c.send({ type: 'connection_init', payload: {} });
    t.same(await c.closed, { code: 4403, reason: 'Forbidden: an API key is required: send it in connection_init as {"apiKey": "…"} or {"Authorization": "Bearer …"}' });
    t.match(c.messages, [{ type: 'connection_error', payload: { message: /API key is required/ } }], 'legacy: connection_error first');
  });

  await t.test('no connection_init within the init timeout: 4403', async (t) => {
    const c = await RawClient.open(h.url, 'graphql-transport-ws');
    t.same(await c.closed, { code: 4403, reason: 'Forbidden: no API key was presented within 300 ms' });
  });

  await t.test('a wrong key: 4403', async (t) => {
    const c = await RawClient.open(h.url, 'graphql-transport-ws');
    c.send({ type: 'connection_init', payload: { apiKey: 'wrong-key-0123456789' } });
    t.same(await c.closed, { code: 4403, reason: 'Forbidden: the API key is not valid' });
    t.same(c.messages, [], 'transport: no message before the close');
  });

  await t.test('subscribing before a key was accepted: 4401', async (t) => {
    const c = await RawClient.open(h.url, 'graphql-transport-ws');
    c.subscribe('1', Q2);
    t.same(await c.closed, { code: 4401, reason: 'Unauthorized' });
  });

  t.equal(h.upstream.conns.length, 0, 'nothing was opened upstream');

  await t.test('apiKey (graphql-ws library connectionParams) and Authorization: Bearer both work', async (t) => {
    const lib = libSubscribe(h.url, Q2, undefined, { apiKey: KEY });
    const c = await RawClient.open(h.url, 'graphql-ws');
    await c.init({ Authorization: `Bearer ${KEY}` });
    c.subscribe('1', Q2);
    await waitFor(() => streamsOf(h).subscriptions === 2 && h.upstream.streams().length === 1);
    h.upstream.publish({ n: 1 });
    await waitFor(() => lib.events.length === 1 && c.events('1').length === 1);
    t.same(h.upstream.conns[0]!.received[0], { type: 'connection_init', payload: {} }, 'the client’s connectionParams never go upstream');
    c.ws.close();
    await lib.client.dispose();
    const line = await waitFor(() => h.logs.find((l) => l.msg === 'client connection closed' && l.protocol === 'graphql-ws' && l.subscriptions === 1));
    t.match(line, { key: 'alice', credentials: 'default', closedBy: 'client' });
    t.notOk(h.raw().includes(KEY), 'the key is never logged');
  });
});

t.test('a client that does not read is dropped with 1013 alone; the others and the upstream keep going', async (t) => {
  const h = await harness(t, { settings: { maxBufferedBytes: 64 * 1024 } });
  const fast = await legacy(h);
  const slow = await transport(h);
  fast.subscribe('1', Q2);
  slow.subscribe('1', Q2);
  await waitFor(() => streamsOf(h).subscriptions === 2 && h.upstream.streams().length === 1);
  slow.ws.pause(); // stops reading its socket
  const big = 'x'.repeat(16 * 1024);
  let sent = 0;
  // The subscriptions of a dropped client end at once; its socket closes after the closing handshake.
  while (streamsOf(h).subscriptions === 2 && sent < 4000) {
    sent += 1;
    h.upstream.publish({ n: sent, big });
    await waitFor(() => fast.events('1').length === sent, 5000, `event ${sent} at the fast client`);
  }
  t.ok(sent < 4000, `the slow client was dropped after ${sent} events of 16 KiB`);
  slow.ws.resume();
  t.same(await slow.closed, { code: 1013, reason: 'not consuming fast enough' }, 'it reads 1013 once it reads again');
  const line = await waitFor(() => h.logs.find((l) => l.msg === 'client connection closed' && l.cause === 'slow_client'));
  t.match(line, { protocol: 'graphql-transport-ws', closedBy: 'proxy', code: 1013 });
  t.equal(h.engine.stats().clients, 1);
  t.same(streamsOf(h), { upstreamStreams: 1, subscriptions: 1 });
  h.upstream.publish({ n: 'after' });
  await waitFor(() => fast.events('1').length === sent + 1);
  t.equal(h.upstream.conns.length, 1, 'the upstream was never touched');
});

t.test('protocol rules with real sockets', async (t) => {
  const h = await harness(t, { settings: { initTimeoutMs: 300, maxSubscriptions: 2, maxClientMessageBytes: 4096 } });

  await t.test('graphql-transport-ws violations close with the specified codes', async (t) => {
    const before = await RawClient.open(h.url, 'graphql-transport-ws');
    before.subscribe('1', Q2);
    t.same(await before.closed, { code: 4401, reason: 'Unauthorized' }, 'subscribe before connection_ack');

    const twice = await transport(h);
    twice.send({ type: 'connection_init' });
    t.same(await twice.closed, { code: 4429, reason: 'Too many initialisation requests' });

    const dup = await transport(h);
    dup.subscribe('a', Q2);
    dup.subscribe('a', Q2);
    t.same(await dup.closed, { code: 4409, reason: 'Subscriber for a already exists' });

    const garbage = await transport(h);
    garbage.send('not json');
    t.same(await garbage.closed, { code: 4400, reason: 'Invalid message received' });

    const binary = await transport(h);
    binary.ws.send(Buffer.from('{"type":"ping"}'), { binary: true });
    t.same((await binary.closed).code, 4400);

    const idle = await RawClient.open(h.url, 'graphql-transport-ws');
    t.same(await idle.closed, { code: 4408, reason: 'Connection initialisation timeout' });

    const huge = await transport(h);
    huge.subscribe('1', `subscription { a(x: "${'x'.repeat(5000)}") }`);
    t.equal((await huge.closed).code, 1009, 'a message over the bound closes with 1009');
    t.match(await waitFor(() => h.logs.find((l) => l.msg === 'client connection closed' && l.reason === 'Max payload size exceeded')), { closedBy: 'proxy', cause: 'protocol_error' });
  });

  await t.test('graphql-transport-ws ping gets pong', async (t) => {
    const c = await transport(h);
    c.send({ type: 'ping', payload: { at: 1 } });
    c.send({ type: 'pong' });
    t.same(await c.next((m) => m.type === 'pong'), { type: 'pong', payload: { at: 1 } });
    c.ws.close();
  });

  await t.test('legacy: mistakes get error messages and the socket stays', async (t) => {
    const c = await RawClient.open(h.url, 'graphql-ws');
    c.subscribe('0', Q2);
    t.same(await c.next((m) => m.type === 'error'), { type: 'error', id: '0', payload: { message: 'connection_init must come first' } });
    await c.init();
    c.send({ type: 'connection_init' });
    await waitFor(() => c.of('connection_ack').length === 2, 5000, 'a second ack');
    c.send({ type: 'start', id: '1', payload: {} });
    t.same(await c.next((m) => m.type === 'error' && m.id === '1'), { type: 'error', id: '1', payload: { message: 'the payload must hold a query string' } });
    c.send({ type: 'bogus' });
    t.same(await c.next((m) => m.type === 'error' && m.id === undefined), { type: 'error', payload: { message: 'unknown message type bogus' } });
    c.subscribe('2', 'subscription {');
    t.match(await c.next((m) => m.type === 'error' && m.id === '2'), { payload: { message: /not a GraphQL document that can run/ } });
    t.equal(c.of('complete', '2').length, 1);
    t.ok(c.open);
    c.send({ type: 'connection_terminate' });
    t.same(await c.closed, { code: 1000, reason: 'Normal Closure' });
  });

  await t.test('legacy: a start with a running id replaces it', async (t) => {
    const c = await legacy(h);
    c.subscribe('1', Q2);
    await waitFor(() => streamsOf(h).subscriptions === 1);
    c.subscribe('1', Q, { a: 9 });
    await waitFor(() => h.upstream.streams().length === 1 && h.upstream.streams()[0]!.started!.variables?.a === 9, 5000, 'replaced');
    h.upstream.publish({ replaced: true });
    await waitFor(() => c.events('1').length === 1);
    t.same(c.events('1'), [{ replaced: true }], 'the new one runs under the id; the old stream is closed');
    c.ws.close();
    await waitFor(() => streamsOf(h).upstreamStreams === 0);
  });

  await t.test('at most maxSubscriptions per socket', async (t) => {
    const c = await transport(h);
    c.subscribe('1', Q2);
    c.subscribe('2', Q, { a: 1 });
    c.subscribe('3', Q, { a: 2 });
    t.same(await c.next((m) => m.type === 'error'), { type: 'error', id: '3', payload: [{ message: 'at most 2 subscriptions per connection: complete one first' }] });
    c.ws.close();
    await waitFor(() => streamsOf(h).upstreamStreams === 0);
  });

  await t.test('a query over the socket gets a stream of its own (its one answer may have gone by)', async (t) => {
    const a = await transport(h);
    const b = await transport(h);
    a.subscribe('q', '{ now }');
    b.subscribe('q', '{ now }');
    const queries = () => h.upstream.streams().filter((c) => c.started!.query.includes('now')).length;
    t.equal(await waitFor(() => queries() >= 2 && queries()), 2, 'two upstream sockets for the same query');
    t.same(streamsOf(h), { upstreamStreams: 2, subscriptions: 2 });
    a.ws.close();
    b.ws.close();
  });
});

t.test('keep-alives: ka to legacy clients; clients that stop answering pings are cut', async (t) => {
  const h = await harness(t, { settings: { keepAliveMs: 50, pingIntervalMs: 100 } });
  const c = await legacy(h);
  await waitFor(() => c.of('ka').length >= 3, 5000, 'ka messages');
  t.equal(c.messages[1]!.type, 'ka', 'the first right after the ack');
  const mute = await RawClient.open(h.url, 'graphql-transport-ws', { autoPong: false });
  await mute.init();
  t.equal((await mute.closed).code, 1006, 'cut without a close frame');
  t.match(await waitFor(() => h.logs.find((l) => l.msg === 'client connection closed' && l.cause === 'ping_timeout')), { protocol: 'graphql-transport-ws', closedBy: 'proxy' });
  t.ok(c.open, 'a client that answers pings stays');
  t.same(mute.of('ka'), [], 'transport clients get no ka');
});

t.test('close(grace): a client that does not answer the close frame is cut after the grace', async (t) => {
  const h = await harness(t);
  const a = await legacy(h);
  a.subscribe('1', Q2);
  await waitFor(() => h.upstream.streams().length === 1);
  a.ws.pause();
  await h.engine.close(100);
  t.equal(h.engine.size, 0, 'resolved once the socket was cut');
  a.ws.resume();
  t.equal((await a.closed).code, 1001, 'the close frame had been sent');
});

t.test('takeOver leaves other subprotocols alone and needs authenticate for keyless sockets', async (t) => {
  const h = await harness(t);
  const refusedWith = (protocols: string[]) =>
    new Promise<number>((resolve, reject) => {
      const ws = new WebSocket(h.url, protocols);
      ws.once('unexpected-response', (_req, res) => {
        resolve(res.statusCode!);
        ws.terminate();
      });
      ws.once('open', () => reject(new Error('taken')));
      ws.on('error', () => {});
    });
  t.equal(await refusedWith(['foo']), 409, 'another subprotocol is not taken');
  t.equal(await refusedWith([]), 409, 'no subprotocol is not taken');
  t.throws(() => h.engine.takeOver({ url: '/graphql' } as never, {} as never, Buffer.alloc(0), undefined, ['graphql-ws']), /authenticate/);
  h.engine.stopAccepting();
  t.equal(await refusedWith(['graphql-ws']), 409, 'after stopAccepting nothing is taken');
});

t.test('close(): clients get 1001, upstream sockets are closed, new handshakes are not taken', async (t) => {
  const h = await harness(t, { settings: { lingerMs: 60_000 } });
  const a = await legacy(h);
  const b = await transport(h);
  a.subscribe('1', Q2);
  b.subscribe('1', Q, { a: 1 });
  await waitFor(() => h.upstream.streams().length === 2);
  const closing = h.engine.close(5000);
  t.same(await a.closed, { code: 1001, reason: 'proxy shutting down' });
  t.same(await b.closed, { code: 1001, reason: 'proxy shutting down' });
  await closing;
  for (const c of h.upstream.conns) t.same(await c.closed, { code: 1001, reason: 'proxy shutting down' });
  t.same(h.engine.size, 0);
  t.same(h.engine.stats(), { credentials: {}, reconnects: {}, capRefusals: {}, clients: 0 });
  const ws = new WebSocket(h.url, ['graphql-ws']);
  ws.on('error', () => {});
  const status = await new Promise<number>((resolve) => ws.once('unexpected-response', (_req, res) => resolve(res.statusCode!)));
  ws.terminate();
  t.equal(status, 409, 'after close, handshakes are left to the caller');
});
