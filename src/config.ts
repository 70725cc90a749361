// One typed configuration object from the environment, a `.env` file and `*_FILE` secrets.
// Every setting is declared once in SETTINGS: the env-schema schema, the `--help` text and the
// defaults all come from that table, so they cannot drift apart.
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { parseEnv } from 'node:util';
import { envSchema } from 'env-schema';
import { loadKeys, type KeySources } from './auth/key-store.js';
import type { ApiKey } from './auth/keys.js';
import { loadTenantFile, type CredentialSet, type KeyPolicy } from './tenants.js';

export type { CredentialSet, KeyPolicy } from './tenants.js';

interface Setting {
  name: string;
  type: 'string' | 'integer' | 'number' | 'boolean';
  default?: string | number | boolean;
  minimum?: number;
  maximum?: number;
  enum?: string[];
  /** One line for `--help` and the README. */
  help: string;
  /** Holds a secret: never printed, not even its length. */
  secret?: boolean;
}

export const SETTINGS: readonly Setting[] = [
  { name: 'BITQUERY_CLIENT_ID', type: 'string', help: 'client-credentials mode: the application id' },
  { name: 'BITQUERY_CLIENT_SECRET', type: 'string', secret: true, help: 'client-credentials mode: the application secret' },
  { name: 'BITQUERY_CLIENT_SECRET_FILE', type: 'string', help: 'file holding the client secret (re-read for every token request)' },
  { name: 'BITQUERY_TOKEN', type: 'string', secret: true, help: 'static-token mode: a token generated in the Bitquery account UI' },
  { name: 'BITQUERY_TOKEN_FILE', type: 'string', help: 'static-token mode: file holding the token (re-read when it changes)' },
  { name: 'BITQUERY_TOKEN_URL', type: 'string', default: 'https://oauth2.bitquery.io/oauth2/token', help: 'OAuth2 token endpoint' },
  { name: 'BITQUERY_SCOPE', type: 'string', default: 'api', help: 'OAuth2 scope asked for' },
  { name: 'BITQUERY_AUTH_METHOD', type: 'string', default: 'post', enum: ['post', 'basic'], help: 'how credentials reach the token endpoint: form body (post) or HTTP Basic (basic)' },
  { name: 'BITQUERY_UPSTREAM', type: 'string', default: 'https://streaming.bitquery.io', help: 'upstream origin (scheme://host[:port], no path)' },
  { name: 'PROXY_PATHS', type: 'string', default: '/graphql,/eap', help: 'comma-separated paths forwarded to the same path upstream' },
  { name: 'PROXY_CONFIG', type: 'string', help: 'JSON file with named credential sets (one per team) and per-key settings' },
  { name: 'PROXY_API_KEYS', type: 'string', secret: true, help: 'inbound keys, comma-separated: key, name:key, sha256:<hex> or name:sha256:<hex>' },
  { name: 'PROXY_API_KEYS_FILE', type: 'string', help: 'file of inbound keys, one a line (# comments), re-read when it changes' },
  { name: 'PROXY_ALLOW_UNAUTHENTICATED', type: 'boolean', default: false, help: 'allow listening on a non-loopback HOST without inbound keys (trusted private networks only)' },
  { name: 'RATE_LIMIT_PER_MINUTE', type: 'integer', default: 0, minimum: 0, help: 'requests a minute per key (per client address without keys); 0 = unlimited' },
  { name: 'WS_MAX_STREAMS_PER_KEY', type: 'integer', default: 0, minimum: 0, help: 'concurrent WebSocket streams per key; 0 = only WS_MAX_STREAMS applies' },
  { name: 'CORS_ORIGINS', type: 'string', help: 'browser origins allowed, comma-separated, or * for any; unset: http(s)://localhost, 127.0.0.1 and [::1] on any port' },
  { name: 'HOST', type: 'string', default: '127.0.0.1', help: 'listen address' },
  { name: 'PORT', type: 'integer', default: 8080, minimum: 0, maximum: 65535, help: 'listen port (0 picks a free one)' },
  { name: 'LOG_LEVEL', type: 'string', default: 'info', enum: ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'], help: 'pino log level' },
  { name: 'BODY_LIMIT', type: 'integer', default: 1048576, minimum: 1, help: 'largest request body in bytes; larger gets 413' },
  { name: 'UPSTREAM_TIMEOUT_MS', type: 'integer', default: 60000, minimum: 1, help: 'wait for upstream response headers, and at most this long between body chunks; then 504' },
  { name: 'UPSTREAM_CONNECT_TIMEOUT_MS', type: 'integer', default: 10000, minimum: 1, help: 'wait for a TCP+TLS connection to the upstream; then 504' },
  { name: 'UPSTREAM_CONNECTIONS', type: 'integer', default: 128, minimum: 1, help: 'most keep-alive connections held open to the upstream' },
  { name: 'TOKEN_WAIT_MS', type: 'integer', default: 10000, minimum: 0, help: 'how long a request waits for a token when none is valid; then 503' },
  { name: 'TOKEN_REFRESH_MARGIN', type: 'number', default: 0.2, minimum: 0.01, maximum: 0.5, help: 'renew when this fraction of the lifetime is left (plus up to half of it again as jitter)' },
  { name: 'TOKEN_TIMEOUT_MS', type: 'integer', default: 10000, minimum: 1, help: 'timeout of one token request' },
  { name: 'TOKEN_RETRY_MIN_MS', type: 'integer', default: 1000, minimum: 1, help: 'first retry delay after a failed token request (doubles, with jitter)' },
  { name: 'TOKEN_RETRY_MAX_MS', type: 'integer', default: 60000, minimum: 1, help: 'cap of the retry delay after failed token requests' },
  { name: 'TOKEN_REJECTED_RETRY_MS', type: 'integer', default: 300000, minimum: 1, help: 'retry delay after the token endpoint rejected the credentials (400/401)' },
  { name: 'WS_MAX_STREAMS', type: 'integer', default: 1000, minimum: 0, help: 'most concurrent WebSocket streams; over it the handshake gets 503' },
  { name: 'WS_MAX_BUFFERED_BYTES', type: 'integer', default: 4194304, minimum: 1024, help: 'bytes queued for one slow WebSocket client before it is closed with 1013' },
  { name: 'WS_PING_INTERVAL_MS', type: 'integer', default: 30000, minimum: 100, help: 'WebSocket ping period; a peer that misses a pong by the next ping is closed' },
  { name: 'SHUTDOWN_TIMEOUT_MS', type: 'integer', default: 10000, minimum: 0, help: 'on SIGTERM/SIGINT, how long in-flight requests may take before connections are cut' },
];

export type AuthMethod = 'post' | 'basic';

export interface ClientCredentials {
  mode: 'client_credentials';
  clientId: string;
  /** Either the secret itself or a file to read it from at each token request. */
  clientSecret: { value: string } | { file: string };
  tokenUrl: URL;
  scope: string;
  authMethod: AuthMethod;
}

export interface StaticToken {
  mode: 'static';
  token: { value: string } | { file: string };
}

export interface Config {
  /** Credential sets: `default` from the environment, plus those of PROXY_CONFIG. Never empty. */
  sets: CredentialSet[];
  /** The set used by requests whose key maps to none (and by all requests without keys). */
  defaultSet?: string;
  apiKeys: KeySources;
  /** The keys read at start-up (the store re-reads the file later). */
  initialKeys: ApiKey[];
  keyPolicies: Record<string, KeyPolicy>;
  allowUnauthenticated: boolean;
  rateLimitPerMinute: number;
  wsMaxStreamsPerKey: number;
  /** Allowed browser origins: exact origins, `*` for any, or the loopback rule when unset. */
  corsOrigins: string[] | 'loopback';
  paths: string[];
  host: string;
  port: number;
  logLevel: string;
  bodyLimit: number;
  upstreamTimeoutMs: number;
  upstreamConnectTimeoutMs: number;
  upstreamConnections: number;
  tokenWaitMs: number;
  tokenRefreshMargin: number;
  tokenTimeoutMs: number;
  tokenRetryMinMs: number;
  tokenRetryMaxMs: number;
  tokenRejectedRetryMs: number;
  wsMaxStreams: number;
  wsMaxBufferedBytes: number;
  wsPingIntervalMs: number;
  shutdownTimeoutMs: number;
}

/** A configuration mistake: the message names what to set. */
export class ConfigError extends Error {
  override name = 'ConfigError';
}

type Raw = Record<string, string | number | boolean | undefined>;

const schema = {
  type: 'object',
  properties: Object.fromEntries(
    SETTINGS.map((s) => {
      const { name, help: _help, secret: _secret, ...json } = s;
      return [name, json];
    }),
  ),
};

/** Empty values count as unset, as in most tools: `BITQUERY_TOKEN=` in a `.env` means "no token". */
function known(source: Record<string, string | undefined>): Record<string, string> {
  const names = new Set(SETTINGS.map((s) => s.name));
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(source)) if (names.has(k) && v !== undefined && v !== '') out[k] = v;
  return out;
}

function readDotenv(path: string): Record<string, string> {
  try {
    return parseEnv(readFileSync(path, 'utf8')) as Record<string, string>;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return {};
    throw new ConfigError(`cannot read ${path}: ${(err as Error).message}`);
  }
}

function validate(data: [Record<string, string>, ...Record<string, string>[]]): Raw {
  try {
    return envSchema<Raw>({ schema, env: false, data });
  } catch (err) {
    const errors = (err as { errors?: { instancePath: string; message?: string }[] }).errors ?? [];
    const lines = errors.map((e) => `${e.instancePath.replace(/^\//, '')} ${e.message ?? 'is invalid'}`);
    throw new ConfigError(`invalid configuration: ${lines.join('; ') || (err as Error).message}`);
  }
}

/** Reads a secret file now, so a wrong path fails at start-up rather than at the first request. */
export function readSecretFile(file: string, variable: string): string {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError(`${variable}=${file} cannot be read (${(err as NodeJS.ErrnoException).code ?? 'error'}): point it at a readable file`);
  }
  const value = text.trim();
  if (!value) throw new ConfigError(`${variable}=${file} is empty: put the secret in it`);
  return value;
}

const LOOPBACK = new Set(['localhost', '127.0.0.1', '[::1]']);

function isLoopbackHost(hostname: string): boolean {
  return LOOPBACK.has(hostname) || hostname === '::1' || /^127\.\d+\.\d+\.\d+$/.test(hostname);
}

/** Secrets must not cross a network in clear text: plain http is only for loopback (tests, the demo). */
function secureUrl(value: string, variable: string): URL {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new ConfigError(`${variable} must be an absolute URL, got "${value}"`);
  }
  if (url.username || url.password) throw new ConfigError(`${variable} must not hold credentials`);
  if (url.protocol === 'https:') return url;
  if (url.protocol === 'http:' && isLoopbackHost(url.hostname)) return url;
  throw new ConfigError(`${variable} must use https:// (plain http:// is accepted only for loopback addresses)`);
}

function credentialsFrom(raw: Raw): ClientCredentials | StaticToken | undefined {
  const s = (name: string) => raw[name] as string | undefined;
  const id = s('BITQUERY_CLIENT_ID');
  const secret = s('BITQUERY_CLIENT_SECRET');
  const secretFile = s('BITQUERY_CLIENT_SECRET_FILE');
  const token = s('BITQUERY_TOKEN');
  const tokenFile = s('BITQUERY_TOKEN_FILE');
  const clientMode = Boolean(id || secret || secretFile);
  const staticMode = Boolean(token || tokenFile);

  if (clientMode && staticMode) {
    throw new ConfigError('set either BITQUERY_CLIENT_ID/BITQUERY_CLIENT_SECRET (client credentials) or BITQUERY_TOKEN (static token), not both');
  }
  if (staticMode) {
    if (token && tokenFile) throw new ConfigError('set BITQUERY_TOKEN or BITQUERY_TOKEN_FILE, not both');
    if (tokenFile) readSecretFile(tokenFile, 'BITQUERY_TOKEN_FILE');
    return { mode: 'static', token: token ? { value: token } : { file: tokenFile! } };
  }
  if (!clientMode) return undefined;
  if (!id) throw new ConfigError('BITQUERY_CLIENT_ID is missing: set it to the application id that goes with the client secret');
  if (secret && secretFile) throw new ConfigError('set BITQUERY_CLIENT_SECRET or BITQUERY_CLIENT_SECRET_FILE, not both');
  if (!secret && !secretFile) throw new ConfigError('BITQUERY_CLIENT_SECRET is missing: set it (or BITQUERY_CLIENT_SECRET_FILE) for the client id BITQUERY_CLIENT_ID');
  if (secretFile) readSecretFile(secretFile, 'BITQUERY_CLIENT_SECRET_FILE');
  return {
    mode: 'client_credentials',
    clientId: id,
    clientSecret: secret ? { value: secret } : { file: secretFile! },
    tokenUrl: secureUrl(s('BITQUERY_TOKEN_URL')!, 'BITQUERY_TOKEN_URL'),
    scope: s('BITQUERY_SCOPE')!,
    authMethod: s('BITQUERY_AUTH_METHOD') as AuthMethod,
  };
}

function upstreamFrom(value: string, variable = 'BITQUERY_UPSTREAM'): URL {
  const url = secureUrl(value, variable);
  if ((url.pathname !== '/' && url.pathname !== '') || url.search || url.hash) {
    throw new ConfigError(`${variable} must be an origin without a path, like https://streaming.bitquery.io (paths come from PROXY_PATHS)`);
  }
  return url;
}

function pathsFrom(value: string): string[] {
  const paths = value.split(',').map((p) => p.trim()).filter(Boolean);
  const bad = paths.find((p) => !/^\/[A-Za-z0-9._~\-/]*$/.test(p));
  if (paths.length === 0 || bad !== undefined) {
    throw new ConfigError(`PROXY_PATHS must be a comma-separated list of paths starting with /, like /graphql,/eap${bad ? ` (bad: "${bad}")` : ''}`);
  }
  return [...new Set(paths)];
}

export interface LoadOptions {
  /** Path of the dotenv file; values in `env` win over it. Default `.env` in the working directory. */
  dotenvPath?: string;
}

/** The environment's credentials as the set `default`, then those of PROXY_CONFIG. */
function credentialSets(raw: Raw): Pick<Config, 'sets' | 'defaultSet' | 'keyPolicies'> {
  const fromEnv = credentialsFrom(raw);
  const sets: CredentialSet[] = fromEnv ? [{ name: 'default', credentials: fromEnv, upstream: upstreamFrom(raw.BITQUERY_UPSTREAM as string) }] : [];
  const file = raw.PROXY_CONFIG as string | undefined;
  if (!file) {
    if (!fromEnv) {
      throw new ConfigError('no Bitquery credentials: set BITQUERY_CLIENT_ID and BITQUERY_CLIENT_SECRET (or BITQUERY_CLIENT_SECRET_FILE), or set BITQUERY_TOKEN (or BITQUERY_TOKEN_FILE)');
    }
    return { sets, defaultSet: 'default', keyPolicies: {} };
  }
  const tenants = loadTenantFile(
    file,
    {
      tokenUrl: raw.BITQUERY_TOKEN_URL as string,
      scope: raw.BITQUERY_SCOPE as string,
      authMethod: raw.BITQUERY_AUTH_METHOD as AuthMethod,
      upstream: raw.BITQUERY_UPSTREAM as string,
    },
    secureUrl,
    upstreamFrom,
  );
  for (const set of tenants.sets) {
    if (sets.some((s) => s.name === set.name)) {
      throw new ConfigError(`PROXY_CONFIG defines the credential set "${set.name}" twice (the environment's credentials are named "default")`);
    }
    sets.push(set);
  }
  if (sets.length === 0) {
    throw new ConfigError('no Bitquery credentials: PROXY_CONFIG defines no credential set, and none is set in the environment (BITQUERY_CLIENT_ID/BITQUERY_CLIENT_SECRET or BITQUERY_TOKEN)');
  }
  const names = new Set(sets.map((s) => s.name));
  const defaultSet = tenants.defaultCredentials ?? (fromEnv ? 'default' : undefined);
  if (defaultSet !== undefined && !names.has(defaultSet)) {
    throw new ConfigError(`PROXY_CONFIG defaultCredentials names "${defaultSet}", which is not a credential set (${[...names].join(', ')})`);
  }
  for (const [key, policy] of Object.entries(tenants.keys)) {
    if (policy.credentials !== undefined && !names.has(policy.credentials)) {
      throw new ConfigError(`PROXY_CONFIG keys.${key}.credentials names "${policy.credentials}", which is not a credential set (${[...names].join(', ')})`);
    }
  }
  return { sets, defaultSet, keyPolicies: tenants.keys };
}

function corsFrom(value: string | undefined): string[] | 'loopback' {
  if (value === undefined) return 'loopback';
  const origins = value.split(',').map((o) => o.trim()).filter(Boolean);
  for (const origin of origins) {
    if (origin !== '*' && !/^https?:\/\/[^/\s]+$/.test(origin)) {
      throw new ConfigError(`CORS_ORIGINS entries must be origins like http://localhost:3000 (no path), or *; got "${origin}"`);
    }
  }
  return origins;
}

/** Keys, their mapping to credential sets, and the refusal to run open on a network. */
function inboundAuth(raw: Raw, host: string, sets: Pick<Config, 'sets' | 'defaultSet' | 'keyPolicies'>): Pick<Config, 'apiKeys' | 'initialKeys' | 'allowUnauthenticated'> {
  const apiKeys: KeySources = { list: raw.PROXY_API_KEYS as string | undefined, file: raw.PROXY_API_KEYS_FILE as string | undefined };
  let initialKeys: ApiKey[];
  try {
    initialKeys = loadKeys(apiKeys);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new ConfigError(code ? `PROXY_API_KEYS_FILE=${apiKeys.file} cannot be read (${code})` : (err as Error).message);
  }
  const keyed = Boolean(apiKeys.list || apiKeys.file);
  const allowUnauthenticated = raw.PROXY_ALLOW_UNAUTHENTICATED as boolean;
  if (!keyed && !allowUnauthenticated && !isLoopbackHost(host.replace(/^\[|\]$/g, ''))) {
    throw new ConfigError(
      `HOST=${host} is reachable from the network and no inbound keys are set: set PROXY_API_KEYS (or PROXY_API_KEYS_FILE), or, to run open on a trusted private network (a docker-compose network, a pod), PROXY_ALLOW_UNAUTHENTICATED=true`,
    );
  }
  if (sets.defaultSet === undefined) {
    if (!keyed) throw new ConfigError('without inbound keys every request uses the default credentials: set defaultCredentials in PROXY_CONFIG (or credentials in the environment)');
    const unmapped = initialKeys.find((k) => sets.keyPolicies[k.name]?.credentials === undefined);
    if (unmapped) {
      throw new ConfigError(`the key "${unmapped.name}" maps to no credentials: map it in PROXY_CONFIG keys.${unmapped.name}.credentials, or set defaultCredentials`);
    }
  }
  return { apiKeys, initialKeys, allowUnauthenticated };
}

/** Builds the configuration, or throws one ConfigError that says what to set. */
export function loadConfig(env: Record<string, string | undefined>, options: LoadOptions = {}): Config {
  const raw = validate([known(readDotenv(resolve(options.dotenvPath ?? '.env'))), known(env)]);
  const n = (name: string) => raw[name] as number;
  const sets = credentialSets(raw);
  const config: Config = {
    ...sets,
    ...inboundAuth(raw, raw.HOST as string, sets),
    keyPolicies: sets.keyPolicies,
    rateLimitPerMinute: n('RATE_LIMIT_PER_MINUTE'),
    wsMaxStreamsPerKey: n('WS_MAX_STREAMS_PER_KEY'),
    corsOrigins: corsFrom(raw.CORS_ORIGINS as string | undefined),
    paths: pathsFrom(raw.PROXY_PATHS as string),
    host: raw.HOST as string,
    port: n('PORT'),
    logLevel: raw.LOG_LEVEL as string,
    bodyLimit: n('BODY_LIMIT'),
    upstreamTimeoutMs: n('UPSTREAM_TIMEOUT_MS'),
    upstreamConnectTimeoutMs: n('UPSTREAM_CONNECT_TIMEOUT_MS'),
    upstreamConnections: n('UPSTREAM_CONNECTIONS'),
    tokenWaitMs: n('TOKEN_WAIT_MS'),
    tokenRefreshMargin: n('TOKEN_REFRESH_MARGIN'),
    tokenTimeoutMs: n('TOKEN_TIMEOUT_MS'),
    tokenRetryMinMs: n('TOKEN_RETRY_MIN_MS'),
    tokenRetryMaxMs: n('TOKEN_RETRY_MAX_MS'),
    tokenRejectedRetryMs: n('TOKEN_REJECTED_RETRY_MS'),
    wsMaxStreams: n('WS_MAX_STREAMS'),
    wsMaxBufferedBytes: n('WS_MAX_BUFFERED_BYTES'),
    wsPingIntervalMs: n('WS_PING_INTERVAL_MS'),
    shutdownTimeoutMs: n('SHUTDOWN_TIMEOUT_MS'),
  };
  if (config.tokenRetryMaxMs < config.tokenRetryMinMs) {
    throw new ConfigError('TOKEN_RETRY_MAX_MS must not be smaller than TOKEN_RETRY_MIN_MS');
  }
  return config;
}
