import t from 'tap';
import fc from 'fast-check';
import { requestId } from '../../src/observability/request-id.js';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

t.test('an acceptable inbound id is kept', async (t) => {
  t.equal(requestId('abc-123'), 'abc-123');
  t.equal(requestId('x'.repeat(128)), 'x'.repeat(128), '128 characters');
  t.equal(requestId('trace=1; span "2" ~!'), 'trace=1; span "2" ~!', 'printable ASCII with spaces and punctuation');
});

t.test('anything else is replaced by a fresh UUID', async (t) => {
  for (const bad of [undefined, '', 'x'.repeat(129), 'new\nline', 'tab\there', 'nul\0', 'ünïcode', 'del\x7f', ['a', 'b']]) {
    t.match(requestId(bad), UUID, JSON.stringify(bad));
  }
  t.not(requestId(undefined), requestId(undefined), 'a new one each time');
});

t.test('whatever comes in, what goes out is printable ASCII of at most 128 characters', async (t) => {
  fc.assert(
    fc.property(fc.string({ unit: 'binary', maxLength: 300 }), (inbound) => {
      const id = requestId(inbound);
      return /^[\x20-\x7e]{1,128}$/.test(id) && (id === inbound || UUID.test(id));
    }),
  );
  t.pass('property held');
});
