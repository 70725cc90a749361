// One typed configuration object from the environment, a `.env` file, flags and `*_FILE` secrets,
// or one ConfigError that says what to set.
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { parseEnv } from 'node:util';
import { envSchema } from 'env-schema';
import { loadKeys, type KeySources } from '../auth/key-store.js';
import { settingsProblem } from '../savings/saver.js';
import type { ApiKey } from '../auth/keys.js';
import { parseCredentialSet, type CredentialDefaults, type CredentialField, type CredentialNaming, type CredentialSetConfig } from './credentials.js';
import { redisConfigFrom, type RedisRaw } from '../shared-state/settings.js';
import { ConfigError } from './errors.js';
import { loadGatewayFile, type KeyPolicy } from './gateway-file.js';
import { SETTINGS, type Config } from './settings.js';
import { unknownSettings } from './unknown.js';
import { isLoopbackHost, secureUrl } from './urls.js';

export { ConfigError } from './errors.js';
export { readSecretFile, type AuthMethod, type ClientCredentials, type CredentialSetConfig, type StaticToken } from './credentials.js';
export type { KeyPolicy } from './gateway-file.js';
export { SETTINGS, type Config, type Setting } from './settings.js';

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

/** The dotenv file's names; a missing file is an error only when it was named (`--dotenv`). */
function readDotenv(path: string, named: boolean): Record<string, string> {
  try {
    return parseEnv(readFileSync(path, 'utf8')) as Record<string, string>;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      if (named) throw new ConfigError(`--dotenv ${path}: no such file`);
      return {};
    }
    throw new ConfigError(`cannot read ${path}: ${(err as Error).message}`);
  }
}

function validate(data: [Record<string, string>, ...Record<string, string>[]]): Raw {
  try {
    return envSchema<Raw>({ schema, env: false, data });
  } catch (err) {
    const errors = (err as { errors?: { instancePath: string; message?: string; params?: { allowedValues?: unknown } }[] }).errors ?? [];
    const lines = errors.map((e) => {
      const allowed = e.params?.allowedValues;
      return `${e.instancePath.replace(/^\//, '')} ${e.message ?? 'is invalid'}${Array.isArray(allowed) ? `: ${allowed.join(', ')}` : ''}`;
    });
    throw new ConfigError(`invalid configuration: ${lines.join('; ') || (err as Error).message}`);
  }
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
  /** Path of the dotenv file; values in `env` win over it. Default `.env` in the working directory, if any. */
  dotenvPath?: string;
  /** The file was named by the user (`--dotenv`): a missing one is an error, not "no settings". */
  requireDotenv?: boolean;
}

/** The environment variable of each credential field. */
const ENV_FIELDS: Record<CredentialField, string> = {
  clientId: 'BITQUERY_CLIENT_ID',
  clientSecret: 'BITQUERY_CLIENT_SECRET',
  clientSecretFile: 'BITQUERY_CLIENT_SECRET_FILE',
  token: 'BITQUERY_TOKEN',
  tokenFile: 'BITQUERY_TOKEN_FILE',
  tokenUrl: 'BITQUERY_TOKEN_URL',
  scope: 'BITQUERY_SCOPE',
  authMethod: 'BITQUERY_AUTH_METHOD',
  upstream: 'BITQUERY_UPSTREAM',
};

const ENV_NAMING: CredentialNaming = { subject: 'the environment', field: (f) => ENV_FIELDS[f], located: (f) => ENV_FIELDS[f] };

type CredentialParts = Pick<Config, 'credentialSets' | 'defaultCredentials' | 'keyPolicies'>;

/** The environment's credentials as the set `default`, then those of PROXY_CONFIG. */
function credentialSets(raw: Raw): CredentialParts {
  const env = (f: CredentialField) => raw[ENV_FIELDS[f]] as string | undefined;
  const defaults: CredentialDefaults = { tokenUrl: env('tokenUrl')!, scope: env('scope')!, authMethod: env('authMethod')!, upstream: env('upstream')! };
  const fromEnv = parseCredentialSet('default', { clientId: env('clientId'), clientSecret: env('clientSecret'), clientSecretFile: env('clientSecretFile'), token: env('token'), tokenFile: env('tokenFile') }, defaults, ENV_NAMING);
  const sets: CredentialSetConfig[] = fromEnv ? [fromEnv] : [];
  const file = raw.PROXY_CONFIG as string | undefined;
  if (!file) {
    if (!fromEnv) {
      throw new ConfigError('no Bitquery credentials: set BITQUERY_CLIENT_ID and BITQUERY_CLIENT_SECRET (or BITQUERY_CLIENT_SECRET_FILE), or set BITQUERY_TOKEN (or BITQUERY_TOKEN_FILE)');
    }
    return { credentialSets: sets, defaultCredentials: 'default', keyPolicies: Object.create(null) as Record<string, KeyPolicy> };
  }
  const gateway = loadGatewayFile(file, defaults);
  for (const set of gateway.credentialSets) {
    if (sets.some((s) => s.name === set.name)) {
      throw new ConfigError(`PROXY_CONFIG defines the credential set "${set.name}" twice (the environment's credentials are named "default")`);
    }
    sets.push(set);
  }
  if (sets.length === 0) {
    throw new ConfigError('no Bitquery credentials: PROXY_CONFIG defines no credential set, and none is set in the environment (BITQUERY_CLIENT_ID/BITQUERY_CLIENT_SECRET or BITQUERY_TOKEN)');
  }
  const names = new Set(sets.map((s) => s.name));
  const defaultCredentials = gateway.defaultCredentials ?? (fromEnv ? 'default' : undefined);
  if (defaultCredentials !== undefined && !names.has(defaultCredentials)) {
    throw new ConfigError(`PROXY_CONFIG defaultCredentials names "${defaultCredentials}", which is not a credential set (${[...names].join(', ')})`);
  }
  for (const [key, policy] of Object.entries(gateway.keys)) {
    if (policy.credentials !== undefined && !names.has(policy.credentials)) {
      throw new ConfigError(`PROXY_CONFIG keys.${key}.credentials names "${policy.credentials}", which is not a credential set (${[...names].join(', ')})`);
    }
  }
  return { credentialSets: sets, defaultCredentials, keyPolicies: gateway.keys };
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

function adminPortFrom(value: string): number | 'off' {
  if (value === 'off') return 'off';
  const port = /^\d{1,5}$/.test(value) ? Number(value) : NaN;
  if (!(port <= 65535)) throw new ConfigError('ADMIN_PORT must be a port number (0 picks a free one) or off');
  return port;
}

/** WS_MAX_STREAMS_PER_KEY; unset: with inbound keys, a quarter of WS_MAX_STREAMS, so that one key leaves room for the others. */
function streamsPerKey(raw: Raw): number {
  const set = raw.WS_MAX_STREAMS_PER_KEY as number | undefined;
  if (set !== undefined) return set;
  return raw.PROXY_API_KEYS || raw.PROXY_API_KEYS_FILE ? Math.ceil((raw.WS_MAX_STREAMS as number) / 4) : 0;
}

/** ALLOWED_HOSTS: `*` for any Host; unset on a non-loopback HOST means any too (keys protect a network gateway). */
function allowedHostsFrom(value: string | undefined, host: string): string[] | '*' {
  if (value === undefined) return isLoopbackHost(host) ? [] : '*';
  const names = value.split(',').map((h) => h.trim().toLowerCase()).filter(Boolean);
  for (const name of names) {
    if (name !== '*' && !/^(?:[a-z0-9_](?:[a-z0-9_.-]*[a-z0-9_])?|\[[0-9a-f:.]+\])$/.test(name)) {
      throw new ConfigError(`ALLOWED_HOSTS entries must be host names without a port, like bitquery-proxy or proxy.example.com, or *; got "${name}"`);
    }
  }
  return names.includes('*') ? '*' : names;
}

/** Keys, their mapping to credential sets, and the refusal to run open on a network. */
function inboundAuth(raw: Raw, host: string, parts: CredentialParts): Pick<Config, 'apiKeys' | 'initialKeys' | 'allowUnauthenticated'> {
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
  if (!keyed && !allowUnauthenticated && !isLoopbackHost(host)) {
    throw new ConfigError(
      `HOST=${host} is reachable from the network and no inbound keys are set: set PROXY_API_KEYS (or PROXY_API_KEYS_FILE), or, to run open on a trusted private network (a docker-compose network, a pod), PROXY_ALLOW_UNAUTHENTICATED=true`,
    );
  }
  if (parts.defaultCredentials === undefined) {
    if (!keyed) throw new ConfigError('without inbound keys every request uses the default credentials: set defaultCredentials in PROXY_CONFIG (or credentials in the environment)');
    const unmapped = initialKeys.find((k) => parts.keyPolicies[k.name]?.credentials === undefined);
    if (unmapped) {
      throw new ConfigError(`the key "${unmapped.name}" maps to no credentials: map it in PROXY_CONFIG keys.${unmapped.name}.credentials, or set defaultCredentials`);
    }
  }
  return { apiKeys, initialKeys, allowUnauthenticated };
}

/** Builds the configuration, or throws one ConfigError that says what to set. */
export function loadConfig(env: Record<string, string | undefined>, options: LoadOptions = {}): Config {
  const dotenvPath = resolve(options.dotenvPath ?? '.env');
  const dotenv = readDotenv(dotenvPath, options.requireDotenv === true);
  const raw = validate([known(dotenv), known(env)]);
  const n = (name: string) => raw[name] as number;
  const parts = credentialSets(raw);
  const config: Config = {
    ...parts,
    ...inboundAuth(raw, raw.HOST as string, parts),
    rateLimitPerMinute: n('RATE_LIMIT_PER_MINUTE'),
    wsMaxStreamsPerKey: streamsPerKey(raw),
    corsOrigins: corsFrom(raw.CORS_ORIGINS as string | undefined),
    allowedHosts: allowedHostsFrom(raw.ALLOWED_HOSTS as string | undefined, raw.HOST as string),
    paths: pathsFrom(raw.PROXY_PATHS as string),
    host: raw.HOST as string,
    port: n('PORT'),
    logLevel: raw.LOG_LEVEL as string,
    logFormat: raw.LOG_FORMAT as Config['logFormat'],
    adminHost: raw.ADMIN_HOST as string,
    adminPort: adminPortFrom(raw.ADMIN_PORT as string),
    usageUrl: secureUrl(raw.BITQUERY_USAGE_URL as string, 'BITQUERY_USAGE_URL'),
    usagePollMs: n('USAGE_POLL_MS'),
    budgetWarnPercent: n('BUDGET_WARN_PERCENT'),
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
    clientTimeoutMs: n('CLIENT_TIMEOUT_MS'),
    warnings: unknownSettings([
      [env, 'the environment'],
      [dotenv, dotenvPath],
    ]),
    wsMaxMessageBytes: n('WS_MAX_MESSAGE_BYTES'),
    wsMaxUpstreamMessageBytes: n('WS_MAX_UPSTREAM_MESSAGE_BYTES'),
    wsMode: raw.WS_MODE as Config['wsMode'],
    wsLingerMs: n('WS_LINGER_MS'),
    wsUpstreamIdleMs: n('WS_UPSTREAM_IDLE_MS'),
    wsReconnectAttempts: n('WS_RECONNECT_ATTEMPTS'),
    wsMaxUpstreamStreams: n('WS_MAX_UPSTREAM_STREAMS'),
    wsInitTimeoutMs: n('WS_INIT_TIMEOUT_MS'),
    savings: {
      coalesce: raw.COALESCE as boolean,
      cacheTtlMs: n('CACHE_TTL_MS'),
      cacheMaxBytes: n('CACHE_MAX_BYTES'),
      cacheMaxEntryBytes: n('CACHE_MAX_ENTRY_BYTES'),
      maxBufferedBytes: n('COALESCE_MAX_BUFFERED_BYTES'),
    },
    redis: redisConfigFrom(raw as unknown as RedisRaw),
  };
  if (config.tokenRetryMaxMs < config.tokenRetryMinMs) {
    throw new ConfigError('TOKEN_RETRY_MAX_MS must not be smaller than TOKEN_RETRY_MIN_MS');
  }
  const savingsProblem = settingsProblem(config.savings);
  if (savingsProblem) throw new ConfigError(savingsProblem);
  if (config.adminPort !== 'off' && config.adminPort !== 0 && config.adminPort === config.port) {
    throw new ConfigError(`ADMIN_PORT and PORT are both ${config.port}: give the admin listener another port, or ADMIN_PORT=off`);
  }
  return config;
}
