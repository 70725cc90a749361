// The operation name of the access line, in-process.
import t from 'tap';
import fc from 'fast-check';
import { operationName } from '../../src/proxy/operation.js';

const body = (value: unknown) => Buffer.from(JSON.stringify(value));

t.test('from operationName, else a named operation in the query; POST bodies and GET query strings', async (t) => {
  t.equal(operationName(body({ query: 'query A { x }', operationName: 'B' }), ''), 'B', 'operationName wins');
  t.equal(operationName(body({ query: 'subscription Ticks { n }' }), ''), 'Ticks');
  t.equal(operationName(Buffer.from('query Plain { x }'), ''), 'Plain', 'an application/graphql body');
  t.equal(operationName(body({ query: '{ x }' }), ''), undefined, 'anonymous');
  t.equal(operationName(undefined, 'query=query%20Q%20%7B%20x%20%7D'), 'Q');
  t.equal(operationName(undefined, 'operationName=Named&query=%7Bx%7D'), 'Named');
  t.equal(operationName(undefined, 'operationName=not%20a%20name'), undefined, 'not a GraphQL name');
  t.equal(operationName(undefined, ''), undefined);
  t.equal(operationName(Buffer.alloc(0), 'query=query+Plus+%7B+x+%7D'), 'Plus', 'an empty body falls back to the query string, + as a space');
});

t.test('only the first 4 KiB of a body are scanned', async (t) => {
  const late = Buffer.from(`{"query":"{ x }","padding":"${'x'.repeat(5000)}","operationName":"Late"}`);
  t.equal(operationName(late, ''), undefined);
});

t.test('property: a name is a GraphQL name of at most 100 characters, or nothing, whatever the input', async () => {
  fc.assert(
    fc.property(fc.option(fc.uint8Array({ maxLength: 300 })), fc.string({ maxLength: 200 }), (bytes, search) => {
      const name = operationName(bytes ? Buffer.from(bytes) : undefined, search);
      return name === undefined || /^[_A-Za-z][_0-9A-Za-z]{0,99}$/.test(name);
    }),
  );
});
