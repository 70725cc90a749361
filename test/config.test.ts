import t from 'tap';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig } from '../src/config/index.js';
import { spawnProxy } from './helpers/proxy-process.js';

const dir = mkdtempSync(join(tmpdir(), 'bqp-config-'));
const noDotenv = { dotenvPath: join(dir, 'absent.env') };
const load = (env: Record<string, string>) => loadConfig(env, noDotenv);

t.test('defaults for client-credentials mode', async (t) => {
  const c = load({ BITQUERY_CLIENT_ID: 'id', BITQUERY_CLIENT_SECRET: 's' });
  t.equal(c.credentialSets.length, 1);
  t.equal(c.defaultCredentials, 'default');
  const { credentials, upstream } = c.credentialSets[0]!;
  t.equal(credentials.mode, 'client_credentials');
  if (credentials.mode !== 'client_credentials') return;
  t.equal(credentials.tokenUrl.href, 'https://oauth2.bitquery.io/oauth2/token');
  t.equal(credentials.scope, 'api');
  t.equal(credentials.authMethod, 'post');
  t.equal(upstream.origin, 'https://streaming.bitquery.io');
  t.same(c.apiKeys, { list: undefined, file: undefined });
  t.equal(c.allowUnauthenticated, false);
  t.equal(c.rateLimitPerMinute, 0);
  t.equal(c.corsOrigins, 'loopback');
  t.same(c.paths, ['/graphql', '/eap']);
  t.equal(c.host, '127.0.0.1');
  t.equal(c.port, 8080);
  t.equal(c.logLevel, 'info');
  t.equal(c.bodyLimit, 1048576);
});

t.test('static-token mode and numbers are coerced', async (t) => {
  const c = load({ BITQUERY_TOKEN: 'ory_at_x', PORT: '9000', TOKEN_REFRESH_MARGIN: '0.3', PROXY_PATHS: ' /graphql , /v1 ' });
  t.same(c.credentialSets[0]!.credentials, { mode: 'static', token: { value: 'ory_at_x' } });
  t.equal(c.port, 9000);
  t.equal(c.tokenRefreshMargin, 0.3);
  t.same(c.paths, ['/graphql', '/v1']);
});

t.test('.env is read, the environment wins, empty values count as unset', async (t) => {
  const path = join(dir, 'one.env');
  writeFileSync(path, 'BITQUERY_CLIENT_ID=from-file\nBITQUERY_CLIENT_SECRET=file-secret\nPORT=1234\nBITQUERY_TOKEN=\n');
  const c = loadConfig({ PORT: '4321' }, { dotenvPath: path });
  t.equal(c.port, 4321);
  const { credentials } = c.credentialSets[0]!;
  t.equal(credentials.mode, 'client_credentials');
  if (credentials.mode === 'client_credentials') t.equal(credentials.clientId, 'from-file');
});

t.test('secret files are checked at start-up', async (t) => {
  const secret = join(dir, 'secret');
  writeFileSync(secret, 'shh\n');
  const c = load({ BITQUERY_CLIENT_ID: 'id', BITQUERY_CLIENT_SECRET_FILE: secret });
  const { credentials } = c.credentialSets[0]!;
  if (credentials.mode === 'client_credentials') t.same(credentials.clientSecret, { file: secret });
  t.throws(() => load({ BITQUERY_CLIENT_ID: 'id', BITQUERY_CLIENT_SECRET_FILE: join(dir, 'nope') }), /BITQUERY_CLIENT_SECRET_FILE=.*cannot be read \(ENOENT\)/);
  const empty = join(dir, 'empty');
  writeFileSync(empty, '\n');
  t.throws(() => load({ BITQUERY_TOKEN_FILE: empty }), /BITQUERY_TOKEN_FILE=.* is empty/);
});

const mistakes: [string, Record<string, string>, RegExp][] = [
  ['no credentials', {}, /set BITQUERY_CLIENT_ID and BITQUERY_CLIENT_SECRET .* or set BITQUERY_TOKEN/],
  ['id without secret', { BITQUERY_CLIENT_ID: 'id' }, /BITQUERY_CLIENT_SECRET is missing/],
  ['secret without id', { BITQUERY_CLIENT_SECRET: 's' }, /BITQUERY_CLIENT_ID is missing/],
  ['both modes', { BITQUERY_CLIENT_ID: 'id', BITQUERY_CLIENT_SECRET: 's', BITQUERY_TOKEN: 't' }, /not both/],
  ['secret twice', { BITQUERY_CLIENT_ID: 'id', BITQUERY_CLIENT_SECRET: 's', BITQUERY_CLIENT_SECRET_FILE: '/x' }, /BITQUERY_CLIENT_SECRET or BITQUERY_CLIENT_SECRET_FILE, not both/],
  ['token twice', { BITQUERY_TOKEN: 't', BITQUERY_TOKEN_FILE: '/x' }, /BITQUERY_TOKEN or BITQUERY_TOKEN_FILE, not both/],
  ['bad port', { BITQUERY_TOKEN: 't', PORT: 'eighty' }, /PORT must be integer/],
  ['port out of range', { BITQUERY_TOKEN: 't', PORT: '70000' }, /PORT must be <= 65535/],
  ['bad level', { BITQUERY_TOKEN: 't', LOG_LEVEL: 'verbose' }, /LOG_LEVEL must be equal to one of the allowed values: fatal, error, warn, info, debug, trace, silent$/],
  ['bad auth method', { BITQUERY_CLIENT_ID: 'i', BITQUERY_CLIENT_SECRET: 's', BITQUERY_AUTH_METHOD: 'jwt' }, /BITQUERY_AUTH_METHOD/],
  ['plain http upstream', { BITQUERY_TOKEN: 't', BITQUERY_UPSTREAM: 'http://streaming.bitquery.io' }, /BITQUERY_UPSTREAM must use https/],
  ['upstream with a path', { BITQUERY_TOKEN: 't', BITQUERY_UPSTREAM: 'https://streaming.bitquery.io/graphql' }, /origin without a path/],
  ['upstream not a URL', { BITQUERY_TOKEN: 't', BITQUERY_UPSTREAM: 'streaming.bitquery.io' }, /BITQUERY_UPSTREAM must be an absolute URL/],
  ['plain http token URL', { BITQUERY_CLIENT_ID: 'i', BITQUERY_CLIENT_SECRET: 's', BITQUERY_TOKEN_URL: 'http://oauth2.bitquery.io/oauth2/token' }, /BITQUERY_TOKEN_URL must use https/],
  ['credentials in a URL', { BITQUERY_TOKEN: 't', BITQUERY_UPSTREAM: 'https://u:p@streaming.bitquery.io' }, /must not hold credentials/],
  ['bad paths', { BITQUERY_TOKEN: 't', PROXY_PATHS: 'graphql' }, /PROXY_PATHS must be .* \(bad: "graphql"\)/],
  ['retry bounds', { BITQUERY_TOKEN: 't', TOKEN_RETRY_MIN_MS: '5000', TOKEN_RETRY_MAX_MS: '100' }, /TOKEN_RETRY_MAX_MS must not be smaller/],
  ['admin port not a port', { BITQUERY_TOKEN: 't', ADMIN_PORT: 'none' }, /ADMIN_PORT must be a port number \(0 picks a free one\) or off/],
  ['admin port out of range', { BITQUERY_TOKEN: 't', ADMIN_PORT: '70000' }, /ADMIN_PORT must be a port number/],
  ['admin port is the proxy port', { BITQUERY_TOKEN: 't', PORT: '9000', ADMIN_PORT: '9000' }, /ADMIN_PORT and PORT are both 9000/],
  ['plain http usage URL', { BITQUERY_TOKEN: 't', BITQUERY_USAGE_URL: 'http://account.bitquery.io/api/usage' }, /BITQUERY_USAGE_URL must use https/],
  ['bad log format', { BITQUERY_TOKEN: 't', LOG_FORMAT: 'xml' }, /LOG_FORMAT must be equal to one of the allowed values/],
  ['budget warning over 100', { BITQUERY_TOKEN: 't', BUDGET_WARN_PERCENT: '101' }, /BUDGET_WARN_PERCENT must be <= 100/],
  ['margin out of range', { BITQUERY_TOKEN: 't', TOKEN_REFRESH_MARGIN: '1.5' }, /TOKEN_REFRESH_MARGIN must be <= 0.5/],
];

for (const [name, env, message] of mistakes) {
  t.test(`mistake: ${name}`, async (t) => {
    t.throws(() => load(env), { name: 'ConfigError', message });
  });
}

t.test('admin and usage settings', async (t) => {
  const d = load({ BITQUERY_TOKEN: 't' });
  t.same([d.adminHost, d.adminPort, d.usageUrl.href, d.usagePollMs, d.budgetWarnPercent, d.logFormat], ['127.0.0.1', 9464, 'https://account.bitquery.io/api/usage', 300000, 80, undefined]);
  t.equal(load({ BITQUERY_TOKEN: 't', ADMIN_PORT: 'off' }).adminPort, 'off');
  t.equal(load({ BITQUERY_TOKEN: 't', ADMIN_PORT: '0', PORT: '0' }).adminPort, 0);
  t.equal(load({ BITQUERY_TOKEN: 't', LOG_FORMAT: 'json' }).logFormat, 'json');
});

t.test('loopback http is allowed for tests and the demo', async (t) => {
  const c = load({ BITQUERY_CLIENT_ID: 'i', BITQUERY_CLIENT_SECRET: 's', BITQUERY_TOKEN_URL: 'http://127.0.0.1:9/t', BITQUERY_UPSTREAM: 'http://localhost:9' });
  t.equal(c.credentialSets[0]!.upstream.origin, 'http://localhost:9');
});

t.test('the binary exits non-zero at once with one clear line, and never echoes the secret', async (t) => {
  const proxy = await spawnProxy({ BITQUERY_CLIENT_SECRET: 'very-secret-value' }, { noWait: true });
  const { code } = await proxy.exited;
  t.equal(code, 2);
  t.equal(proxy.output().trim().split('\n').length, 1, 'one line');
  t.match(proxy.output(), /^bitquery-proxy: BITQUERY_CLIENT_ID is missing/);
  t.notMatch(proxy.output(), /very-secret-value/);
});


t.test('gateway: a network-facing HOST needs keys or an explicit opt-out', async (t) => {
  const creds = { BITQUERY_TOKEN: 't' };
  t.throws(() => load({ ...creds, HOST: '0.0.0.0' }), {
    name: 'ConfigError',
    message:
      'HOST=0.0.0.0 is reachable from the network and no inbound keys are set: set PROXY_API_KEYS (or PROXY_API_KEYS_FILE), or, to run open on a trusted private network (a docker-compose network, a pod), PROXY_ALLOW_UNAUTHENTICATED=true',
  });
  t.ok(load({ ...creds, HOST: '0.0.0.0', PROXY_ALLOW_UNAUTHENTICATED: 'true' }).allowUnauthenticated);
  t.equal(load({ ...creds, HOST: '0.0.0.0', PROXY_API_KEYS: 'alice:0123456789abcdef' }).initialKeys[0]!.name, 'alice');
  for (const host of ['127.0.0.1', '127.0.0.2', 'localhost', '::1', '[::1]']) t.ok(load({ ...creds, HOST: host }), host);
});

t.test('gateway: key mistakes name the entry, never the key', async (t) => {
  t.throws(() => load({ BITQUERY_TOKEN: 't', PROXY_API_KEYS: 'alice:short-key' }), { message: /^PROXY_API_KEYS entry 1: a key must be at least 16 characters/ });
  t.throws(() => load({ BITQUERY_TOKEN: 't', PROXY_API_KEYS_FILE: join(dir, 'no-keys') }), { message: /PROXY_API_KEYS_FILE=.*no-keys cannot be read \(ENOENT\)/ });
  t.throws(() => load({ BITQUERY_TOKEN: 't', CORS_ORIGINS: 'localhost:3000' }), { message: /CORS_ORIGINS entries must be origins/ });
  t.same(load({ BITQUERY_TOKEN: 't', CORS_ORIGINS: 'http://localhost:3000, https://app.example.com' }).corsOrigins, ['http://localhost:3000', 'https://app.example.com']);
});

t.test('ALLOWED_HOSTS: names without a port, or *; unset means any Host only on a non-loopback HOST', async (t) => {
  t.same(load({ BITQUERY_TOKEN: 't' }).allowedHosts, []);
  t.same(load({ BITQUERY_TOKEN: 't', ALLOWED_HOSTS: 'Bitquery-Proxy, proxy.example.com,[fd00::1]' }).allowedHosts, ['bitquery-proxy', 'proxy.example.com', '[fd00::1]']);
  t.equal(load({ BITQUERY_TOKEN: 't', ALLOWED_HOSTS: 'a,*' }).allowedHosts, '*');
  t.equal(load({ BITQUERY_TOKEN: 't', HOST: '0.0.0.0', PROXY_ALLOW_UNAUTHENTICATED: 'true' }).allowedHosts, '*');
  t.same(load({ BITQUERY_TOKEN: 't', HOST: '0.0.0.0', PROXY_ALLOW_UNAUTHENTICATED: 'true', ALLOWED_HOSTS: 'gw' }).allowedHosts, ['gw']);
  t.throws(() => load({ BITQUERY_TOKEN: 't', ALLOWED_HOSTS: 'proxy:8080' }), { message: /^ALLOWED_HOSTS entries must be host names without a port.*got "proxy:8080"/ });
});

function tenantFile(content: unknown): string {
  const path = join(dir, `tenants-${Math.random().toString(36).slice(2)}.json`);
  writeFileSync(path, typeof content === 'string' ? content : JSON.stringify(content));
  return path;
}

t.test('gateway: PROXY_CONFIG defines credential sets and maps keys to them', async (t) => {
  const file = tenantFile({
    credentials: {
      'team-a': { clientId: 'a', clientSecret: 'sa', upstream: 'https://us.streaming.bitquery.io' },
      'team-b': { tokenFile: join(dir, 'secret') },
    },
    keys: { alice: { credentials: 'team-a', rateLimitPerMinute: 30 }, bob: { credentials: 'team-b', maxStreams: 2 } },
  });
  const c = load({ PROXY_CONFIG: file, PROXY_API_KEYS: 'alice:0123456789abcdef,bob:fedcba9876543210' });
  t.same(c.credentialSets.map((s) => s.name), ['team-a', 'team-b']);
  t.equal(c.defaultCredentials, undefined);
  t.equal(c.credentialSets[0]!.upstream.origin, 'https://us.streaming.bitquery.io');
  t.equal(c.credentialSets[1]!.upstream.origin, 'https://streaming.bitquery.io', 'the environment default');
  const a = c.credentialSets[0]!.credentials;
  if (a.mode === 'client_credentials') t.equal(a.tokenUrl.href, 'https://oauth2.bitquery.io/oauth2/token');
  t.same(c.keyPolicies.alice, { credentials: 'team-a', rateLimitPerMinute: 30, maxStreams: undefined });

  const withEnv = load({ PROXY_CONFIG: file, BITQUERY_TOKEN: 't', PROXY_API_KEYS: 'carol:0123456789abcdef' });
  t.same(withEnv.credentialSets.map((s) => s.name), ['default', 'team-a', 'team-b'], 'the environment credentials are the set "default"');
  t.equal(withEnv.defaultCredentials, 'default');
});

const tenantMistakes: [string, unknown, Record<string, string>, RegExp][] = [
  ['not JSON', '{', {}, /PROXY_CONFIG=.* is not valid JSON/],
  ['unknown field', { credentials: { a: { clientId: 'a', clientSecret: 's', colour: 'red' } } }, {}, /credentials\.a has an unknown field "colour"/],
  ['two modes', { credentials: { a: { clientId: 'a', clientSecret: 's', token: 't' } } }, {}, /credentials\.a needs exactly one of/],
  ['id without secret', { credentials: { a: { clientId: 'a' } } }, {}, /credentials\.a needs clientId and one of clientSecret or clientSecretFile/],
  ['plain http', { credentials: { a: { token: 't', upstream: 'http://example.com' } } }, {}, /credentials\.a\.upstream must use https/],
  ['unknown set', { credentials: { a: { token: 't' } }, keys: { k: { credentials: 'b' } } }, {}, /keys\.k\.credentials names "b", which is not a credential set \(a\)/],
  ['unknown default', { credentials: { a: { token: 't' } }, defaultCredentials: 'b' }, {}, /defaultCredentials names "b"/],
  ['same name', { credentials: { default: { token: 't' } } }, { BITQUERY_TOKEN: 'x' }, /defines the credential set "default" twice/],
  ['no sets', { credentials: {} }, {}, /PROXY_CONFIG defines no credential set/],
  ['no default without keys', { credentials: { a: { token: 't' } } }, {}, /without inbound keys every request uses the default credentials/],
  ['unmapped key', { credentials: { a: { token: 't' } } }, { PROXY_API_KEYS: 'zed:0123456789abcdef' }, /the key "zed" maps to no credentials/],
  ['bad limit', { credentials: { a: { token: 't' } }, defaultCredentials: 'a', keys: { k: { rateLimitPerMinute: -1 } } }, {}, /keys\.k\.rateLimitPerMinute must be a whole number/],
  ['bad cache TTL', { credentials: { a: { token: 't' } }, defaultCredentials: 'a', keys: { k: { cacheTtlMs: 1.5 } } }, {}, /keys\.k\.cacheTtlMs must be a whole number >= 0/],
];

for (const [name, content, env, message] of tenantMistakes) {
  t.test(`PROXY_CONFIG mistake: ${name}`, async (t) => {
    t.throws(() => load({ PROXY_CONFIG: tenantFile(content), ...env }), { name: 'ConfigError', message });
  });
}

t.test('unknown setting-like names are warnings, each naming the closest setting; other names are not', async (t) => {
  const dotenvPath = join(dir, 'typo.env');
  writeFileSync(dotenvPath, 'REDIS_URLL=redis://x\n');
  const c = loadConfig({ BITQUERY_TOKEN: 't', UPSTREAM_TIMEOUT: '5', PROXY_PATH: '/x', HOME: '/root', NODE_ENV: 'production' }, { dotenvPath });
  t.equal(c.warnings.length, 3);
  t.equal(c.warnings[0], 'UPSTREAM_TIMEOUT (in the environment) is not a setting and is ignored: did you mean UPSTREAM_TIMEOUT_MS? (see --help)');
  t.equal(c.warnings[1], 'PROXY_PATH (in the environment) is not a setting and is ignored: did you mean PROXY_PATHS? (see --help)');
  t.match(c.warnings[2], /^REDIS_URLL \(in .*typo\.env\) is not a setting and is ignored: did you mean [A-Z_]+\? \(see --help\)$/);
  t.same(load({ BITQUERY_TOKEN: 't' }).warnings, []);
});

t.test('query savings: defaults, per-key cacheTtlMs, and settings that do not fit exit 2 with one line', async (t) => {
  t.same(load({ BITQUERY_TOKEN: 't' }).savings, { coalesce: true, cacheTtlMs: 0, cacheMaxBytes: 67108864, cacheMaxEntryBytes: 1048576, maxBufferedBytes: 4194304 });
  const c = load({ BITQUERY_TOKEN: 't', COALESCE: 'false', CACHE_TTL_MS: '2000', CACHE_MAX_BYTES: '4096', CACHE_MAX_ENTRY_BYTES: '2048', COALESCE_MAX_BUFFERED_BYTES: '65536' });
  t.same(c.savings, { coalesce: false, cacheTtlMs: 2000, cacheMaxBytes: 4096, cacheMaxEntryBytes: 2048, maxBufferedBytes: 65536 });
  const file = tenantFile({ credentials: { a: { token: 't' } }, defaultCredentials: 'a', keys: { bot: { cacheTtlMs: 0 }, board: { cacheTtlMs: 30000 } } });
  const keyed = load({ PROXY_CONFIG: file, PROXY_API_KEYS: 'bot:0123456789abcdef,board:fedcba9876543210' });
  t.equal(keyed.keyPolicies.bot!.cacheTtlMs, 0);
  t.equal(keyed.keyPolicies.board!.cacheTtlMs, 30000);
  t.throws(() => load({ BITQUERY_TOKEN: 't', CACHE_MAX_BYTES: '4096', CACHE_MAX_ENTRY_BYTES: '8192', COALESCE_MAX_BUFFERED_BYTES: '65536' }), {
    name: 'ConfigError',
    message: 'CACHE_MAX_ENTRY_BYTES (8192) must not be above CACHE_MAX_BYTES (4096)',
  });
  const proxy = await spawnProxy({ BITQUERY_TOKEN: 'static-token-value-1', COALESCE_MAX_BUFFERED_BYTES: '1048576' }, { noWait: true });
  t.equal((await proxy.exited).code, 2);
  t.equal(proxy.output().trim(), 'bitquery-proxy: COALESCE_MAX_BUFFERED_BYTES (1048576) must be at least twice CACHE_MAX_ENTRY_BYTES (1048576)');
});
