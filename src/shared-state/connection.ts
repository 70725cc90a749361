// One ioredis connection shared by the limits, the cache tier and the usage counters, with a
// deadline on every call and an up/down state. Redis trouble must never stop proxying: while
// Redis is down no call is even sent (each answers UNAVAILABLE at once), a call that gets no
// answer within REDIS_TIMEOUT_MS answers UNAVAILABLE at the deadline, and the client reconnects
// by itself. One warning per outage, one info line when Redis is back; never the password.
import { readFileSync } from 'node:fs';
import { Redis } from 'ioredis';
import type { Logger } from 'pino';
import type { RedisConfig } from './settings.js';

/** What run() answers when Redis did not: down, too slow, or refusing the call. */
export const UNAVAILABLE: unique symbol = Symbol('redis unavailable');
export type Unavailable = typeof UNAVAILABLE;

/** Longest pause between reconnection attempts (they start at 100 ms and double). */
const RECONNECT_MAX_MS = 1000;
/**
 * A connection attempt gets this long at least. Requests never wait on it (calls are refused at
 * once while disconnected), so it may exceed REDIS_TIMEOUT_MS, which would cut TLS set-ups short.
 */
const MIN_CONNECT_TIMEOUT_MS = 1000;
/** While marked down on a connection that stays open (a hung Redis), a PING this often looks for it. */
const PROBE_INTERVAL_MS = 1000;
/** Errors Redis answers (not outages) are logged at most this often. */
const REPLY_ERROR_LOG_MS = 60_000;

export interface RedisLink {
  readonly config: RedisConfig;
  /** REDIS_PREFIX + the parts joined by ':'. Parts are names and digests, never secrets. */
  key(...parts: string[]): string;
  /** True while Redis answers: the value of bitquery_proxy_redis_up. */
  up(): boolean;
  /**
   * Calls that failed (refused while Redis was down, past the deadline, or answered with an error):
   * the value of bitquery_proxy_redis_errors_total. Each one fell back to memory or was skipped.
   */
  errors(): number;
  /** Registers a Lua script as a client command of one key (sent as EVALSHA, as EVAL when Redis lost it). */
  define(name: string, lua: string): void;
  /** Runs one operation within REDIS_TIMEOUT_MS. Never throws: UNAVAILABLE when Redis did not answer. */
  run<T>(op: (client: Redis) => Promise<T>): Promise<T | Unavailable>;
  /** Resolves true once Redis is up (at once if it is), false after `ms`. */
  waitUntilUp(ms: number): Promise<boolean>;
  /** Called on every up/down transition. Returns the unsubscribe function. */
  onChange(listener: (up: boolean) => void): () => void;
  /** Disconnects; later calls answer UNAVAILABLE. */
  close(): void;
}

function passwordOf(config: RedisConfig): string | undefined {
  if (!config.password) return undefined;
  return 'value' in config.password ? config.password.value : readFileSync(config.password.file, 'utf8').trim();
}

export function connectRedis(config: RedisConfig, logger: Logger): RedisLink {
  const log = logger.child({ component: 'redis' });
  let password = passwordOf(config);
  /** Error texts may quote what was sent; the password never reaches a log line. */
  const scrub = (text: string) => (password ? text.split(password).join('[REDACTED]') : text);
  const failing = config.failure === 'open' ? "limits count in this replica's memory" : 'limited requests are answered 503';

  const client = new Redis({
    host: config.host,
    port: config.port,
    db: config.db,
    username: config.username,
    password,
    ...(config.tls && { tls: {} }),
    connectionName: 'bitquery-proxy',
    connectTimeout: Math.max(config.timeoutMs, MIN_CONNECT_TIMEOUT_MS),
    commandTimeout: config.timeoutMs,
    // Fail fast while disconnected: nothing queues for later, nothing in flight is resent.
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    autoResendUnfulfilledCommands: false,
    retryStrategy: (times) => Math.min(50 * 2 ** times, RECONNECT_MAX_MS),
  });

  let state: 'connecting' | 'up' | 'down' = 'connecting';
  let closed = false;
  let failures = 0;
  let lastError = '';
  let replyErrorLoggedAt = -Infinity;
  let probe: NodeJS.Timeout | undefined;
  const listeners = new Set<(up: boolean) => void>();

  const markUp = () => {
    if (state === 'up' || closed) return;
    if (state === 'down') log.info({ redis: config.display }, 'Redis is back: limits, cache and usage are shared again');
    else log.info({ redis: config.display }, 'Redis connected: limits, cache and usage are shared');
    state = 'up';
    lastError = '';
    clearInterval(probe);
    probe = undefined;
    for (const l of listeners) l(true);
  };

  const markDown = (reason: string) => {
    if (state === 'down' || closed) return;
    const first = state === 'connecting';
    state = 'down';
    log.warn(
      { redis: config.display, reason: scrub(reason) },
      `${first ? 'Redis unreachable' : 'Redis unavailable'}: ${failing} and the shared cache is skipped until it answers again`,
    );
    // A connection that stays open while Redis is hung never emits 'ready' again: look for it.
    probe = setInterval(() => {
      if (client.status === 'ready') void attempt((c) => c.ping()).then((r) => 'value' in r && markUp());
    }, PROBE_INTERVAL_MS);
    probe.unref();
    for (const l of listeners) l(false);
  };

  client.on('ready', markUp);
  client.on('error', (err: Error) => {
    lastError = err.message;
    if (state === 'connecting') markDown(err.message);
  });
  client.on('close', () => markDown(lastError || 'connection closed'));
  client.on('reconnecting', () => {
    if (config.password && 'file' in config.password) {
      try {
        password = passwordOf(config);
        client.options.password = password;
      } catch (err) {
        lastError = `REDIS_PASSWORD_FILE cannot be read (${(err as NodeJS.ErrnoException).code ?? 'error'})`;
      }
    }
  });

  const failed = (err: Error) => {
    failures += 1;
    if (err.name === 'ReplyError') {
      // Redis answered, so it is up; the call alone failed (out of memory, a read-only replica, …).
      const now = performance.now();
      if (now - replyErrorLoggedAt >= REPLY_ERROR_LOG_MS) {
        replyErrorLoggedAt = now;
        log.warn({ redis: config.display, reason: scrub(err.message) }, 'Redis refused a call: it fell back to memory or was skipped');
      }
      return;
    }
    markDown(err.message);
  };

  /** The operation's result, or the error that stands for it (the deadline's own, past it). */
  async function attempt<T>(op: (c: Redis) => Promise<T>): Promise<{ value: T } | { error: Error }> {
    let timer: NodeJS.Timeout | undefined;
    const call = op(client);
    // Past the deadline the call may still settle: its outcome is dropped, not left unhandled.
    call.catch(() => undefined);
    const deadline = new Promise<{ error: Error }>((resolve) => {
      timer = setTimeout(() => resolve({ error: new Error(`no answer within REDIS_TIMEOUT_MS (${config.timeoutMs} ms)`) }), config.timeoutMs);
    });
    try {
      return await Promise.race([call.then((value) => ({ value })), deadline]);
    } catch (err) {
      return { error: err as Error };
    } finally {
      clearTimeout(timer);
    }
  }

  async function run<T>(op: (c: Redis) => Promise<T>): Promise<T | Unavailable> {
    if (state !== 'up' || closed) {
      failures += 1;
      return UNAVAILABLE;
    }
    const outcome = await attempt(op);
    if ('value' in outcome) return outcome.value;
    failed(outcome.error);
    return UNAVAILABLE;
  }

  return {
    config,
    key: (...parts) => config.prefix + parts.join(':'),
    up: () => state === 'up' && !closed,
    errors: () => failures,
    define: (name, lua) => client.defineCommand(name, { numberOfKeys: 1, lua }),
    run,
    waitUntilUp(ms) {
      if (state === 'up') return Promise.resolve(true);
      return new Promise((resolve) => {
        const timer = setTimeout(() => {
          listeners.delete(onUp);
          resolve(false);
        }, ms);
        const onUp = (up: boolean) => {
          if (!up) return;
          clearTimeout(timer);
          listeners.delete(onUp);
          resolve(true);
        };
        listeners.add(onUp);
      });
    },
    onChange(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    close() {
      closed = true;
      clearInterval(probe);
      listeners.clear();
      client.disconnect();
    },
  };
}
