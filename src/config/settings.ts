// Every setting, declared once: the env-schema schema, the `--help` text, the README and
// config/example.env checks all come from SETTINGS, so they cannot drift apart. Config is the
// typed result of loading them (index.ts).
import type { KeySources } from '../auth/key-store.js';
import type { ApiKey } from '../auth/keys.js';
import type { CredentialSetConfig } from './credentials.js';
import type { SavingsSettings } from '../savings/saver.js';
import type { RedisConfig } from '../shared-state/settings.js';
import type { KeyPolicy } from './gateway-file.js';

export interface Setting {
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
  { name: 'WS_MAX_STREAMS_PER_KEY', type: 'integer', minimum: 0, help: 'concurrent WebSocket streams per key; unset: a quarter of WS_MAX_STREAMS when inbound keys are set; 0 = only WS_MAX_STREAMS applies' },
  { name: 'CORS_ORIGINS', type: 'string', help: 'browser origins allowed, comma-separated, or * for any; unset: http(s)://localhost, 127.0.0.1 and [::1] on any port' },
  { name: 'HOST', type: 'string', default: '127.0.0.1', help: 'listen address' },
  { name: 'PORT', type: 'integer', default: 8080, minimum: 0, maximum: 65535, help: 'listen port (0 picks a free one)' },
  { name: 'ALLOWED_HOSTS', type: 'string', help: 'Host header names answered besides localhost, 127.0.0.1 and [::1] (any port), comma-separated, or * for any; unset on a non-loopback HOST: any' },
  { name: 'LOG_LEVEL', type: 'string', default: 'info', enum: ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'], help: 'pino log level' },
  { name: 'LOG_FORMAT', type: 'string', enum: ['pretty', 'json'], help: 'log lines for people (pretty) or machines (json); unset: pretty when stdout is a terminal, else json' },
  { name: 'ADMIN_HOST', type: 'string', default: '127.0.0.1', help: 'admin listener address (metrics, probes, status page)' },
  { name: 'ADMIN_PORT', type: 'string', default: '9464', help: 'admin listener port (0 picks a free one; off turns the listener off)' },
  { name: 'BITQUERY_USAGE_URL', type: 'string', default: 'https://account.bitquery.io/api/usage', help: "Bitquery's Usage API, polled with each credential set's token" },
  { name: 'USAGE_POLL_MS', type: 'integer', default: 300000, minimum: 0, maximum: 86400000, help: 'period of Usage API polls; 0 turns polling off' },
  { name: 'BUDGET_WARN_PERCENT', type: 'integer', default: 80, minimum: 1, maximum: 100, help: 'warn once a billing period when this share of the points is used (then at 95 and 100)' },
  { name: 'REDIS_URL', type: 'string', secret: true, help: 'redis:// or rediss:// (TLS) URL of a Redis shared by the replicas, [user:password@]host[:port][/db]; unset: limits and usage stay in each process' },
  { name: 'REDIS_PASSWORD_FILE', type: 'string', help: 'file holding the Redis password (instead of one in REDIS_URL), re-read before every reconnection' },
  { name: 'REDIS_PREFIX', type: 'string', default: 'bitquery-proxy:', help: 'prefix of every Redis key, so several gateways can share one Redis' },
  { name: 'REDIS_TIMEOUT_MS', type: 'integer', default: 250, minimum: 1, help: 'deadline of every Redis call; past it the call counts as failed' },
  { name: 'REDIS_FAILURE', type: 'string', default: 'open', enum: ['open', 'closed'], help: "Redis down or slow: open = limits count in each replica's memory; closed = limited requests and streams get 503" },
  { name: 'REDIS_STREAM_LEASE_MS', type: 'integer', default: 30000, minimum: 1000, help: 'how soon the stream slots of a replica that died are free again (holders refresh every third of it)' },
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
  { name: 'CLIENT_TIMEOUT_MS', type: 'integer', default: 30000, minimum: 1, help: 'most a client may take between bytes of its request (then 408), or to read on an answer it stopped reading (then cut)' },
  { name: 'WS_MAX_MESSAGE_BYTES', type: 'integer', default: 1048576, minimum: 1024, help: 'largest WebSocket message from a client, fragments of an unfinished one counted; larger: closed with 1009' },
  { name: 'WS_MAX_UPSTREAM_MESSAGE_BYTES', type: 'integer', default: 16777216, minimum: 1024, help: 'largest WebSocket message from the upstream, fragments counted; larger: the stream is closed with 1009' },
  { name: 'WS_MODE', type: 'string', default: 'share', enum: ['share', 'relay'], help: 'share: one upstream stream per distinct subscription for graphql-ws/graphql-transport-ws clients; relay: every socket relayed 1:1' },
  { name: 'WS_LINGER_MS', type: 'integer', default: 2000, minimum: 0, maximum: 600000, help: 'share mode: an upstream stream stays open this long after its last subscriber left (a rejoin reuses it); 0 = closed at once' },
  { name: 'WS_UPSTREAM_IDLE_MS', type: 'integer', default: 15000, minimum: 100, help: 'share mode: an upstream stream that sends no message at all for this long is reconnected' },
  { name: 'WS_RECONNECT_ATTEMPTS', type: 'integer', default: 5, minimum: 0, maximum: 100, help: "share mode: failed reconnects in a row before a stream's subscribers get an error" },
  { name: 'WS_MAX_UPSTREAM_STREAMS', type: 'integer', default: 0, minimum: 0, help: "share mode: upstream streams per credential set; 0 = the plan's subscription_limit when known, else WS_MAX_STREAMS" },
  { name: 'WS_INIT_TIMEOUT_MS', type: 'integer', default: 3000, minimum: 100, maximum: 600000, help: 'share mode: connection_init must arrive within this (else 4408, or 4403 while the key is owed)' },
  // Query savings (src/savings/)
  { name: 'COALESCE', type: 'boolean', default: true, help: 'send identical queries in flight at the same time upstream once, and give every waiting client the answer' },
  { name: 'CACHE_TTL_MS', type: 'integer', default: 0, minimum: 0, help: 'keep 200 answers without errors this long and answer repeats from memory; 0 = no cache (a key can still set its own cacheTtlMs)' },
  { name: 'CACHE_MAX_BYTES', type: 'integer', default: 67108864, minimum: 1024, help: 'memory the response cache may use (bodies, headers, keys); answers in flight held for joiners take at most as much again' },
  { name: 'CACHE_MAX_ENTRY_BYTES', type: 'integer', default: 1048576, minimum: 1024, help: 'larger answers are never cached, and stop taking late joiners once past it' },
  { name: 'COALESCE_MAX_BUFFERED_BYTES', type: 'integer', default: 4194304, minimum: 65536, help: 'bytes one client of a shared answer may fall behind the fastest before it is cut (at least twice CACHE_MAX_ENTRY_BYTES)' },
];

export interface Config {
  /** Credential sets: `default` from the environment, plus those of PROXY_CONFIG. Never empty. */
  credentialSets: CredentialSetConfig[];
  /** The credential set used by requests whose key maps to none (and by all requests without keys). */
  defaultCredentials?: string;
  apiKeys: KeySources;
  /** The keys read at start-up (the store re-reads the file later). */
  initialKeys: ApiKey[];
  keyPolicies: Record<string, KeyPolicy>;
  allowUnauthenticated: boolean;
  rateLimitPerMinute: number;
  wsMaxStreamsPerKey: number;
  /** Allowed browser origins: exact origins, `*` for any, or the loopback rule when unset. */
  corsOrigins: string[] | 'loopback';
  /** Host header names answered (lower case, no port) besides the loopback names, or `*` for any. */
  allowedHosts: string[] | '*';
  paths: string[];
  host: string;
  port: number;
  logLevel: string;
  /** LOG_FORMAT; undefined: pretty on a terminal, else JSON. */
  logFormat?: 'pretty' | 'json';
  adminHost: string;
  /** 0 picks a free port; 'off': no admin listener. */
  adminPort: number | 'off';
  usageUrl: URL;
  usagePollMs: number;
  budgetWarnPercent: number;
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
  clientTimeoutMs: number;
  wsMaxMessageBytes: number;
  wsMaxUpstreamMessageBytes: number;
  wsMode: 'share' | 'relay';
  wsLingerMs: number;
  wsUpstreamIdleMs: number;
  wsReconnectAttempts: number;
  /** 0: the plan's subscription_limit when known, else wsMaxStreams. */
  wsMaxUpstreamStreams: number;
  wsInitTimeoutMs: number;
  /** COALESCE, CACHE_TTL_MS, CACHE_MAX_BYTES, CACHE_MAX_ENTRY_BYTES, COALESCE_MAX_BUFFERED_BYTES. */
  savings: SavingsSettings;
  /** REDIS_*: the Redis shared by the replicas, or undefined (everything in this process). */
  redis?: RedisConfig;
  /** One line per name that looks like a setting but is none, for the start-up log. */
  warnings: string[];
}
