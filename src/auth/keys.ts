// Inbound API keys for a shared gateway. Keys are held only as SHA-256 digests, compared in
// constant time, and known by a name for logs and accounting (never by their value).
import { createHash, timingSafeEqual } from 'node:crypto';

export interface ApiKey {
  /** Shown in logs and metrics: the configured name, or `key-` and 8 hex digits of the digest. */
  name: string;
  digest: Buffer;
}

/** A malformed key entry: the message says which line or entry, never the key. */
export class KeyFormatError extends Error {
  override name = 'KeyFormatError';
}

const digestOf = (key: string) => createHash('sha256').update(key, 'utf8').digest();
const HEX64 = /^[0-9a-f]{64}$/i;
/** Key and credential set names: they appear in logs and in PROXY_CONFIG. */
export const NAME = /^[A-Za-z0-9._-]{1,64}$/;

/**
 * One entry: `key`, `name:key`, `sha256:<hex>` or `name:sha256:<hex>`. A name cannot hold `:`,
 * so everything after the first `:` of a named entry is the key.
 */
export function parseKeyEntry(entry: string, where: string): ApiKey {
  let name: string | undefined;
  let rest = entry;
  const colon = entry.indexOf(':');
  if (colon !== -1 && entry.slice(0, colon) !== 'sha256') {
    name = entry.slice(0, colon);
    rest = entry.slice(colon + 1);
    if (!NAME.test(name)) throw new KeyFormatError(`${where}: a key name may hold only letters, digits, '.', '_' and '-' (at most 64)`);
  }
  let digest: Buffer;
  if (rest.startsWith('sha256:')) {
    const hex = rest.slice('sha256:'.length);
    if (!HEX64.test(hex)) throw new KeyFormatError(`${where}: sha256: must be followed by 64 hex digits`);
    digest = Buffer.from(hex, 'hex');
  } else {
    if (rest.length < 16) throw new KeyFormatError(`${where}: a key must be at least 16 characters (use a random one: openssl rand -hex 32)`);
    digest = digestOf(rest);
  }
  return { name: name ?? `key-${digest.toString('hex').slice(0, 8)}`, digest };
}

/** PROXY_API_KEYS: comma-separated entries. */
export function parseKeyList(list: string): ApiKey[] {
  return list
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean)
    .map((entry, i) => parseKeyEntry(entry, `PROXY_API_KEYS entry ${i + 1}`));
}

/** PROXY_API_KEYS_FILE: one entry a line; blank lines and `#` comments are skipped. */
export function parseKeyFile(text: string): ApiKey[] {
  const keys: ApiKey[] = [];
  text.split(/\r?\n/).forEach((line, i) => {
    const entry = line.replace(/(^|\s)#.*$/, '').trim();
    if (entry) keys.push(parseKeyEntry(entry, `PROXY_API_KEYS_FILE line ${i + 1}`));
  });
  return keys;
}

/** Refuses two entries with one name: accounting by name would mix two callers. */
export function checkUniqueNames(keys: ApiKey[]): void {
  const seen = new Set<string>();
  for (const k of keys) {
    if (seen.has(k.name)) throw new KeyFormatError(`the key name "${k.name}" is used twice`);
    seen.add(k.name);
  }
}

/** The key a request presents: `Authorization: Bearer <key>` or `X-API-Key: <key>`. */
export function presentedKey(headers: Record<string, string | string[] | undefined>): string | undefined {
  const auth = headers.authorization;
  if (typeof auth === 'string') {
    const match = /^Bearer\s+(\S+)\s*$/i.exec(auth);
    if (match) return match[1];
  }
  const header = headers['x-api-key'];
  return typeof header === 'string' && header.trim() ? header.trim() : undefined;
}

/**
 * The matching key, or undefined. Every configured digest is compared, whatever matched, so the
 * time taken says nothing about which key (or how much of one) was right.
 */
export function findKey(keys: readonly ApiKey[], presented: string): ApiKey | undefined {
  const digest = digestOf(presented);
  let found: ApiKey | undefined;
  for (const key of keys) {
    if (timingSafeEqual(key.digest, digest) && !found) found = key;
  }
  return found;
}
