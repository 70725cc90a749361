// Points-saver benchmark: a cache hit against a miss and against the upstream directly, and
// coalescing of concurrent identical queries against a slow upstream. See bench/README.md.
//
//   npm run bench:cache                              # build, then the default run
//   node --import tsx bench/cache.ts --help          # options
//
// Peers, side by side in one run, all on loopback:
//   direct      the upstream itself (bench/peers/upstream.ts), the client sending the token: in
//               the coalescing runs, what the machine and the load generator take on their own;
//   bare        the featureless node:http + undici forward (bench/peers/bare-node.ts): a miss
//               without any saver, the reference for what a miss costs;
//   saver       node:http + PointsSaver + undici (bench/peers/saver-node.ts): the saver alone;
//   proxy       `node dist/cli.js` with CACHE_TTL_MS set, as users start it (a build that answers
//               no X-Cache: HIT on a repeat has no saver: its rows are then skipped).
// Throughput runs: "miss" sends a new query every request (distinct variables: nothing cached or
// in flight to join), "hit" the same query every time (answered from the cache).
// Coalescing runs: N clients send one new query at the same instant to a peer in front of an
// upstream that takes D ms; the upstream counts the requests it answered.
import { execFileSync, fork, spawn, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import type { EventEmitter } from 'node:events';
import { createRequire } from 'node:module';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { Agent, request } from 'undici';

const ROOT = resolve(import.meta.dirname, '..');
const TOKEN = 'bench-token';

/** The targets. */
const GOAL_HIT_OVER_MISS = 3;
const GOAL_HIT_ADDED_MS = 0.2;
const GOAL_COALESCED_MS = 250;

const HELP = `Usage: node --import tsx bench/cache.ts [options]   (or: npm run bench:cache -- [options])

  --duration S        seconds of each measured run (default 5)
  --warmup S          seconds of discarded warm-up before each run (default 1)
  --connections N     connections of the throughput runs (default 32)
  --rounds N          repeat the throughput runs; medians reported (default 1)
  --clients N         concurrent identical queries in a coalescing run (default 100)
  --delay MS          the slow upstream's answer time (default 200)
  --bursts N          coalescing runs per peer (default 5)
  --proxy-entry FILE  the proxy's cli.js (default dist/cli.js)
  -h, --help          this text
`;

const { values: args } = parseArgs({
  options: {
    duration: { type: 'string', default: '5' },
    warmup: { type: 'string', default: '1' },
    connections: { type: 'string', default: '32' },
    rounds: { type: 'string', default: '1' },
    clients: { type: 'string', default: '100' },
    delay: { type: 'string', default: '200' },
    bursts: { type: 'string', default: '5' },
    'proxy-entry': { type: 'string', default: join(ROOT, 'dist', 'cli.js') },
    help: { type: 'boolean', short: 'h', default: false },
  },
  strict: true,
});
if (args.help) {
  process.stdout.write(HELP);
  process.exit(0);
}

function positive(name: string, value: string, allowZero = false): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n < 0 || (n === 0 && !allowZero)) {
    process.stderr.write(`bench: --${name} must be a number ${allowZero ? 'of 0 or more' : 'above 0'}, got "${value}"\n`);
    process.exit(2);
  }
  return n;
}
const opts = {
  duration: positive('duration', args.duration),
  warmup: positive('warmup', args.warmup, true),
  connections: Math.round(positive('connections', args.connections)),
  rounds: Math.round(positive('rounds', args.rounds)),
  clients: Math.round(positive('clients', args.clients)),
  delay: positive('delay', args.delay, true),
  bursts: Math.round(positive('bursts', args.bursts)),
  proxyEntry: resolve(args['proxy-entry']),
};

// ---------------------------------------------------------------------------------------------
// Children: started here, always ended here.

const children = new Set<ChildProcess>();
const work = mkdtempSync(join(tmpdir(), 'bqp-bench-cache-'));
let cleaning: Promise<void> | undefined;

function track(child: ChildProcess): ChildProcess {
  children.add(child);
  child.once('exit', () => children.delete(child));
  return child;
}

function cleanup(): Promise<void> {
  return (cleaning ??= (async () => {
    await Promise.all(
      [...children].map(async (child) => {
        if (child.exitCode !== null || child.signalCode !== null) return;
        const exited = new Promise<void>((r) => child.once('exit', () => r()));
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
        await exited;
        clearTimeout(timer);
      }),
    );
    rmSync(work, { recursive: true, force: true });
  })());
}
process.on('exit', () => {
  for (const c of children) c.kill('SIGKILL');
});
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => void cleanup().finally(() => process.exit(130)));
}
const budgetMs = ((opts.warmup + opts.duration) * 2 * 5 * opts.rounds + 120 + (opts.bursts * 3 * (opts.delay + 2000)) / 1000) * 1000;
setTimeout(() => {
  process.stderr.write(`bench: over the time budget (${budgetMs / 1000} s), giving up\n`);
  void cleanup().finally(() => process.exit(1));
}, budgetMs).unref();

async function forkPeer(file: string, argv: string[]): Promise<{ child: ChildProcess; url: string }> {
  const child = track(fork(join(ROOT, 'bench', 'peers', file), argv, { cwd: ROOT, execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] }));
  const url = await new Promise<string>((resolveUrl, reject) => {
    const timer = setTimeout(() => reject(new Error(`${file} did not start within 15 s`)), 15_000);
    child.once('message', (m: { url: string }) => {
      clearTimeout(timer);
      resolveUrl(m.url);
    });
    child.once('exit', (code, signal) => reject(new Error(`${file} exited during start-up (${signal ?? code})`)));
  });
  return { child, url };
}

function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => resolvePort(typeof address === 'object' && address ? address.port : 0));
    });
  });
}

/** The proxy as users run it, configured by its environment only (PATH and these settings). */
async function startProxy(name: string, upstream: string, settings: Record<string, string>): Promise<{ child: ChildProcess; url: string }> {
  const port = await freePort();
  const cwd = join(work, name);
  mkdirSync(cwd);
  const out = openSync(join(cwd, 'proxy.log'), 'w');
  const child = track(
    spawn(process.execPath, [opts.proxyEntry], {
      cwd,
      // Two proxies run side by side: no admin listener (one port each) and no Usage API polls.
      env: { PATH: process.env.PATH ?? '', BITQUERY_TOKEN: TOKEN, BITQUERY_UPSTREAM: upstream, PORT: String(port), HOST: '127.0.0.1', LOG_LEVEL: 'info', ADMIN_PORT: 'off', USAGE_POLL_MS: '0', ...settings },
      stdio: ['ignore', out, out],
    }),
  );
  closeSync(out);
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 15_000;
  while (!(await fetch(`${url}/healthz`).then((r) => r.ok, () => false))) {
    if (child.exitCode !== null || Date.now() > deadline) throw new Error(`the proxy did not start:\n${readFileSync(join(cwd, 'proxy.log'), 'utf8').slice(-2000)}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return { child, url };
}

// ---------------------------------------------------------------------------------------------
// Measuring

let distinct = 0;
/** A query nobody sent before (new variables): a miss. */
const newQuery = () => JSON.stringify({ query: 'query ($network: evm_network, $i: Int) { EVM(network: $network) { Blocks(limit: {count: 1}, offset: $i) { Block { Number Time } } } }', variables: { network: 'eth', i: ++distinct } });
/** The same query every time: a hit once cached. */
const SAME_QUERY = JSON.stringify({ query: '{ EVM(network: eth) { Blocks(limit: {count: 1}) { Block { Number Time } } } }' });

const CLK_TCK = (() => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  } catch {
    return 100;
  }
})();
function cpuSeconds(pid: number | undefined): number {
  if (pid === undefined) return NaN;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / CLK_TCK;
  } catch {
    return NaN;
  }
}

interface AutocannonResult {
  duration: number;
  errors: number;
}
type Autocannon = (options: Record<string, unknown>, done: (err: Error | null, result: AutocannonResult) => void) => EventEmitter;
const autocannon = createRequire(import.meta.url)('autocannon') as Autocannon;

interface Run {
  rps: number;
  mean: number;
  p50: number;
  p99: number;
  cpuUs: number;
  bad: number;
}

function stats(samples: number[]): { mean: number; p50: number; p99: number } {
  const s = samples.sort((a, b) => a - b);
  const at = (p: number) => (s.length ? s[Math.min(s.length - 1, Math.ceil(p * s.length) - 1)]! : NaN);
  return { mean: s.length ? s.reduce((a, b) => a + b, 0) / s.length : NaN, p50: at(0.5), p99: at(0.99) };
}

function load(url: string, connections: number, duration: number, body: () => string, headers: Record<string, string>, pid?: number): Promise<Run> {
  const samples: number[] = [];
  let ok = 0;
  let bad = 0;
  const cpuBefore = cpuSeconds(pid);
  return new Promise((resolveRun, reject) => {
    const instance = autocannon(
      {
        url,
        connections,
        duration,
        timeout: 10,
        requests: [{ method: 'POST', headers: { 'content-type': 'application/json', ...headers }, setupRequest: (req: Record<string, unknown>) => ({ ...req, body: body() }) }],
      },
      (err, result) => {
        if (err) return reject(err);
        resolveRun({ rps: ok / result.duration, ...stats(samples), cpuUs: ((cpuSeconds(pid) - cpuBefore) * 1e6) / Math.max(1, ok), bad: bad + result.errors });
      },
    );
    instance.on('response', (_c: unknown, status: number, _b: number, ms: number) => {
      if (status === 200) {
        ok += 1;
        samples.push(ms);
      } else bad += 1;
    });
  });
}

async function post(url: string, body: string, headers: Record<string, string> = {}, dispatcher?: Agent) {
  const res = await request(url, { method: 'POST', body, headers: { 'content-type': 'application/json', ...headers }, dispatcher });
  return { status: res.statusCode, xCache: res.headers['x-cache'] as string | undefined, text: await res.body.text() };
}

async function upstreamCount(upstream: string): Promise<number> {
  const res = await request(`${upstream}/count`);
  return ((await res.body.json()) as { posts: number }).posts;
}

interface Burst {
  upstream: number;
  maxMs: number;
  p50Ms: number;
  failed: number;
}

/** N clients, one connection each, send one new query at the same instant. */
async function burst(url: string, upstream: string, headers: Record<string, string>): Promise<Burst> {
  const agent = new Agent({ connections: opts.clients + 10 });
  // Connections are opened first, so the burst measures the queries, not TCP handshakes.
  await Promise.all(Array.from({ length: opts.clients }, () => request(`${url}/healthz`, { dispatcher: agent }).then((r) => r.body.dump())));
  const before = await upstreamCount(upstream);
  const body = newQuery();
  const times = await Promise.all(
    Array.from({ length: opts.clients }, async () => {
      const started = performance.now();
      const res = await post(`${url}/graphql`, body, headers, agent).catch(() => ({ status: 0 }));
      return { ms: performance.now() - started, ok: res.status === 200 };
    }),
  );
  const after = await upstreamCount(upstream);
  await agent.close();
  const ms = times.map((t) => t.ms);
  return { upstream: after - before, maxMs: Math.max(...ms), p50Ms: stats(ms).p50, failed: times.filter((t) => !t.ok).length };
}

// ---------------------------------------------------------------------------------------------
// Main

const median = (values: number[]) => {
  const s = values.filter(Number.isFinite).sort((a, b) => a - b);
  return s.length ? (s.length % 2 ? s[s.length >> 1]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2) : NaN;
};
const fmt = (v: number, digits: number) => (Number.isFinite(v) ? v.toFixed(digits) : 'n/a');

async function main(): Promise<void> {
  const fast = await forkPeer('upstream.ts', [TOKEN]);
  const slow = await forkPeer('upstream.ts', [TOKEN, String(opts.delay)]);
  const bare = await forkPeer('bare-node.ts', [fast.url, TOKEN]);
  const bareSlow = await forkPeer('bare-node.ts', [slow.url, TOKEN]);
  const saver = await forkPeer('saver-node.ts', [fast.url, TOKEN, '600000', 'true']);
  const saverSlow = await forkPeer('saver-node.ts', [slow.url, TOKEN, '0', 'true']);

  let proxy: { child: ChildProcess; url: string } | undefined;
  let proxySlow: { child: ChildProcess; url: string } | undefined;
  let proxyNote = '';
  if (!existsSync(opts.proxyEntry)) proxyNote = `${opts.proxyEntry} does not exist (npm run build): the proxy rows are skipped.`;
  else {
    proxy = await startProxy('proxy', fast.url, { CACHE_TTL_MS: '600000' });
    await post(`${proxy.url}/graphql`, SAME_QUERY);
    const second = await post(`${proxy.url}/graphql`, SAME_QUERY);
    if (second.xCache !== 'HIT') {
      proxyNote = 'The proxy answers no X-Cache: HIT on a repeat with CACHE_TTL_MS set (a build without the points saver), so its rows are skipped.';
      proxy = undefined;
    } else proxySlow = await startProxy('proxy-slow', slow.url, {});
  }

  type Row = { label: string; url: string; body: () => string; headers: Record<string, string>; pid?: number };
  const rows: Row[] = [
    { label: 'direct upstream', url: `${fast.url}/graphql`, body: () => SAME_QUERY, headers: { authorization: `Bearer ${TOKEN}` } },
    { label: 'bare forward, no saver', url: `${bare.url}/graphql`, body: () => SAME_QUERY, headers: {}, pid: bare.child.pid },
    { label: 'saver: miss', url: `${saver.url}/graphql`, body: newQuery, headers: {}, pid: saver.child.pid },
    { label: 'saver: hit', url: `${saver.url}/graphql`, body: () => SAME_QUERY, headers: {}, pid: saver.child.pid },
  ];
  if (proxy) {
    rows.push({ label: 'proxy: miss', url: `${proxy.url}/graphql`, body: newQuery, headers: {}, pid: proxy.child.pid });
    rows.push({ label: 'proxy: hit', url: `${proxy.url}/graphql`, body: () => SAME_QUERY, headers: {}, pid: proxy.child.pid });
  }
  await post(`${saver.url}/graphql`, SAME_QUERY); // the hit rows' entry

  const results = new Map<string, { tp: Run; one: Run }[]>(rows.map((r) => [r.label, []]));
  for (let round = 1; round <= opts.rounds; round++) {
    for (const row of round % 2 ? rows : [...rows].reverse()) {
      process.stderr.write(`bench: round ${round}/${opts.rounds}: ${row.label}\n`);
      if (opts.warmup > 0) await load(row.url, opts.connections, opts.warmup, row.body, row.headers);
      const tp = await load(row.url, opts.connections, opts.duration, row.body, row.headers, row.pid);
      const one = await load(row.url, 1, opts.duration, row.body, row.headers);
      results.get(row.label)!.push({ tp, one });
    }
  }

  const bursts = new Map<string, Burst[]>();
  const burstPeers: [string, string, string][] = [
    ['direct upstream', slow.url, slow.url],
    ['bare forward, no saver', bareSlow.url, slow.url],
    ['saver (COALESCE on, no cache)', saverSlow.url, slow.url],
  ];
  if (proxySlow) burstPeers.push(['proxy (COALESCE on, no cache)', proxySlow.url, slow.url]);
  for (const [label, url, upstream] of burstPeers) {
    process.stderr.write(`bench: coalescing: ${label}\n`);
    const list: Burst[] = [];
    const headers: Record<string, string> = url === slow.url ? { authorization: `Bearer ${TOKEN}` } : {};
    for (let i = 0; i < opts.bursts; i++) list.push(await burst(url, upstream, headers));
    bursts.set(label, list);
  }

  const lines: string[] = [];
  const rounds = opts.rounds > 1 ? ` (medians of ${opts.rounds} rounds)` : '';
  lines.push(`### Points-saver benchmark${rounds}`, '');
  lines.push(`POST /graphql, keep-alive, loopback, Node ${process.version}; ${opts.connections} connections for ${opts.duration} s after ${opts.warmup} s of warm-up, then 1 connection for ${opts.duration} s.`, '');
  lines.push(`| peer | req/s (${opts.connections} conns) | p50 ms | p99 ms | mean ms (1 conn) | server CPU µs/req | failed |`, '|---|---:|---:|---:|---:|---:|---:|');
  const m = (label: string, pick: (r: { tp: Run; one: Run }) => number) => median(results.get(label)!.map(pick));
  for (const { label } of rows) {
    const bad = results.get(label)!.reduce((n, r) => n + r.tp.bad + r.one.bad, 0);
    lines.push(`| ${label} | ${fmt(m(label, (r) => r.tp.rps), 0)} | ${fmt(m(label, (r) => r.tp.p50), 2)} | ${fmt(m(label, (r) => r.tp.p99), 2)} | ${fmt(m(label, (r) => r.one.mean), 3)} | ${fmt(m(label, (r) => r.tp.cpuUs), 0)} | ${bad} |`);
  }
  lines.push('');
  for (const who of proxy ? ['saver', 'proxy'] : ['saver']) {
    const perRound = (pick: (hit: { tp: Run; one: Run }, other: { tp: Run; one: Run }, i: number) => number, other: string) => median(results.get(`${who}: hit`)!.map((hit, i) => pick(hit, results.get(other)![i]!, i)));
    const ratio = perRound((hit, miss) => hit.tp.rps / miss.tp.rps, `${who}: miss`);
    const added = perRound((hit, direct) => hit.one.mean - direct.one.mean, 'direct upstream');
    lines.push(`- ${who}: hit/miss throughput **${fmt(ratio, 2)}×** (target ≥ ${GOAL_HIT_OVER_MISS}×): **${ratio >= GOAL_HIT_OVER_MISS ? 'PASS' : 'MISS'}**`);
    lines.push(`- ${who}: a hit's added mean latency over direct at 1 connection **${fmt(added, 3)} ms** (target < ${GOAL_HIT_ADDED_MS} ms): **${added < GOAL_HIT_ADDED_MS ? 'PASS' : 'MISS'}**`);
  }
  if (proxyNote) lines.push('', proxyNote);
  lines.push('', `### Coalescing: ${opts.clients} concurrent identical new queries, upstream answering in ${opts.delay} ms (${opts.bursts} bursts)`, '');
  lines.push('| peer | upstream requests per burst | p50 ms | slowest answer ms | failed |', '|---|---:|---:|---:|---:|');
  for (const [label, list] of bursts) {
    lines.push(`| ${label} | ${list.map((b) => b.upstream).join(', ')} | ${fmt(median(list.map((b) => b.p50Ms)), 1)} | ${list.map((b) => fmt(b.maxMs, 1)).join(', ')} | ${list.reduce((n, b) => n + b.failed, 0)} |`);
  }
  lines.push('');
  for (const [label, list] of bursts) {
    if (label.startsWith('bare') || label.startsWith('direct')) continue;
    const pass = list.every((b) => b.upstream === 1 && b.maxMs <= GOAL_COALESCED_MS && b.failed === 0);
    lines.push(`- ${label}: one upstream request and every answer within ${GOAL_COALESCED_MS} ms in every burst: **${pass ? 'PASS' : 'MISS'}**`);
  }
  process.stdout.write(`${lines.join('\n')}\n`);
}

main().then(
  () => cleanup().then(() => process.exit(0)),
  (err: Error) => {
    process.stderr.write(`bench: ${err.stack ?? err.message}\n`);
    return cleanup().then(() => process.exit(1));
  },
);
