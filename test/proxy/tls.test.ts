// TLS to the upstream and to the token endpoint is verified: a certificate the system does not
// trust is refused, and trusting it (NODE_EXTRA_CA_CERTS, as users would) makes it work.
import t, { type Test } from 'tap';
import { createServer } from 'node:https';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { request } from 'undici';
import { spawnProxy } from '../helpers/proxy-process.js';

const CERT = join(import.meta.dirname, '../fixtures/tls/cert.pem');
const KEY = join(import.meta.dirname, '../fixtures/tls/key.pem');
const TOKEN = 'ory_at_tls-test-token';

/** A self-signed HTTPS server playing both token endpoint and GraphQL upstream. */
async function selfSignedBitquery(t: Test) {
  const seen: string[] = [];
  const server = createServer({ cert: readFileSync(CERT), key: readFileSync(KEY) }, (req, res) => {
    seen.push(`${req.method} ${req.url}`);
    req.resume();
    req.on('end', () => {
      res.setHeader('content-type', 'application/json');
      if (req.url === '/oauth2/token') {
        res.end(JSON.stringify({ access_token: TOKEN, expires_in: 3600, scope: 'api', token_type: 'bearer' }));
      } else {
        res.end(JSON.stringify({ data: { auth: req.headers.authorization === `Bearer ${TOKEN}` } }));
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise((resolve) => server.close(resolve)));
  return { origin: `https://127.0.0.1:${(server.address() as { port: number }).port}`, seen };
}

const post = async (url: string) => {
  const res = await request(url, { method: 'POST', body: '{"query":"{ hello }"}', headers: { 'content-type': 'application/json' } });
  return { status: res.statusCode, body: await res.body.text() };
};

t.test('an untrusted upstream certificate is refused with 502', async (t) => {
  const upstream = await selfSignedBitquery(t);
  const proxy = await spawnProxy({ BITQUERY_TOKEN: TOKEN, BITQUERY_UPSTREAM: upstream.origin });
  t.teardown(() => proxy.stop());
  const res = await post(`${proxy.url}/graphql`);
  t.equal(res.status, 502);
  t.match(JSON.parse(res.body), { error: 'upstream_unreachable', message: /TLS certificate was not accepted \(DEPTH_ZERO_SELF_SIGNED_CERT\)/ });
  t.same(upstream.seen, [], 'no request was sent over the unverified connection');
  t.notMatch(proxy.output(), TOKEN);
});

t.test('an untrusted token endpoint certificate is refused: no secret is sent', async (t) => {
  const server = await selfSignedBitquery(t);
  const proxy = await spawnProxy({
    BITQUERY_CLIENT_ID: 'id',
    BITQUERY_CLIENT_SECRET: 'tls-test-secret',
    BITQUERY_TOKEN_URL: `${server.origin}/oauth2/token`,
    BITQUERY_UPSTREAM: server.origin,
    TOKEN_RETRY_MIN_MS: '5000',
    TOKEN_RETRY_MAX_MS: '5000',
  });
  t.teardown(() => proxy.stop());
  const line = await proxy.waitForLog((l) => /^token request failed/.test(l.msg));
  t.match(line.msg, /self-signed certificate|SELF_SIGNED/);
  t.same(server.seen, []);
  t.notMatch(proxy.output(), 'tls-test-secret');
});

t.test('trusting the certificate (NODE_EXTRA_CA_CERTS) makes both work', async (t) => {
  const server = await selfSignedBitquery(t);
  const proxy = await spawnProxy({
    NODE_EXTRA_CA_CERTS: CERT,
    BITQUERY_CLIENT_ID: 'id',
    BITQUERY_CLIENT_SECRET: 'tls-test-secret',
    BITQUERY_TOKEN_URL: `${server.origin}/oauth2/token`,
    BITQUERY_UPSTREAM: server.origin,
  });
  t.teardown(() => proxy.stop());
  const res = await post(`${proxy.url}/graphql`);
  t.equal(res.status, 200);
  t.same(JSON.parse(res.body), { data: { auth: true } });
  t.same(server.seen, ['POST /oauth2/token', 'POST /graphql']);
});
