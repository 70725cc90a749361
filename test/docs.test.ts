// Settings are declared once in src/config/settings.ts; the README and config/example.env must keep up.
import t from 'tap';
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { SETTINGS } from '../src/config/index.js';

const root = resolve(import.meta.dirname, '..');
const readme = readFileSync(`${root}/README.md`, 'utf8');
const example = readFileSync(`${root}/config/example.env`, 'utf8');

t.test('every setting is in the README table with its default', async (t) => {
  for (const s of SETTINGS) {
    const row = readme.split('\n').find((line) => line.startsWith(`| \`${s.name}\` |`));
    t.ok(row, `${s.name} has a row`);
    const def = s.default === undefined ? '–' : `\`${s.default}\``;
    t.ok(row?.trimEnd().endsWith(`| ${def} |`), `${s.name} default ${def}`);
  }
});

t.test('every setting is in config/example.env with its default', async (t) => {
  for (const s of SETTINGS) t.match(example, `# ${s.name}=${s.default ?? ''}\n`, s.name);
});

t.test('the README opens with the two commands', async (t) => {
  const blocks = readme.split('```');
  t.match(blocks[1], /npm ci && npm run demo/);
  t.match(blocks[1], /npm ci && npm test/);
});
