// The Node.js this package runs on, checked before anything else is loaded: cli.ts imports this
// module first, so on an older Node the CLI stops here with one line and exit status 2 instead of
// failing later in a dependency. The minimum is package.json's `engines.node` (">=X.Y.Z").
import { readFileSync } from 'node:fs';

/** True when `version` ("22.11.0", "v20.20.2") is older than `minimum` ("22.12.0"). */
export function olderThan(version: string, minimum: string): boolean {
  const parts = (v: string) => v.replace(/^v/, '').split('.').map((n) => Number.parseInt(n, 10) || 0);
  const [have, need] = [parts(version), parts(minimum)];
  for (let i = 0; i < need.length; i++) {
    if ((have[i] ?? 0) !== need[i]) return (have[i] ?? 0) < need[i]!;
  }
  return false;
}

const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { engines: { node: string } };
const minimum = /^>=\s*(\d+(?:\.\d+)*)$/.exec(pkg.engines.node)![1]!;

if (olderThan(process.versions.node, minimum)) {
  process.stderr.write(`bitquery-proxy: Node.js ${minimum} or newer is required, this is ${process.version}: install Node.js 22 or 24 (LTS)\n`);
  process.exit(2);
}
