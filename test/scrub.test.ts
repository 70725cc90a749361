import t from 'tap';
import fc from 'fast-check';
import { clip, REDACTED, scrubSecrets } from '../src/scrub.js';

const b64 = (s: string | Buffer) => Buffer.from(s).toString('base64');
const b64url = (s: string | Buffer) => Buffer.from(s).toString('base64url');
const form = (s: string) => new URLSearchParams({ s }).toString().slice(2);

/** Every way a secret was seen echoed: as it is, in a form body, in a URL, in base64. */
const ENCODINGS: Record<string, (secret: string) => string> = {
  raw: (s) => s,
  uriComponent: encodeURIComponent,
  form,
  uriLowerHex: (s) => encodeURIComponent(s).replace(/%[0-9A-F]{2}/g, (e) => e.toLowerCase()),
  everyBytePercent: (s) => [...Buffer.from(s)].map((b) => `%${b.toString(16).padStart(2, '0')}`).join(''),
  base64: b64,
  base64url: b64url,
  base64InUrl: (s) => encodeURIComponent(b64(s)),
};

/** Text that decodes, at any of the four base64 character offsets, to bytes holding `secret`. */
function base64Holds(piece: string, secret: Buffer): boolean {
  const chars = piece.replace(/[^A-Za-z0-9+/_-]/g, '');
  for (let j = 0; j < 4; j += 1) {
    if (Buffer.from(chars.slice(j).replace(/-/g, '+').replace(/_/g, '/'), 'base64').includes(secret)) return true;
  }
  return false;
}

/** Percent-escapes decoded byte by byte (leniently: what a reader of the text could do). */
function percentDecoded(piece: string): Buffer {
  const bytes: number[] = [];
  for (let i = 0; i < piece.length; ) {
    const m = /^%([0-9a-fA-F]{2})/.exec(piece.slice(i, i + 3));
    if (m) {
      bytes.push(parseInt(m[1]!, 16));
      i += 3;
      continue;
    }
    const ch = String.fromCodePoint(piece.codePointAt(i)!);
    bytes.push(...Buffer.from(ch === '+' ? ' ' : ch));
    i += ch.length;
  }
  return Buffer.from(bytes);
}

/** A secret that overlaps the marker itself ("REDACTED", "ED]abc…") cannot be told apart from it. */
function overlapsMarker(secret: string): boolean {
  for (let n = 1; n <= Math.min(secret.length, REDACTED.length); n += 1) {
    if (REDACTED.endsWith(secret.slice(0, n)) || REDACTED.startsWith(secret.slice(-n))) return true;
  }
  return REDACTED.includes(secret);
}

const secretArb = fc.string({ unit: 'binary', minLength: 8, maxLength: 64 }).filter((s) => !overlapsMarker(s));
const textArb = fc.string({ unit: 'binary', maxLength: 40 });

t.test('no secret of 8 characters or more survives, in any of its encodings', async (t) => {
  fc.assert(
    fc.property(secretArb, textArb, textArb, fc.constantFrom(...Object.keys(ENCODINGS)), (secret, before, after, name) => {
      const out = scrubSecrets(`${before}${ENCODINGS[name]!(secret)}${after}`, [secret]);
      for (const encode of Object.values(ENCODINGS)) {
        if (out.includes(encode(secret))) return false;
      }
      const bytes = Buffer.from(secret);
      return out.split(REDACTED).every((piece) => !percentDecoded(piece).includes(bytes));
    }),
    { numRuns: 500 },
  );
  t.pass('500 secrets, each gone in every encoding');
});

t.test('a secret inside a longer base64 value (HTTP Basic, id:secret) does not survive at any offset', async (t) => {
  fc.assert(
    fc.property(secretArb, fc.uint8Array({ maxLength: 20 }), fc.uint8Array({ maxLength: 20 }), fc.boolean(), (secret, before, after, url) => {
      const value = Buffer.concat([before, Buffer.from(secret), after]);
      const encoded = url ? b64url(value) : b64(value);
      const out = scrubSecrets(`Authorization: Basic ${encoded}`, [secret]);
      const bytes = Buffer.from(secret);
      return out.split(REDACTED).every((piece) => !base64Holds(piece, bytes));
    }),
    { numRuns: 500 },
  );
  t.pass('500 embedded secrets, none decodable from what is left');
});

t.test('several secrets, the longest first, each gone; one containing another is replaced whole', async (t) => {
  const out = scrubSecrets('id=app-1&secret=abcdefgh-longer&x=abcdefgh', ['abcdefgh', 'abcdefgh-longer']);
  t.equal(out, `id=app-1&secret=${REDACTED}&x=${REDACTED}`);
});

t.test('what a person needs stays: ordinary text, the client id, status and reason', async (t) => {
  const text = 'invalid_client: Client authentication failed (HTTP 401) for client_id=demo-client';
  t.equal(scrubSecrets(text, ['s3cr3t-value-123']), text);
  t.equal(scrubSecrets(text, []), text);
  t.equal(scrubSecrets(text, ['']), text, 'an empty secret is ignored, not matched everywhere');
  t.equal(scrubSecrets('short: ab', ['ab']), `short: ${REDACTED}`, 'a short secret is still removed as it is');
  t.equal(scrubSecrets('YWJj', ['abc']), 'YWJj', 'but not searched in base64, where it would match by chance');
});

t.test('anything shaped like an access token goes, known or not', async (t) => {
  const ory = 'ory_at_Zm9vYmFyYmF6cXV4.c2lnbmF0dXJlLXBhcnQ';
  const jwt = 'eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.c2lnbmF0dXJl';
  t.equal(scrubSecrets(`got ${ory} and ${jwt}.`, []), `got ${REDACTED} and ${REDACTED}.`);
  t.equal(scrubSecrets('theory_at_large', []), 'theory_at_large', 'only at a word start');
});

t.test('clip bounds the length and says it cut', async (t) => {
  t.equal(clip('abc', 3), 'abc');
  t.equal(clip('abcd', 3), 'abc…');
});
