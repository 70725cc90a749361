// `npm run demo`: the proxy against the bundled fake Bitquery, no account needed. Starts the fake
// on loopback, starts `bitquery-proxy` (dist/cli.js) the way a user would, and prints a curl
// command that works. Ctrl-C stops both.
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { resolve } from 'node:path';
import { FakeBitquery } from '../test/fake-bitquery/index.js';

const port = process.env.PORT ?? '8080';
const fake = await FakeBitquery.start({ clientId: 'demo-client', clientSecret: 'demo-secret' });

const proxy = spawn(process.execPath, [resolve(import.meta.dirname, '../dist/cli.js')], {
  env: {
    ...process.env,
    BITQUERY_CLIENT_ID: 'demo-client',
    BITQUERY_CLIENT_SECRET: 'demo-secret',
    BITQUERY_TOKEN_URL: fake.tokenUrl,
    BITQUERY_UPSTREAM: fake.url,
    BITQUERY_USAGE_URL: fake.usageUrl,
    ADMIN_PORT: process.env.ADMIN_PORT ?? '0',
    HOST: '127.0.0.1',
    PORT: port,
    LOG_LEVEL: process.env.LOG_LEVEL ?? 'info',
  },
  stdio: ['ignore', 'pipe', 'inherit'],
});

createInterface({ input: proxy.stdout! }).on('line', (line) => {
  process.stdout.write(`${line}\n`);
  let entry: { msg?: string; url?: string };
  try {
    entry = JSON.parse(line);
  } catch {
    return;
  }
  if (entry.url && entry.msg?.startsWith('listening')) {
    process.stdout.write(
      [
        '',
        `Demo: bitquery-proxy on ${entry.url}, in front of a fake Bitquery on ${fake.url}.`,
        'Send a GraphQL query without any token:',
        '',
        `  curl -s ${entry.url}/graphql -H 'content-type: application/json' -d '{"query":"{ hello }"}'`,
        '',
        `Readiness: curl -s ${entry.url}/readyz      Stop: Ctrl-C`,
        '',
      ].join('\n'),
    );
  }
});

let stopping = false;
const stop = () => {
  if (stopping) return;
  stopping = true;
  proxy.kill('SIGTERM');
};
process.on('SIGINT', stop);
process.on('SIGTERM', stop);
proxy.on('exit', async (code) => {
  await fake.close();
  process.exit(stopping ? 0 : code ?? 1);
});
