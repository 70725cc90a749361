// The CLI refuses a Node.js older than package.json's engines.node: exit 2, one line on stderr.
// The refusal is checked with a real old Node: BQP_TEST_OLD_NODE (.ci/run installs Node 20 from the
// npm registry for it), else the first `node` on PATH older than the minimum; skipped when there is
// none, since faking process.versions would test nothing.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { delimiter, join, resolve } from 'node:path';
import { olderThan } from '../src/node-version.js';
import { CLI } from './helpers/proxy-process.js';

const PKG = JSON.parse(readFileSync(resolve(import.meta.dirname, '../package.json'), 'utf8')) as { engines: { node: string } };
const MINIMUM = /^>=\s*(\S+)$/.exec(PKG.engines.node)![1]!;

const versionOf = (node: string) => spawnSync(node, ['--version'], { encoding: 'utf8' }).stdout?.trim() || undefined;

function oldNode(): { path: string; version: string } | undefined {
  const candidates = [process.env.BQP_TEST_OLD_NODE, ...(process.env.PATH ?? '').split(delimiter).map((dir) => dir && join(dir, 'node'))];
  for (const path of candidates) {
    const version = path ? versionOf(path) : undefined;
    if (path && version && olderThan(version, MINIMUM)) return { path, version };
  }
  return undefined;
}

t.test('olderThan compares dotted versions numerically', async (t) => {
  t.ok(olderThan('20.20.2', '22.12.0'));
  t.ok(olderThan('v22.11.9', '22.12.0'));
  t.ok(olderThan('22.9.0', '22.12.0'), '9 < 12, not as text');
  t.notOk(olderThan('22.12.0', '22.12.0'));
  t.notOk(olderThan('v22.23.5', '22.12.0'));
  t.notOk(olderThan('24.0.0', '22.12.0'));
  t.notOk(olderThan('100.0.0', '22.12.0'));
  t.notOk(olderThan(process.versions.node, MINIMUM), `this test runs on a supported Node (${process.version})`);
});

const old = oldNode();
t.test('an old Node.js is refused at once with one line and exit status 2', { skip: old ? false : `no Node.js older than ${MINIMUM} found (set BQP_TEST_OLD_NODE)` }, async (t) => {
  const { path, version } = old!;
  // A valid configuration, so that only the Node version can be the reason for the refusal.
  const r = spawnSync(path, [CLI], { env: { PATH: process.env.PATH ?? '', BITQUERY_TOKEN: 'node-version-test-token', PORT: '0' }, encoding: 'utf8', timeout: 20_000 });
  t.equal(r.status, 2, `exit status 2 on ${version}`);
  t.equal(r.stdout, '', 'nothing on stdout (the daemon did not start)');
  t.equal(r.stderr.trim().split('\n').length, 1, 'one line');
  t.match(r.stderr, `bitquery-proxy: Node.js ${MINIMUM} or newer is required, this is ${version}`);
  t.notMatch(r.stderr, 'node-version-test-token');
});
