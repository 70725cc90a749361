import t from 'tap';
import { WebSocket, type RawData } from 'ws';
import { createClient } from 'graphql-ws';
import { spawn } from 'node:child_process';
import { resolve } from 'node:path';
import { FakeBitquery, type InjectedFault, type RecordedWsClose, type RecordedWsHandshake } from './index.js';

const FORM = 'application/x-www-form-urlencoded';
const INVALID_CLIENT = {
  error: 'invalid_client',
  error_description:
    'Client authentication failed (e.g., unknown client, no client authentication included, or unsupported authentication method).',
  status_code: 401,
};

// ---------------------------------------------------------------- helpers

/** Polls pred until true or the deadline passes. */
async function waitFor(pred: () => boolean, timeoutMs = 2000, what = 'condition'): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!pred()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

function tokenForm(fields: Record<string, string>): string {
  return new URLSearchParams(fields).toString();
}

function postToken(fake: FakeBitquery, fields: Record<string, string>, headers: Record<string, string> = {}) {
  return fetch(fake.tokenUrl, {
    method: 'POST',
    headers: { 'content-type': FORM, ...headers },
    body: tokenForm(fields),
  });
}

const GOOD = { grant_type: 'client_credentials', client_id: 'demo-client', client_secret: 'demo-secret', scope: 'api' };

async function getToken(fake: FakeBitquery): Promise<string> {
  const res = await postToken(fake, GOOD);
  if (res.status !== 200) throw new Error(`token status ${res.status}`);
  return ((await res.json()) as { access_token: string }).access_token;
}

function gql(fake: FakeBitquery, token: string | undefined, body: unknown = { query: '{ hello }' }, path = '/graphql') {
  return fetch(`${fake.url}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: JSON.stringify(body),
  });
}

type Msg = { type: string; id?: string; payload?: any };

/** A client WebSocket with a message queue. */
class Client {
  readonly received: Msg[] = [];
  private readonly waiters: (() => void)[] = [];
  private cursor = 0;
  closed: { code: number; reason: string } | undefined;

  constructor(readonly ws: WebSocket) {
    ws.on('message', (data: RawData) => {
      this.received.push(JSON.parse(String(data)) as Msg);
      this.wake();
    });
    ws.on('close', (code, reason) => {
      this.closed = { code, reason: reason.toString() };
      this.wake();
    });
    ws.on('error', () => {});
  }

  static open(url: string, protocols?: string[], headers?: Record<string, string>): Promise<Client> {
    const ws = new WebSocket(url, protocols, headers ? { headers } : {});
    const c = new Client(ws);
    return new Promise((resolve, reject) => {
      ws.once('open', () => resolve(c));
      ws.once('error', reject);
    });
  }

  private wake(): void {
    for (const w of this.waiters.splice(0)) w();
  }

  send(msg: unknown): void {
    this.ws.send(typeof msg === 'string' ? msg : JSON.stringify(msg));
  }

  /** Next message (after the previous one returned) matching pred; skips the others. */
  async next(pred: (m: Msg) => boolean = () => true, timeoutMs = 2000): Promise<Msg> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      while (this.cursor < this.received.length) {
        const m = this.received[this.cursor++]!;
        if (pred(m)) return m;
      }
      if (this.closed) throw new Error(`socket closed ${this.closed.code} while waiting`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error('timed out waiting for a message');
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  async waitClosed(timeoutMs = 2000): Promise<{ code: number; reason: string }> {
    await waitFor(() => this.closed !== undefined, timeoutMs, 'close');
    return this.closed!;
  }
}

/** Attempts a WebSocket handshake that should be refused; resolves with status and body. */
function refusedHandshake(url: string, protocols: string[] = ['graphql-ws'], headers?: Record<string, string>) {
  return new Promise<{ status: number; contentType: string; body: string }>((resolve, reject) => {
    const ws = new WebSocket(url, protocols, headers ? { headers } : {});
    ws.on('open', () => reject(new Error('handshake unexpectedly accepted')));
    ws.on('error', () => {});
    ws.on('unexpected-response', (_req, res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () =>
        resolve({ status: res.statusCode ?? 0, contentType: String(res.headers['content-type']), body }),
      );
    });
  });
}

// ---------------------------------------------------------------- tests

t.test('token endpoint', async (t) => {
  const fake = await FakeBitquery.start();
  t.teardown(() => fake.close());
  t.beforeEach(() => {
    fake.reset();
    fake.authMethod = 'any';
  });

  t.test('grants a token with form credentials', async (t) => {
    const res = await postToken(fake, GOOD);
    t.equal(res.status, 200);
    t.match(res.headers.get('content-type'), /^application\/json/);
    const body = (await res.json()) as Record<string, unknown>;
    t.same(Object.keys(body).sort(), ['access_token', 'expires_in', 'scope', 'token_type']);
    t.match(body.access_token, /^ory_at_[A-Za-z0-9_-]{43,}\.[A-Za-z0-9_-]+$/);
    t.equal(body.expires_in, 17999);
    t.equal(body.scope, 'api');
    t.equal(body.token_type, 'bearer');
    t.ok(fake.isValid(body.access_token as string));
    t.same(fake.issuedTokens, [body.access_token]);
    t.equal(fake.tokenRequests.length, 1);
    t.same(fake.tokenRequests[0]!.form, GOOD);
  });

  t.test('HTTP Basic credentials, and authMethod enforcement', async (t) => {
    const basic = 'Basic ' + Buffer.from('demo-client:demo-secret').toString('base64');
    const { grant_type, scope } = GOOD;
    let res = await postToken(fake, { grant_type, scope }, { authorization: basic });
    t.equal(res.status, 200, 'basic accepted with authMethod any');
    await res.arrayBuffer();

    fake.authMethod = 'post';
    res = await postToken(fake, { grant_type, scope }, { authorization: basic });
    t.equal(res.status, 401, 'basic refused when form post expected');
    t.same(await res.json(), INVALID_CLIENT);

    fake.authMethod = 'basic';
    res = await postToken(fake, GOOD);
    t.equal(res.status, 401, 'form refused when basic expected');
    t.same(await res.json(), INVALID_CLIENT);
    res = await postToken(fake, { grant_type, scope }, { authorization: basic });
    t.equal(res.status, 200);
    await res.arrayBuffer();
  });

  t.test('invalid_client 401 JSON for wrong or missing credentials', async (t) => {
    for (const fields of [
      { ...GOOD, client_secret: 'nope' },
      { ...GOOD, client_id: 'other' },
      { grant_type: 'client_credentials', scope: 'api' },
    ]) {
      const res = await postToken(fake, fields);
      t.equal(res.status, 401);
      t.match(res.headers.get('content-type'), /^application\/json/);
      t.same(await res.json(), INVALID_CLIENT);
    }
    t.equal(fake.issuedTokens.length, 0);
  });

  t.test('invalid_scope and unsupported_grant_type 400', async (t) => {
    for (const fields of [{ ...GOOD, scope: 'admin' }, (({ scope: _s, ...rest }) => rest)(GOOD)]) {
      const res = await postToken(fake, fields);
      t.equal(res.status, 400);
      t.same(await res.json(), {
        error: 'invalid_scope',
        error_description: 'The requested scope is invalid, unknown, or malformed.',
        status_code: 400,
      });
    }
    const res = await postToken(fake, { ...GOOD, grant_type: 'password' });
    t.equal(res.status, 400);
    t.match(await res.json(), { error: 'unsupported_grant_type', status_code: 400 });
  });

  t.test('credential rotation and lifetime are mutable', async (t) => {
    fake.clientSecret = 'rotated';
    t.teardown(() => {
      fake.clientSecret = 'demo-secret';
      fake.tokenLifetimeSec = 17999;
    });
    let res = await postToken(fake, GOOD);
    t.equal(res.status, 401);
    await res.arrayBuffer();
    fake.tokenLifetimeSec = 2627999;
    res = await postToken(fake, { ...GOOD, client_secret: 'rotated' });
    t.equal(res.status, 200);
    t.match(await res.json(), { expires_in: 2627999 });
  });

  t.test('tokenFailures queue, then normal service', async (t) => {
    fake.tokenFailures.push(
      { kind: 'status', status: 503, body: 'upstream down' },
      { kind: 'invalid-json' },
      { kind: 'missing-fields' },
      { kind: 'reset' },
    );
    let res = await postToken(fake, GOOD);
    t.equal(res.status, 503);
    t.equal(await res.text(), 'upstream down');

    res = await postToken(fake, GOOD);
    t.equal(res.status, 200);
    await t.rejects(res.json(), 'invalid-json is not JSON');

    res = await postToken(fake, GOOD);
    t.equal(res.status, 200);
    const body = (await res.json()) as Record<string, unknown>;
    t.notOk('access_token' in body);
    t.notOk('expires_in' in body);

    await t.rejects(postToken(fake, GOOD), 'reset destroys the socket');

    res = await postToken(fake, GOOD);
    t.equal(res.status, 200, 'queue drained');
    await res.arrayBuffer();
    t.equal(fake.tokenRequests.length, 5, 'every request recorded');
    t.equal(fake.issuedTokens.length, 1);
  });

  t.test('tokenDelayMs delays the answer', async (t) => {
    fake.tokenDelayMs = 80;
    t.teardown(() => void (fake.tokenDelayMs = 0));
    const start = Date.now();
    const res = await postToken(fake, GOOD);
    t.equal(res.status, 200);
    await res.arrayBuffer();
    t.ok(Date.now() - start >= 70, 'took at least the delay');
  });

  t.test('wrong path or method is 404', async (t) => {
    let res = await fetch(fake.tokenUrl);
    t.equal(res.status, 404);
    await res.arrayBuffer();
    res = await fetch(`${fake.url}/oauth2/other`, { method: 'POST' });
    t.equal(res.status, 404);
    t.equal(await res.text(), '404 page not found');
  });
});

t.test('GraphQL over HTTP', async (t) => {
  const fake = await FakeBitquery.start();
  t.teardown(() => fake.close());
  t.beforeEach(() => fake.reset());

  t.test('401 plain-text Unauthorized without, or with a bad, token', async (t) => {
    for (const token of [undefined, 'ory_at_bogus.bogus']) {
      const res = await gql(fake, token);
      t.equal(res.status, 401);
      t.equal(res.headers.get('content-type'), 'text/plain; charset=utf-8');
      const text = await res.text();
      t.equal(text, 'Unauthorized');
      t.throws(() => JSON.parse(text), 'not JSON');
    }
    t.equal(fake.graphqlRequests.length, 2);
    t.same(
      fake.graphqlRequests.map((r) => [r.token, r.authorized]),
      [
        [undefined, false],
        ['ory_at_bogus.bogus', false],
      ],
    );
  });

  t.test('Bearer token: echo, recorded with its body', async (t) => {
    const token = await getToken(fake);
    const payload = { query: 'query Q($a: Int) { hello }', variables: { a: 1 }, operationName: 'Q' };
    const res = await gql(fake, token, payload);
    t.equal(res.status, 200);
    t.match(res.headers.get('content-type'), /^application\/json/);
    const sent = Buffer.from(JSON.stringify(payload));
    t.same(await res.json(), {
      data: {
        echo: {
          method: 'POST',
          path: '/graphql',
          query: payload.query,
          variables: { a: 1 },
          operationName: 'Q',
          bodyBytes: sent.length,
          bodySha256: (await import('node:crypto')).createHash('sha256').update(sent).digest('hex'),
        },
      },
    });
    const rec = fake.graphqlRequests[0]!;
    t.equal(rec.authorized, true);
    t.equal(rec.token, token);
    t.equal(rec.method, 'POST');
    t.ok(rec.body.equals(sent), 'full body recorded');
  });

  t.test('?token= query parameter, GET and /eap', async (t) => {
    const token = await getToken(fake);
    const res = await fetch(`${fake.url}/eap?token=${encodeURIComponent(token)}&query=${encodeURIComponent('{ hello }')}`);
    t.equal(res.status, 200);
    t.match(await res.json(), { data: { echo: { method: 'GET', path: '/eap', query: '{ hello }', bodyBytes: 0 } } });
    t.equal(fake.graphqlRequests[0]!.token, token);
    t.equal(fake.graphqlRequests[0]!.query.token, token);

    const nf = await fetch(`${fake.url}/v1/graphql?token=${encodeURIComponent(token)}`);
    t.equal(nf.status, 404);
    t.equal(await nf.text(), '404 page not found');
  });

  t.test('revocation, expiry, revokeAll, rejectNextTokens', async (t) => {
    const a = await getToken(fake);
    const b = await getToken(fake);
    const c = fake.issueToken();
    for (const tok of [a, b, c]) {
      const r = await gql(fake, tok);
      t.equal(r.status, 200);
      await r.arrayBuffer();
    }
    fake.revoke(a);
    fake.expire(b);
    t.notOk(fake.isValid(a));
    t.notOk(fake.isValid(b));
    for (const tok of [a, b]) {
      const r = await gql(fake, tok);
      t.equal(r.status, 401);
      t.equal(await r.text(), 'Unauthorized');
    }

    fake.rejectNextTokens = 1;
    let r = await gql(fake, undefined);
    t.equal(r.status, 401);
    await r.arrayBuffer();
    t.equal(fake.rejectNextTokens, 1, 'unauthorized requests do not consume rejectNextTokens');
    r = await gql(fake, c);
    t.equal(r.status, 401, 'valid token rejected once');
    await r.arrayBuffer();
    t.equal(fake.rejectNextTokens, 0);
    t.ok(fake.isValid(c), 'token itself still valid');
    r = await gql(fake, c);
    t.equal(r.status, 200);
    await r.arrayBuffer();

    fake.revokeAll();
    r = await gql(fake, c);
    t.equal(r.status, 401);
    await r.arrayBuffer();
  });

  t.test('scripted responses and delays', async (t) => {
    const token = fake.issueToken();
    fake.graphqlScript.push(
      { status: 429, body: 'Too Many Sessions' },
      { status: 402, body: 'points limit exceeded: usage quota reached', headers: { 'x-extra': '1' } },
      { status: 200, body: '{"data":{"x":1}}', delayMs: 60 },
    );
    let r = await gql(fake, undefined);
    t.equal(r.status, 401, 'unauthorized does not consume the script');
    await r.arrayBuffer();
    r = await gql(fake, token);
    t.equal(r.status, 429);
    t.equal(await r.text(), 'Too Many Sessions');
    r = await gql(fake, token);
    t.equal(r.status, 402);
    t.equal(r.headers.get('x-extra'), '1');
    t.equal(await r.text(), 'points limit exceeded: usage quota reached');
    let start = Date.now();
    r = await gql(fake, token);
    t.equal(r.status, 200);
    t.match(r.headers.get('content-type'), /^application\/json/);
    t.same(await r.json(), { data: { x: 1 } });
    t.ok(Date.now() - start >= 50, 'scripted delay applied');

    fake.graphqlDelayMs = 60;
    t.teardown(() => void (fake.graphqlDelayMs = 0));
    start = Date.now();
    r = await gql(fake, token);
    t.match(await r.json(), { data: { echo: { path: '/graphql' } } }, 'back to default');
    t.ok(Date.now() - start >= 50, 'graphqlDelayMs applied');

    fake.graphqlDelayMs = 60_000;
    const before = fake.graphqlRequests.length;
    const held = [gql(fake, token), gql(fake, token)];
    await waitFor(() => fake.graphqlRequests.length === before + 2, 2000, 'two held requests');
    t.equal(fake.endDelays(), 2, 'both delays ended');
    for (const answer of await Promise.all(held)) t.match(await answer.json(), { data: { echo: { path: '/graphql' } } }, 'answered at once');
    t.equal(fake.endDelays(), 0, 'nothing left to end');
  });

  t.test('large streamed response (variables.bytes)', async (t) => {
    const token = fake.issueToken();
    const n = 8 * 1024 * 1024 + 123;
    const r = await gql(fake, token, { query: '{ blob }', variables: { bytes: n } });
    t.equal(r.status, 200);
    const head = '{"data":{"blob":"';
    const tail = '"}}';
    t.equal(r.headers.get('content-length'), String(head.length + n + tail.length));
    const reader = r.body!.getReader();
    let total = 0;
    let first = '';
    let last = Buffer.alloc(0);
    let onlyX = true;
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      const buf = Buffer.from(value);
      if (first.length < head.length + 4) first += buf.toString('latin1', 0, Math.min(buf.length, 32));
      // Everything between head and tail must be 'x'.
      for (let i = 0; i < buf.length; i++) {
        const pos = total + i;
        if (pos >= head.length && pos < head.length + n && buf[i] !== 0x78) onlyX = false;
      }
      last = Buffer.concat([last, buf]).subarray(-8);
      total += buf.length;
    }
    t.equal(total, head.length + n + tail.length);
    t.ok(first.startsWith(head + 'xxxx'));
    t.equal(last.toString().slice(-4), 'x"}}');
    t.ok(onlyX, 'blob is all x');
  });
});

t.test('Usage API', async (t) => {
  const fake = await FakeBitquery.start();
  t.teardown(() => fake.close());
  t.beforeEach(() => fake.reset());

  const usage = (token: string | undefined, init: RequestInit = {}) =>
    fetch(fake.usageUrl, { ...init, headers: token ? { authorization: `Bearer ${token}` } : {} });

  t.test('401 plain-text Unauthorized without a valid Bearer token; recorded', async (t) => {
    const expired = fake.issueToken();
    fake.expire(expired);
    const valid = fake.issueToken();
    for (const token of [undefined, 'ory_at_bogus.bogus', expired]) {
      const res = await usage(token);
      t.equal(res.status, 401);
      t.equal(res.headers.get('content-type'), 'text/plain; charset=utf-8');
      t.equal(await res.text(), 'Unauthorized');
    }
    const query = await fetch(`${fake.usageUrl}?token=${encodeURIComponent(valid)}`);
    t.equal(query.status, 401, '?token= is not accepted, only the header');
    await query.arrayBuffer();
    t.same(
      fake.usageRequests.map((r) => [r.token, r.authorized]),
      [
        [undefined, false],
        ['ory_at_bogus.bogus', false],
        [expired, false],
        [undefined, false],
      ],
    );
    const post = await fetch(fake.usageUrl, { method: 'POST', headers: { authorization: `Bearer ${valid}` } });
    t.equal(post.status, 405);
    await post.arrayBuffer();
  });

  t.test('the documented shape with the defaults, then what the test set', async (t) => {
    const token = await getToken(fake);
    let res = await usage(token);
    t.equal(res.status, 200);
    t.match(res.headers.get('content-type'), /^application\/json/);
    const body = (await res.json()) as any;
    const start = new Date();
    start.setUTCHours(0, 0, 0, 0);
    const end = new Date(start.getTime() + 30 * 86_400_000 - 1000);
    const iso = (d: Date) => d.toISOString().replace('.000Z', 'Z');
    t.same(body, {
      account_id: 12345,
      payer_id: 12345,
      status: 'active',
      billing_period: {
        started_at: iso(start),
        ended_at: iso(end),
        plan_name: 'Pro',
        product: null,
        limits: {
          points_limit: 1_000_000,
          rate_limit: 90,
          session_limit: 6,
          subscription_limit: 100,
          time_sec_limit: 0,
          traffic_bytes_limit: 0,
          team_slots_limit: 5,
        },
        usage: { points_usage: 0, requests_usage: 0, time_sec_usage: 0, traffic_bytes_usage: 0 },
        description: { points_limit: 1_000_000, rate_limit: 90, session_limit: 6, subscription_limit: 100 },
      },
    });
    t.match(body.billing_period.started_at, /^\d{4}-\d\d-\d\dT00:00:00Z$/);
    t.same(fake.usageRequests.map((r) => [r.token, r.authorized]), [[token, true]]);

    fake.usage.status = 'grace';
    fake.usage.started_at = '2026-06-24T00:00:00Z';
    fake.usage.ended_at = '2026-07-23T23:59:59Z';
    fake.usage.limits.points_limit = 5000;
    fake.usage.limits.subscription_limit = 2;
    fake.usage.usage.points_usage = 4458;
    res = await usage(token);
    t.match(await res.json(), {
      status: 'grace',
      billing_period: {
        started_at: '2026-06-24T00:00:00Z',
        ended_at: '2026-07-23T23:59:59Z',
        limits: { points_limit: 5000, subscription_limit: 2 },
        usage: { points_usage: 4458 },
        description: { points_limit: 5000, subscription_limit: 2 },
      },
    });

    fake.reset();
    t.equal(fake.usage.status, 'active', 'reset restores the defaults');
    t.equal(fake.usage.usage.points_usage, 0);
    t.equal(fake.usageRequests.length, 0);
  });

  t.test('answered GraphQL queries add 5 points and 1 request; 401s and non-200 answers do not', async (t) => {
    const token = fake.issueToken();
    const points = async () => ((await (await usage(token)).json()) as any).billing_period.usage;
    for (let i = 0; i < 3; i++) await (await gql(fake, token)).arrayBuffer();
    t.same(await points(), { points_usage: 15, requests_usage: 3, time_sec_usage: 0, traffic_bytes_usage: 0 });

    await (await gql(fake, undefined)).arrayBuffer();
    fake.graphqlScript.push({ status: 429, body: 'Too Many Sessions' }, { status: 200, body: '{"data":{}}' });
    await (await gql(fake, token)).arrayBuffer();
    await (await gql(fake, token)).arrayBuffer();
    await (await gql(fake, token, { query: '{ blob }', variables: { bytes: 10 } })).arrayBuffer();
    t.match(await points(), { points_usage: 25, requests_usage: 5 }, 'scripted 200 and blob charged, 401 and 429 not');

    fake.pointsPerQuery = 40;
    t.teardown(() => void (fake.pointsPerQuery = 5));
    await (await gql(fake, token)).arrayBuffer();
    t.match(fake.usage.usage, { points_usage: 65, requests_usage: 6 }, 'pointsPerQuery is mutable');
  });

  t.test('accounts of their own: per client id and per static token', async (t) => {
    fake.addClient('team-b', 'secret-b');
    const a = await getToken(fake);
    const res = await postToken(fake, { ...GOOD, client_id: 'team-b', client_secret: 'secret-b' });
    t.equal(res.status, 200, 'the added client gets tokens');
    const b = ((await res.json()) as { access_token: string }).access_token;
    const wrong = await postToken(fake, { ...GOOD, client_id: 'team-b', client_secret: 'demo-secret' });
    t.equal(wrong.status, 401, "another client's secret does not work");
    await wrong.arrayBuffer();
    const staticToken = fake.issueToken();
    const minted = fake.issueToken(60, 'team-b');

    const teamB = fake.usageFor('team-b');
    t.equal(fake.usageFor('team-b'), teamB, 'one account per key');
    teamB.limits.points_limit = 2_000;
    const own = fake.usageFor(staticToken);
    own.status = 'blocked';

    await (await gql(fake, a)).arrayBuffer();
    for (const tok of [b, minted, b]) await (await gql(fake, tok)).arrayBuffer();
    await (await gql(fake, staticToken)).arrayBuffer();

    const read = async (tok: string) => (await (await usage(tok)).json()) as any;
    t.match(await read(a), { account_id: 12345, status: 'active', billing_period: { usage: { points_usage: 5, requests_usage: 1 } } });
    t.match(await read(b), {
      account_id: 12346,
      billing_period: { limits: { points_limit: 2_000 }, usage: { points_usage: 15, requests_usage: 3 } },
    });
    t.match(await read(minted), { account_id: 12346 }, 'issueToken with a client id uses that client');
    t.match(await read(staticToken), { account_id: 12347, status: 'blocked', billing_period: { usage: { points_usage: 5 } } });
  });

  t.test('usageFailures queue, usageDelayMs, then normal service', async (t) => {
    const token = fake.issueToken();
    fake.usageFailures.push(
      { kind: 'status', status: 500, body: 'Internal error' },
      { kind: 'status', status: 503 },
      { kind: 'invalid-json' },
      { kind: 'reset' },
      { kind: 'hang' },
    );
    let res = await usage(token);
    t.equal(res.status, 500);
    t.equal(res.headers.get('content-type'), 'text/plain; charset=utf-8');
    t.equal(await res.text(), 'Internal error');
    res = await usage(token);
    t.equal(res.status, 503);
    t.equal(await res.text(), '503 Service Unavailable');
    res = await usage(token);
    t.equal(res.status, 200);
    await t.rejects(res.json(), 'invalid-json is not JSON');
    await t.rejects(usage(token), 'reset destroys the socket');
    await t.rejects(usage(token, { signal: AbortSignal.timeout(150) }), 'hang never answers');
    t.equal(fake.usageFailures.length, 0);

    fake.usageDelayMs = 80;
    t.teardown(() => void (fake.usageDelayMs = 0));
    const start = Date.now();
    res = await usage(token);
    t.equal(res.status, 200, 'queue drained');
    await res.arrayBuffer();
    t.ok(Date.now() - start >= 70, 'usageDelayMs applied');
    t.equal(fake.usageRequests.length, 6, 'every request recorded');
  });
});

t.test('WebSocket', async (t) => {
  const fake = await FakeBitquery.start({ wsEventIntervalMs: 10, keepAliveMs: 40 });
  t.teardown(() => fake.close());
  t.beforeEach(() => fake.reset());
  const token = fake.issueToken();

  t.test('legacy graphql-ws: ack, ka, data, complete; stop is acknowledged but the stream runs on', async (t) => {
    const c = await Client.open(`${fake.wsUrl}/graphql?token=${encodeURIComponent(token)}`, ['graphql-ws']);
    t.teardown(() => c.ws.terminate());
    t.equal(c.ws.protocol, 'graphql-ws');
    t.same(fake.wsHandshakes[0]!.protocols, ['graphql-ws']);
    t.equal(fake.wsHandshakes[0]!.accepted, true);
    t.equal(fake.wsHandshakes[0]!.token, token);
    t.equal(fake.openSockets(), 1);

    c.send({ type: 'connection_init', payload: {} });
    t.same(await c.next(), { type: 'connection_ack' });
    t.same(await c.next(), { type: 'ka' }, 'ka right after ack');
    t.same(await c.next((m) => m.type === 'ka'), { type: 'ka' }, 'periodic ka');

    c.send({ type: 'start', id: '1', payload: { query: 'subscription { ticks(count: 3) { n at } }' } });
    const ns: number[] = [];
    for (;;) {
      const m = await c.next((m) => m.id === '1');
      if (m.type === 'complete') break;
      t.equal(m.type, 'data');
      t.type(m.payload.data.ticks.at, 'string');
      ns.push(m.payload.data.ticks.n);
    }
    t.same(ns, [1, 2, 3]);

    c.send({ type: 'start', id: '3', payload: { query: '{ hello }' } });
    t.same(await c.next((m) => m.id === '3'), { type: 'data', id: '3', payload: { data: { hello: 'world' } } });
    t.same(await c.next((m) => m.id === '3'), { type: 'complete', id: '3' });
    t.same(fake.activeStreams(), [], 'finished subscriptions and queries are not streams');

    // An endless subscription, stopped after its first event: Bitquery keeps it running.
    c.send({ type: 'start', id: '2', payload: { query: 'subscription { ticks { n } }' } });
    t.match(await c.next((m) => m.id === '2'), { type: 'data', payload: { data: { ticks: { n: 1 } } } });
    t.match(fake.activeStreams(), [{ id: '2', stopRequested: false }]);
    c.send({ type: 'stop', id: '2' });
    t.same(await c.next((m) => m.id === '2' && m.type !== 'data'), { type: 'complete', id: '2' }, 'stop answered complete');
    const after = await c.next((m) => m.id === '2');
    t.equal(after.type, 'data', 'events keep flowing after stop');
    t.match(fake.activeStreams(), [{ id: '2', stopRequested: true }], 'still a running (billed) stream');

    c.send({ type: 'connection_terminate' });
    t.equal((await c.waitClosed()).code, 1000);
    await waitFor(() => fake.openSockets() === 0, 2000, 'server socket closed');
    t.same(fake.activeStreams(), [], 'closing the socket ends the stream');
    t.match(fake.wsCloses, [{ socketId: fake.wsHandshakes[0]!.socketId, path: '/graphql', protocol: 'graphql-ws', code: 1000, reason: 'Normal Closure' }]);
  });

  t.test('legacy: invalid JSON closes 4400', async (t) => {
    const c = await Client.open(`${fake.wsUrl}/eap?token=${encodeURIComponent(token)}`, ['graphql-ws']);
    c.send('this is not json');
    t.equal((await c.waitClosed()).code, 4400);
  });

  t.test('no subprotocol offered: legacy, Bearer header on upgrade', async (t) => {
    const c = await Client.open(`${fake.wsUrl}/graphql`, undefined, { authorization: `Bearer ${token}` });
    t.teardown(() => c.ws.terminate());
    t.equal(c.ws.protocol, '');
    t.equal(fake.wsHandshakes[0]!.token, token);
    c.send({ type: 'connection_init' });
    t.same(await c.next(), { type: 'connection_ack' });
  });

  t.test('both offered: graphql-ws picked; only transport: graphql-transport-ws', async (t) => {
    const both = await Client.open(`${fake.wsUrl}/graphql?token=${encodeURIComponent(token)}`, [
      'graphql-transport-ws',
      'graphql-ws',
    ]);
    t.equal(both.ws.protocol, 'graphql-ws');
    both.ws.terminate();
    const tr = await Client.open(`${fake.wsUrl}/graphql?token=${encodeURIComponent(token)}`, ['graphql-transport-ws']);
    t.teardown(() => tr.ws.terminate());
    t.equal(tr.ws.protocol, 'graphql-transport-ws');
    tr.send({ type: 'connection_init' });
    t.same(await tr.next(), { type: 'connection_ack' });
    t.same(await tr.next((m) => m.type === 'pong'), { type: 'pong' }, 'server pong keep-alive');
    tr.send({ type: 'subscribe', id: 'a', payload: { query: 'subscription { ticks(count: 2) { n } }' } });
    t.same(await tr.next((m) => m.id === 'a'), { id: 'a', type: 'next', payload: { data: { ticks: { n: 1 } } } });
    t.same(await tr.next((m) => m.id === 'a'), { id: 'a', type: 'next', payload: { data: { ticks: { n: 2 } } } });
    t.same(await tr.next((m) => m.id === 'a'), { id: 'a', type: 'complete' });
  });

  t.test('graphql-transport-ws with the graphql-ws client', async (t) => {
    const client = createClient({
      url: `${fake.wsUrl}/graphql?token=${encodeURIComponent(token)}`,
      webSocketImpl: WebSocket,
      retryAttempts: 0,
      lazy: true,
    });
    t.teardown(() => client.dispose());
    const ns: unknown[] = [];
    for await (const r of client.iterate({ query: 'subscription { ticks(count: 3) { n } }' })) {
      ns.push((r.data as { ticks: { n: number } }).ticks.n);
    }
    t.same(ns, [1, 2, 3]);
    t.same(fake.wsHandshakes[0]!.protocols, ['graphql-transport-ws']);
  });

  t.test('handshake 401 for missing, bad, revoked token and rejectNextTokens', async (t) => {
    const bad = await refusedHandshake(`${fake.wsUrl}/graphql`);
    t.same(bad, { status: 401, contentType: 'text/plain; charset=utf-8', body: 'Unauthorized' });
    const bogus = await refusedHandshake(`${fake.wsUrl}/graphql?token=ory_at_x.y`);
    t.equal(bogus.status, 401);
    const revoked = fake.issueToken();
    fake.revoke(revoked);
    t.equal((await refusedHandshake(`${fake.wsUrl}/graphql`, ['graphql-ws'], { authorization: `Bearer ${revoked}` })).status, 401);
    fake.rejectNextTokens = 1;
    t.equal((await refusedHandshake(`${fake.wsUrl}/graphql?token=${encodeURIComponent(token)}`)).status, 401);
    t.same(
      fake.wsHandshakes.map((h) => h.accepted),
      [false, false, false, false],
    );
    const ok = await Client.open(`${fake.wsUrl}/graphql?token=${encodeURIComponent(token)}`, ['graphql-ws']);
    ok.ws.terminate();
    t.equal(fake.wsHandshakes[4]!.accepted, true);
    t.equal((await refusedHandshake(`${fake.wsUrl}/other?token=${encodeURIComponent(token)}`)).status, 404);
  });

  t.test('ws-connection event lets tests close from the server; revoke keeps sockets open', async (t) => {
    let seen: RecordedWsHandshake | undefined;
    const handler = (ws: WebSocket, info: RecordedWsHandshake) => {
      seen = info;
      t.ok(fake.wsServerSockets.has(ws));
      ws.close(4403, 'forbidden');
    };
    fake.on('ws-connection', handler);
    const c = await Client.open(`${fake.wsUrl}/graphql?token=${encodeURIComponent(token)}`, ['graphql-ws']);
    t.same(await c.waitClosed(), { code: 4403, reason: 'forbidden' });
    t.equal(seen?.path, '/graphql');
    fake.off('ws-connection', handler);
    await waitFor(() => fake.openSockets() === 0, 2000, 'server socket closed');

    const tok = fake.issueToken();
    const d = await Client.open(`${fake.wsUrl}/graphql?token=${encodeURIComponent(tok)}`, ['graphql-ws']);
    t.teardown(() => d.ws.terminate());
    fake.revoke(tok);
    d.send({ type: 'connection_init' });
    t.same(await d.next(), { type: 'connection_ack' }, 'still served after revoke');
  });
});

t.test('WebSocket streams as Bitquery bills them', async (t) => {
  const fake = await FakeBitquery.start({ wsEventIntervalMs: 10, keepAliveMs: 40 });
  t.teardown(() => fake.close());
  const token = fake.issueToken();
  t.beforeEach(() => fake.reset());
  t.afterEach(async () => {
    fake.terminate();
    await waitFor(() => fake.openSockets() === 0, 2000, 'no open socket');
  });

  /** An initialised socket of either protocol. */
  async function open(protocol: 'graphql-ws' | 'graphql-transport-ws', path = '/graphql', tok = token): Promise<Client> {
    const c = await Client.open(`${fake.wsUrl}${path}?token=${encodeURIComponent(tok)}`, [protocol]);
    c.send({ type: 'connection_init', payload: {} });
    await c.next((m) => m.type === 'connection_ack');
    return c;
  }
  const start = (c: Client, id: string, payload: Record<string, unknown>) =>
    c.send({ type: c.ws.protocol === 'graphql-ws' ? 'start' : 'subscribe', id, payload });
  /** The data of the next event for `id`, in either protocol. */
  async function event(c: Client, id: string): Promise<any> {
    const m = await c.next((m) => m.id === id);
    if (m.type !== (c.ws.protocol === 'graphql-ws' ? 'data' : 'next')) throw new Error(`unexpected ${JSON.stringify(m)}`);
    return m.payload.data;
  }

  t.test('transport: complete from the client is not answered and the stream runs on; pings', async (t) => {
    const c = await open('graphql-transport-ws');
    c.send({ type: 'ping', payload: { x: 1 } });
    t.same(await c.next((m) => m.type === 'pong' && m.payload !== undefined), { type: 'pong', payload: { x: 1 } });
    start(c, 'q', { query: '{ hello }' });
    t.same(await event(c, 'q'), { hello: 'world' });
    t.same(await c.next((m) => m.id === 'q'), { id: 'q', type: 'complete' });

    start(c, 's', { query: 'subscription { events { seq } }' });
    await waitFor(() => fake.activeStreams().length === 1, 2000, 'the stream');
    c.send({ type: 'complete', id: 's' });
    await waitFor(() => fake.activeStreams()[0]?.stopRequested === true, 2000, 'stopRequested');
    t.same(fake.publish(), { seq: 1, delivered: 1 });
    t.same(await event(c, 's'), { events: { seq: 1 } }, 'events keep flowing after complete');
    t.notOk(c.received.some((m) => m.type === 'complete' && m.id === 's'), 'no complete sent back');
    t.equal(fake.activeStreams().length, 1, 'still billed');

    start(c, 's', { query: 'subscription { events { seq } }' });
    await waitFor(() => fake.activeStreams().length === 2, 2000, 'id reused after complete');
    start(c, 's', { query: 'subscription { events { seq } }' });
    t.same(await c.waitClosed(), { code: 4409, reason: 'Subscriber for s already exists' });
  });

  t.test('transport protocol errors close the socket with graphql-ws codes', async (t) => {
    const url = `${fake.wsUrl}/graphql?token=${encodeURIComponent(token)}`;
    let c = await Client.open(url, ['graphql-transport-ws']);
    c.send({ type: 'subscribe', id: '1', payload: { query: '{ hello }' } });
    t.same(await c.waitClosed(), { code: 4401, reason: 'Unauthorized' }, 'subscribe before connection_init');
    c = await open('graphql-transport-ws');
    c.send({ type: 'connection_init' });
    t.same(await c.waitClosed(), { code: 4429, reason: 'Too many initialisation requests' });
    for (const bad of ['nope', { type: 'subscribe', id: '', payload: { query: '{ hello }' } }, { type: 'what' }, { type: 'ping', payload: 3 }]) {
      c = await open('graphql-transport-ws');
      c.send(bad);
      t.same(await c.waitClosed(), { code: 4400, reason: 'Invalid message received' }, JSON.stringify(bad));
    }
    fake.connectionInitTimeoutMs = 50;
    t.teardown(() => void (fake.connectionInitTimeoutMs = 3000));
    c = await Client.open(url, ['graphql-transport-ws']);
    t.same(await c.waitClosed(), { code: 4408, reason: 'Connection initialisation timeout' });
  });

  t.test('GraphQL errors in each protocol', async (t) => {
    const legacy = await open('graphql-ws');
    const transport = await open('graphql-transport-ws');
    for (const c of [legacy, transport]) {
      start(c, 'bad', { query: 'subscription { nope }' });
      start(c, 'syntax', { query: 'subscription {' });
      start(c, 'none', { query: 'query A { hello } query B { hello }' });
    }
    const msg = 'Cannot query field "nope" on type "Subscription".';
    t.same(await legacy.next((m) => m.id === 'bad'), { type: 'error', id: 'bad', payload: { message: msg } });
    t.match(await transport.next((m) => m.id === 'bad'), { type: 'error', id: 'bad', payload: [{ message: msg, locations: [{ line: 1, column: 16 }] }] });
    t.match(await legacy.next((m) => m.id === 'syntax'), { type: 'error', payload: { message: /^Syntax Error/ } });
    t.match(await transport.next((m) => m.id === 'syntax'), { type: 'error', payload: [{ message: /^Syntax Error/ }] });
    t.same(await legacy.next((m) => m.id === 'none'), { type: 'error', id: 'none', payload: { message: 'Unable to identify operation' } });
    t.same(await transport.next((m) => m.id === 'none'), { type: 'error', id: 'none', payload: [{ message: 'Unable to identify operation' }] });
    legacy.send({ type: 'start', id: 'v', payload: { query: 'subscription ($c: Int) { ticks(count: $c) { n } }', variables: { c: 'x' } } });
    t.match(await legacy.next((m) => m.id === 'v'), { type: 'data', payload: { errors: [{ message: /Int cannot represent/ }] } });
    t.same(await legacy.next((m) => m.id === 'v'), { type: 'complete', id: 'v' });
    t.same(fake.activeStreams(), []);
  });

  t.test('activeStreams: every running subscription with its socket, protocol, path and normalized request', async (t) => {
    const a = await open('graphql-ws');
    const b = await open('graphql-transport-ws', '/eap');
    start(a, '1', { query: 'subscription   S($t: String) {\n events(topic: $t) { seq } }', variables: { t: 'x' }, operationName: 'S' });
    start(a, '2', { query: 'subscription { ticks { n } }' });
    start(b, '7', { query: '# comment\nsubscription { events { seq topic } }' });
    start(b, 'q', { query: '{ hello }' });
    await waitFor(() => fake.activeStreams().length === 3, 2000, 'three streams');
    const [sa, sb] = fake.sockets();
    t.match(sa, { id: fake.wsHandshakes[0]!.socketId, path: '/graphql', protocol: 'graphql-ws', token, clientId: undefined, silenced: false, streams: 2 });
    t.match(sb, { id: fake.wsHandshakes[1]!.socketId, path: '/eap', protocol: 'graphql-transport-ws', streams: 1 });
    t.same(
      fake.activeStreams().map(({ startedAt, ...rest }) => (t.type(startedAt, 'number'), rest)),
      [
        {
          socketId: sa!.id, protocol: 'graphql-ws', path: '/graphql', clientId: undefined, id: '1',
          query: 'subscription S($t: String) {\n  events(topic: $t) {\n    seq\n  }\n}', variables: { t: 'x' }, operationName: 'S',
          field: 'events', topic: 'x', stopRequested: false,
        },
        {
          socketId: sa!.id, protocol: 'graphql-ws', path: '/graphql', clientId: undefined, id: '2',
          query: 'subscription {\n  ticks {\n    n\n  }\n}', variables: undefined, operationName: undefined,
          field: 'ticks', topic: undefined, stopRequested: false,
        },
        {
          socketId: sb!.id, protocol: 'graphql-transport-ws', path: '/eap', clientId: undefined, id: '7',
          query: 'subscription {\n  events {\n    seq\n    topic\n  }\n}', variables: undefined, operationName: undefined,
          field: 'events', topic: 'default', stopRequested: false,
        },
      ],
    );

    fake.addClient('team-b', 'secret-b');
    const c = await open('graphql-ws', '/graphql', fake.issueToken(60, 'team-b'));
    start(c, '1', { query: 'subscription { ticks { n } }' });
    await waitFor(() => fake.activeStreams().length === 4, 2000, 'four streams');
    t.equal(fake.activeStreams()[3]!.clientId, 'team-b', 'the client the token was minted for');

    b.ws.close();
    await waitFor(() => fake.activeStreams().length === 3, 2000, 'its socket closing ends a stream');
  });

  t.test('publish: one event to each subscription of the topic, in its protocol, seq increasing', async (t) => {
    const legacy = await open('graphql-ws');
    const transport = await open('graphql-transport-ws');
    start(legacy, 'x', { query: 'subscription { events(topic: "x") { seq topic at } }' });
    start(legacy, 'd', { query: 'subscription { events { seq topic } }' });
    start(transport, 'x2', { query: 'subscription { events(topic: "x") { seq } }' });
    start(transport, 'y', { query: 'subscription { events(topic: "y") { seq topic } }' });
    await waitFor(() => fake.activeStreams().length === 4, 2000, 'four streams');

    t.same(fake.publish('x'), { seq: 1, delivered: 2 });
    t.same(fake.publish('x'), { seq: 2, delivered: 2 });
    t.same(fake.publish('nobody'), { seq: 3, delivered: 0 });
    const first = await event(legacy, 'x');
    t.match(first, { events: { seq: 1, topic: 'x', at: String } });
    t.ok(!Number.isNaN(Date.parse(first.events.at)));
    t.match(await event(legacy, 'x'), { events: { seq: 2, topic: 'x' } });
    t.same(await event(transport, 'x2'), { events: { seq: 1 } }, 'only the fields asked for');
    t.same(await event(transport, 'x2'), { events: { seq: 2 } });

    t.same(fake.publish(), { seq: 4, delivered: 4 }, 'no topic: every events subscription');
    // In the order sent (Client.next skips what does not match).
    t.match(await event(legacy, 'x'), { events: { seq: 4 } });
    t.same(await event(legacy, 'd'), { events: { seq: 4, topic: 'default' } });
    t.same(await event(transport, 'x2'), { events: { seq: 4 } });
    t.same(await event(transport, 'y'), { events: { seq: 4, topic: 'y' } });
    t.notOk(legacy.received.some((m) => m.id === 'd' && m.payload?.data?.events.seq < 4), 'd saw nothing of topic x');

    // Bitquery's stream survives stop/complete: it still gets published events.
    legacy.send({ type: 'stop', id: 'x' });
    await legacy.next((m) => m.id === 'x' && m.type === 'complete');
    t.same(fake.publish('x'), { seq: 5, delivered: 2 });
    t.match(await event(legacy, 'x'), { events: { seq: 5 } });
  });

  t.test('silence: nothing at the protocol level, pings still answered; unsilence; later sockets speak', async (t) => {
    const legacy = await open('graphql-ws');
    const transport = await open('graphql-transport-ws');
    start(legacy, '1', { query: 'subscription { events { seq } }' });
    start(transport, '1', { query: 'subscription { ticks { n } }' });
    await event(transport, '1');
    await waitFor(() => fake.activeStreams().length === 2, 2000, 'two streams');

    t.equal(fake.silence((s) => s.protocol === 'graphql-ws'), 1);
    t.equal(fake.silence(), 1, 'only the one not yet silenced changes');
    t.same(fake.sockets().map((s) => s.silenced), [true, true]);
    // WebSocket-level pings are answered; each pong also proves that what the server sent before the
    // silence has arrived (same TCP stream, in order).
    for (const c of [legacy, transport]) {
      let pongs = 0;
      c.ws.on('pong', () => (pongs += 1));
      c.ws.ping();
      await waitFor(() => pongs === 1, 2000, 'WebSocket-level pong');
    }
    const marks = [legacy.received.length, transport.received.length];
    t.same(fake.publish(), { seq: 1, delivered: 0 });
    transport.send({ type: 'ping' });
    legacy.send({ type: 'start', id: '2', payload: { query: '{ hello }' } });
    transport.send({ type: 'subscribe', id: '2', payload: { query: 'subscription { events { seq } }' } });
    await waitFor(() => fake.activeStreams().length === 3, 2000, 'a stream started while silent');
    // A socket opened later speaks: four of its keep-alives span several ka / pong / tick periods.
    const clock = await open('graphql-ws');
    for (let i = 0; i < 4; i++) await clock.next((m) => m.type === 'ka');
    t.same(legacy.received.slice(marks[0]), [], 'legacy: no ka, data or answers');
    t.same(transport.received.slice(marks[1]), [], 'transport: no pong, next or answers');
    clock.ws.terminate();
    await waitFor(() => fake.openSockets() === 2, 2000, 'the clock closed');
    t.equal(fake.sockets().filter((s) => s.silenced).length, 2, 'silenced connections stay open');

    t.equal(fake.unsilence(), 2);
    t.same(fake.publish(), { seq: 2, delivered: 2 });
    t.same(await event(legacy, '1'), { events: { seq: 2 } }, 'events again, those of the silence lost');
    t.same(await event(transport, '2'), { events: { seq: 2 } });
    await legacy.next((m) => m.type === 'ka');
    await transport.next((m) => m.type === 'pong');
  });

  t.test('terminate, closeSockets, wsCloses and the ws-close event', async (t) => {
    const a = await open('graphql-ws');
    const b = await open('graphql-transport-ws', '/eap');
    const c = await open('graphql-ws');
    const [ia, ib, ic] = fake.sockets().map((s) => s.id);
    const closes: RecordedWsClose[] = [];
    const onClose = (r: RecordedWsClose) => {
      closes.push(r);
      t.notOk(fake.sockets().some((s) => s.id === r.socketId), 'gone from sockets() when emitted');
    };
    fake.on('ws-close', onClose);
    t.teardown(() => void fake.off('ws-close', onClose));
    t.equal(fake.terminate((s) => s.id === ia), 1);
    t.equal((await a.waitClosed()).code, 1006, 'no close frame');
    t.equal(fake.closeSockets(4500, 'server bye', (s) => s.path === '/eap'), 1);
    t.same(await b.waitClosed(), { code: 4500, reason: 'server bye' });
    c.ws.close(4000, 'client bye');
    await waitFor(() => fake.wsCloses.length === 3, 2000, 'three closes');
    t.match(fake.wsCloses, [
      { socketId: ia, protocol: 'graphql-ws', path: '/graphql', code: 1006, reason: '' },
      { socketId: ib, protocol: 'graphql-transport-ws', path: '/eap', code: 4500, reason: 'server bye' },
      { socketId: ic, code: 4000, reason: 'client bye' },
    ]);
    t.same(closes, fake.wsCloses);
    t.equal(fake.openSockets(), 0);
  });

  t.test('errorStreams and completeStreams end streams from the server side; the socket stays', async (t) => {
    const legacy = await open('graphql-ws');
    const transport = await open('graphql-transport-ws');
    for (const c of [legacy, transport]) {
      start(c, 'e', { query: 'subscription { events(topic: "e") { seq } }' });
      start(c, 'c', { query: 'subscription { events(topic: "c") { seq } }' });
    }
    await waitFor(() => fake.activeStreams().length === 4, 2000, 'four streams');
    t.equal(fake.errorStreams('stream limit reached', (s) => s.topic === 'e'), 2);
    t.same(await legacy.next((m) => m.id === 'e'), { type: 'error', id: 'e', payload: { message: 'stream limit reached' } });
    t.same(await transport.next((m) => m.id === 'e'), { type: 'error', id: 'e', payload: [{ message: 'stream limit reached' }] });
    t.equal(fake.completeStreams(), 2);
    t.same(await legacy.next((m) => m.id === 'c'), { type: 'complete', id: 'c' });
    t.same(await transport.next((m) => m.id === 'c'), { type: 'complete', id: 'c' });
    t.same(fake.activeStreams(), []);
    t.same(fake.publish(), { seq: 1, delivered: 0 });
    t.equal(fake.openSockets(), 2);
    start(transport, 'e', { query: '{ hello }' });
    t.same(await event(transport, 'e'), { hello: 'world' }, 'the id is free again');
  });
});

t.test('random faults', async (t) => {
  const fake = await FakeBitquery.start();
  t.teardown(() => fake.close());
  t.beforeEach(() => fake.reset());
  const token = fake.issueToken();

  /** The status of one GraphQL request, or 'error' when the connection failed. */
  async function outcome(target = fake, tok = token): Promise<number | 'error'> {
    try {
      const res = await gql(target, tok);
      await res.arrayBuffer();
      return res.status;
    } catch {
      return 'error';
    }
  }

  t.test('each kind, as the client sees it, counted and recorded', async (t) => {
    const seen: InjectedFault[] = [];
    const onFault = (f: InjectedFault) => seen.push(f);
    fake.on('fault', onFault);
    t.teardown(() => void fake.off('fault', onFault));

    fake.setFaults({ tokenError: 1 });
    let res = await postToken(fake, GOOD);
    t.equal(res.status, 500);
    t.match(res.headers.get('content-type'), /^application\/json/);
    t.same(await res.json(), {
      error: 'server_error',
      error_description: 'The authorization server encountered an unexpected condition that prevented it from fulfilling the request.',
      status_code: 500,
    });
    fake.setFaults({ tokenTimeout: 1 });
    const hung = fetch(fake.tokenUrl, { method: 'POST', headers: { 'content-type': FORM }, body: tokenForm(GOOD), signal: AbortSignal.timeout(150) });
    await t.rejects(hung, { name: 'TimeoutError' }, 'tokenTimeout never answers');

    fake.setFaults({ http401: 1 });
    const r401 = await gql(fake, token);
    t.equal(r401.status, 401);
    t.equal(await r401.text(), 'Unauthorized');
    t.ok(fake.isValid(token), 'the token stays valid');
    fake.setFaults({ http401: 1, http401Revokes: true });
    const revoked = fake.issueToken();
    t.equal(await outcome(fake, revoked), 401);
    t.notOk(fake.isValid(revoked), 'http401Revokes revokes it');

    fake.setFaults({ http5xx: 1, seed: 3 });
    const answers = new Set<string>();
    for (let i = 0; i < 24; i++) {
      const r = await gql(fake, token);
      t.equal(r.headers.get('content-type'), 'text/plain; charset=utf-8');
      answers.add(`${r.status} ${await r.text()}`);
    }
    t.same([...answers].sort(), ['500 Memory limit', '500 Too many simultaneous queries', '502 Bad Gateway', '503 Service Unavailable'].sort());

    fake.setFaults({ httpSlow: 1, slowMs: 120 });
    const started = Date.now();
    t.equal(await outcome(), 200, 'slow, then answered');
    t.ok(Date.now() - started >= 110, 'after slowMs');

    fake.setFaults({ httpReset: 1 });
    const points = fake.usage.usage.points_usage;
    t.equal(await outcome(), 'error', 'reset mid-answer');
    t.equal(fake.usage.usage.points_usage, points + 5, 'the server ran it: charged');

    fake.setFaults(undefined);
    t.equal(await outcome(), 200, 'off again');
    t.same(fake.faultCounts, { tokenError: 1, tokenTimeout: 1, http401: 2, http5xx: 24, httpSlow: 1, httpReset: 1 });
    t.same(seen, fake.injectedFaults, "the 'fault' event and the records agree");
    t.match(fake.injectedFaults[0], { kind: 'tokenError', n: 1, path: '/oauth2/token', status: 500 });
    t.match(fake.injectedFaults[2], { kind: 'http401', n: 1, path: '/graphql', token, status: 401, body: 'Unauthorized' });
    t.match(fake.injectedFaults.at(-1), { kind: 'httpReset', n: 1, token, status: undefined });
    t.equal(fake.tokenRequests.length, 2);
  });

  t.test('scripted answers and 401s for bad tokens draw no fault', async (t) => {
    fake.setFaults({ http5xx: 1 });
    fake.graphqlScript.push({ status: 200, body: '{"data":{}}' });
    t.equal(await outcome(), 200);
    t.equal(await outcome(fake, 'ory_at_bad.bad'), 401);
    t.equal(fake.faultCounts.http5xx, 0);
    t.ok(((await outcome()) as number) >= 500, 'a 5xx');
    t.match(fake.injectedFaults, [{ kind: 'http5xx', n: 1 }]);
  });

  t.test('the same seed gives the same faults, request by request', async (t) => {
    const config = { seed: 42, http401: 0.2, http5xx: 0.2, httpReset: 0.2, httpSlow: 0.1, slowMs: 1, tokenError: 0.3, tokenTimeout: 0 };
    const run = async (cfg: typeof config) => {
      const f = await FakeBitquery.start({ faults: cfg });
      try {
        const tok = f.issueToken();
        const http: (number | 'error')[] = [];
        for (let i = 0; i < 40; i++) http.push(await outcome(f, tok));
        const tokens: number[] = [];
        for (let i = 0; i < 20; i++) tokens.push((await postToken(f, GOOD).then(async (r) => (await r.arrayBuffer(), r))).status);
        return { http, tokens, kinds: f.injectedFaults.map((x) => `${x.kind}#${x.n}`), seed: f.faults!.seed };
      } finally {
        await f.close();
      }
    };
    const a = await run(config);
    const b = await run(config);
    t.same(b, a, 'identical');
    t.equal(a.seed, 42);
    for (const kind of ['http401', 'http5xx', 'httpReset', 'httpSlow', 'tokenError']) {
      t.ok(a.kinds.some((k) => k.startsWith(`${kind}#`)), `${kind} drawn at least once in this run`);
    }
    t.ok(a.http.some((s) => s === 200) && a.tokens.some((s) => s === 200), 'and normal answers');
    const c = await run({ ...config, seed: 43 });
    t.not(JSON.stringify(c.kinds), JSON.stringify(a.kinds), 'another seed, another schedule');
  });

  t.test('bad configurations throw a RangeError naming the field; no seed picks one', async (t) => {
    t.throws(() => fake.setFaults({ http5xx: 1.5 }), new RangeError('fault http5xx must be a probability between 0 and 1, got 1.5'));
    t.throws(() => fake.setFaults({ tokenError: -0.1 }), RangeError);
    t.throws(() => fake.setFaults({ http401: 0.6, httpReset: 0.5 }), /http401 \+ http5xx \+ httpSlow \+ httpReset must add up to 1 at most/);
    t.throws(() => fake.setFaults({ seed: 1.5 }), /seed must be an integer/);
    t.throws(() => fake.setFaults({ slowMs: -1 }), /slowMs/);
    await t.rejects(FakeBitquery.start({ faults: { tokenTimeout: 2 } }), RangeError);
    t.equal(fake.faults, undefined, 'a rejected configuration leaves faults off');
    fake.setFaults({ httpSlow: 0.5 });
    t.type(fake.faults!.seed, 'number');
    t.equal(fake.faults!.httpSlow, 0.5);
  });

  t.test('recordRequests off: no records, counters and events go on', async (t) => {
    fake.recordRequests = false;
    t.teardown(() => void (fake.recordRequests = true));
    fake.setFaults({ http5xx: 1 });
    let events = 0;
    const onFault = () => (events += 1);
    fake.on('fault', onFault);
    t.teardown(() => void fake.off('fault', onFault));
    await (await postToken(fake, GOOD)).arrayBuffer();
    t.ok(((await outcome()) as number) >= 500, 'a 5xx');
    await (await fetch(fake.usageUrl, { headers: { authorization: `Bearer ${token}` } })).arrayBuffer();
    const c = await Client.open(`${fake.wsUrl}/graphql?token=${encodeURIComponent(token)}`, ['graphql-ws']);
    c.ws.close();
    await c.waitClosed();
    await waitFor(() => fake.openSockets() === 0, 2000, 'closed');
    t.same(
      [fake.tokenRequests, fake.graphqlRequests, fake.usageRequests, fake.wsHandshakes, fake.wsCloses, fake.injectedFaults].map((l) => l.length),
      [0, 0, 0, 0, 0, 0],
    );
    t.equal(fake.faultCounts.http5xx, 1);
    t.equal(events, 1);
  });

  t.test('GET /_fake/stats', async (t) => {
    fake.setFaults({ seed: 9, http5xx: 1 });
    t.equal(await outcome(), 500);
    const res = await fetch(`${fake.url}/_fake/stats`);
    t.same(await res.json(), {
      seed: 9,
      faults: { tokenError: 0, tokenTimeout: 0, http401: 0, http5xx: 1, httpSlow: 0, httpReset: 0 },
      openSockets: 0,
      activeStreams: 0,
    });
  });
});

t.test('cli.ts', async (t) => {
  const cli = resolve(import.meta.dirname, 'cli.ts');
  const run = (args: string[]) => {
    const child = spawn(process.execPath, ['--import', 'tsx', cli, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.setEncoding('utf8').on('data', (c: string) => (out += c));
    child.stderr.setEncoding('utf8').on('data', (c: string) => (err += c));
    const exited = new Promise<number | null>((done) => child.on('exit', done));
    return { child, exited, out: () => out, err: () => err };
  };

  t.test('flags set the lifetime and the faults; stats; SIGTERM exits 0', async (t) => {
    const p = run(['--port', '0', '--token-lifetime-sec', '5', '--seed', '11', '--http-5xx', '1', '--client-secret', 's3']);
    t.teardown(() => p.child.kill('SIGKILL'));
    await waitFor(() => p.out().includes('\n'), 60_000, 'the JSON line');
    const urls = JSON.parse(p.out()) as { url: string; tokenUrl: string; usageUrl: string; wsUrl: string };
    t.match(urls, { url: /^http:\/\/127\.0\.0\.1:\d+$/, usageUrl: /\/api\/usage$/, wsUrl: /^ws:/ });
    const res = await fetch(urls.tokenUrl, { method: 'POST', headers: { 'content-type': FORM }, body: tokenForm({ ...GOOD, client_secret: 's3' }) });
    const grant = (await res.json()) as { access_token: string; expires_in: number };
    t.equal(grant.expires_in, 5);
    const q = await fetch(`${urls.url}/graphql`, { method: 'POST', headers: { authorization: `Bearer ${grant.access_token}` }, body: '{"query":"{ hello }"}' });
    t.equal(q.status, 500);
    await q.arrayBuffer();
    t.match(await (await fetch(`${urls.url}/_fake/stats`)).json(), { seed: 11, faults: { http5xx: 1 } });
    p.child.kill('SIGTERM');
    t.equal(await p.exited, 0);
  });

  t.test('a bad flag exits 2 with one line', async (t) => {
    for (const [args, message] of [
      [['--http-5xx', '2'], 'fake-bitquery: fault http5xx must be a probability between 0 and 1, got 2\n'],
      [['--port', 'x'], 'fake-bitquery: --port must be a number, got "x"\n'],
      [['--nope'], /^fake-bitquery: Unknown option '--nope'.*\n$/],
    ] as const) {
      const p = run(['--port', '0', ...args]);
      t.equal(await p.exited, 2, args.join(' '));
      t.match(p.err(), message);
      t.equal(p.err().split('\n').length, 2, 'one line');
    }
  });
});

t.test('close() is prompt with hanging requests and open sockets', async (t) => {
  const fake = await FakeBitquery.start();
  const token = fake.issueToken();
  fake.tokenFailures.push({ kind: 'hang' });
  const hanging = postToken(fake, GOOD);
  hanging.catch(() => {});
  fake.graphqlDelayMs = 60_000;
  const slow = gql(fake, token);
  slow.catch(() => {});
  const c = await Client.open(`${fake.wsUrl}/graphql?token=${encodeURIComponent(token)}`, ['graphql-ws']);
  c.send({ type: 'connection_init' });
  await c.next();
  c.send({ type: 'start', id: '1', payload: { query: 'subscription { ticks { n } }' } });
  await c.next((m) => m.type === 'data');
  await waitFor(() => fake.tokenRequests.length === 1 && fake.graphqlRequests.length === 1, 2000, 'requests');

  const start = Date.now();
  await fake.close();
  t.ok(Date.now() - start < 1000, 'closed promptly');
  await t.rejects(hanging, 'hanging token request fails');
  await t.rejects(slow, 'delayed graphql request fails');
  await c.waitClosed();
  t.equal(fake.openSockets(), 0);
  await fake.close(); // idempotent
});
