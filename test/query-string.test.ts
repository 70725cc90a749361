// The one query-string reader, in-process.
import t from 'tap';
import fc from 'fast-check';
import { decodeParam, pairName, queryPairs, queryParam } from '../src/query-string.js';

t.test('pairs as written, names before the first =, values decoded as forms encode them', async (t) => {
  t.same(queryPairs(''), []);
  t.same(queryPairs('a=1&&b'), ['a=1', '', 'b']);
  t.equal(pairName('a=b=c'), 'a');
  t.equal(pairName('bare'), 'bare');
  t.equal(decodeParam('query+Q%20%7B%7D'), 'query Q {}');
  t.equal(decodeParam('100%'), '100%', 'a malformed escape is taken as written');
  t.equal(queryParam('x=1&%6Fp=first&op=second', 'op'), 'first', 'the first pair of that name, whatever its encoding');
  t.equal(queryParam('flag', 'flag'), '');
  t.equal(queryParam('a=1', 'b'), undefined);
});

t.test('property: decoding never throws and undoes encodeURIComponent', async () => {
  fc.assert(fc.property(fc.string(), (s) => decodeParam(encodeURIComponent(s)) === s && typeof decodeParam(s) === 'string'));
});
