// Issue 9 item 9, the small ones: a `#` in a WebSocket URL is a 400 (it was a 500); a line break in
// a secret is refused at start-up (it failed at the first request); a key named `__proto__` keeps
// its limit; the access line of a 5xx the proxy produced says which error, at warn.
import t from 'tap';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { request } from 'undici';
import { closedPort } from './helpers/ports.js';
import { spawnProxy } from './helpers/proxy-process.js';
import { raw } from './helpers/raw-socket.js';
import { assertNoLeaks } from './helpers/secrets.js';

const KEY = 'proto-key-9a4c2e7f1b3d5a60';
const TOKEN = 'static-token-for-small-ones-5e1a';

t.test('__proto__ key limit, 5xx access lines with their error at warn, # in a WebSocket URL', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'bqp-small-'));
  const config = join(dir, 'gateway.json');
  // Written by hand: in a JS object literal `__proto__` would set the prototype, not a key.
  writeFileSync(config, '{"keys":{"__proto__":{"rateLimitPerMinute":1}}}');
  const proxy = await spawnProxy({
    BITQUERY_TOKEN: TOKEN,
    BITQUERY_UPSTREAM: `http://127.0.0.1:${await closedPort()}`,
    PROXY_CONFIG: config,
    PROXY_API_KEYS: `__proto__:${KEY}`,
  });
  t.teardown(async () => {
    await proxy.stop();
    assertNoLeaks(proxy.output(), [KEY, TOKEN]);
  });

  const first = await request(`${proxy.url}/graphql?query=%7Bhello%7D`, { headers: { 'x-api-key': KEY } });
  t.equal(first.statusCode, 502, 'the upstream is down');
  await first.body.dump();
  const line = await proxy.waitForLog((l) => l.msg === 'request' && l.status === 502);
  t.equal(line.error, 'upstream_refused', 'the access line says which error');
  t.equal(line.level, 40, 'at warn');
  const second = await request(`${proxy.url}/graphql?query=%7Bhello%7D`, { headers: { 'x-api-key': KEY } });
  t.equal(second.statusCode, 429, 'the key named __proto__ has its limit of 1 a minute');
  await second.body.dump();
  const limited = await proxy.waitForLog((l) => l.msg === 'request' && l.status === 429);
  t.match(limited, { error: 'rate_limited', level: 30 }, 'a 4xx is at info, with its error too');

  const hash = await raw(
    proxy.url,
    `GET /graphql?x=1#frag HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nX-API-Key: ${KEY}\r\n\r\n`,
  );
  t.match(hash, /^HTTP\/1\.1 400 /, 'a # in a WebSocket URL is a 400');
  t.match(hash, /"error":"bad_request","message":"the URL must not hold a fragment \(#\)"/);
});

t.test('a line break in a secret or a secret file is refused at start, exit 2, one line', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'bqp-crlf-'));
  writeFileSync(join(dir, 'token'), 'static-token-line-one\r\nline-two\n');
  writeFileSync(join(dir, 'secret'), 'client-secret-good-4c1e\n');
  const cases: [Record<string, string>, RegExp][] = [
    [{ BITQUERY_TOKEN: 'static-token-part-one\npart-two' }, /^bitquery-proxy: BITQUERY_TOKEN holds a line break or another control character: remove it\n$/],
    [{ BITQUERY_CLIENT_ID: 'id', BITQUERY_CLIENT_SECRET: 'client-secret-part\r' }, /^bitquery-proxy: BITQUERY_CLIENT_SECRET holds a line break/],
    [{ BITQUERY_TOKEN_FILE: join(dir, 'token') }, /^bitquery-proxy: BITQUERY_TOKEN_FILE=.*token holds a line break/],
  ];
  for (const [env, message] of cases) {
    const proxy = await spawnProxy(env, { noWait: true });
    t.equal((await proxy.exited).code, 2, Object.keys(env).join(' '));
    t.match(proxy.output(), message);
    assertNoLeaks(proxy.output(), ['static-token-part-one', 'client-secret-part', 'static-token-line-one']);
  }
  const fine = await spawnProxy({ BITQUERY_CLIENT_ID: 'id', BITQUERY_CLIENT_SECRET_FILE: join(dir, 'secret'), BITQUERY_TOKEN_URL: 'http://127.0.0.1:9/token' });
  t.ok(fine.url, "a file's trailing newline is trimmed");
  await fine.stop();
});
