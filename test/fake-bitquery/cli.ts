/**
 * Runs a FakeBitquery for demos:
 *   node --import tsx test/fake-bitquery/cli.ts
 * Env: FAKE_PORT (default 8090), FAKE_HOST (default 127.0.0.1),
 *      FAKE_CLIENT_ID / FAKE_CLIENT_SECRET (default demo-client / demo-secret),
 *      FAKE_TOKEN_LIFETIME_SEC (default 17999).
 * Prints one JSON line {"url","wsUrl","tokenUrl","usageUrl"} on stdout once listening; closes on SIGTERM/SIGINT.
 */
import { FakeBitquery } from './index.js';

const port = Number(process.env.FAKE_PORT ?? 8090);
const lifetime = process.env.FAKE_TOKEN_LIFETIME_SEC ? Number(process.env.FAKE_TOKEN_LIFETIME_SEC) : undefined;

const fake = await FakeBitquery.start({
  host: process.env.FAKE_HOST ?? '127.0.0.1',
  port,
  clientId: process.env.FAKE_CLIENT_ID ?? 'demo-client',
  clientSecret: process.env.FAKE_CLIENT_SECRET ?? 'demo-secret',
  ...(lifetime !== undefined && Number.isFinite(lifetime) ? { tokenLifetimeSec: lifetime } : {}),
});

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
