// HTTP benchmark: the proxy against a direct upstream and against the simplest hand-written
// @fastify/http-proxy peer, all on loopback. See bench/README.md.
//
//   npm run bench                              # build, then the default run
//   node --import tsx bench/http.ts --help     # options
//
// Processes: this one (autocannon, the load generator), the upstream (bench/peers/upstream.ts),
// the proxy (`node dist/cli.js`, static-token mode, exactly as users start it), the peer
// (bench/peers/fastify-http-proxy.ts), and two floors: a featureless proxy in one Fastify route
// (bench/peers/fastify-floor.ts) and without Fastify (bench/peers/bare-node.ts). Each target is
// loaded in turn, never two at once.
import { execFileSync, fork, spawn, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import type { EventEmitter } from 'node:events';
import { createRequire } from 'node:module';
import { freePort } from './free-port.js';
import { availableParallelism, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';

const ROOT = resolve(import.meta.dirname, '..');
const TOKEN = 'bench-token';
const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];
const TARGETS = ['direct', 'proxy', 'peer', 'floor', 'bare'] as const;
type Target = (typeof TARGETS)[number];

/** The issue's targets. */
const GOAL_THROUGHPUT_RATIO = 1.5;
const GOAL_ADDED_LATENCY_MS = 0.3;

/** About 150 bytes, like a small real query. */
const REQUEST_BODY = JSON.stringify({
  query: 'query ($network: evm_network) { EVM(network: $network) { Blocks(limit: {count: 1}) { Block { Number Time } } } }',
  variables: { network: 'eth' },
});

// ---------------------------------------------------------------------------------------------
// Options

const HELP = `Usage: node --import tsx bench/http.ts [options]   (or: npm run bench -- [options])

Loads the direct upstream, the proxy (node dist/cli.js), a minimal @fastify/http-proxy peer,
and two featureless floors (one Fastify route; bare node:http) that forward with undici's
dispatch(), in turn with autocannon: POST /graphql, ~150-byte JSON body, keep-alive.

  --duration S          seconds of each measured run (default 10)
  --warmup S            seconds of discarded warm-up at full load before each target (default 2)
  --latency-duration S  seconds of the 1-connection run (default: --duration)
  --connections N       connections of the throughput run (default 64)
  --rounds N            repeat the whole sequence N times; the table shows medians (default 1)
  --targets LIST        comma-separated subset of direct,proxy,peer,floor,bare (default all)
  --log-level LEVEL     the proxy's LOG_LEVEL (default info, the production default)
  --proxy-entry FILE    the proxy's cli.js (default dist/cli.js), e.g. a patched copy
  --proxy-node-arg ARG  extra node flag for the proxy, repeatable (e.g. --proxy-node-arg=--cpu-prof)
  --peer-node-arg ARG   extra node flag for the peer and the two floors, repeatable (e.g.
                        --peer-node-arg=--no-allocation-site-pretenuring, the proxy's own GC setting)
  --proxy-env K=V       extra proxy environment, repeatable (e.g. --proxy-env UPSTREAM_CONNECTIONS=64)
  --json FILE           also write the raw results as JSON
  --keep-logs           keep the proxy's stdout log file and print its path
  -h, --help            this text
`;

const { values: args } = parseArgs({
  options: {
    duration: { type: 'string', default: '10' },
    warmup: { type: 'string', default: '2' },
    'latency-duration': { type: 'string' },
    connections: { type: 'string', default: '64' },
    rounds: { type: 'string', default: '1' },
    targets: { type: 'string', default: TARGETS.join(',') },
    'log-level': { type: 'string', default: 'info' },
    'proxy-entry': { type: 'string', default: join(ROOT, 'dist', 'cli.js') },
    'proxy-node-arg': { type: 'string', multiple: true, default: [] },
    'peer-node-arg': { type: 'string', multiple: true, default: [] },
    'proxy-env': { type: 'string', multiple: true, default: [] },
    json: { type: 'string' },
    'keep-logs': { type: 'boolean', default: false },
    help: { type: 'boolean', short: 'h', default: false },
  },
  strict: true,
});

if (args.help) {
  process.stdout.write(HELP);
  process.exit(0);
}

function fail(message: string): never {
  process.stderr.write(`bench: ${message}\n`);
  process.exit(2);
}

function positive(name: string, value: string, integer: boolean, allowZero = false): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n < 0 || (n === 0 && !allowZero) || (integer && !Number.isInteger(n))) {
    fail(`--${name} must be a ${integer ? 'whole number' : 'number'} ${allowZero ? 'of 0 or more' : 'above 0'}, got "${value}"`);
  }
  return n;
}

const opts = {
  duration: positive('duration', args.duration, false),
  warmup: positive('warmup', args.warmup, false, true),
  latencyDuration: positive('latency-duration', args['latency-duration'] ?? args.duration, false),
  connections: positive('connections', args.connections, true),
  rounds: positive('rounds', args.rounds, true),
  targets: args.targets.split(',').map((t) => t.trim()).filter(Boolean) as Target[],
  logLevel: args['log-level'],
  proxyEntry: resolve(args['proxy-entry']),
  proxyNodeArgs: args['proxy-node-arg'],
  peerNodeArgs: args['peer-node-arg'],
  proxyEnv: Object.fromEntries(
    args['proxy-env'].map((kv) => {
      const eq = kv.indexOf('=');
      if (eq < 1) fail(`--proxy-env takes KEY=VALUE, got "${kv}"`);
      return [kv.slice(0, eq), kv.slice(eq + 1)];
    }),
  ) as Record<string, string>,
};
const badTarget = opts.targets.find((t) => !TARGETS.includes(t));
if (badTarget !== undefined || opts.targets.length === 0) fail(`--targets takes a list of ${TARGETS.join(', ')}`);
if (!LOG_LEVELS.includes(opts.logLevel)) fail(`--log-level must be one of ${LOG_LEVELS.join(', ')}`);
if ((opts.targets.includes('proxy')) && !existsSync(opts.proxyEntry)) fail(`${opts.proxyEntry} does not exist: run npm run build first`);

// ---------------------------------------------------------------------------------------------
// autocannon has no bundled types; this is the part used here.

interface AutocannonResult {
  duration: number;
  errors: number;
  timeouts: number;
  non2xx: number;
  requests: { total: number };
  statusCodeStats: Record<string, { count: number }>;
}
interface AutocannonInstance extends EventEmitter {
  stop(): void;
}
type Autocannon = (options: Record<string, unknown>, done: (err: Error | null, result: AutocannonResult) => void) => AutocannonInstance;
const autocannon = createRequire(import.meta.url)('autocannon') as Autocannon;

// ---------------------------------------------------------------------------------------------
// Children: started here, always ended here (normal end, error, signal, watchdog).

const children = new Set<ChildProcess>();
const work = mkdtempSync(join(tmpdir(), 'bqp-bench-'));
let current: AutocannonInstance | undefined;

function track(child: ChildProcess): ChildProcess {
  children.add(child);
  child.once('exit', () => children.delete(child));
  return child;
}

async function stopChild(child: ChildProcess, graceMs: number): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
  await exited;
  clearTimeout(timer);
}

let cleaning: Promise<void> | undefined;
function cleanup(): Promise<void> {
  return (cleaning ??= (async () => {
    current?.stop();
    // The proxy gets time to drain and, when profiled, to write its .cpuprofile.
    await Promise.all([...children].map((c) => stopChild(c, 5000)));
    if (!args['keep-logs']) rmSync(work, { recursive: true, force: true });
  })());
}

// Last resort: nothing outlives this process, whatever way it ends.
process.on('exit', () => {
  for (const c of children) c.kill('SIGKILL');
});
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    process.stderr.write(`bench: ${signal}, stopping\n`);
    void cleanup().finally(() => process.exit(130));
  });
}

/** Bounded total time: the runs plus generous start-up and tear-down. */
const perTarget = opts.warmup + opts.duration + opts.latencyDuration + 5;
const budgetMs = (opts.rounds * opts.targets.length * perTarget + 60) * 1000;
setTimeout(() => {
  process.stderr.write(`bench: over the time budget (${budgetMs / 1000} s), giving up\n`);
  void cleanup().finally(() => process.exit(1));
}, budgetMs).unref();

/** Forks a bench/peers/*.ts file (with extra node flags) and waits for the {url} message it sends once listening. */
async function forkPeer(file: string, argv: string[], nodeArgs: string[] = []): Promise<{ child: ChildProcess; url: string }> {
  const child = track(
    fork(join(ROOT, 'bench', 'peers', file), argv, {
      cwd: ROOT,
      execArgv: [...nodeArgs, '--import', 'tsx'],
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    }),
  );
  const url = await new Promise<string>((resolveUrl, reject) => {
    const timer = setTimeout(() => reject(new Error(`${file} did not start within 15 s`)), 15_000);
    child.once('message', (m: { url: string }) => {
      clearTimeout(timer);
      resolveUrl(m.url);
    });
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`${file} exited during start-up (${signal ?? code})`));
    });
  });
  return { child, url };
}

/** The proxy, as users run it: `node dist/cli.js`, configured by its environment only. */
async function startProxy(upstream: string): Promise<{ child: ChildProcess; url: string; logFile: string }> {
  const logFile = join(work, 'proxy.log');
  // At info and below the proxy picks its port (PORT=0) and names it in its "listening" line;
  // above info that line is not printed, so a free port is picked here and /healthz polled.
  const announces = LOG_LEVELS.indexOf(opts.logLevel) >= LOG_LEVELS.indexOf('info') && opts.logLevel !== 'silent';
  const port = announces ? 0 : await freePort();
  const out = openSync(logFile, 'w');
  const cwd = join(work, 'cwd'); // empty: no stray .env is read
  mkdirSync(cwd);
  const child = track(
    spawn(process.execPath, [...opts.proxyNodeArgs, opts.proxyEntry], {
      cwd,
      // Nothing of this shell's environment but PATH: a BITQUERY_* variable here must not leak in.
      env: {
        PATH: process.env.PATH ?? '',
        BITQUERY_TOKEN: TOKEN,
        BITQUERY_UPSTREAM: upstream,
        PORT: String(port),
        HOST: '127.0.0.1',
        LOG_LEVEL: opts.logLevel,
        // No admin listener (its default port may be taken) and no Usage API polls.
        ADMIN_PORT: 'off',
        USAGE_POLL_MS: '0',
        // Every request here is the same query: coalesced, most would never reach the upstream.
        // This measures forwarding; bench/cache.ts measures the points saver.
        COALESCE: 'false',
        ...opts.proxyEnv,
      },
      // stdout (one access-log line per request at info) goes to a file: never blocks, costs
      // this process nothing.
      stdio: ['ignore', out, 'pipe'],
    }),
  );
  closeSync(out);
  let stderr = '';
  child.stderr!.setEncoding('utf8');
  child.stderr!.on('data', (chunk: string) => {
    stderr = (stderr + chunk).slice(-8192);
  });

  const deadline = Date.now() + 15_000;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`the proxy exited during start-up (${child.signalCode ?? child.exitCode}):\n${stderr}${readFileSync(logFile, 'utf8').slice(-4096)}`);
    }
    if (!announces) {
      const url = `http://127.0.0.1:${port}`;
      const up = await fetch(`${url}/healthz`).then((r) => r.ok, () => false);
      if (up) return { child, url, logFile };
    }
    for (const line of announces ? readFileSync(logFile, 'utf8').split('\n') : []) {
      if (!line.includes('"url"')) continue;
      try {
        const parsed = JSON.parse(line) as { url?: unknown };
        if (typeof parsed.url === 'string') return { child, url: parsed.url, logFile };
      } catch {
        // a partial line: read again
      }
    }
    if (Date.now() > deadline) throw new Error(`the proxy did not start listening within 15 s:\n${stderr}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

// ---------------------------------------------------------------------------------------------
// Measuring

/** CPU seconds (user + system) a process has used so far, from /proc; undefined elsewhere. */
const CLK_TCK = (() => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  } catch {
    return 100;
  }
})();
function cpuSeconds(pid: number | undefined): number | undefined {
  if (pid === undefined) return undefined;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / CLK_TCK;
  } catch {
    return undefined;
  }
}
/** Busy CPU seconds of the whole machine so far (all cores), from /proc/stat. */
function systemCpuSeconds(): number | undefined {
  try {
    const [, ...ticks] = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0]!.trim().split(/\s+/);
    const n = ticks.slice(0, 8).map(Number); // user nice system idle iowait irq softirq steal
    return (n[0]! + n[1]! + n[2]! + n[5]! + n[6]! + n[7]!) / CLK_TCK;
  } catch {
    return undefined;
  }
}
function selfCpuSeconds(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

/** Latencies in ms with µs precision (autocannon's own histogram keeps whole milliseconds). */
class Samples {
  private buf = new Float64Array(1 << 16);
  n = 0;
  push(v: number): void {
    if (this.n === this.buf.length) {
      const bigger = new Float64Array(this.buf.length * 2);
      bigger.set(this.buf);
      this.buf = bigger;
    }
    this.buf[this.n++] = v;
  }
  summary(): { mean: number; p50: number; p99: number } {
    const s = this.buf.subarray(0, this.n).sort();
    let sum = 0;
    for (let i = 0; i < s.length; i++) sum += s[i]!;
    const at = (p: number) => (s.length ? s[Math.min(s.length - 1, Math.ceil(p * s.length) - 1)]! : NaN);
    return { mean: s.length ? sum / s.length : NaN, p50: at(0.5), p99: at(0.99) };
  }
}

interface Run {
  rps: number;
  ok: number;
  bad: number;
  mean: number;
  p50: number;
  p99: number;
  seconds: number;
  /** CPU seconds used during the run by: this process, the middle process (the proxy under test), the upstream. */
  cpu: { loadgen: number; middle?: number; upstream?: number; /** all processes on the machine */ system?: number };
}

function load(url: string, connections: number, duration: number, headers: Record<string, string>, pids: { middle?: number; upstream?: number }): Promise<Run> {
  const samples = new Samples();
  let ok = 0;
  let bad = 0;
  const before = { loadgen: selfCpuSeconds(), middle: cpuSeconds(pids.middle), upstream: cpuSeconds(pids.upstream), system: systemCpuSeconds() };
  return new Promise((resolveRun, reject) => {
    const instance = autocannon(
      {
        url,
        method: 'POST',
        body: REQUEST_BODY,
        headers: { 'content-type': 'application/json', ...headers },
        connections,
        pipelining: 1,
        duration,
        timeout: 10,
      },
      (err, result) => {
        current = undefined;
        if (err) return reject(err);
        const delta = (b: number | undefined, a: number | undefined) => (a === undefined || b === undefined ? undefined : a - b);
        resolveRun({
          rps: ok / result.duration,
          ok,
          bad: bad + result.errors,
          ...samples.summary(),
          seconds: result.duration,
          cpu: {
            loadgen: selfCpuSeconds() - before.loadgen,
            middle: delta(before.middle, cpuSeconds(pids.middle)),
            upstream: delta(before.upstream, cpuSeconds(pids.upstream)),
            system: delta(before.system, systemCpuSeconds()),
          },
        });
      },
    );
    current = instance;
    instance.on('response', (_client: unknown, status: number, _bytes: number, ms: number) => {
      if (status >= 200 && status < 300) {
        ok += 1;
        samples.push(ms);
      } else {
        bad += 1;
      }
    });
  });
}

/** One request through each target before loading it: 200 and the upstream's exact body. */
async function preflight(url: string, headers: Record<string, string>, expected: string | undefined): Promise<string> {
  const res = await fetch(url, { method: 'POST', body: REQUEST_BODY, headers: { 'content-type': 'application/json', ...headers } });
  const text = await res.text();
  if (res.status !== 200) throw new Error(`${url} answered ${res.status}: ${text.slice(0, 200)}`);
  if (expected !== undefined && text !== expected) throw new Error(`${url} answered a different body: ${text.slice(0, 200)}`);
  return text;
}

// ---------------------------------------------------------------------------------------------
// Reporting

interface TargetResult {
  throughput: Run;
  latency: Run;
}

function median(values: number[]): number {
  const s = values.filter((v) => Number.isFinite(v)).sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

const fmt = (v: number, digits: number) => (Number.isFinite(v) ? v.toFixed(digits) : 'n/a');
const usPerReq = (cpu: number | undefined, run: Run) => (cpu === undefined ? NaN : (cpu * 1e6) / Math.max(1, run.ok));
const pct = (cpu: number | undefined, run: Run) => (cpu === undefined ? NaN : (cpu / run.seconds) * 100);

const LABEL: Record<Target, string> = {
  direct: 'direct upstream',
  proxy: `bitquery-proxy (LOG_LEVEL=${opts.logLevel})`,
  peer: '@fastify/http-proxy peer',
  floor: 'floor: one Fastify route + undici, no features',
  bare: 'floor: node:http + undici, no features',
};

function report(results: Map<Target, TargetResult[]>): string {
  const lines: string[] = [];
  const summary = new Map<Target, Record<string, number>>();
  for (const [target, runs] of results) {
    const m = (pick: (r: TargetResult) => number) => median(runs.map(pick));
    summary.set(target, {
      rps: m((r) => r.throughput.rps),
      p50: m((r) => r.throughput.p50),
      p99: m((r) => r.throughput.p99),
      mean1: m((r) => r.latency.mean),
      cpuUs: m((r) => usPerReq(target === 'direct' ? r.throughput.cpu.upstream : r.throughput.cpu.middle, r.throughput)),
      loadgenPct: m((r) => pct(r.throughput.cpu.loadgen, r.throughput)),
      otherPct: m((r) => {
        const c = r.throughput.cpu;
        return c.system === undefined ? NaN : Math.max(0, pct(c.system - c.loadgen - (c.middle ?? 0) - (c.upstream ?? 0), r.throughput));
      }),
      middlePct: m((r) => pct(r.throughput.cpu.middle, r.throughput)),
      upstreamPct: m((r) => pct(r.throughput.cpu.upstream, r.throughput)),
      bad: runs.reduce((n, r) => n + r.throughput.bad + r.latency.bad, 0),
    });
  }

  const rounds = opts.rounds > 1 ? ` (median of ${opts.rounds} rounds)` : '';
  lines.push(`### HTTP benchmark${rounds}`);
  lines.push('');
  lines.push(
    `POST /graphql, ${REQUEST_BODY.length}-byte body, keep-alive; ${opts.connections} connections for ${opts.duration} s after ${opts.warmup} s of discarded warm-up, then 1 connection for ${opts.latencyDuration} s. Node ${process.version}, loopback.`,
  );
  if (opts.peerNodeArgs.length > 0) lines.push('', `The peer and the floors ran with \`${opts.peerNodeArgs.join(' ')}\`.`);
  lines.push('');
  lines.push(`| target | req/s (${opts.connections} conns) | p50 ms | p99 ms | mean ms (1 conn) | server CPU µs/req | failed |`);
  lines.push('|---|---:|---:|---:|---:|---:|---:|');
  for (const [target, s] of summary) {
    lines.push(`| ${LABEL[target]} | ${fmt(s.rps!, 0)} | ${fmt(s.p50!, 2)} | ${fmt(s.p99!, 2)} | ${fmt(s.mean1!, 3)} | ${fmt(s.cpuUs!, 0)} | ${s.bad} |`);
  }
  lines.push('');
  lines.push('server CPU µs/req: CPU time of the process under test (the upstream for "direct", else the proxy) per request in the throughput run.');
  lines.push('');

  // Comparisons are made within each round, where the two targets ran a minute apart at most, and
  // the median over rounds is reported: the machine's speed drifts more between rounds than
  // between neighbouring runs.
  const perRound = (a: Target, b: Target, pick: (x: TargetResult, y: TargetResult) => number) => {
    const xs = results.get(a);
    const ys = results.get(b);
    if (!xs || !ys) return undefined;
    const values = xs.map((x, i) => pick(x, ys[i]!));
    const spread = values.length > 1 ? ` (rounds: ${values.map((v) => fmt(v, 2)).join(', ')})` : '';
    return { median: median(values), spread };
  };
  const ratio = (a: Target) => perRound(a, 'peer', (x, y) => x.throughput.rps / y.throughput.rps);
  const added = (a: Target) => perRound(a, 'direct', (x, y) => x.latency.mean - y.latency.mean);
  const proxyRatio = ratio('proxy');
  if (proxyRatio) {
    const verdict = proxyRatio.median >= GOAL_THROUGHPUT_RATIO ? 'PASS' : 'MISS';
    lines.push(`- proxy/peer throughput: **${fmt(proxyRatio.median, 2)}×** (target ≥ ${GOAL_THROUGHPUT_RATIO}×): **${verdict}**${proxyRatio.spread}`);
  }
  const proxyAdded = added('proxy');
  if (proxyAdded) {
    const verdict = proxyAdded.median <= GOAL_ADDED_LATENCY_MS ? 'PASS' : 'MISS';
    lines.push(`- proxy added mean latency over direct at 1 connection: **${fmt(proxyAdded.median, 3)} ms** (target ≤ ${GOAL_ADDED_LATENCY_MS} ms): **${verdict}**${proxyAdded.spread}`);
  }
  for (const [target, what] of [['floor', 'a Fastify proxy with no features'], ['bare', 'a Node proxy with no features and no framework']] as const) {
    const floor = ratio(target);
    if (floor) lines.push(`- ${target}/peer throughput: ${fmt(floor.median, 2)}×, what ${what} reaches here${floor.spread}`);
  }
  const peerAdded = added('peer');
  if (peerAdded) lines.push(`- peer added mean latency over direct at 1 connection: ${fmt(peerAdded.median, 3)} ms${peerAdded.spread}`);
  lines.push('');

  lines.push(`CPU use during the ${opts.connections}-connection run (100% = one core; ${availableParallelism()} cores shared by all processes):`);
  lines.push('');
  lines.push('| target | load generator | proxy under test | upstream | everything else (kernel, other processes) |');
  lines.push('|---|---:|---:|---:|---:|');
  for (const [target, s] of summary) {
    lines.push(`| ${LABEL[target]} | ${fmt(s.loadgenPct!, 0)}% | ${target === 'direct' ? '—' : `${fmt(s.middlePct!, 0)}%`} | ${fmt(s.upstreamPct!, 0)}% | ${fmt(s.otherPct!, 0)}% |`);
  }

  if (opts.rounds > 1) {
    lines.push('');
    lines.push('Per round (req/s; mean ms at 1 conn):');
    lines.push('');
    for (const [target, runs] of results) {
      lines.push(`- ${LABEL[target]}: ${runs.map((r) => `${fmt(r.throughput.rps, 0)}; ${fmt(r.latency.mean, 3)}`).join(' | ')}`);
    }
  }
  const busiest = Math.max(...[...summary.values()].map((s) => (Number.isFinite(s.otherPct!) ? s.otherPct! : 0)));
  if (busiest > 15) {
    lines.push('');
    lines.push(`**Warning:** up to ${busiest.toFixed(0)}% of a core went to other processes during a run: the machine was not quiet, the numbers are noisy.`);
  }
  const failed = [...summary.values()].some((s) => s.bad! > 0);
  if (failed) {
    lines.push('');
    lines.push('**Warning:** some requests failed (errors or non-2xx): the numbers above are not comparable.');
  }
  return lines.join('\n');
}

// ---------------------------------------------------------------------------------------------
// Main

async function main(): Promise<void> {
  process.stderr.write(`bench: starting the upstream and ${opts.targets.filter((t) => t !== 'direct').join(', ') || 'nothing else'}\n`);
  const upstream = await forkPeer('upstream.ts', [TOKEN]);
  const proxy = opts.targets.includes('proxy') ? await startProxy(upstream.url) : undefined;
  const peer = opts.targets.includes('peer') ? await forkPeer('fastify-http-proxy.ts', [upstream.url, TOKEN], opts.peerNodeArgs) : undefined;
  const floor = opts.targets.includes('floor') ? await forkPeer('fastify-floor.ts', [upstream.url, TOKEN], opts.peerNodeArgs) : undefined;
  const bare = opts.targets.includes('bare') ? await forkPeer('bare-node.ts', [upstream.url, TOKEN], opts.peerNodeArgs) : undefined;

  const setup: Record<Target, { url: string; headers: Record<string, string>; middle?: number } | undefined> = {
    // The direct run sends the token itself; through the proxies the client sends none.
    direct: { url: `${upstream.url}/graphql`, headers: { authorization: `Bearer ${TOKEN}` } },
    proxy: proxy && { url: `${proxy.url}/graphql`, headers: {}, middle: proxy.child.pid },
    peer: peer && { url: `${peer.url}/graphql`, headers: {}, middle: peer.child.pid },
    floor: floor && { url: `${floor.url}/graphql`, headers: {}, middle: floor.child.pid },
    bare: bare && { url: `${bare.url}/graphql`, headers: {}, middle: bare.child.pid },
  };

  const expected = await preflight(setup.direct!.url, setup.direct!.headers, undefined);
  for (const target of opts.targets) await preflight(setup[target]!.url, setup[target]!.headers, expected);

  const results = new Map<Target, TargetResult[]>(opts.targets.map((t) => [t, []]));
  let proxyRequests = 1; // the preflight
  for (let round = 1; round <= opts.rounds; round++) {
    // Every other round runs the targets in reverse, so a slow drift of the machine hits all alike.
    for (const target of round % 2 ? opts.targets : [...opts.targets].reverse()) {
      const { url, headers, middle } = setup[target]!;
      const pids = { middle, upstream: upstream.child.pid };
      const tag = `${opts.rounds > 1 ? `round ${round}/${opts.rounds}: ` : ''}${target}`;
      if (opts.warmup > 0) {
        process.stderr.write(`bench: ${tag}: warm-up ${opts.warmup} s\n`);
        const warm = await load(url, opts.connections, opts.warmup, headers, pids);
        if (target === 'proxy') proxyRequests += warm.ok + warm.bad;
      }
      process.stderr.write(`bench: ${tag}: ${opts.connections} connections, ${opts.duration} s\n`);
      const throughput = await load(url, opts.connections, opts.duration, headers, pids);
      process.stderr.write(`bench: ${tag}: 1 connection, ${opts.latencyDuration} s\n`);
      const latency = await load(url, 1, opts.latencyDuration, headers, pids);
      process.stderr.write(`bench: ${tag}: ${throughput.rps.toFixed(0)} req/s, mean ${latency.mean.toFixed(3)} ms at 1 connection\n`);
      results.get(target)!.push({ throughput, latency });
      if (target === 'proxy') proxyRequests += throughput.ok + throughput.bad + latency.ok + latency.bad;
    }
  }

  const logBytes = proxy ? statSync(proxy.logFile).size : 0;
  process.stdout.write(`${report(results)}\n`);
  if (proxy) {
    process.stdout.write(`\nThe proxy wrote ${(logBytes / 1e6).toFixed(1)} MB to stdout: ${fmt(logBytes / proxyRequests, 0)} bytes per request.\n`);
    if (args['keep-logs']) process.stdout.write(`Proxy log: ${proxy.logFile}\n`);
  }
  if (args.json) {
    writeFileSync(args.json, JSON.stringify({ options: opts, results: Object.fromEntries(results) }, null, 2));
  }
}

main()
  .then(
    () => cleanup().then(() => process.exit(0)),
    (err: Error) => {
      process.stderr.write(`bench: ${err.stack ?? err.message}\n`);
      return cleanup().then(() => process.exit(1));
    },
  );
