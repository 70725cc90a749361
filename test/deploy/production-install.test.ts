// The image's runtime stage, outside Docker: package.json, package-lock.json and the package's
// "files" (dist/ as built by `npm test`) in an empty folder, the Dockerfile's own production install
// command (`npm ci --omit=dev ...`, read from the Dockerfile), then its ENTRYPOINT. A runtime
// dependency left in devDependencies makes the daemon fail to start here, as it would in the image.
import t from 'tap';
import { spawn, type ChildProcess } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { spawnProxy } from '../helpers/proxy-process.js';

const ROOT = resolve(import.meta.dirname, '../..');
const INSTALL_TIMEOUT_MS = 180_000;
t.setTimeout(INSTALL_TIMEOUT_MS + 60_000);

const PKG = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string; files?: string[] };
const LOCK = JSON.parse(readFileSync(join(ROOT, 'package-lock.json'), 'utf8')) as { packages: Record<string, { dev?: boolean }> };

// The final stage of the Dockerfile, continuation lines joined.
const finalStage = readFileSync(join(ROOT, 'Dockerfile'), 'utf8')
  .replace(/\\[ \t]*\r?\n/g, ' ')
  .split(/^FROM\s/m)
  .at(-1)!;
const installCommand = /\bnpm ci\b[^&;|\n]*/.exec(finalStage)?.[0].trim();
const entrypoint = JSON.parse(/^ENTRYPOINT\s+(\[.*\])\s*$/m.exec(finalStage)?.[1] ?? '[]') as string[];

/** The test's environment for npm, less what an enclosing `npm test` exported (it would point npm back at the repository). */
function npmEnv(): NodeJS.ProcessEnv {
  const keep = /^npm_config_(registry|cafile|cache|userconfig|globalconfig|.*proxy|strict_ssl)$/i;
  const out: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (/^npm_/i.test(k) && !keep.test(k)) continue;
    if (/^(NODE_OPTIONS|NODE_PATH|NODE_V8_COVERAGE)$|^_?TAP/.test(k)) continue;
    out[k] = v;
  }
  return out;
}

function run(command: string, args: string[], options: { cwd: string; env: NodeJS.ProcessEnv; timeoutMs: number }) {
  return new Promise<{ code: number | null; output: string }>((resolvePromise, reject) => {
    const child = spawn(command, args, { ...options, stdio: ['ignore', 'pipe', 'pipe'], timeout: options.timeoutMs });
    let output = '';
    child.stdout.on('data', (d: Buffer) => (output += d));
    child.stderr.on('data', (d: Buffer) => (output += d));
    child.on('error', reject);
    child.on('close', (code) => resolvePromise({ code, output }));
  });
}

t.test('the production install of the image runs the daemon', async (t) => {
  t.comment(`node ${process.version} (${process.execPath})`);
  if (!t.ok(existsSync(join(ROOT, 'dist/cli.js')), 'dist/ is built (npm test builds it; or run npm run build)')) return;
  if (!t.ok(installCommand && /--omit[= ]dev/.test(installCommand), `the Dockerfile's final stage installs with npm ci --omit=dev (${installCommand})`)) return;
  t.equal(entrypoint[0], 'node', `ENTRYPOINT ${JSON.stringify(entrypoint)}`);

  const dir = mkdtempSync(join(tmpdir(), 'bqp-prod-'));
  let child: ChildProcess | undefined;
  t.teardown(() => {
    if (child && child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  });

  // COPY package.json package-lock.json ./ then the package's files, as the image has them.
  for (const file of ['package.json', 'package-lock.json']) cpSync(join(ROOT, file), join(dir, file));
  for (const entry of PKG.files ?? []) {
    // An empty folder in "files" is not in a clean clone; the image's build stage creates it.
    if (existsSync(join(ROOT, entry))) cpSync(join(ROOT, entry), join(dir, entry), { recursive: true });
    else mkdirSync(join(dir, entry), { recursive: true });
  }

  const [npm, ...npmArgs] = installCommand!.split(/\s+/);
  const install = await run(npm!, [...npmArgs, '--prefer-offline'], { cwd: dir, env: npmEnv(), timeoutMs: INSTALL_TIMEOUT_MS });
  if (!t.equal(install.code, 0, `${installCommand} succeeds`)) {
    t.comment(install.output);
    return;
  }
  const devOnly = Object.entries(LOCK.packages)
    .filter(([path, p]) => p.dev && /^node_modules\/(@[^/]+\/)?[^/]+$/.test(path))
    .map(([path]) => path);
  t.ok(devOnly.length > 0 && devOnly.every((path) => !existsSync(join(dir, path))), `none of the ${devOnly.length} dev-only packages is installed`);

  // The image's ENTRYPOINT with the image's NODE_ENV, on a free loopback port, with nothing else
  // from this process's environment (no NODE_OPTIONS or NODE_PATH to lend it modules).
  const env = {
    PATH: process.env.PATH ?? '/usr/bin:/bin',
    NODE_ENV: 'production',
    HOST: '127.0.0.1',
    PORT: '0',
    LOG_LEVEL: 'info',
    BITQUERY_TOKEN: 'x',
    BITQUERY_UPSTREAM: 'http://127.0.0.1:9',
  };
  const version = await run(process.execPath, [...entrypoint.slice(1), '--version'], { cwd: dir, env, timeoutMs: 30_000 });
  t.equal(version.output.trim(), PKG.version, '--version reads package.json where the image puts it');

  const proxy = await spawnProxy(env, { cwd: dir, entry: entrypoint.slice(1), bareEnv: true });
  child = proxy.child;
  const { url } = proxy;

  const health = await fetch(`${url}/healthz`);
  t.equal(health.status, 200, 'GET /healthz answers 200');
  t.same(await health.json(), { status: 'ok' });

  child.kill('SIGTERM');
  const timeout = setTimeout(() => child!.kill('SIGKILL'), 20_000);
  const { code, signal } = await proxy.exited;
  clearTimeout(timeout);
  t.same({ code, signal }, { code: 0, signal: null }, 'SIGTERM: it drains and exits 0');
  t.notMatch(proxy.output(), /Cannot find (module|package)|ERR_MODULE_NOT_FOUND/, 'no module was missing');
});
