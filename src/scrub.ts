// Removes secrets from text a third party sent (a token endpoint's error, an upstream's refusal)
// before the proxy stores, shows or logs it. Whatever that party echoes back, the form body it was
// sent (URL-encoded), an Authorization header (base64) or the raw value, no secret gets through.

export const REDACTED = '[REDACTED]';

/**
 * Base64 is searched for secrets of at least this many bytes: the part of an encoding that depends
 * on the secret alone is then at least 7 characters, too long to match ordinary text by chance.
 */
const MIN_BASE64_BYTES = 6;

/** What an OAuth access token looks like: Ory's (Bitquery's `ory_at_…`) and JWTs. */
const TOKEN_SHAPED = /\bory_[a-z]{2}_[\w.~+/=-]{8,}|\beyJ[\w-]{4,}\.[\w-]{4,}\.[\w-]*/g;

const escapeRegExp = (s: string) => s.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');

/** `%2f` and `%2F` are the same byte. */
const percentByte = (byte: number) =>
  `%${[...byte.toString(16).padStart(2, '0')].map((d) => (/[a-f]/.test(d) ? `[${d}${d.toUpperCase()}]` : d)).join('')}`;

/**
 * A pattern matching `text` as it is, URL-encoded or form-encoded, in any mix: each character may
 * appear as itself or as the percent-escapes of its UTF-8 bytes, and a space also as `+`.
 */
function urlTolerant(text: string): string {
  let pattern = '';
  for (const ch of text) {
    const escaped = [...Buffer.from(ch, 'utf8')].map(percentByte).join('');
    pattern += `(?:${escapeRegExp(ch)}|${escaped}${ch === ' ' ? '|\\+' : ''})`;
  }
  return pattern;
}

/**
 * The base64 characters that depend on the secret alone, for each of the three byte offsets it can
 * have inside a longer encoded value (such as `Basic base64(id:secret)`), in base64 and base64url.
 */
function base64Cores(secret: string): string[] {
  const bytes = Buffer.from(secret, 'utf8');
  if (bytes.length < MIN_BASE64_BYTES) return [];
  const cores: string[] = [];
  for (let offset = 0; offset < 3; offset += 1) {
    const encoded = Buffer.concat([Buffer.alloc(offset), bytes]).toString('base64');
    const core = encoded.slice(Math.ceil((8 * offset) / 6), Math.floor((8 * (offset + bytes.length)) / 6));
    cores.push(core, core.replace(/\+/g, '-').replace(/\//g, '_'));
  }
  return cores;
}

/**
 * `text` with each of `secrets` replaced by `[REDACTED]`: as it is, URL- or form-encoded, and
 * base64 or base64url encoded (also inside a longer encoded value); and with anything shaped like
 * an access token replaced too. Empty secrets are ignored. Pure.
 */
export function scrubSecrets(text: string, secrets: readonly string[]): string {
  const forms = new Set<string>();
  for (const secret of secrets) {
    if (!secret) continue;
    forms.add(secret);
    for (const core of base64Cores(secret)) forms.add(core);
  }
  let out = text.replace(TOKEN_SHAPED, REDACTED);
  if (forms.size === 0) return out;
  // Longest first, so a secret that contains another is replaced whole.
  const alternatives = [...forms].sort((a, b) => b.length - a.length).map(urlTolerant);
  out = out.replace(new RegExp(alternatives.join('|'), 'g'), REDACTED);
  return out;
}

/** At most `max` characters of `text`, marked when cut. Scrub before clipping, so no secret is cut in part. */
export function clip(text: string, max: number): string {
  return text.length <= max ? text : `${text.slice(0, max)}…`;
}
