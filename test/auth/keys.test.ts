import t from 'tap';
import { createHash } from 'node:crypto';
import { checkUniqueNames, findKey, parseKeyEntry, parseKeyFile, parseKeyList, presentedKey } from '../../src/auth/keys.js';

const KEY = 'k-0123456789abcdef';
const hex = createHash('sha256').update(KEY).digest('hex');

t.test('entry forms: key, name:key, sha256:hex, name:sha256:hex', async (t) => {
  const plain = parseKeyEntry(KEY, 'x');
  t.equal(plain.name, `key-${hex.slice(0, 8)}`, 'unnamed keys are named by a digest prefix');
  t.equal(plain.digest.toString('hex'), hex);
  t.same(parseKeyEntry(`alice:${KEY}`, 'x'), { name: 'alice', digest: Buffer.from(hex, 'hex') });
  t.same(parseKeyEntry(`sha256:${hex}`, 'x').digest, Buffer.from(hex, 'hex'));
  t.same(parseKeyEntry(`bob:sha256:${hex.toUpperCase()}`, 'x'), { name: 'bob', digest: Buffer.from(hex, 'hex') });
  t.equal(parseKeyEntry(`carol:${KEY}:with:colons`, 'x').name, 'carol', 'everything after the first colon is the key');
});

t.test('bad entries say where, never what', async (t) => {
  t.throws(() => parseKeyEntry('short', 'PROXY_API_KEYS entry 2'), { message: /^PROXY_API_KEYS entry 2: a key must be at least 16 characters/ });
  t.throws(() => parseKeyEntry('sha256:abc', 'line 3'), { message: 'line 3: sha256: must be followed by 64 hex digits' });
  t.throws(() => parseKeyEntry(`bad name:${KEY}`, 'line 4'), { message: /^line 4: a key name may hold only/ });
  try {
    parseKeyEntry('tooshort-secret', 'e');
  } catch (err) {
    t.notMatch((err as Error).message, 'tooshort-secret');
  }
});

t.test('list and file forms', async (t) => {
  t.same(parseKeyList(` alice:${KEY} , ,bob:sha256:${hex}`).map((k) => k.name), ['alice', 'bob']);
  const file = `# team keys\n\nalice:${KEY}   # Alice's laptop\n  bob:sha256:${hex}\n`;
  t.same(parseKeyFile(file).map((k) => k.name), ['alice', 'bob']);
  t.throws(() => parseKeyFile(`alice:${KEY}\nnope`), { message: /^PROXY_API_KEYS_FILE line 2:/ });
  t.throws(() => checkUniqueNames(parseKeyList(`a:${KEY},a:${KEY}x`)), { message: 'the key name "a" is used twice' });
});

t.test('the presented key: Bearer or X-API-Key', async (t) => {
  t.equal(presentedKey({ authorization: `Bearer ${KEY}` }), KEY);
  t.equal(presentedKey({ authorization: `bearer  ${KEY} ` }), KEY);
  t.equal(presentedKey({ 'x-api-key': ` ${KEY} ` }), KEY);
  t.equal(presentedKey({ authorization: 'Basic abc' }), undefined);
  t.equal(presentedKey({}), undefined);
});

t.test('matching compares digests', async (t) => {
  const keys = parseKeyList(`alice:${KEY},bob:sha256:${createHash('sha256').update('bob-key-0000000000').digest('hex')}`);
  t.equal(findKey(keys, KEY)?.name, 'alice');
  t.equal(findKey(keys, 'bob-key-0000000000')?.name, 'bob');
  t.equal(findKey(keys, `${KEY}x`), undefined);
  t.equal(findKey([], KEY), undefined);
});
