// The CLI turns V8's allocation-site pretenuring off (src/gc-tuning.ts, imported by cli.ts before
// anything else runs). Checked on V8 itself: with --trace-pretenuring-statistics, a process that
// keeps many objects from one literal prints V8's pretenuring decisions; after importing the
// setting it prints none. The first run shows that this Node still has the feature and the flag,
// so the second cannot pass for the wrong reason.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';

const FIXTURE = resolve(import.meta.dirname, 'fixtures/keep-literals.mjs');

function decisions(mode: 'plain' | 'tuned'): { lines: number; stdout: string; stderr: string } {
  // Without NODE_OPTIONS: tap adds its process-info loader to every child's, and that loader
  // allocates enough for V8 to decide on pretenuring before the fixture imports the setting.
  const args = ['-u', 'NODE_OPTIONS', process.execPath, '--trace-pretenuring-statistics', FIXTURE, mode];
  const r = spawnSync('env', args, { env: { PATH: process.env.PATH ?? '' }, encoding: 'utf8', timeout: 60_000 });
  return { lines: r.stdout.split('\n').filter((l) => l.includes('pretenuring:')).length, stdout: r.stdout, stderr: r.stderr };
}

t.test('without the setting V8 pretenures; with it, never', async (t) => {
  const plain = decisions('plain');
  t.ok(plain.lines > 0, `V8 made ${plain.lines} pretenuring decisions without the setting`);
  const tuned = decisions('tuned');
  t.equal(tuned.lines, 0, 'none once the setting is imported');
  t.match(tuned.stdout, 'kept 1000000');
  t.equal(tuned.stderr, '', 'V8 accepted the flag without a word');
});

t.test('the CLI imports the setting right after the Node.js check', async (t) => {
  const imports = readFileSync(resolve(import.meta.dirname, '../src/cli.ts'), 'utf8').match(/^import .*$/gm)!;
  t.same(imports.slice(0, 2), ["import './node-version.js';", "import './gc-tuning.js';"]);
});
