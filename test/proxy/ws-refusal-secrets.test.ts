// Issue 9 item 3 (WebSocket part): the upstream URL carries `?token=`, and an upstream (or a proxy in
// between) that echoes the request in its refusal body would hand the token to the client and to the
// log. Text taken from the upstream is scrubbed of the tokens sent, the client secret and the
// client's key; the status and a short reason remain.
import { once } from 'node:events';
import t from 'tap';
import { WebSocket } from 'ws';
import { fakeEnv, SECRET, startFake, startProxy } from '../helpers/pair.js';
import { waitFor } from '../helpers/proxy-process.js';
import { findLeaks, describeLeaks } from '../helpers/secrets.js';
import { wsRefusal } from '../helpers/ws-refusal.js';

const KEY = 'alice-key-ws-refusal-3c8e1f0a9b';

t.test("an upstream refusal that echoes the token, the secret and the key: none reaches the client or the log", async (t) => {
  const fake = await startFake(t);
  const proxy = await startProxy(t, fake, { ...fakeEnv(fake), PROXY_API_KEYS: `alice:${KEY}` }, {}, [SECRET, KEY]);
  const url = `${proxy.url.replace('http', 'ws')}/graphql`;

  // The fake answers the next handshake with a body quoting what it was sent, as a misbehaving
  // gateway would: the URL with the token, the Authorization header, the form of a token request.
  fake.wsRefusals.push({ status: 502, body: '' });
  const probe = await wsRefusal(url, { headers: { 'x-api-key': KEY } });
  t.equal(probe.status, 502, 'the scripted refusal is passed on');
  const token = fake.wsHandshakes.at(-1)!.token!;
  t.ok(token, 'the handshake carried a token');

  const echo = [
    `bad gateway for GET /graphql?token=${token}`,
    `authorization: Bearer ${token}`,
    `x-api-key: ${KEY}`,
    `client_secret=${encodeURIComponent(SECRET)}`,
    `basic ${Buffer.from(`${fake.clientId}:${SECRET}`).toString('base64')}`,
  ].join('\n');
  fake.wsRefusals.push({ status: 503, body: echo, headers: { 'retry-after': token } });
  const refused = await wsRefusal(url, { headers: { 'x-api-key': KEY } });
  t.equal(refused.status, 503, 'the upstream status is kept');
  t.equal(refused.body.error, 'upstream_rejected');
  t.match(refused.body.message, /^the upstream refused the WebSocket handshake with 503: bad gateway for GET \/graphql\?token=\[REDACTED\]/, 'a short reason is kept');
  t.equal(refused.headers['retry-after'], undefined, 'a Retry-After that is not a delay is dropped');
  const secrets = [token, SECRET, KEY];
  const inBody = findLeaks(refused.text, secrets);
  t.same(inBody, [], inBody.length ? describeLeaks(inBody) : 'no secret in the body');

  await proxy.waitForLog((l) => l.msg.startsWith('stream refused') && l.status === 503);
  await proxy.stop();
  const inLog = findLeaks(proxy.output(), secrets);
  t.same(inLog, [], inLog.length ? describeLeaks(inLog) : 'no secret in the log');
});

t.test('share mode: a refusal that echoes the token reaches subscribers scrubbed', async (t) => {
  const fake = await startFake(t);
  const proxy = await startProxy(t, fake, { ...fakeEnv(fake), PROXY_API_KEYS: `alice:${KEY}` }, {}, [SECRET, KEY]);
  const client = new WebSocket(`${proxy.url.replace('http', 'ws')}/graphql`, 'graphql-ws', { headers: { 'x-api-key': KEY } });
  t.teardown(() => client.terminate());
  const messages: { type: string; id?: string; payload?: unknown }[] = [];
  client.on('message', (data) => messages.push(JSON.parse(data.toString())));
  await once(client, 'open');
  client.send(JSON.stringify({ type: 'connection_init', payload: {} }));
  await waitFor(async () => messages.some((m) => m.type === 'connection_ack'), 10_000, 'connection_ack');

  // A 403 is final (no reconnect). Its body quotes the request URL with the token it carried, which
  // is known only once the fake has recorded that handshake: hence a getter.
  fake.wsRefusals.push({
    status: 403,
    get body() {
      return `forbidden: GET /graphql?token=${fake.wsHandshakes.at(-1)?.token ?? ''}`;
    },
  });
  client.send(JSON.stringify({ type: 'start', id: '1', payload: { query: 'subscription { EVM { Blocks { Block { Number } } } }' } }));
  const error = await waitFor(async () => messages.find((m) => m.type === 'error'), 15_000, 'the subscription error');
  const token = fake.wsHandshakes.at(-1)!.token!;
  t.ok(token, 'the upstream handshake carried a token');
  const text = JSON.stringify(error);
  t.match(text, /refused the WebSocket handshake with 403: forbidden: GET \/graphql\?token=\[REDACTED\]/, 'the status and a short reason are kept');
  const leaks = findLeaks(text, [token, SECRET, KEY]);
  t.same(leaks, [], leaks.length ? describeLeaks(leaks) : 'no secret in what the subscriber got');
  await proxy.stop();
  const inLog = findLeaks(proxy.output(), [token, SECRET, KEY]);
  t.same(inLog, [], inLog.length ? describeLeaks(inLog) : 'no secret in the log');
});
