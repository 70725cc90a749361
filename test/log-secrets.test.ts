// The README promises no secret in the logs at any level. At trace, an inbound key reaches the log
// in two ways the old text-only scan could not see or no test tried: Fastify's client-error line
// writes the raw bytes of a malformed request (`rawPacket`, a byte array), and an `x-api-key`
// query parameter is written in clear in the access line. Both are issue 9, item 4; until the fix
// lands the two assertions are marked todo.
import t from 'tap';
import net from 'node:net';
import { request } from 'undici';
import { fakeEnv, SECRET, startFake, startProxy } from './helpers/pair.js';
import { findLeaks } from './helpers/secrets.js';

const KEY = 'alice-key-for-log-secrets-7d3f9a1c';
const TODO = 'issue 9 item 4: inbound keys in trace logs (rawPacket bytes, ?x-api-key= in the access line)';

/** Sends `text` on a raw connection and resolves with what came back once the proxy closes it. */
function raw(url: string, text: string): Promise<string> {
  const { port } = new URL(url);
  return new Promise((resolve, reject) => {
    let answer = '';
    const socket = net.connect(Number(port), '127.0.0.1', () => socket.write(text));
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => (answer += chunk));
    socket.on('close', () => resolve(answer));
    socket.on('error', reject);
  });
}

t.test('an inbound key never reaches the log at trace, in any encoding', async (t) => {
  const fake = await startFake(t);
  // The key is scanned for below, so it is not among the teardown's secrets (which would fail the
  // test at teardown whatever the todo says); the client secret and tokens still are.
  const proxy = await startProxy(t, fake, { ...fakeEnv(fake), PROXY_API_KEYS: `alice:${KEY}`, LOG_LEVEL: 'trace' }, {}, [SECRET]);

  const ok = await request(`${proxy.url}/graphql`, { method: 'POST', headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' }, body: '{"query":"{ hello }"}' });
  t.equal(ok.statusCode, 200, 'the key is accepted');
  await ok.body.dump();

  const malformed = await raw(proxy.url, `POST /graphql HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: ${KEY}\r\nNot A Header\r\n\r\n`);
  t.match(malformed, /^HTTP\/1\.1 400 /, 'a malformed request gets 400');
  await proxy.waitForLog((l) => JSON.stringify(l).includes('rawPacket'));

  const inQuery = await request(`${proxy.url}/graphql?x-api-key=${KEY}&query=%7Bhello%7D`);
  t.equal(inQuery.statusCode, 401, 'a key in the query string is not accepted');
  await inQuery.body.dump();
  await proxy.waitForLog((l) => l.msg === 'request' && l.status === 401);

  await proxy.stop();
  const leaks = findLeaks(proxy.output(), [KEY]);
  t.same(leaks.filter((l) => l.encoding.includes('byte array')), [], "not in the malformed request's raw packet", { todo: TODO });
  t.same(leaks.filter((l) => !l.encoding.includes('byte array')), [], 'nowhere else (the access line of ?x-api-key=)', { todo: TODO });
});
