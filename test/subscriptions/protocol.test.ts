// The subprotocol codecs alone: what each client message parses to, the close codes of violations,
// and the server messages as bytes.
import t from 'tap';
import fc from 'fast-check';
import {
  CLOSE,
  complete,
  CONNECTION_ACK,
  connectionError,
  errorMessage,
  errorsOf,
  fitReason,
  frameNext,
  initKey,
  KEEP_ALIVE,
  LEGACY,
  MAX_ID_CHARS,
  nextPrefix,
  parseClientMessage,
  parseLegacy,
  parseTransport,
  pickProtocol,
  pong,
  TRANSPORT,
} from '../../src/subscriptions/protocol.js';

const json = (v: unknown) => JSON.stringify(v);

t.test('pickProtocol: the client’s first choice among the two served ones', async (t) => {
  t.equal(pickProtocol(['graphql-transport-ws', 'graphql-ws']), TRANSPORT);
  t.equal(pickProtocol(['foo', 'graphql-ws', 'graphql-transport-ws']), LEGACY);
  t.equal(pickProtocol(new Set(['graphql-ws'])), LEGACY);
  t.equal(pickProtocol(['foo']), undefined);
  t.equal(pickProtocol([]), undefined);
});

t.test('graphql-transport-ws client messages', async (t) => {
  const p = (v: unknown) => parseTransport(Buffer.from(json(v)), false);
  t.same(p({ type: 'connection_init' }), { type: 'init' });
  t.same(p({ type: 'connection_init', payload: { apiKey: 'k' } }), { type: 'init', payload: { apiKey: 'k' } });
  t.same(p({ type: 'connection_init', payload: null }), { type: 'init' });
  t.same(p({ type: 'ping' }), { type: 'ping' });
  t.same(p({ type: 'ping', payload: { at: 1 } }), { type: 'ping', payload: { at: 1 } });
  t.same(p({ type: 'pong', payload: { x: 1 } }), { type: 'pong' });
  t.same(p({ type: 'subscribe', id: 'a', payload: { query: 'subscription { x }', variables: { n: 1 }, operationName: 'S', extensions: {} } }), {
    type: 'subscribe',
    id: 'a',
    idJson: '"a"',
    payload: { query: 'subscription { x }', variables: { n: 1 }, operationName: 'S' },
  });
  t.same(p({ type: 'subscribe', id: 'a', payload: { query: 'q', variables: null, operationName: null } }), {
    type: 'subscribe',
    id: 'a',
    idJson: '"a"',
    payload: { query: 'q' },
  });
  t.same(p({ type: 'complete', id: 'a' }), { type: 'complete', id: 'a' });
  t.same(parseTransport('{"type":"pong"}', false), { type: 'pong' }, 'a string is read too');

  const closes: [unknown, RegExp][] = [
    ['not json', /^Invalid message received$/],
    [[1, 2], /^Invalid message received$/],
    [{ id: '1' }, /^Invalid message received$/],
    [{ type: 'connection_init', payload: 'x' }, /payload must be an object/],
    [{ type: 'ping', payload: [1] }, /ping payload/],
    [{ type: 'subscribe', payload: { query: 'q' } }, /needs an id/],
    [{ type: 'subscribe', id: '', payload: { query: 'q' } }, /needs an id/],
    [{ type: 'subscribe', id: 'x'.repeat(MAX_ID_CHARS + 1), payload: { query: 'q' } }, /needs an id/],
    [{ type: 'subscribe', id: 1, payload: { query: 'q' } }, /needs an id/],
    [{ type: 'subscribe', id: 'a' }, /payload must be an object/],
    [{ type: 'subscribe', id: 'a', payload: { query: '' } }, /query string/],
    [{ type: 'subscribe', id: 'a', payload: { query: 'q', variables: [1] } }, /variables must be an object/],
    [{ type: 'subscribe', id: 'a', payload: { query: 'q', operationName: 3 } }, /operationName must be a string/],
    [{ type: 'complete' }, /complete needs an id/],
    [{ type: 'start', id: 'a', payload: { query: 'q' } }, /unknown type start/],
  ];
  for (const [input, reason] of closes) {
    const raw = typeof input === 'string' ? input : json(input);
    const msg = parseTransport(Buffer.from(raw), false);
    t.match(msg, { type: 'close', code: CLOSE.badRequest, reason }, raw.slice(0, 60));
  }
  t.match(parseTransport(Buffer.from(json({ type: 'ping' })), true), { type: 'close', code: 4400 }, 'a binary frame is invalid');
});

t.test('legacy graphql-ws client messages', async (t) => {
  const p = (v: unknown) => parseLegacy(Buffer.from(json(v)), false);
  t.same(p({ type: 'connection_init', payload: { Authorization: 'Bearer k' } }), { type: 'init', payload: { Authorization: 'Bearer k' } });
  t.same(p({ type: 'connection_init' }), { type: 'init' });
  t.same(p({ type: 'start', id: '1', payload: { query: 'q', variables: { a: 1 } } }), { type: 'subscribe', id: '1', idJson: '"1"', payload: { query: 'q', variables: { a: 1 } } });
  t.same(p({ type: 'start', id: 7, payload: { query: 'q' } }), { type: 'subscribe', id: '7', idJson: '7', payload: { query: 'q' } }, 'a numeric id goes back as a number');
  t.same(p({ type: 'stop', id: '1' }), { type: 'complete', id: '1' });
  t.same(p({ type: 'stop', id: 7 }), { type: 'complete', id: '7' });
  t.same(p({ type: 'connection_terminate' }), { type: 'terminate' });

  t.same(p({ type: 'start', payload: { query: 'q' } }), { type: 'invalid', message: `start needs an id (a string of 1 to ${MAX_ID_CHARS} characters, or an integer)` });
  t.same(p({ type: 'start', id: 1.5, payload: { query: 'q' } }), { type: 'invalid', message: `start needs an id (a string of 1 to ${MAX_ID_CHARS} characters, or an integer)` });
  t.same(p({ type: 'start', id: '2', payload: {} }), { type: 'invalid', idJson: '"2"', message: 'the payload must hold a query string' });
  t.same(p({ type: 'stop' }), { type: 'invalid', message: 'stop needs an id' });
  t.same(p({ type: 'subscribe', id: '3' }), { type: 'invalid', idJson: '"3"', message: 'unknown message type subscribe' });
  t.same(p({ type: 'ping' }), { type: 'invalid', message: 'unknown message type ping' }, 'legacy has no ping message');
  t.match(parseLegacy(Buffer.from('{'), false), { type: 'close', code: 4400 });
  t.match(parseLegacy(Buffer.from('{"type":"ka"}'), true), { type: 'close', code: 4400 }, 'binary');
  t.match(parseLegacy(Buffer.from('{"type":5}'), false), { type: 'close', code: 4400 });
});

t.test('parseClientMessage dispatches by protocol', async (t) => {
  const stop = Buffer.from(json({ type: 'stop', id: '1' }));
  t.same(parseClientMessage(LEGACY, stop, false), { type: 'complete', id: '1' });
  t.match(parseClientMessage(TRANSPORT, stop, false), { type: 'close', code: 4400 });
});

t.test('no input makes a parser throw, and every close reason fits a close frame', async () => {
  const arbitrary = fc.oneof(
    fc.string(),
    fc.json(),
    fc.record({
      type: fc.constantFrom('connection_init', 'ping', 'pong', 'subscribe', 'complete', 'start', 'stop', 'connection_terminate', 'x'.repeat(300)),
      id: fc.oneof(fc.string(), fc.integer(), fc.double(), fc.constant(null)),
      payload: fc.oneof(fc.anything(), fc.record({ query: fc.string(), variables: fc.anything(), operationName: fc.anything() })),
    }).map(json),
  );
  fc.assert(
    fc.property(arbitrary, fc.boolean(), fc.constantFrom(TRANSPORT, LEGACY), (text, binary, protocol) => {
      const msg = parseClientMessage(protocol, Buffer.from(text), binary);
      if (msg.type === 'close') return Buffer.byteLength(msg.reason) <= 123 && msg.code >= 4400;
      if (msg.type === 'subscribe') return JSON.parse(msg.idJson) !== undefined && typeof msg.payload.query === 'string';
      return true;
    }),
  );
});

t.test('fitReason keeps close reasons within 123 bytes', async (t) => {
  t.equal(fitReason('short'), 'short');
  const long = fitReason(`Subscriber for ${'é'.repeat(100)} already exists`);
  t.ok(Buffer.byteLength(long) <= 123, `${Buffer.byteLength(long)} bytes`);
  t.ok(long.endsWith('...'));
});

t.test('server messages', async (t) => {
  t.same(JSON.parse(CONNECTION_ACK), { type: 'connection_ack' });
  t.same(JSON.parse(KEEP_ALIVE), { type: 'ka' });
  t.same(JSON.parse(pong()), { type: 'pong' });
  t.same(JSON.parse(pong({ at: 1 })), { type: 'pong', payload: { at: 1 } });
  t.same(JSON.parse(connectionError('no key')), { type: 'connection_error', payload: { message: 'no key' } });
  const payload = Buffer.from(json({ data: { x: 'é' } }));
  t.same(JSON.parse(frameNext(nextPrefix(TRANSPORT, '"a"'), payload).toString()), { type: 'next', id: 'a', payload: { data: { x: 'é' } } });
  t.same(JSON.parse(frameNext(nextPrefix(LEGACY, '7'), payload).toString()), { type: 'data', id: 7, payload: { data: { x: 'é' } } });
  t.same(JSON.parse(complete('"a"')), { type: 'complete', id: 'a' });
  const one = [{ message: 'boom' }];
  const two = [{ message: 'a' }, { message: 'b', path: ['x'] }];
  t.same(JSON.parse(errorMessage(TRANSPORT, '"a"', one)), { type: 'error', id: 'a', payload: one }, 'transport: a list');
  t.same(JSON.parse(errorMessage(LEGACY, '"a"', one)), { type: 'error', id: 'a', payload: one[0] }, 'legacy: the error');
  t.same(JSON.parse(errorMessage(LEGACY, '"a"', two)), { type: 'error', id: 'a', payload: two }, 'legacy: several as a list');
  t.same(JSON.parse(errorMessage(LEGACY, undefined, one)), { type: 'error', payload: one[0] }, 'legacy: no id');
});

t.test('errorsOf: an upstream error payload as a list of errors', async (t) => {
  t.same(errorsOf({ message: 'x' }), [{ message: 'x' }]);
  t.same(errorsOf([{ message: 'a' }, 3, { message: 'b' }]), [{ message: 'a' }, { message: 'b' }]);
  t.same(errorsOf({ errors: [{ message: 'c', locations: [] }] }), [{ message: 'c', locations: [] }]);
  t.same(errorsOf('boom'), [{ message: 'the upstream reported an error without a message' }]);
  t.same(errorsOf(undefined), [{ message: 'the upstream reported an error without a message' }]);
});

t.test('initKey: the key in connection_init', async (t) => {
  t.equal(initKey(undefined), undefined);
  t.equal(initKey({}), undefined);
  t.equal(initKey({ apiKey: ' k1 ' }), 'k1');
  t.equal(initKey({ apiKey: '' }), undefined);
  t.equal(initKey({ Authorization: 'Bearer k2' }), 'k2');
  t.equal(initKey({ authorization: 'bearer k3 ' }), 'k3');
  t.equal(initKey({ Authorization: 'Basic k4' }), undefined);
  t.equal(initKey({ headers: { Authorization: 'Bearer k5' } }), 'k5', 'nested in headers, as Bitquery’s examples send it');
  t.equal(initKey({ headers: { apiKey: 'k6' } }), 'k6');
  t.equal(initKey({ headers: 'x', apiKey: 7 }), undefined);
});
