import t from 'tap';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig } from '../src/config.js';
import { spawnProxy } from './helpers/proxy-process.js';

const dir = mkdtempSync(join(tmpdir(), 'bqp-config-'));
const noDotenv = { dotenvPath: join(dir, 'absent.env') };
const load = (env: Record<string, string>) => loadConfig(env, noDotenv);

t.test('defaults for client-credentials mode', async (t) => {
  const c = load({ BITQUERY_CLIENT_ID: 'id', BITQUERY_CLIENT_SECRET: 's' });
  t.equal(c.credentials.mode, 'client_credentials');
  if (c.credentials.mode !== 'client_credentials') return;
  t.equal(c.credentials.tokenUrl.href, 'https://oauth2.bitquery.io/oauth2/token');
  t.equal(c.credentials.scope, 'api');
  t.equal(c.credentials.authMethod, 'post');
  t.equal(c.upstream.origin, 'https://streaming.bitquery.io');
  t.same(c.paths, ['/graphql', '/eap']);
  t.equal(c.host, '127.0.0.1');
  t.equal(c.port, 8080);
  t.equal(c.logLevel, 'info');
  t.equal(c.bodyLimit, 1048576);
});

t.test('static-token mode and numbers are coerced', async (t) => {
  const c = load({ BITQUERY_TOKEN: 'ory_at_x', PORT: '9000', TOKEN_REFRESH_MARGIN: '0.3', PROXY_PATHS: ' /graphql , /v1 ' });
  t.same(c.credentials, { mode: 'static', token: { value: 'ory_at_x' } });
  t.equal(c.port, 9000);
  t.equal(c.tokenRefreshMargin, 0.3);
  t.same(c.paths, ['/graphql', '/v1']);
});

t.test('.env is read, the environment wins, empty values count as unset', async (t) => {
  const path = join(dir, 'one.env');
  writeFileSync(path, 'BITQUERY_CLIENT_ID=from-file\nBITQUERY_CLIENT_SECRET=file-secret\nPORT=1234\nBITQUERY_TOKEN=\n');
  const c = loadConfig({ PORT: '4321' }, { dotenvPath: path });
  t.equal(c.port, 4321);
  t.equal(c.credentials.mode, 'client_credentials');
  if (c.credentials.mode === 'client_credentials') t.equal(c.credentials.clientId, 'from-file');
});

t.test('secret files are checked at start-up', async (t) => {
  const secret = join(dir, 'secret');
  writeFileSync(secret, 'shh\n');
  const c = load({ BITQUERY_CLIENT_ID: 'id', BITQUERY_CLIENT_SECRET_FILE: secret });
  if (c.credentials.mode === 'client_credentials') t.same(c.credentials.clientSecret, { file: secret });
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
  ['bad level', { BITQUERY_TOKEN: 't', LOG_LEVEL: 'loud' }, /LOG_LEVEL must be equal to one of the allowed values/],
  ['bad auth method', { BITQUERY_CLIENT_ID: 'i', BITQUERY_CLIENT_SECRET: 's', BITQUERY_AUTH_METHOD: 'jwt' }, /BITQUERY_AUTH_METHOD/],
  ['plain http upstream', { BITQUERY_TOKEN: 't', BITQUERY_UPSTREAM: 'http://streaming.bitquery.io' }, /BITQUERY_UPSTREAM must use https/],
  ['upstream with a path', { BITQUERY_TOKEN: 't', BITQUERY_UPSTREAM: 'https://streaming.bitquery.io/graphql' }, /origin without a path/],
  ['upstream not a URL', { BITQUERY_TOKEN: 't', BITQUERY_UPSTREAM: 'streaming.bitquery.io' }, /BITQUERY_UPSTREAM must be an absolute URL/],
  ['plain http token URL', { BITQUERY_CLIENT_ID: 'i', BITQUERY_CLIENT_SECRET: 's', BITQUERY_TOKEN_URL: 'http://oauth2.bitquery.io/oauth2/token' }, /BITQUERY_TOKEN_URL must use https/],
  ['credentials in a URL', { BITQUERY_TOKEN: 't', BITQUERY_UPSTREAM: 'https://u:p@streaming.bitquery.io' }, /must not hold credentials/],
  ['bad paths', { BITQUERY_TOKEN: 't', PROXY_PATHS: 'graphql' }, /PROXY_PATHS must be .* \(bad: "graphql"\)/],
  ['retry bounds', { BITQUERY_TOKEN: 't', TOKEN_RETRY_MIN_MS: '5000', TOKEN_RETRY_MAX_MS: '100' }, /TOKEN_RETRY_MAX_MS must not be smaller/],
  ['margin out of range', { BITQUERY_TOKEN: 't', TOKEN_REFRESH_MARGIN: '1.5' }, /TOKEN_REFRESH_MARGIN must be <= 0.5/],
];

for (const [name, env, message] of mistakes) {
  t.test(`mistake: ${name}`, async (t) => {
    t.throws(() => load(env), { name: 'ConfigError', message });
  });
}

t.test('loopback http is allowed for tests and the demo', async (t) => {
  const c = load({ BITQUERY_CLIENT_ID: 'i', BITQUERY_CLIENT_SECRET: 's', BITQUERY_TOKEN_URL: 'http://127.0.0.1:9/t', BITQUERY_UPSTREAM: 'http://localhost:9' });
  t.equal(c.upstream.origin, 'http://localhost:9');
});

t.test('the binary exits non-zero at once with one clear line, and never echoes the secret', async (t) => {
  const proxy = await spawnProxy({ BITQUERY_CLIENT_SECRET: 'very-secret-value' }, { noWait: true });
  const { code } = await proxy.exited;
  t.equal(code, 2);
  t.equal(proxy.output().trim().split('\n').length, 1, 'one line');
  t.match(proxy.output(), /^bitquery-proxy: BITQUERY_CLIENT_ID is missing/);
  t.notMatch(proxy.output(), /very-secret-value/);
});

