/**
 * Runs a FakeBitquery for demos and soak tests:
 *   node --import tsx test/fake-bitquery/cli.ts [flags]
 *
 * Flags (each also read from the environment variable shown, the flag winning):
 *   --host HOST                 FAKE_HOST, default 127.0.0.1
 *   --port N                    FAKE_PORT, default 8090 (0: a free port)
 *   --client-id ID              FAKE_CLIENT_ID, default demo-client
 *   --client-secret SECRET      FAKE_CLIENT_SECRET, default demo-secret
 *   --token-lifetime-sec N      FAKE_TOKEN_LIFETIME_SEC, expires_in of tokens, default 17999 (5 for a soak)
 *   --keep-alive-ms N           keep-alive period on WebSockets, default 10000
 *   --event-interval-ms N       period of `ticks` events, default 50
 * Random faults (probabilities 0..1 per request; see FaultConfig in faults.ts):
 *   --seed N                    generator seed (default random; /_fake/stats tells which)
 *   --token-error P             token endpoint answers 500
 *   --token-timeout P           token endpoint never answers
 *   --http-401 P                GraphQL answers 401 Unauthorized
 *   --http-401-revokes          ... and revokes the token
 *   --http-5xx P                GraphQL answers a 5xx with a plain-text body
 *   --http-slow P               GraphQL answers after --slow-ms (default 1000)
 *   --http-reset P              GraphQL resets the connection mid-answer
 *
 * Prints one JSON line {"url","wsUrl","tokenUrl","usageUrl"} on stdout once listening; closes on
 * SIGTERM/SIGINT. Records are off (nobody can read them); GET /_fake/stats answers
 * {"seed","faults":{kind: count},"openSockets","activeStreams"}. A bad flag exits 2 with one line.
 */
import { parseArgs } from 'node:util';
import { FakeBitquery, type FaultConfig } from './index.js';

function fail(message: string): never {
  process.stderr.write(`fake-bitquery: ${message}\n`);
  process.exit(2);
}

let values: Record<string, string | boolean | undefined>;
try {
  ({ values } = parseArgs({
    strict: true,
    allowPositionals: false,
    options: {
      host: { type: 'string' },
      port: { type: 'string' },
      'client-id': { type: 'string' },
      'client-secret': { type: 'string' },
      'token-lifetime-sec': { type: 'string' },
      'keep-alive-ms': { type: 'string' },
      'event-interval-ms': { type: 'string' },
      seed: { type: 'string' },
      'token-error': { type: 'string' },
      'token-timeout': { type: 'string' },
      'http-401': { type: 'string' },
      'http-401-revokes': { type: 'boolean' },
      'http-5xx': { type: 'string' },
      'http-slow': { type: 'string' },
      'http-reset': { type: 'string' },
      'slow-ms': { type: 'string' },
    },
  }));
} catch (err) {
  fail((err as Error).message);
}

/** The flag's number, else the environment's, else undefined; anything not a number exits 2. */
function num(flag: string, env?: string): number | undefined {
  const raw = (values[flag] as string | undefined) ?? (env === undefined ? undefined : process.env[env]);
  if (raw === undefined || raw === '') return undefined;
  const n = Number(raw);
  if (!Number.isFinite(n)) fail(`--${flag} must be a number, got ${JSON.stringify(raw)}`);
  return n;
}

const faultFlags = {
  seed: num('seed'),
  tokenError: num('token-error'),
  tokenTimeout: num('token-timeout'),
  http401: num('http-401'),
  http5xx: num('http-5xx'),
  httpSlow: num('http-slow'),
  httpReset: num('http-reset'),
  slowMs: num('slow-ms'),
  http401Revokes: values['http-401-revokes'] === true ? true : undefined,
};
const faults = Object.fromEntries(Object.entries(faultFlags).filter(([, v]) => v !== undefined)) as FaultConfig;
const lifetime = num('token-lifetime-sec', 'FAKE_TOKEN_LIFETIME_SEC');
const keepAlive = num('keep-alive-ms');
const interval = num('event-interval-ms');

let fake: FakeBitquery;
try {
  fake = await FakeBitquery.start({
    host: (values.host as string | undefined) ?? process.env.FAKE_HOST ?? '127.0.0.1',
    port: num('port', 'FAKE_PORT') ?? 8090,
    clientId: (values['client-id'] as string | undefined) ?? process.env.FAKE_CLIENT_ID ?? 'demo-client',
    clientSecret: (values['client-secret'] as string | undefined) ?? process.env.FAKE_CLIENT_SECRET ?? 'demo-secret',
    recordRequests: false,
    ...(lifetime !== undefined && { tokenLifetimeSec: lifetime }),
    ...(keepAlive !== undefined && { keepAliveMs: keepAlive }),
    ...(interval !== undefined && { wsEventIntervalMs: interval }),
    ...(Object.keys(faults).length > 0 && { faults }),
  });
} catch (err) {
  fail((err as Error).message);
}

process.stdout.write(JSON.stringify({ url: fake.url, wsUrl: fake.wsUrl, tokenUrl: fake.tokenUrl, usageUrl: fake.usageUrl }) + '\n');

let stopping = false;
const shutdown = (signal: NodeJS.Signals) => {
  if (stopping) return;
  stopping = true;
  process.stderr.write(`fake-bitquery: ${signal}, closing\n`);
  fake.close().then(
    () => process.exit(0),
    (err: unknown) => {
      process.stderr.write(`fake-bitquery: close failed: ${String(err)}\n`);
      process.exit(1);
    },
  );
};
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
