// Text from the token endpoint reaches /readyz (no key needed), 503 bodies, the logs and the
// `check` command. An endpoint that echoes what it was sent would put the client secret there:
// every such text is scrubbed and bounded first, keeping the status and a short reason.
import t from 'tap';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { request } from 'undici';
import { fakeEnv, startFake, startProxy } from '../helpers/pair.js';
import { baseEnv, CLI } from '../helpers/proxy-process.js';
import { wsRefusal } from '../helpers/ws-refusal.js';

/** Characters that every encoding writes differently. */
const ECHO_SECRET = 'echo-secret/+=~9f3a 7c-ü';

/** Every form in which the secret crossed the wire, or could be quoted back. */
function secretForms(clientId: string): string[] {
  const formEncode = (s: string) => new URLSearchParams({ s }).toString().slice(2);
  // RFC 6749 2.3.1, as the proxy sends it.
  const basicEncode = (s: string) => encodeURIComponent(s).replace(/%20/g, '+');
  const basic = Buffer.from(`${basicEncode(clientId)}:${basicEncode(ECHO_SECRET)}`).toString('base64');
  return [ECHO_SECRET, encodeURIComponent(ECHO_SECRET), formEncode(ECHO_SECRET), Buffer.from(ECHO_SECRET).toString('base64'), basic];
}

async function get(url: string) {
  const res = await request(url);
  return { status: res.statusCode, text: await res.body.text() };
}

for (const method of ['post', 'basic'] as const) {
  t.test(`an endpoint echoing the request (${method}): /readyz, 503 bodies and logs hold no secret, but the reason`, async (t) => {
    const fake = await startFake(t, { clientSecret: ECHO_SECRET });
    fake.tokenFailures.push({ kind: 'echo', status: 401 }, { kind: 'echo', status: 401 });
    const forms = secretForms(fake.clientId);
    // The proxy's whole output is checked for every form at teardown.
    const proxy = await startProxy(t, fake, { ...fakeEnv(fake), BITQUERY_AUTH_METHOD: method, TOKEN_WAIT_MS: '60000' }, {}, forms);
    const line = await proxy.waitForLog((l) => /rejected the credentials/.test(l.msg), 30_000);
    const sent = fake.tokenRequests[0]!;
    t.ok(sent.form.client_secret === ECHO_SECRET || sent.headers.authorization === `Basic ${forms[4]}`, 'the secret was sent, so the echo held it');

    const ready = await get(`${proxy.url}/readyz`);
    const http = await request(`${proxy.url}/graphql`, { method: 'POST', body: '{"query":"{ hello }"}', headers: { 'content-type': 'application/json' } });
    const httpText = await http.body.text();
    const ws = await wsRefusal(`${proxy.url.replace(/^http/, 'ws')}/graphql`);
    t.equal(ready.status, 503);
    t.equal(http.statusCode, 503);
    t.equal(ws.status, 503);

    const reason = JSON.parse(ready.text).reason as string;
    t.match(reason, /^no valid token: token endpoint rejected the credentials \(HTTP 401, invalid_client: cannot authenticate: form /, 'status and reason kept');
    t.match(reason, /\[REDACTED\]/, 'the echoed secret replaced');
    if (method === 'post') t.match(reason, `"client_id":"${fake.clientId}"`, 'the client id, not a secret, kept');
    const description = /invalid_client: (.*)\)$/.exec(reason)![1]!;
    t.ok(description.length <= 201, `the endpoint's text is bounded (${description.length} characters)`);
    t.match(JSON.parse(httpText), { error: 'token_unavailable', message: /\[REDACTED\]/ });
    t.match(ws.body, { error: 'token_unavailable', message: /\[REDACTED\]/ });
    t.match(line.msg, /\[REDACTED\]/, 'the error line too');
    for (const text of [ready.text, httpText, ws.text, proxy.output()]) {
      t.same(forms.filter((form) => text.includes(form)), [], 'no form of the secret');
    }
  });
}

t.test('`check` against an echoing endpoint prints the reason, not the secret', async (t) => {
  const fake = await startFake(t, { clientSecret: ECHO_SECRET });
  fake.tokenFailures.push({ kind: 'echo', status: 401 });
  const child = spawn(process.execPath, [CLI, 'check'], { env: { ...baseEnv(), ...fakeEnv(fake) }, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => (output += chunk));
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (output += chunk));
  const [code] = (await once(child, 'close')) as [number];
  t.equal(code, 1);
  t.match(output, /rejected the credentials \(HTTP 401, invalid_client: cannot authenticate: .*\[REDACTED\].*check BITQUERY_CLIENT_ID and BITQUERY_CLIENT_SECRET/);
  t.same(secretForms(fake.clientId).filter((form) => output.includes(form)), []);
});
