// The Redis settings (REDIS_*) turned into one checked object. Kept apart from the connection so
// config.ts can validate them at start-up (exit 2 with one line) without opening a socket. The
// URL may hold a password: no message here ever repeats the URL or the password.
import { readSecretFile } from '../config/credentials.js';
import { ConfigError } from '../config/errors.js';

export type RedisFailureMode = 'open' | 'closed';

export interface RedisConfig {
  host: string;
  port: number;
  tls: boolean;
  db: number;
  username?: string;
  /** From the URL, or a file read at start-up and again before every reconnect. */
  password?: { value: string } | { file: string };
  /** Prepended to every Redis key, so several gateways can share one Redis. */
  prefix: string;
  /** Deadline of every Redis call, in ms. */
  timeoutMs: number;
  /** What limits do while Redis is unavailable: fall back to this replica's memory, or refuse. */
  failure: RedisFailureMode;
  /** How long a stream slot outlives its replica; holders refresh it every third of that. */
  streamLeaseMs: number;
  /** Where Redis is, for logs: scheme, host, port and db, never credentials. */
  display: string;
}

/** The REDIS_* values as env-schema leaves them (types, enums and minimums already checked). */
export interface RedisRaw {
  REDIS_URL?: string;
  REDIS_PASSWORD_FILE?: string;
  REDIS_PREFIX: string;
  REDIS_TIMEOUT_MS: number;
  REDIS_FAILURE: RedisFailureMode;
  REDIS_STREAM_LEASE_MS: number;
}

const PREFIX = /^[!-~]{1,100}$/;

/** The Redis configuration, or undefined when REDIS_URL is unset (everything stays in memory). */
export function redisConfigFrom(raw: RedisRaw): RedisConfig | undefined {
  if (raw.REDIS_URL === undefined) {
    if (raw.REDIS_PASSWORD_FILE !== undefined) throw new ConfigError('REDIS_PASSWORD_FILE is set but REDIS_URL is not: set REDIS_URL (redis://host:6379) or remove REDIS_PASSWORD_FILE');
    return undefined;
  }
  let url: URL;
  try {
    url = new URL(raw.REDIS_URL);
  } catch {
    throw new ConfigError('REDIS_URL must be a URL like redis://redis:6379 or rediss://redis:6380/0 (its value is not repeated here: it may hold a password)');
  }
  if (url.protocol !== 'redis:' && url.protocol !== 'rediss:') {
    throw new ConfigError(`REDIS_URL must start with redis:// or rediss:// (TLS), not ${url.protocol}//`);
  }
  if (!url.hostname) throw new ConfigError('REDIS_URL names no host: use redis://host:6379');
  if (url.search || url.hash) throw new ConfigError('REDIS_URL takes no query string or fragment: only redis[s]://[user:password@]host[:port][/db]');
  const dbText = url.pathname.replace(/^\//, '');
  if (dbText !== '' && !/^\d{1,5}$/.test(dbText)) throw new ConfigError('REDIS_URL path must be a database number, like redis://redis:6379/0');
  const urlPassword = url.password ? decodeURIComponent(url.password) : undefined;
  if (urlPassword !== undefined && raw.REDIS_PASSWORD_FILE !== undefined) {
    throw new ConfigError('REDIS_URL holds a password and REDIS_PASSWORD_FILE is set: use one of them');
  }
  if (raw.REDIS_PASSWORD_FILE !== undefined) readSecretFile(raw.REDIS_PASSWORD_FILE, 'REDIS_PASSWORD_FILE');
  if (!PREFIX.test(raw.REDIS_PREFIX)) {
    throw new ConfigError('REDIS_PREFIX must be 1 to 100 printable ASCII characters without spaces, like bitquery-proxy:');
  }
  const tls = url.protocol === 'rediss:';
  const port = url.port ? Number(url.port) : 6379;
  const db = dbText === '' ? 0 : Number(dbText);
  const host = url.hostname.replace(/^\[|\]$/g, '');
  return {
    host,
    port,
    tls,
    db,
    ...(url.username && { username: decodeURIComponent(url.username) }),
    ...(urlPassword !== undefined ? { password: { value: urlPassword } } : raw.REDIS_PASSWORD_FILE !== undefined && { password: { file: raw.REDIS_PASSWORD_FILE } }),
    prefix: raw.REDIS_PREFIX,
    timeoutMs: raw.REDIS_TIMEOUT_MS,
    failure: raw.REDIS_FAILURE,
    streamLeaseMs: raw.REDIS_STREAM_LEASE_MS,
    display: `${url.protocol}//${url.host}/${db}`,
  };
}
