// The caller decision in-process: origin, key, credential set; refusals are ProxyErrors by code.
import t from 'tap';
import fc from 'fast-check';
import pino from 'pino';
import { createCallerResolver, originAllowed, rateLimitOf, type Caller, type CallerRequest } from '../../src/auth/caller.js';
import { KeyStore } from '../../src/auth/key-store.js';
import { loadConfig } from '../../src/config/index.js';
import type { CredentialSet } from '../../src/credential-set.js';
import { ProxyError } from '../../src/errors.js';

const ALICE = 'alice-key-5f2b8c1e9d7a4630';
const BOB = 'bob-key-0c4e7a9b2d6f8e13';
const set = (name: string) => ({ name }) as CredentialSet;
const sets = new Map([['default', set('default')], ['team-b', set('team-b')]]);
const silent = pino({ level: 'silent' });

/** A request as Node hands it over: `headers` as given (a loopback Host unless set), `rawHeaders` to match. */
function request(headers: Record<string, string>): CallerRequest {
  const all = { host: '127.0.0.1:8080', ...headers };
  return { headers: all, rawHeaders: Object.entries(all).flat() };
}

function resolver(env: Record<string, string>) {
  const config = loadConfig({ BITQUERY_TOKEN: 't', ...env }, { dotenvPath: '/nonexistent/.env' });
  return { config, resolve: createCallerResolver(config, new KeyStore(config.apiKeys, config.initialKeys, silent), sets) };
}

t.test('without keys: every request is the default credential set, no key name', async (t) => {
  const { resolve } = resolver({});
  t.same(resolve(request({})), { keyName: undefined, credentialSet: sets.get('default'), policy: {} });
});

t.test('with keys: missing or wrong is unauthorized, a good one names the caller', async (t) => {
  const { resolve } = resolver({ PROXY_API_KEYS: `alice:${ALICE},bob:${BOB}` });
  const none = resolve(request({}));
  t.ok(none instanceof ProxyError);
  t.match(none, { code: 'unauthorized', status: 401 });
  t.match(resolve(request({ authorization: `Bearer ${ALICE}x` })), { code: 'unauthorized', message: 'the API key is not valid' });
  t.match(resolve(request({ authorization: `Bearer ${ALICE}` })), { keyName: 'alice', credentialSet: { name: 'default' } });
  t.match(resolve(request({ 'x-api-key': BOB })), { keyName: 'bob' });
});

t.test('origins: loopback pages by default, the list when set; a refused origin is forbidden_origin', async (t) => {
  const { config, resolve } = resolver({});
  for (const origin of ['http://localhost:3000', 'https://127.0.0.1', 'http://[::1]:8080', 'http://LOCALHOST:1', 'http://127.1.2.3:5173', 'http://127.0.0.10']) t.ok(originAllowed(config, origin), origin);
  for (const origin of ['https://evil.example', 'null', 'http://localhost.evil.example', 'http://127.0.0.1.evil.example', 'file://', 'http://localhost:3000/path']) t.notOk(originAllowed(config, origin), origin);
  t.match(resolve(request({ origin: 'https://evil.example' })), { code: 'forbidden_origin', status: 403 });
  const listed = resolver({ CORS_ORIGINS: 'https://app.example.com' }).config;
  t.ok(originAllowed(listed, 'https://app.example.com'));
  t.notOk(originAllowed(listed, 'http://localhost:3000'));
  t.ok(originAllowed(resolver({ CORS_ORIGINS: '*' }).config, 'https://any.example'));
});

t.test('property: a default-allowed origin is exactly a loopback host, whatever else is appended', async () => {
  const { config } = resolver({});
  fc.assert(
    fc.property(fc.constantFrom('http', 'https'), fc.constantFrom('localhost', '127.0.0.1', '[::1]'), fc.string({ maxLength: 12 }), (scheme, host, tail) => {
      // Digits appended to 127.0.0.1 may name another loopback address (127.0.0.10 is one).
      fc.pre(!(host === '127.0.0.1' && /^\d/.test(tail)));
      const allowed = originAllowed(config, `${scheme}://${host}${tail}`);
      return allowed === (tail === '' || /^:\d{1,5}$/.test(tail));
    }),
  );
});

t.test('a key mapped to a set that is not there is forbidden', async (t) => {
  const { config } = resolver({ PROXY_API_KEYS: `alice:${ALICE}` });
  const resolve = createCallerResolver({ ...config, keyPolicies: { alice: { credentials: 'gone' } } }, new KeyStore(config.apiKeys, config.initialKeys, silent), sets);
  t.match(resolve(request({ 'x-api-key': ALICE })), { code: 'forbidden', status: 403, message: 'the key "alice" maps to no credentials' });
});

t.test('Host and Sec-Fetch-Site: refused before the key is looked at', async (t) => {
  const { resolve } = resolver({ PROXY_API_KEYS: `alice:${ALICE}` });
  const key = { 'x-api-key': ALICE };
  t.match(resolve(request({ ...key, host: 'evil.example:8080' })), { code: 'misdirected_request', status: 421 });
  t.match(resolve(request({ ...key, 'sec-fetch-site': 'cross-site' })), { code: 'cross_site', status: 403 });
  t.match(resolve(request({ ...key, host: 'localhost:1' })), { keyName: 'alice' });
  t.match(resolve({ headers: { host: 'localhost', ...key }, rawHeaders: ['Host', 'localhost', 'host', 'evil.example'] }), { code: 'bad_request', status: 400 });
  t.match(resolver({ ALLOWED_HOSTS: 'bitquery-proxy' }).resolve(request({ host: 'bitquery-proxy:8080' })), { keyName: undefined });
});

t.test("the per-minute limit is the key's own, else RATE_LIMIT_PER_MINUTE", async (t) => {
  const caller = (policy: Caller['policy']): Caller => ({ keyName: 'k', credentialSet: {} as CredentialSet, policy });
  t.equal(rateLimitOf(caller({}), { rateLimitPerMinute: 60 }), 60);
  t.equal(rateLimitOf(caller({ rateLimitPerMinute: 5 }), { rateLimitPerMinute: 60 }), 5);
  t.equal(rateLimitOf(caller({ rateLimitPerMinute: 0 }), { rateLimitPerMinute: 60 }), 0, 'a key may be exempt');
});
