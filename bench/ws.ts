// WebSocket benchmark. Relay phase (WS_MODE=relay): messages per second relayed by the proxy
// against the same upstream read directly, with 1 and with 100 streams, and the proxy's memory
// holding 1,000 idle streams. Share phase (WS_MODE=share, bench/ws-share.ts run as a child): 1,000
// client subscriptions over 10 distinct queries must hold exactly 10 upstream sockets; events a
// second, added latency of one event, memory per client subscription.
//
//   npx tsc -p tsconfig.json && node --import tsx bench/ws.ts
//   node --import tsx bench/ws.ts --help
//
// Processes: this one (the clients, which count), the upstream (this file with --role upstream: a
// bare `ws` server), and the proxy (`node dist/cli.js`, static-token mode, as users start it).
// Loopback only. Every phase is bounded, and the whole run is cut at 90 s.
//
// Flow control: the upstream sends only what a stream has asked for. Each stream grants a window
// of messages and tops it up as it reads, so the upstream pushes as fast as the client consumes,
// with a bounded amount in flight. (Pushing without any flow control would just measure how fast
// a buffer fills: the proxy reads its upstream at full speed and drops a client that falls more
// than WS_MAX_BUFFERED_BYTES behind with 1013, as Bitquery does.)
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import type { IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import { availableParallelism, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { WebSocket, WebSocketServer } from 'ws';
import { freePort } from './free-port.js';

const ROOT = resolve(import.meta.dirname, '..');
const TOKEN = 'bench-token';
const PROTOCOL = 'graphql-ws';
const HARD_LIMIT_MS = 90_000;

const HELP = `Usage: node --import tsx bench/ws.ts [options]   (build first: npx tsc -p tsconfig.json)

  --duration S      seconds measured per throughput phase (default 5)
  --warmup S        seconds of discarded warm-up before each measurement (default 1)
  --size BYTES      size of each upstream message, a legacy graphql-ws "data" text frame (default 512)
  --idle N          idle streams held for the memory phase (default 1000)
  --proxy-entry F   the proxy's cli.js (default dist/cli.js)
  --phases LIST     relay, share or relay,share (default relay,share)
  -h, --help        this text
`;

const { values: args } = parseArgs({
  options: {
    role: { type: 'string', default: 'bench' },
    duration: { type: 'string', default: '5' },
    warmup: { type: 'string', default: '1' },
    size: { type: 'string', default: '512' },
    idle: { type: 'string', default: '1000' },
    'proxy-entry': { type: 'string', default: join(ROOT, 'dist', 'cli.js') },
    phases: { type: 'string', default: 'relay,share' },
    help: { type: 'boolean', short: 'h', default: false },
  },
  strict: true,
});

if (args.help) {
  process.stdout.write(HELP);
  process.exit(0);
}

const SIZE = Number(args.size);

/** A legacy `data` message padded to SIZE bytes. */
function message(size: number): Buffer {
  const head = '{"type":"data","id":"1","payload":{"data":{"EVM":{"Blocks":[{"Block":{"Number":21000000,"Time":"2025-01-01T00:00:00Z","Hash":"';
  const tail = '"}}]}}}}';
  return Buffer.from(head + 'f'.repeat(Math.max(0, size - head.length - tail.length)) + tail);
}

// ---------------------------------------------------------------------------------------------
// The upstream: sends a stream as many messages as it has been granted (a decimal number per text
// frame). Requires the token, as Bitquery does.

if (args.role === 'upstream') {
  const payload = message(SIZE);
  const wss = new WebSocketServer({
    host: '127.0.0.1',
    port: 0,
    perMessageDeflate: false,
    clientTracking: false,
    handleProtocols: (offered) => (offered.has(PROTOCOL) ? PROTOCOL : false),
    verifyClient: ({ req }: { req: IncomingMessage }) => new URL(req.url ?? '/', 'http://x').searchParams.get('token') === TOKEN,
  });
  wss.on('connection', (ws) => {
    ws.on('error', () => {});
    ws.on('message', (data) => {
      const n = Number(data.toString());
      for (let i = 0; i < n; i++) ws.send(payload, { binary: false });
    });
  });
  wss.on('listening', () => process.stdout.write(`${(wss.address() as AddressInfo).port}\n`));
  process.on('SIGTERM', () => process.exit(0));
}

// ---------------------------------------------------------------------------------------------
// Helpers

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until(check: () => boolean | Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

function status(pid: number): { rssKb: number; hwmKb: number } {
  const text = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? NaN);
  return { rssKb: kb('VmRSS'), hwmKb: kb('VmHWM') };
}

/** CPU seconds (user + system) the process has used. */
function cpuSeconds(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100; // utime, stime in clock ticks (USER_HZ = 100)
}

function stop(child: ChildProcess | undefined): Promise<void> {
  if (!child || child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((r) => {
    child.once('exit', () => r());
    child.kill('SIGTERM');
  });
}

interface Streams {
  sockets: WebSocket[];
  received: () => number;
  unexpectedCloses: () => { code: number; reason: string }[];
  close(): Promise<void>;
}

/**
 * Opens `count` streams to `url` (at most 100 handshakes at a time). With a window, each stream
 * grants that many messages at once and tops up by half the window whenever it has read half.
 */
async function openStreams(url: string, count: number, window: number): Promise<Streams> {
  let received = 0;
  let closing = false;
  const unexpected: { code: number; reason: string }[] = [];
  const sockets: WebSocket[] = [];
  const open = () =>
    new Promise<WebSocket>((resolveOpen, reject) => {
      const ws = new WebSocket(url, [PROTOCOL], { perMessageDeflate: false });
      let unread = 0;
      ws.on('message', () => {
        received += 1;
        if (window > 0 && ++unread >= window / 2) {
          unread = 0;
          ws.send(String(window / 2));
        }
      });
      ws.once('open', () => {
        if (window > 0) ws.send(String(window));
        resolveOpen(ws);
      });
      ws.once('error', reject);
      ws.once('unexpected-response', (_req, res) => reject(new Error(`handshake refused: ${res.statusCode}`)));
      ws.once('close', (code, reason) => {
        if (!closing) unexpected.push({ code, reason: reason.toString() });
      });
    });
  for (let i = 0; i < count; i += 100) {
    sockets.push(...(await Promise.all(Array.from({ length: Math.min(100, count - i) }, open))));
  }
  for (const ws of sockets) ws.on('error', () => {});
  return {
    sockets,
    received: () => received,
    unexpectedCloses: () => unexpected,
    async close() {
      closing = true;
      await Promise.all(
        sockets.map((ws) =>
          ws.readyState === WebSocket.CLOSED
            ? undefined
            : new Promise<void>((r) => {
                ws.once('close', () => r());
                ws.terminate();
              }),
        ),
      );
    },
  };
}

interface Throughput {
  msgsPerSec: number;
  mibPerSec: number;
  proxyCpu?: number;
  unexpected: number;
}

async function throughput(url: string, streams: number, window: number, proxyPid?: number): Promise<Throughput> {
  const s = await openStreams(url, streams, window);
  await sleep(Number(args.warmup) * 1000);
  const n0 = s.received();
  const t0 = performance.now();
  const cpu0 = proxyPid ? cpuSeconds(proxyPid) : 0;
  await sleep(Number(args.duration) * 1000);
  const n1 = s.received();
  const seconds = (performance.now() - t0) / 1000;
  const cpu1 = proxyPid ? cpuSeconds(proxyPid) : 0;
  const unexpected = s.unexpectedCloses().length;
  await s.close();
  const msgsPerSec = (n1 - n0) / seconds;
  return {
    msgsPerSec,
    mibPerSec: (msgsPerSec * SIZE) / 2 ** 20,
    ...(proxyPid && { proxyCpu: (cpu1 - cpu0) / seconds }),
    unexpected,
  };
}

// ---------------------------------------------------------------------------------------------
// The run

async function bench(): Promise<void> {
  const children: ChildProcess[] = [];
  const guard = setTimeout(() => {
    process.stderr.write(`bench: over ${HARD_LIMIT_MS / 1000} s, giving up\n`);
    for (const c of children) c.kill('SIGKILL');
    process.exit(1);
  }, HARD_LIMIT_MS);
  guard.unref();
  const started = performance.now();

  try {
    // Upstream
    const upstream = spawn(process.execPath, ['--import', 'tsx', import.meta.filename, '--role', 'upstream', '--size', String(SIZE)], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    children.push(upstream);
    const upstreamPort = await new Promise<number>((resolvePort, reject) => {
      upstream.stdout!.once('data', (d: Buffer) => resolvePort(Number(d.toString().trim())));
      upstream.once('exit', (code) => reject(new Error(`upstream exited (${code})`)));
    });
    const direct = `ws://127.0.0.1:${upstreamPort}/graphql?token=${TOKEN}`;

    // Proxy
    const proxyPort = await freePort();
    // An empty working directory, so no stray .env is read; removed when the bench ends.
    const proxyCwd = mkdtempSync(join(tmpdir(), 'bqp-bench-'));
    process.once('exit', () => rmSync(proxyCwd, { recursive: true, force: true }));
    const proxy = spawn(process.execPath, [resolve(args['proxy-entry'])], {
      cwd: proxyCwd,
      env: {
        PATH: process.env.PATH,
        BITQUERY_TOKEN: TOKEN,
        BITQUERY_UPSTREAM: `http://127.0.0.1:${upstreamPort}`,
        HOST: '127.0.0.1',
        PORT: String(proxyPort),
        LOG_LEVEL: 'warn',
        WS_MAX_STREAMS: '100000',
        // This phase measures the 1:1 relay; the share phase is bench/ws-share.ts.
        WS_MODE: 'relay',
        // No admin listener: its default port may be taken by another proxy on the machine.
        ADMIN_PORT: 'off',
      },
      stdio: ['ignore', 'inherit', 'inherit'],
    });
    children.push(proxy);
    const proxyHttp = `http://127.0.0.1:${proxyPort}`;
    await until(
      () => {
        if (proxy.exitCode !== null) throw new Error(`the proxy exited (${proxy.exitCode})`);
        return fetch(`${proxyHttp}/healthz`).then((r) => r.ok, () => false);
      },
      15_000,
      'the proxy to listen',
    );
    const proxied = `ws://127.0.0.1:${proxyPort}/graphql`;
    const pid = proxy.pid!;

    // Memory with idle streams, first, while the proxy's heap is still small.
    const idle = Number(args.idle);
    const before = status(pid);
    const idleStart = performance.now();
    const held = await openStreams(proxied, idle, 0);
    const openMs = performance.now() - idleStart;
    await sleep(1000);
    const holding = status(pid);
    const idleClosedEarly = held.unexpectedCloses().length;
    await held.close();

    // Throughput: 1 stream with a deep window, 100 streams with 100 messages each in flight.
    const phases = [
      { label: '1 stream', streams: 1, window: 2000 },
      { label: '100 streams', streams: 100, window: 100 },
    ];
    const rows: { label: string; direct: Throughput; proxy: Throughput }[] = [];
    for (const phase of phases) {
      const d = await throughput(direct, phase.streams, phase.window);
      const p = await throughput(proxied, phase.streams, phase.window, pid);
      rows.push({ label: phase.label, direct: d, proxy: p });
    }
    await stop(proxy);
    await stop(upstream);

    // Report
    const f = (n: number, digits = 0) => n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits });
    const mib = (kb: number) => f(kb / 1024, 1);
    const lines = [
      '',
      `WebSocket relay, loopback, ${availableParallelism()} cores, Node ${process.version}; ${SIZE}-byte text messages; ` +
        `${args.warmup} s warm-up + ${args.duration} s measured per phase; the proxy with LOG_LEVEL=warn.`,
      '',
      '| phase | direct msg/s | proxy msg/s | proxy / direct | proxy MiB/s | proxy CPU | closed early (direct/proxy) |',
      '|---|---:|---:|---:|---:|---:|---:|',
      ...rows.map(
        (r) =>
          `| ${r.label} | ${f(r.direct.msgsPerSec)} | ${f(r.proxy.msgsPerSec)} | ${f(r.proxy.msgsPerSec / r.direct.msgsPerSec, 2)} | ` +
          `${f(r.proxy.mibPerSec, 1)} | ${f((r.proxy.proxyCpu ?? 0) * 100)}% | ${r.direct.unexpected}/${r.proxy.unexpected} |`,
      ),
      '',
      '| proxy memory | RSS MiB | peak RSS (VmHWM) MiB |',
      '|---|---:|---:|',
      `| started, no stream | ${mib(before.rssKb)} | ${mib(before.hwmKb)} |`,
      `| ${f(idle)} idle streams open (opened in ${f(openMs)} ms${idleClosedEarly ? `, ${idleClosedEarly} closed early` : ''}) | ${mib(holding.rssKb)} | ${mib(holding.hwmKb)} |`,
      `| per idle stream | ${f(((holding.rssKb - before.rssKb) / idle), 1)} KiB | |`,
      '',
      `Whole run: ${f((performance.now() - started) / 1000, 1)} s.`,
      '',
    ];
    process.stdout.write(lines.join('\n'));
  } finally {
    for (const c of children) await stop(c);
    clearTimeout(guard);
  }
}

/** The share phase: bench/ws-share.ts in a process of its own (it forks its own upstream). */
async function sharePhase(): Promise<void> {
  const child = spawn(process.execPath, ['--import', 'tsx', join(import.meta.dirname, 'ws-share.ts'), '--proxy-entry', args['proxy-entry']], { stdio: 'inherit' });
  const [code] = (await once(child, 'exit')) as [number | null];
  if (code !== 0) process.exitCode = 1;
}

if (args.role !== 'upstream') {
  const phases = new Set(args.phases.split(','));
  if (phases.has('relay')) await bench();
  if (phases.has('share')) await sharePhase();
}
