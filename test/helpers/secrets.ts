// Finds secrets in what a proxy printed, in the forms a log or an error body can carry them:
// - as text, also inside JSON strings with escapes (`\u0041`, `\"`);
// - URL-encoded (`%66%61…`, `+` for a space), as in a logged URL or form body;
// - as hex (either case) and base64 (standard or URL-safe alphabet, at any byte offset: the secret
//   inside `Basic base64(id:secret)` is found too) of its bytes;
// - as bytes: every JSON array of integers 0-255 in a JSON log line is decoded (Fastify logs the raw
//   packet of a malformed request as `{"type":"Buffer","data":[…]}` or a bare number array) and the
//   bytes are searched in all the forms above.
// A finding names the secret by its position in the list and the form, never by its value, so a
// failing test does not print the secret either.
// Cost: one pass over the text per form, each needle looked up by a rolling hash of its first
// characters, so thousands of needles over tens of MiB take well under a second a form.

export interface Leak {
  /** Index of the secret in the list given. */
  secret: number;
  /** How it was written: "text", "base64", "hex", "url-encoded", "byte array", or a combination. */
  encoding: string;
  /** 1-based line of the output it was found on. */
  line: number;
}

interface Needle {
  text: string;
  secret: number;
  encoding: string;
}

/** Shortest needle this scanner accepts: shorter strings would match by chance. */
const MIN_LENGTH = 8;

/**
 * The base64 characters that depend on `bytes` only, when `bytes` starts at each of the three
 * offsets modulo 3 inside a longer encoded string.
 */
function base64Cores(bytes: Buffer): string[] {
  const cores: string[] = [];
  for (let shift = 0; shift < 3; shift++) {
    const encoded = Buffer.concat([Buffer.alloc(shift), bytes]).toString('base64');
    const core = encoded.slice(Math.ceil((4 * shift) / 3), Math.floor((8 * (shift + bytes.length)) / 6));
    cores.push(core, core.replace(/\+/g, '-').replace(/\//g, '_'));
  }
  return cores;
}

function needlesOf(secrets: readonly string[]): Needle[] {
  const needles: Needle[] = [];
  secrets.forEach((secret, index) => {
    if (!secret) return;
    if (secret.length < MIN_LENGTH) throw new Error(`secret #${index} is shorter than ${MIN_LENGTH} characters: too short to scan for`);
    const bytes = Buffer.from(secret, 'utf8');
    const add = (text: string, encoding: string) => {
      if (text.length >= MIN_LENGTH && !needles.some((n) => n.text === text && n.secret === index)) needles.push({ text, secret: index, encoding });
    };
    add(secret, 'text');
    add(bytes.toString('hex'), 'hex');
    add(bytes.toString('hex').toUpperCase(), 'hex');
    for (const core of base64Cores(bytes)) add(core, 'base64');
  });
  return needles;
}

/** Finds needles in texts: a rolling hash over each needle's first MIN_LENGTH characters, then a compare. */
class Matcher {
  private readonly byHash = new Map<number, Needle[]>();
  private readonly power: number;

  constructor(needles: readonly Needle[]) {
    for (const n of needles) {
      const h = Matcher.hash(n.text, 0);
      this.byHash.set(h, [...(this.byHash.get(h) ?? []), n]);
    }
    let power = 1;
    for (let i = 1; i < MIN_LENGTH; i++) power = Math.imul(power, 31);
    this.power = power;
  }

  private static hash(s: string, from: number): number {
    let h = 0;
    for (let i = from; i < from + MIN_LENGTH; i++) h = (Math.imul(h, 31) + s.charCodeAt(i)) | 0;
    return h;
  }

  find(text: string): Needle[] {
    const found: Needle[] = [];
    if (text.length < MIN_LENGTH) return found;
    let h = Matcher.hash(text, 0);
    for (let i = 0; ; i++) {
      const candidates = this.byHash.get(h);
      if (candidates) for (const n of candidates) if (text.startsWith(n.text, i)) found.push(n);
      if (i + MIN_LENGTH >= text.length) return found;
      h = (Math.imul(h - Math.imul(text.charCodeAt(i), this.power), 31) + text.charCodeAt(i + MIN_LENGTH)) | 0;
    }
  }
}

/** `%XX` sequences as the UTF-8 bytes they stand for, `+` as a space; undefined when there is nothing to decode. */
function urlDecoded(text: string): string | undefined {
  if (!/%[0-9a-fA-F]{2}|\+/.test(text)) return undefined;
  const parts = text.replace(/\+/g, ' ').split(/((?:%[0-9a-fA-F]{2})+)/);
  return Buffer.concat(parts.map((part, i) => (i % 2 ? Buffer.from(part.replace(/%/g, ''), 'hex') : Buffer.from(part, 'utf8')))).toString('utf8');
}

/** What a JSON value holds beyond its text: decoded byte arrays, and strings that were escaped. */
function jsonExtras(value: unknown, escaped: boolean, out: { text: string; encoding: string }[]): void {
  if (Array.isArray(value)) {
    if (value.length > 0 && value.every((v) => Number.isInteger(v) && v >= 0 && v <= 255)) {
      const bytes = Buffer.from(value as number[]);
      out.push({ text: bytes.toString('utf8'), encoding: 'byte array' });
      return;
    }
    for (const v of value) jsonExtras(v, escaped, out);
  } else if (value && typeof value === 'object') {
    for (const v of Object.values(value)) jsonExtras(v, escaped, out);
  } else if (typeof value === 'string' && escaped) {
    out.push({ text: value, encoding: 'JSON-escaped text' });
  }
}

/** Every place a secret from `secrets` appears in `output`, in any of the forms above. */
export function findLeaks(output: string, secrets: readonly string[]): Leak[] {
  const needles = needlesOf(secrets);
  if (!needles.length) return [];
  const matcher = new Matcher(needles);
  const leaks: Leak[] = [];
  const seen = new Set<string>();
  const report = (text: string, via: string[], line: number, skip: readonly Needle[] = []) => {
    const found = matcher.find(text);
    for (const needle of found) {
      if (skip.includes(needle)) continue;
      const encoding = [...via, needle.encoding].filter((e) => e !== 'text').join(', ') || 'text';
      const key = `${needle.secret} ${encoding} ${line}`;
      if (!seen.has(key)) {
        seen.add(key);
        leaks.push({ secret: needle.secret, encoding, line });
      }
    }
    return found;
  };
  // The URL-decoded text reports only what the text itself did not show.
  const scan = (text: string, via: string[], line: number) => {
    const plain = report(text, via, line);
    const decoded = urlDecoded(text);
    if (decoded !== undefined) report(decoded, [...via, 'url-encoded'], line, plain);
  };
  output.split('\n').forEach((text, i) => {
    scan(text, [], i + 1);
    if (!text.startsWith('{') && !text.startsWith('[')) return;
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      return;
    }
    const extras: { text: string; encoding: string }[] = [];
    jsonExtras(parsed, text.includes('\\'), extras);
    for (const extra of extras) scan(extra.text, [extra.encoding], i + 1);
  });
  return leaks;
}

/** One line for a test failure: how many secrets leaked, how and where; no secret in it. */
export function describeLeaks(leaks: readonly Leak[]): string {
  const secrets = new Set(leaks.map((l) => l.secret));
  const where = leaks.slice(0, 5).map((l) => `secret #${l.secret} as ${l.encoding} on line ${l.line}`);
  return `${secrets.size} secret(s) leaked: ${where.join('; ')}${leaks.length > 5 ? `; and ${leaks.length - 5} more` : ''}`;
}

/** Throws when `output` holds any of `secrets` in any form; the message names none of them. */
export function assertNoLeaks(output: string, secrets: readonly string[], what = 'the proxy output'): void {
  const leaks = findLeaks(output, secrets);
  if (leaks.length) throw new Error(`secret leaked into ${what}: ${describeLeaks(leaks)}`);
}
