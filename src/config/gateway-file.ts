// PROXY_CONFIG: a JSON file naming several credential sets (one per team) and mapping inbound key
// names to them, with per-key limits. Validated here into plain objects; the keys themselves stay
// in PROXY_API_KEYS / PROXY_API_KEYS_FILE, so this file holds no inbound secret.
import { readFileSync } from 'node:fs';
import { NAME } from '../auth/keys.js';
import { CREDENTIAL_FIELDS, modeChoice, parseCredentialSet, type CredentialDefaults, type CredentialField, type CredentialNaming, type CredentialSetConfig } from './credentials.js';
import { ConfigError } from './errors.js';

export interface KeyPolicy {
  /** The credential set this key's requests use; the default credentials when absent. */
  credentials?: string;
  /** Requests a minute for this key; overrides RATE_LIMIT_PER_MINUTE (0 = unlimited). */
  rateLimitPerMinute?: number;
  /** Concurrent WebSocket streams for this key; overrides WS_MAX_STREAMS_PER_KEY (0 = no per-key cap). */
  maxStreams?: number;
  /** How long this key's query answers are cached; overrides CACHE_TTL_MS (0 = never from or into the cache). */
  cacheTtlMs?: number;
}

export interface GatewayFile {
  credentialSets: CredentialSetConfig[];
  keys: Record<string, KeyPolicy>;
  defaultCredentials?: string;
}

const SET_FIELDS = new Set<string>(CREDENTIAL_FIELDS);
const KEY_FIELDS = new Set(['credentials', 'rateLimitPerMinute', 'maxStreams', 'cacheTtlMs']);

type Json = Record<string, unknown>;

const isObject = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);

function str(entry: Json, field: string, where: string): string | undefined {
  const v = entry[field];
  if (v === undefined) return undefined;
  if (typeof v !== 'string' || v === '') throw new ConfigError(`PROXY_CONFIG ${where}.${field} must be a non-empty string`);
  return v;
}

function count(entry: Json, field: string, where: string): number | undefined {
  const v = entry[field];
  if (v === undefined) return undefined;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0) throw new ConfigError(`PROXY_CONFIG ${where}.${field} must be a whole number >= 0`);
  return v;
}

function unknownFields(entry: Json, allowed: Set<string>, where: string): void {
  const extra = Object.keys(entry).find((k) => !allowed.has(k));
  if (extra) throw new ConfigError(`PROXY_CONFIG ${where} has an unknown field "${extra}" (allowed: ${[...allowed].join(', ')})`);
}

function credentialSet(name: string, entry: unknown, defaults: CredentialDefaults): CredentialSetConfig {
  const where = `credentials.${name}`;
  if (!NAME.test(name)) throw new ConfigError(`PROXY_CONFIG credential set name "${name}" may hold only letters, digits, '.', '_' and '-' (at most 64)`);
  if (!isObject(entry)) throw new ConfigError(`PROXY_CONFIG ${where} must be an object`);
  unknownFields(entry, SET_FIELDS, where);
  const fields: Partial<Record<CredentialField, string>> = {};
  for (const field of CREDENTIAL_FIELDS) fields[field] = str(entry, field, where);
  const naming: CredentialNaming = {
    subject: `PROXY_CONFIG ${where}`,
    field: (f) => f,
    located: (f) => `PROXY_CONFIG ${where}.${f}`,
  };
  const set = parseCredentialSet(name, fields, defaults, naming);
  if (!set) throw new ConfigError(modeChoice(naming));
  return set;
}

/** Reads and validates the file; entries leave out what `defaults` (the environment's settings) give. */
export function loadGatewayFile(path: string, defaults: CredentialDefaults): GatewayFile {
  let data: unknown;
  try {
    data = JSON.parse(readFileSync(path, 'utf8'));
  } catch (err) {
    const reason = err instanceof SyntaxError ? `is not valid JSON (${err.message})` : `cannot be read (${(err as NodeJS.ErrnoException).code ?? 'error'})`;
    throw new ConfigError(`PROXY_CONFIG=${path} ${reason}`);
  }
  if (!isObject(data)) throw new ConfigError(`PROXY_CONFIG=${path} must hold a JSON object`);
  unknownFields(data, new Set(['credentials', 'keys', 'defaultCredentials']), 'top level');
  const setsJson = data.credentials ?? {};
  const keysJson = data.keys ?? {};
  if (!isObject(setsJson)) throw new ConfigError('PROXY_CONFIG credentials must be an object of named credential sets');
  if (!isObject(keysJson)) throw new ConfigError('PROXY_CONFIG keys must be an object mapping key names to settings');
  const credentialSets = Object.entries(setsJson).map(([name, entry]) => credentialSet(name, entry, defaults));
  // Without a prototype, a key named `__proto__` (or `constructor`) is an entry like any other.
  const keys: Record<string, KeyPolicy> = Object.create(null);
  for (const [name, entry] of Object.entries(keysJson)) {
    const where = `keys.${name}`;
    if (!isObject(entry)) throw new ConfigError(`PROXY_CONFIG ${where} must be an object`);
    unknownFields(entry, KEY_FIELDS, where);
    keys[name] = {
      credentials: str(entry, 'credentials', where),
      rateLimitPerMinute: count(entry, 'rateLimitPerMinute', where),
      maxStreams: count(entry, 'maxStreams', where),
      cacheTtlMs: count(entry, 'cacheTtlMs', where),
    };
  }
  const defaultCredentials = data.defaultCredentials;
  if (defaultCredentials !== undefined && typeof defaultCredentials !== 'string') throw new ConfigError('PROXY_CONFIG defaultCredentials must be the name of a credential set');
  return { credentialSets, keys, defaultCredentials };
}
