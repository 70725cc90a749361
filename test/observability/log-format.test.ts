import t from 'tap';
import { execFile } from 'node:child_process';
import { resolve } from 'node:path';
import { promisify } from 'node:util';
import { Writable } from 'node:stream';
import { createLogger } from '../../src/log.js';
import { logDestination, logFormat } from '../../src/observability/log-format.js';

const run = promisify(execFile);
const FIXTURE = resolve(import.meta.dirname, 'fixtures/log-then-exit.ts');

function sink() {
  const out = { text: '' };
  const stream = new Writable({
    write(chunk, _enc, done) {
      out.text += String(chunk);
      done();
    },
  });
  return { out, stream };
}

t.test('LOG_FORMAT decides; unset, a terminal gets pretty lines and anything else JSON', async (t) => {
  t.equal(logFormat(undefined, true), 'pretty');
  t.equal(logFormat(undefined, false), 'json');
  t.equal(logFormat('json', true), 'json');
  t.equal(logFormat('pretty', false), 'pretty');
});

t.test('pretty lines are for people, and keep the redaction', async (t) => {
  const { out, stream } = sink();
  const logger = createLogger('info', logDestination('pretty', stream));
  logger.child({ component: 'token' }).info({ headers: { authorization: 'Bearer ory_at_secret' }, client_secret: 'shh', expiresInSec: 17999 }, 'obtained a token');
  logger.warn('plain line');
  t.match(out.text, /^\[\d\d:\d\d:\d\d\.\d{3}\] INFO: token: obtained a token\n/);
  t.match(out.text, 'expiresInSec: 17999');
  t.match(out.text, /\] WARN: plain line\n/);
  t.notMatch(out.text, 'ory_at_secret');
  t.notMatch(out.text, 'shh');
  t.match(out.text, '"authorization": "[REDACTED]"');
  t.notMatch(out.text, /^\{/m, 'no JSON line');
});

t.test('json lines are one object a line, redacted', async (t) => {
  const { out, stream } = sink();
  const logger = createLogger('info', logDestination('json', stream));
  logger.info({ access_token: 'ory_at_secret' }, 'a line');
  const line = JSON.parse(out.text.trim()) as Record<string, unknown>;
  t.match(line, { level: 30, msg: 'a line', access_token: '[REDACTED]', name: 'bitquery-proxy' });
});

t.test('stdout is written synchronously in both formats: no line is lost at process.exit()', async (t) => {
  for (const format of ['json', 'pretty'] as const) {
    const { stdout } = await run(process.execPath, ['--import', 'tsx', FIXTURE, format], { env: { PATH: process.env.PATH } });
    t.equal(stdout.split('\n').filter((l) => /line \d+/.test(l)).length, 2000, format);
    t.match(stdout, /line 1999/);
  }
});
