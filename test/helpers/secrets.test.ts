// The secret scanner every proxy's output goes through at teardown: it must find a secret in each
// form a log line or an error body can carry it, name where, and never print the secret itself.
import t from 'tap';
import { assertNoLeaks, describeLeaks, findLeaks } from './secrets.js';

const SECRET = 'fake-client-secret-4f9c2d7e1b';
const OTHER = 'inbound-key-0123456789abcdef';
const bytes = (s: string) => [...Buffer.from(s, 'utf8')];
const pct = (s: string) => [...Buffer.from(s, 'utf8')].map((b) => `%${b.toString(16).padStart(2, '0')}`).join('');
const log = (fields: Record<string, unknown>) => JSON.stringify({ level: 10, time: 1, msg: 'x', ...fields });

t.test('finds a secret in every encoding, and says which', async (t) => {
  const cases: [string, string, string][] = [
    ['plain text in a log line', log({ err: `rejected ${SECRET}` }), 'text'],
    ['plain text outside JSON', `bitquery-proxy: ${SECRET}`, 'text'],
    ['a Fastify rawPacket Buffer', log({ rawPacket: { type: 'Buffer', data: bytes(`GET /graphql HTTP/1.1\r\nx-api-key: ${SECRET}\r\n\r\n`) } }), 'byte array'],
    ['a bare number array, nested', log({ err: { raw: [1, 2, bytes(SECRET)] } }), 'byte array'],
    ['a number array holding the URL-encoded secret', log({ rawPacket: bytes(`GET /graphql?token=${pct(SECRET)} HTTP/1.1`) }), 'url-encoded'],
    ['base64', log({ header: Buffer.from(SECRET).toString('base64') }), 'base64'],
    ['base64 at offset 1 (Basic id:secret)', log({ header: `Basic ${Buffer.from(`a:${SECRET}`).toString('base64')}` }), 'base64'],
    ['base64 at offset 2', log({ header: Buffer.from(`ab${SECRET}xyz`).toString('base64') }), 'base64'],
    ['base64 at offset 3 inside a token', `x=${Buffer.from(`abc${SECRET}`).toString('base64')}`, 'base64'],
    ['lower-case hex', log({ v: Buffer.from(SECRET).toString('hex') }), 'hex'],
    ['upper-case hex', log({ v: Buffer.from(`.${SECRET}`).toString('hex').toUpperCase() }), 'hex'],
    ['URL-encoded, every byte', log({ url: `/graphql?q=${pct(SECRET)}` }), 'url-encoded'],
    ['JSON-escaped', log({ msg2: 'x' }).replace('"x"}', `"${[...SECRET].map((c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`).join('')}"}`), 'JSON-escaped text'],
  ];
  for (const [what, output, encoding] of cases) {
    const leaks = findLeaks(`${log({ msg: 'before' })}\n${output}\n${log({ msg: 'after' })}\n`, [OTHER, SECRET]);
    t.ok(leaks.length > 0, `${what}: found`);
    t.ok(leaks.every((l) => l.secret === 1 && l.line === 2), `${what}: the right secret, on line 2`);
    t.ok(leaks.some((l) => l.encoding.split(', ').includes(encoding)), `${what}: as ${encoding} (${leaks.map((l) => l.encoding).join(' | ')})`);
  }
});

t.test('base64 and base64url of a secret whose base64 has + and /', async (t) => {
  const secret = `${SECRET}???~~~`;
  const standard = Buffer.from(`ab${secret}`).toString('base64');
  const urlSafe = Buffer.from(`ab${secret}`).toString('base64url');
  t.ok(/[+/]/.test(standard) && /[-_]/.test(urlSafe), 'the two alphabets differ here');
  t.same(findLeaks(standard, [secret]).map((l) => l.encoding), ['base64']);
  t.same(findLeaks(urlSafe, [secret]).map((l) => l.encoding), ['base64']);
});

t.test('a secret with characters that URL-encoding changes', async (t) => {
  const secret = 'sp ace/slash+plus&amp=é';
  t.same(findLeaks(`GET /x?s=${encodeURIComponent(secret)}`, [secret]).map((l) => l.encoding), ['url-encoded']);
  t.same(findLeaks(`a=${new URLSearchParams({ s: secret }).toString()}`, [secret]).map((l) => l.encoding), ['url-encoded'], 'form encoding, + for a space');
});

t.test('nothing found where there is nothing', async (t) => {
  const clean = [
    log({ req: { url: '/graphql?token=[REDACTED]' }, key: 'key-1a2b3c4d' }),
    log({ rawPacket: { type: 'Buffer', data: bytes('GET / HTTP/1.1\r\n\r\n') } }),
    log({ numbers: [256, 300, 1], mixed: [1, 'a', SECRET.length] }),
    log({ near: SECRET.slice(0, -1), hex: Buffer.from(SECRET.slice(1, -1)).toString('hex').slice(0, 8) }),
    'not json {',
    '',
  ].join('\n');
  t.same(findLeaks(clean, [SECRET, OTHER]), []);
  t.same(findLeaks(clean, []), [], 'no secrets');
  t.same(findLeaks(clean, ['']), [], 'an empty secret is ignored');
  t.doesNotThrow(() => assertNoLeaks(clean, [SECRET]));
});

t.test('a failure says where and how, never what', async (t) => {
  const output = [log({ a: SECRET }), log({ rawPacket: bytes(OTHER) }), `${SECRET} ${SECRET}`].join('\n');
  const leaks = findLeaks(output, [SECRET, OTHER]);
  t.same(
    leaks.map((l) => [l.secret, l.encoding, l.line]),
    [
      [0, 'text', 1],
      [1, 'byte array', 2],
      [0, 'text', 3],
    ],
    'each secret once per line and form',
  );
  const message = describeLeaks(leaks);
  t.match(message, /^2 secret\(s\) leaked: secret #0 as text on line 1; secret #1 as byte array on line 2/);
  t.notMatch(message, SECRET);
  t.notMatch(message, OTHER);
  t.throws(() => assertNoLeaks(output, [SECRET], 'the test output'), { message: /^secret leaked into the test output: 1 secret\(s\) leaked/ });
  const many = Array.from({ length: 7 }, () => SECRET).join('\n');
  t.match(describeLeaks(findLeaks(many, [SECRET])), /; and 2 more$/);
});

t.test('refuses a secret too short to scan for', async (t) => {
  t.throws(() => findLeaks('x', ['short']), { message: /secret #0 is shorter than 8 characters/ });
});

t.test('a large output with hundreds of secrets', async (t) => {
  const secrets = Array.from({ length: 300 }, (_, i) => `ory_at_${i.toString(36).padStart(8, 'x')}${'k'.repeat(60)}`);
  const line = log({ req: { url: '/graphql?x=1' }, rawPacket: bytes('GET /graphql HTTP/1.1\r\nhost: x\r\n\r\n'), status: 200 });
  const output = Array.from({ length: 60_000 }, () => line).join('\n');
  t.same(findLeaks(output, secrets), []);
  t.ok(output.length > 10_000_000, `${(output.length / 2 ** 20).toFixed(1)} MiB scanned`);
});
