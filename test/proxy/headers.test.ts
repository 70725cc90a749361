// Which headers cross the proxy, in-process: credentials and hop-by-hop headers never do, whatever
// the Connection header lists and in whatever letter case it lists them.
import t from 'tap';
import fc from 'fast-check';
import { clientResponseHeaderList, clientResponseHeaders, upstreamRequestHeaderList, upstreamRequestHeaders, withoutTokenParam } from '../../src/proxy/headers.js';

const NEVER_UPSTREAM = ['authorization', 'x-api-key', 'cookie', 'host', 'content-length', 'expect', 'connection', 'keep-alive', 'proxy-authorization', 'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade'];

const token = fc.stringMatching(/^[a-z][a-z0-9-]{0,15}$/);

t.test('request headers: credentials, framing and hop-by-hop ones are dropped, others kept as sent', async (t) => {
  const out = upstreamRequestHeaders({
    authorization: 'Bearer client-key',
    'x-api-key': 'k',
    cookie: 'c=1',
    host: 'evil.example',
    'content-length': '12',
    connection: 'keep-alive, X-Private',
    'x-private': 'hop',
    'keep-alive': 'timeout=5',
    'content-type': 'application/json',
    'user-agent': 'test',
    'x-multi': ['a', 'b'],
  });
  t.same(out, { 'content-type': 'application/json', 'user-agent': 'test', 'x-multi': ['a', 'b'] });
});

t.test('property: nothing that must stay here is forwarded, whatever else comes with it', async () => {
  fc.assert(
    fc.property(
      fc.subarray(NEVER_UPSTREAM),
      fc.dictionary(token, fc.string({ maxLength: 20 }), { maxKeys: 8 }),
      fc.array(token, { maxLength: 4 }),
      (forbidden, others, listed) => {
        const inbound: Record<string, string> = { ...others };
        for (const name of forbidden) inbound[name] = 'secret';
        // Node lower-cases header names, not the names a Connection header lists.
        inbound.connection = [inbound.connection ?? '', ...listed.map((l) => l.toUpperCase())].join(', ');
        for (const name of listed) inbound[name] = 'hop';
        const out = upstreamRequestHeaders(inbound);
        return Object.keys(out).every((name) => !NEVER_UPSTREAM.includes(name) && !listed.includes(name)) && Object.keys(out).every((name) => out[name] === inbound[name]);
      },
    ),
  );
});

t.test('response headers: hop-by-hop ones dropped, the rest (set-cookie, retry-after) passed as sent', async (t) => {
  const out = clientResponseHeaders({
    'transfer-encoding': 'chunked',
    connection: 'close, x-hop',
    'x-hop': '1',
    'set-cookie': ['a=1', 'b=2'],
    'retry-after': '30',
    absent: undefined,
  });
  t.same(out, { 'set-cookie': ['a=1', 'b=2'], 'retry-after': '30' });
});

t.test('the flat lists the hot path sends carry the same headers; the upstream’s own win over the proxy’s', async (t) => {
  const inbound = { 'content-type': 'application/json', cookie: 'c=1', 'x-multi': ['a', 'b'] };
  t.same(upstreamRequestHeaderList(inbound), ['content-type', 'application/json', 'x-multi', ['a', 'b']]);
  const list = clientResponseHeaderList(
    { 'content-type': 'text/plain', 'access-control-allow-origin': 'https://upstream', connection: 'close' },
    { 'access-control-allow-origin': 'http://localhost:3000', 'x-ratelimit-limit': 3, vary: undefined },
  );
  t.same(list, ['content-type', 'text/plain', 'access-control-allow-origin', 'https://upstream', 'x-ratelimit-limit', 3]);
});

t.test('the token query parameter is dropped, whatever its encoding; the rest kept byte for byte', async (t) => {
  t.equal(withoutTokenParam(''), '');
  t.equal(withoutTokenParam('token=x'), '');
  t.equal(withoutTokenParam('a=1&token=x&b=%20'), '?a=1&b=%20');
  t.equal(withoutTokenParam('%74oken=x&tok%65n=y&token'), '', 'encoded names and a bare name');
  t.equal(withoutTokenParam('tokens=1&my+token=2&%E0%A4%A=3'), '?tokens=1&my+token=2&%E0%A4%A=3', 'look-alikes and malformed escapes are kept');
});

t.test('property: no token parameter survives, every other pair does', async () => {
  const name = fc.oneof(fc.constantFrom('token', '%74oken', 'TOKEN', 'a', 'b', 'tok'), fc.stringMatching(/^[a-z%0-9+]{0,6}$/));
  fc.assert(
    fc.property(fc.array(fc.tuple(name, fc.stringMatching(/^[a-z0-9%]{0,6}$/)), { maxLength: 8 }), (pairs) => {
      const search = pairs.map(([k, v]) => `${k}=${v}`).join('&');
      const out = withoutTokenParam(search);
      const kept = out === '' ? [] : out.slice(1).split('&');
      const isToken = (k: string) => {
        try {
          return decodeURIComponent(k.replace(/\+/g, ' ')) === 'token';
        } catch {
          return false;
        }
      };
      return kept.every((pair) => !isToken(pair.split('=')[0]!)) && kept.length === pairs.filter(([k]) => !isToken(k)).length;
    }),
  );
});
