// PROXY_CONFIG: a JSON file naming several credential sets (one per team) and mapping inbound key
// names to them, with per-key limits. Validated here into plain objects; the keys themselves stay
// in PROXY_API_KEYS / PROXY_API_KEYS_FILE, so this file holds no inbound secret.
import { readFileSync } from 'node:fs';
import { NAME } from './auth/keys.js';
import { ConfigError, type AuthMethod, type ClientCredentials, type StaticToken } from './config.js';

export interface CredentialSet {
  name: string;
  credentials: ClientCredentials | StaticToken;
  upstream: URL;
}

export interface KeyPolicy {
  /** The credential set this key's requests use; the default set when absent. */
  credentials?: string;
  /** Requests a minute for this key; overrides RATE_LIMIT_PER_MINUTE (0 = unlimited). */
  rateLimitPerMinute?: number;
  /** Concurrent WebSocket streams for this key; overrides WS_MAX_STREAMS_PER_KEY (0 = no per-key cap). */
  maxStreams?: number;
}

export interface TenantFile {
  sets: CredentialSet[];
  keys: Record<string, KeyPolicy>;
  defaultCredentials?: string;
}

/** What an entry may leave out: taken from the environment's settings. */
export interface TenantDefaults {
  tokenUrl: string;
  scope: string;
  authMethod: AuthMethod;
  upstream: string;
}

export interface UrlCheck {
  (value: string, where: string): URL;
}

const SET_FIELDS = new Set(['clientId', 'clientSecret', 'clientSecretFile', 'token', 'tokenFile', 'tokenUrl', 'scope', 'authMethod', 'upstream']);
const KEY_FIELDS = new Set(['credentials', 'rateLimitPerMinute', 'maxStreams']);

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

function parseSet(name: string, entry: unknown, defaults: TenantDefaults, url: UrlCheck, origin: UrlCheck): CredentialSet {
  const where = `credentials.${name}`;
  if (!NAME.test(name)) throw new ConfigError(`PROXY_CONFIG credential set name "${name}" may hold only letters, digits, '.', '_' and '-' (at most 64)`);
  if (!isObject(entry)) throw new ConfigError(`PROXY_CONFIG ${where} must be an object`);
  unknownFields(entry, SET_FIELDS, where);
  const [clientId, clientSecret, clientSecretFile, token, tokenFile] = ['clientId', 'clientSecret', 'clientSecretFile', 'token', 'tokenFile'].map((f) => str(entry, f, where));
  const upstream = origin(str(entry, 'upstream', where) ?? defaults.upstream, `PROXY_CONFIG ${where}.upstream`);
  const modes = [clientId || clientSecret || clientSecretFile, token, tokenFile].filter(Boolean).length;
  if (modes !== 1 || (token && tokenFile)) {
    throw new ConfigError(`PROXY_CONFIG ${where} needs exactly one of: clientId with clientSecret or clientSecretFile; token; tokenFile`);
  }
  if (token || tokenFile) {
    return { name, upstream, credentials: { mode: 'static', token: token ? { value: token } : { file: tokenFile! } } };
  }
  if (!clientId || !(clientSecret || clientSecretFile) || (clientSecret && clientSecretFile)) {
    throw new ConfigError(`PROXY_CONFIG ${where} needs clientId and one of clientSecret or clientSecretFile`);
  }
  const authMethod = str(entry, 'authMethod', where) ?? defaults.authMethod;
  if (authMethod !== 'post' && authMethod !== 'basic') throw new ConfigError(`PROXY_CONFIG ${where}.authMethod must be "post" or "basic"`);
  return {
    name,
    upstream,
    credentials: {
      mode: 'client_credentials',
      clientId,
      clientSecret: clientSecret ? { value: clientSecret } : { file: clientSecretFile! },
      tokenUrl: url(str(entry, 'tokenUrl', where) ?? defaults.tokenUrl, `PROXY_CONFIG ${where}.tokenUrl`),
      scope: str(entry, 'scope', where) ?? defaults.scope,
      authMethod,
    },
  };
}

/** Reads and validates the file; `url`/`origin` apply the same URL rules as the environment's settings. */
export function loadTenantFile(path: string, defaults: TenantDefaults, url: UrlCheck, origin: UrlCheck): TenantFile {
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
  const sets = Object.entries(setsJson).map(([name, entry]) => parseSet(name, entry, defaults, url, origin));
  const keys: Record<string, KeyPolicy> = {};
  for (const [name, entry] of Object.entries(keysJson)) {
    const where = `keys.${name}`;
    if (!isObject(entry)) throw new ConfigError(`PROXY_CONFIG ${where} must be an object`);
    unknownFields(entry, KEY_FIELDS, where);
    keys[name] = { credentials: str(entry, 'credentials', where), rateLimitPerMinute: count(entry, 'rateLimitPerMinute', where), maxStreams: count(entry, 'maxStreams', where) };
  }
  const defaultCredentials = data.defaultCredentials;
  if (defaultCredentials !== undefined && typeof defaultCredentials !== 'string') throw new ConfigError('PROXY_CONFIG defaultCredentials must be the name of a credential set');
  return { sets, keys, defaultCredentials };
}
