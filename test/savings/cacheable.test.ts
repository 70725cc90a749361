// Which upstream answers may be cached: status, errors in the JSON body (also inside compressed
// bodies), content type and encoding, the upstream's no-store and Vary.
import t from 'tap';
import { brotliCompressSync, deflateSync, gzipSync } from 'node:zlib';
import { cacheable } from '../../src/savings/cacheable.js';

const JSON_TYPE = { 'content-type': 'application/json; charset=utf-8' };
const LIMIT = 1 << 20;
const ok = Buffer.from('{"data":{"EVM":{"Blocks":[{"Block":{"Number":"1"}}]}}}');
const withErrors = Buffer.from('{"data":null,"errors":[{"message":"boom"}]}');

t.test('a 200 JSON answer without top-level errors is cacheable; with errors it is not', async (t) => {
  t.equal(await cacheable(200, JSON_TYPE, ok, LIMIT), true);
  t.equal(await cacheable(200, JSON_TYPE, Buffer.from(' \n{"data":{}}'), LIMIT), true, 'leading blanks');
  t.equal(await cacheable(200, JSON_TYPE, withErrors, LIMIT), false);
  t.equal(await cacheable(200, JSON_TYPE, Buffer.from('{"data":{"errors":[1]}}'), LIMIT), true, 'a field named errors inside data');
  t.equal(await cacheable(200, JSON_TYPE, Buffer.from('{"data":{"a":"caf\\u00e9"}}'), LIMIT), true, 'escapes are parsed, not guessed');
  t.equal(await cacheable(200, JSON_TYPE, Buffer.from('{"\\u0065rrors":[]}'), LIMIT), false, 'an escaped errors key');
  t.equal(await cacheable(200, JSON_TYPE, Buffer.from('[{"data":1}]'), LIMIT), false, 'not an object');
  t.equal(await cacheable(200, JSON_TYPE, Buffer.from('{"data":1,"errors":'), LIMIT), false, 'broken JSON');
  t.equal(await cacheable(200, JSON_TYPE, Buffer.from('null'), LIMIT), false);
  t.equal(await cacheable(200, { 'content-type': 'application/graphql-response+json' }, ok, LIMIT), true);
});

t.test('statuses other than 200 are never cached', async (t) => {
  for (const status of [201, 204, 206, 301, 400, 401, 402, 403, 404, 429, 500, 502, 503, 504]) {
    t.equal(await cacheable(status, JSON_TYPE, ok, LIMIT), false, String(status));
  }
});

t.test('content types and the upstream cache headers', async (t) => {
  t.equal(await cacheable(200, { 'content-type': 'text/plain' }, ok, LIMIT), false);
  t.equal(await cacheable(200, {}, ok, LIMIT), false, 'no content type');
  t.equal(await cacheable(200, { ...JSON_TYPE, 'cache-control': 'private, no-store' }, ok, LIMIT), false);
  t.equal(await cacheable(200, { ...JSON_TYPE, 'cache-control': 'max-age=0' }, ok, LIMIT), true);
  t.equal(await cacheable(200, { ...JSON_TYPE, vary: 'Accept-Encoding, Origin,' }, ok, LIMIT), true, 'varies only on what is in the key');
  t.equal(await cacheable(200, { ...JSON_TYPE, vary: ['accept', 'Authorization'] }, ok, LIMIT), false, 'varies on something else');
  t.equal(await cacheable(200, { ...JSON_TYPE, vary: '*' }, ok, LIMIT), false);
});

t.test('compressed answers are decoded to look inside, within a bound', async (t) => {
  const encodings: [string, (b: Buffer) => Buffer][] = [
    ['gzip', gzipSync],
    ['x-gzip', gzipSync],
    ['deflate', deflateSync],
    ['br', brotliCompressSync],
  ];
  for (const [name, encode] of encodings) {
    t.equal(await cacheable(200, { ...JSON_TYPE, 'content-encoding': name }, encode(ok), LIMIT), true, `${name} without errors`);
    t.equal(await cacheable(200, { ...JSON_TYPE, 'content-encoding': name.toUpperCase() }, encode(withErrors), LIMIT), false, `${name} with errors`);
  }
  t.equal(await cacheable(200, { ...JSON_TYPE, 'content-encoding': 'identity' }, ok, LIMIT), true);
  t.equal(await cacheable(200, { ...JSON_TYPE, 'content-encoding': 'gzip' }, Buffer.from('not gzip'), LIMIT), false, 'a corrupt body');
  const bomb = gzipSync(Buffer.from(`{"data":"${'a'.repeat(5000)}"}`));
  t.equal(await cacheable(200, { ...JSON_TYPE, 'content-encoding': 'gzip' }, bomb, 4096), false, 'inflates past the bound');
  t.equal(await cacheable(200, JSON_TYPE, Buffer.from(`{"data":"${'a'.repeat(5000)}"}`), 4096), false, 'an identity body past the bound');
  t.equal(await cacheable(200, { ...JSON_TYPE, 'content-encoding': 'zstd' }, ok, LIMIT), false, 'an encoding not decoded here');
  t.equal(await cacheable(200, { ...JSON_TYPE, 'content-encoding': 'gzip, br' }, ok, LIMIT), false, 'a chain of encodings');
});
