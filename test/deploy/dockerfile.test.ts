// Reads the Dockerfile (no Docker engine needed) and checks what the image promises: a build stage
// with dev dependencies, a runtime stage on Node 24 with production dependencies only, a non-root
// numeric user, node itself as PID 1 (exec form, no npm, no shell), a healthcheck without curl and
// no credentials baked in. Also checks that .dockerignore keeps .env and node_modules out.
import t from 'tap';
import { readFileSync } from 'node:fs';
import { join, posix, resolve } from 'node:path';
import { SETTINGS } from '../../src/config/index.js';

const ROOT = resolve(import.meta.dirname, '../..');
const PKG = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as {
  bin: Record<string, string>;
  files?: string[];
  engines?: { node?: string };
};

interface Instruction {
  cmd: string;
  args: string;
  line: number;
}
interface Stage {
  image: string;
  name?: string;
  instructions: Instruction[];
}

/** Instructions with line continuations joined and comments dropped, as Docker's parser does. */
function parseDockerfile(text: string): Instruction[] {
  const out: Instruction[] = [];
  let buffer = '';
  let start = 0;
  text.split('\n').forEach((raw, i) => {
    const line = raw.replace(/\r$/, '');
    if (/^\s*#/.test(line) || (!buffer && /^\s*$/.test(line))) return;
    if (!buffer) start = i + 1;
    const continued = /\\\s*$/.exec(line);
    if (continued) {
      buffer += `${line.slice(0, continued.index)} `;
      return;
    }
    const whole = (buffer + line).trim();
    buffer = '';
    const m = /^(\S+)\s*([\s\S]*)$/.exec(whole)!;
    out.push({ cmd: m[1]!.toUpperCase(), args: m[2]!.trim(), line: start });
  });
  return out;
}

function stagesOf(instructions: Instruction[]): Stage[] {
  const stages: Stage[] = [];
  for (const ins of instructions) {
    if (ins.cmd === 'FROM') {
      const words = ins.args.split(/\s+/).filter((w) => !w.startsWith('--'));
      stages.push({ image: words[0]!, name: /^as$/i.test(words[1] ?? '') ? words[2] : undefined, instructions: [] });
    } else if (stages.length) {
      stages.at(-1)!.instructions.push(ins);
    }
  }
  return stages;
}

/** The exec (JSON array) form of an instruction's arguments, or undefined for the shell form. */
function execForm(args: string): string[] | undefined {
  try {
    const parsed = JSON.parse(args) as unknown;
    return Array.isArray(parsed) && parsed.every((a) => typeof a === 'string') ? (parsed as string[]) : undefined;
  } catch {
    return undefined;
  }
}

/** KEY=VALUE pairs of ENV/ARG (and the legacy `ENV KEY value`). */
function assignments(ins: Instruction): Map<string, string> {
  const pairs = new Map<string, string>();
  if (ins.cmd === 'ENV' && !/^\S+=/.test(ins.args)) {
    const m = /^(\S+)\s+(.*)$/.exec(ins.args);
    if (m) pairs.set(m[1]!, m[2]!);
    return pairs;
  }
  for (const m of ins.args.matchAll(/([A-Za-z_][A-Za-z0-9_]*)(?:=("(?:[^"\\]|\\.)*"|'[^']*'|\S*))?/g)) {
    pairs.set(m[1]!, (m[2] ?? '').replace(/^["']|["']$/g, ''));
  }
  return pairs;
}

const dockerfile = readFileSync(join(ROOT, 'Dockerfile'), 'utf8');
const instructions = parseDockerfile(dockerfile);
const stages = stagesOf(instructions);
const final = stages.at(-1)!;
const build = stages.slice(0, -1);
const of = (stage: Stage, cmd: string) => stage.instructions.filter((i) => i.cmd === cmd);
const runs = (stage: Stage) => of(stage, 'RUN').map((i) => i.args);

const CREDENTIALS = new Set([...SETTINGS.filter((s) => s.secret).map((s) => s.name), 'BITQUERY_CLIENT_ID', 'PROXY_API_KEYS']);
const KNOWN_ENV = new Set([...SETTINGS.map((s) => s.name), 'NODE_ENV', 'NODE_OPTIONS', 'PROXY_API_KEYS_FILE', 'PROXY_ALLOW_UNAUTHENTICATED']);

t.test('multi-stage: dev dependencies and the build stay in the build stage', async (t) => {
  t.ok(stages.length >= 2, 'at least two stages');
  t.ok(
    build.some((s) => runs(s).some((r) => /\bnpm ci\b/.test(r) && !/--omit[= ]dev|--production/.test(r))),
    'a build stage installs all dependencies with npm ci',
  );
  t.ok(build.some((s) => runs(s).some((r) => /\bnpm run build\b/.test(r))), 'a build stage runs npm run build');
  const runtimeInstall = runs(final).filter((r) => /\bnpm ci\b/.test(r));
  t.equal(runtimeInstall.length, 1, 'the final stage runs npm ci once');
  t.match(runtimeInstall[0], /--omit[= ]dev/, 'with --omit=dev');
  for (const copy of of(final, 'COPY')) {
    t.notMatch(copy.args, /node_modules/, `line ${copy.line}: node_modules is not copied in (dev dependencies would come along)`);
    t.notMatch(copy.args, /(^|\s|\/)\.env(\s|$)/, `line ${copy.line}: no .env is copied in`);
  }
});

t.test('final stage: Node 24, slim or distroless, matching package.json engines', async (t) => {
  t.match(final.image, /^(docker\.io\/(library\/)?)?node:24(\.\d+)*(-(bookworm|trixie))?-slim(@sha256:[0-9a-f]{64})?$|^gcr\.io\/distroless\/nodejs24-debian\d+(:[\w.-]+)?(@sha256:[0-9a-f]{64})?$/, `FROM ${final.image}`);
  for (const s of build) t.match(s.image, /node:24\b/, `the build stage ${s.name ?? s.image} uses the same Node major`);
  const min = /^>=\s*(\d+)/.exec(PKG.engines?.node ?? '')?.[1];
  t.ok(min && Number(min) <= 24, `Node 24 satisfies engines.node ${PKG.engines?.node}`);
});

t.test('final stage: the files the package needs, from the build stage', async (t) => {
  const workdir = of(final, 'WORKDIR').at(-1)?.args ?? '/';
  // Where each COPY puts its sources: `COPY a b ./` gives ./a and ./b, `COPY --from=build /app/dist ./dist` gives ./dist.
  const copies = of(final, 'COPY').flatMap((c) => {
    const words = c.args.split(/\s+/).filter((w) => !w.startsWith('--'));
    const sources = words.slice(0, -1);
    const dest = words.at(-1)!;
    const from = /--from=(\S+)/.exec(c.args)?.[1];
    return sources.length === 1 && !dest.endsWith('/')
      ? [{ from, path: posix.resolve(workdir, dest) }]
      : sources.map((s) => ({ from, path: posix.resolve(workdir, dest, posix.basename(s)) }));
  });
  const copied = (entry: string) => copies.some((c) => c.path === posix.resolve(workdir, entry));
  for (const entry of ['package.json', 'package-lock.json', ...(PKG.files ?? [])]) t.ok(copied(entry), `${entry} is in ${workdir}`);
  t.ok(copies.some((c) => c.from && c.path === posix.resolve(workdir, 'dist')), 'dist comes from a build stage');
});

t.test('runs as a numeric non-root user', async (t) => {
  const users = of(final, 'USER');
  t.equal(users.length, 1, 'one USER in the final stage');
  const [uid, gid] = (users.at(-1)?.args ?? '').split(':');
  t.match(uid, /^\d+$/, 'the UID is numeric (Kubernetes runAsNonRoot can verify only a number)');
  t.ok(Number(uid) > 0, 'and not root');
  if (gid !== undefined) t.ok(/^\d+$/.test(gid) && Number(gid) > 0, 'the GID is numeric and not root');
  const lastRun = final.instructions.map((i) => i.cmd).lastIndexOf('RUN');
  t.ok(final.instructions.indexOf(users.at(-1)!) > lastRun, 'after the last RUN: the installed files stay owned by root');
});

t.test('node is PID 1: exec form, no npm, no shell', async (t) => {
  const entrypoints = of(final, 'ENTRYPOINT');
  t.equal(entrypoints.length, 1, 'one ENTRYPOINT');
  const entrypoint = execForm(entrypoints[0]?.args ?? '');
  if (!t.ok(entrypoint, 'ENTRYPOINT is in exec (JSON array) form')) return;
  t.equal(entrypoint![0], 'node', 'it starts node');
  t.equal(entrypoint![1], PKG.bin['bitquery-proxy'], 'on the package bin, package.json "bin"');
  for (const cmd of of(final, 'CMD')) {
    const args = execForm(cmd.args);
    t.ok(args, 'CMD, if any, is in exec form');
    t.notOk(args?.some((a) => /^(npm|npx|sh|bash)$|\/(sh|bash)$/.test(a)), 'CMD wraps nothing in npm or a shell');
  }
  t.notOk(entrypoint!.some((a) => /\bnpm\b|\bsh\b|^-c$/.test(a)), 'no npm or sh -c in the ENTRYPOINT');
});

t.test('container settings: HOST, PORT, EXPOSE, HEALTHCHECK', async (t) => {
  const envs = new Map<string, string>();
  for (const e of of(final, 'ENV')) for (const [k, v] of assignments(e)) envs.set(k, v);
  t.equal(envs.get('HOST'), '0.0.0.0', 'ENV HOST=0.0.0.0');
  t.equal(envs.get('PORT'), '8080', 'ENV PORT=8080');
  t.ok(of(final, 'EXPOSE').some((e) => e.args.split(/\s+/).some((p) => p.replace(/\/tcp$/, '') === '8080')), 'EXPOSE 8080');

  const checks = of(final, 'HEALTHCHECK');
  t.equal(checks.length, 1, 'one HEALTHCHECK');
  const check = checks[0]?.args ?? '';
  const command = execForm(check.replace(/^(--\S+\s+)*CMD\s+/, ''));
  t.ok(command, 'HEALTHCHECK CMD is in exec form');
  t.equal(command?.[0], 'node', 'with node (the image has no curl)');
  t.match(check, /\/healthz/, 'against /healthz');
  t.notMatch(dockerfile, /apt-get install[^\n]*\b(curl|wget)\b/, 'no curl or wget installed for it');
});

t.test('no credentials in the image', async (t) => {
  for (const stage of stages) {
    for (const ins of [...of(stage, 'ENV'), ...of(stage, 'ARG')]) {
      for (const name of assignments(ins).keys()) {
        t.notOk(CREDENTIALS.has(name), `line ${ins.line}: ${ins.cmd} ${name} holds no credential`);
        if (ins.cmd === 'ENV') t.ok(KNOWN_ENV.has(name), `line ${ins.line}: ENV ${name} is a known setting`);
      }
    }
  }
  t.notMatch(dockerfile, /ory_at_|client_secret\s*=/i, 'no token or secret literal');
});

/** Whether .dockerignore keeps `path` out of the build context (last matching rule wins). */
function ignored(rules: string[], path: string): boolean {
  const toRegex = (pattern: string) =>
    new RegExp(
      `^${pattern
        .replace(/^\/+|\/+$/g, '')
        .split('')
        .map((ch, i, all) => {
          if (ch === '*') return all[i + 1] === '*' ? '' : all[i - 1] === '*' ? '.*' : '[^/]*';
          if (ch === '?') return '[^/]';
          return /[\\^$.|+()[\]{}]/.test(ch) ? `\\${ch}` : ch;
        })
        .join('')}$`,
    );
  const prefixes = path.split('/').map((_, i, parts) => parts.slice(0, i + 1).join('/'));
  let out = false;
  for (const rule of rules) {
    const negated = rule.startsWith('!');
    const re = toRegex(negated ? rule.slice(1) : rule);
    if (prefixes.some((p) => re.test(p))) out = !negated;
  }
  return out;
}

t.test('.dockerignore keeps secrets and local builds out of the context', async (t) => {
  const rules = readFileSync(join(ROOT, '.dockerignore'), 'utf8')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#'));
  for (const path of ['.env', '.env.local', 'node_modules', 'node_modules/x/index.js', 'dist/cli.js', '.git/config', '.tap/x', 'coverage/x']) {
    t.ok(ignored(rules, path), `${path} is excluded`);
  }
  // What `COPY . .` and `npm run build` (tsc -p tsconfig.json) in the build stage need.
  for (const path of ['package.json', 'package-lock.json', 'tsconfig.json', 'src/cli.ts', ...(PKG.files ?? []).filter((f) => f !== 'dist')]) {
    t.notOk(ignored(rules, path), `${path} is sent to the build`);
  }
});
