// Share-mode benchmark (the share phase of bench/ws.ts): N client subscriptions over D distinct
// queries through the proxy as users start it (`node dist/cli.js`, WS_MODE=share, static token),
// checking that exactly D upstream sockets are held, and measuring events delivered a second, the
// latency one event gains through the proxy, and the proxy's memory per client subscription.
//
//   npx tsc -p tsconfig.json && node --import tsx bench/ws-share.ts
//   node --import tsx bench/ws-share.ts --help
//
// Processes: this one (the clients, half legacy graphql-ws, half graphql-transport-ws, by hand), the
// upstream (this file with --role upstream: a legacy graphql-ws server that publishes on command,
// over IPC), and the proxy, whose counts are read from its admin /metrics and its memory from /proc.
// Loopback only; the whole run is cut at 120 s.
import { fork, spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { availableParallelism, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { WebSocket, WebSocketServer } from 'ws';
import { freePort } from './free-port.js';

const HARD_LIMIT_MS = 120_000;
const TOKEN = 'bench-token';
const ROOT = resolve(import.meta.dirname, '..');

const HELP = `Usage: node --import tsx bench/ws-share.ts [options]

  --clients N     client subscriptions, one socket each (default 1000)
  --distinct D    distinct queries they spread over (default 10)
  --size BYTES    size of each event's data (default 512)
  --burst K       events per upstream stream in each burst (default 100)
  --duration S    seconds of bursts measured (default 5)
  --samples N     single events timed for latency (default 50)
  --proxy-entry F the proxy's cli.js (default dist/cli.js)
  -h, --help      this text
`;

const { values: args } = parseArgs({
  options: {
    role: { type: 'string', default: 'bench' },
      clients: { type: 'string', default: '1000' },
    distinct: { type: 'string', default: '10' },
    size: { type: 'string', default: '512' },
    burst: { type: 'string', default: '100' },
    duration: { type: 'string', default: '5' },
    samples: { type: 'string', default: '50' },
    'proxy-entry': { type: 'string', default: join(ROOT, 'dist', 'cli.js') },
    help: { type: 'boolean', short: 'h', default: false },
  },
  strict: true,
});

if (args.help) {
  process.stdout.write(HELP);
  process.exit(0);
}

/** Epoch milliseconds with sub-millisecond precision, comparable across processes on one machine. */
const now = () => performance.timeOrigin + performance.now();

type Command = { cmd: 'burst'; n: number } | { cmd: 'one' } | { cmd: 'sockets' };

function answer(value: unknown): void {
  process.send!(value);
}

// ---------------------------------------------------------------------------------------------
// The upstream: legacy graphql-ws, checks the token, acks, records each started subscription, and
// publishes to all of them on command. `one` sends a single event stamped with the send time.

async function upstreamRole(): Promise<void> {
  const filler = 'f'.repeat(Number(args.size));
  const started = new Set<WebSocket>();
  const wss = new WebSocketServer({
    host: '127.0.0.1',
    port: 0,
    perMessageDeflate: false,
    handleProtocols: (offered) => (offered.has('graphql-ws') ? 'graphql-ws' : false),
    verifyClient: ({ req }: { req: import('node:http').IncomingMessage }) => new URL(req.url ?? '/', 'http://x').searchParams.get('token') === TOKEN,
  });
  wss.on('connection', (ws) => {
    ws.on('error', () => {});
    ws.on('close', () => started.delete(ws));
    ws.on('message', (raw) => {
      const msg = JSON.parse(raw.toString()) as { type: string };
      if (msg.type === 'connection_init') ws.send('{"type":"connection_ack"}');
      else if (msg.type === 'start') started.add(ws);
    });
  });
  await once(wss, 'listening');
  process.on('message', (c: Command) => {
    if (c.cmd === 'sockets') return answer({ sockets: wss.clients.size, started: started.size });
    if (c.cmd === 'one') {
      const text = JSON.stringify({ type: 'data', id: '1', payload: { data: { sentAt: now(), filler } } });
      for (const ws of started) ws.send(text);
      return answer({ ok: true });
    }
    if (c.cmd === 'burst') {
      const text = JSON.stringify({ type: 'data', id: '1', payload: { data: { filler } } });
      for (let i = 0; i < c.n; i++) for (const ws of started) ws.send(text);
      return answer({ ok: true });
    }
  });
  answer({ port: (wss.address() as AddressInfo).port });
}

// ---------------------------------------------------------------------------------------------
// The proxy, as users start it

async function startProxy(upstreamPort: number): Promise<{ proxy: ChildProcess; url: string; admin: string }> {
  const [port, adminPort] = [await freePort(), await freePort()];
  // An empty working directory, so no stray .env is read; removed when the bench ends.
  const cwd = mkdtempSync(join(tmpdir(), 'bqp-bench-'));
  process.once('exit', () => rmSync(cwd, { recursive: true, force: true }));
  const proxy = spawn(process.execPath, [resolve(args['proxy-entry'])], {
    cwd,
    env: {
      PATH: process.env.PATH,
      BITQUERY_TOKEN: TOKEN,
      BITQUERY_UPSTREAM: `http://127.0.0.1:${upstreamPort}`,
      HOST: '127.0.0.1',
      PORT: String(port),
      ADMIN_PORT: String(adminPort),
      USAGE_POLL_MS: '0',
      LOG_LEVEL: 'warn',
      WS_MODE: 'share',
      WS_MAX_STREAMS: '100000',
      // The bench upstream sends no keep-alive: no idle reconnects during the run.
      WS_UPSTREAM_IDLE_MS: '600000',
    },
    stdio: ['ignore', 'inherit', 'inherit'],
  });
  const admin = `http://127.0.0.1:${adminPort}`;
  await until(
    () => {
      if (proxy.exitCode !== null) throw new Error(`the proxy exited (${proxy.exitCode})`);
      return fetch(`${admin}/healthz`).then((r) => r.ok, () => false);
    },
    15_000,
    'the proxy to listen',
  );
  return { proxy, url: `ws://127.0.0.1:${port}/graphql`, admin };
}

/** A gauge of the proxy's, from its admin /metrics. */
async function gauge(admin: string, name: string): Promise<number> {
  const text = await (await fetch(`${admin}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name}{credentials="default"} `));
  return line === undefined ? NaN : Number(line.slice(line.lastIndexOf(' ') + 1));
}

function rssKb(pid: number): number {
  return Number(/^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? NaN);
}

// ---------------------------------------------------------------------------------------------
// The clients and the run

function ask<T>(child: ChildProcess, command: Command | undefined): Promise<T> {
  const reply = once(child, 'message').then(([m]) => m as T);
  if (command) child.send(command);
  return reply;
}

async function until(check: () => boolean | Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

const QUERIES = Array.from({ length: Number(args.distinct) }, (_, i) => `subscription Q${i} { trades(n: ${i}) { id } }`);

interface Client {
  ws: WebSocket;
  events: number;
  /** Receive times of stamped events, and their send times. */
  stamped: { sentAt: number; at: number }[];
}

async function openClient(url: string, index: number): Promise<Client> {
  const legacy = index % 2 === 0;
  const ws = new WebSocket(url, [legacy ? 'graphql-ws' : 'graphql-transport-ws'], { perMessageDeflate: false });
  const client: Client = { ws, events: 0, stamped: [] };
  const eventPrefix = legacy ? '{"type":"data"' : '{"type":"next"';
  let acked!: () => void;
  const ack = new Promise<void>((r) => (acked = r));
  ws.on('message', (data: Buffer) => {
    const at = now();
    const text = data.toString();
    if (!text.startsWith(eventPrefix)) {
      if (text.startsWith('{"type":"connection_ack"')) acked();
      return;
    }
    client.events += 1;
    const stamp = /"sentAt":([0-9.]+)/.exec(text);
    if (stamp) client.stamped.push({ sentAt: Number(stamp[1]), at });
  });
  ws.on('error', () => {});
  await once(ws, 'open');
  ws.send('{"type":"connection_init"}');
  await ack;
  ws.send(JSON.stringify({ type: legacy ? 'start' : 'subscribe', id: '1', payload: { query: QUERIES[index % QUERIES.length] } }));
  return client;
}

/** CPU seconds (user + system) a process has used. */
function cpuSeconds(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100; // utime, stime in clock ticks (USER_HZ = 100)
}

const quantile = (sorted: number[], q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;

async function bench(): Promise<void> {
  const children: ChildProcess[] = [];
  const guard = setTimeout(() => {
    process.stderr.write(`bench: over ${HARD_LIMIT_MS / 1000} s, giving up\n`);
    for (const c of children) c.kill('SIGKILL');
    process.exit(1);
  }, HARD_LIMIT_MS);
  guard.unref();
  const t0 = performance.now();
  const clientsWanted = Number(args.clients);
  const distinct = QUERIES.length;
  try {
    const execArgv = ['--import', 'tsx'];
    const upstream = fork(import.meta.filename, ['--role', 'upstream', '--size', String(args.size)], { execArgv });
    children.push(upstream);
    const { port: upstreamPort } = await ask<{ port: number }>(upstream, undefined);
    const { proxy, url, admin } = await startProxy(upstreamPort);
    children.push(proxy);
    const pid = proxy.pid!;

    // Direct latency first: one client per query straight at the upstream (the floor).
    const direct: Client[] = [];
    for (let i = 0; i < distinct; i++) {
      direct.push(await openClient(`ws://127.0.0.1:${upstreamPort}/graphql?token=${TOKEN}`, i * 2));
    }
    await until(async () => (await ask<{ started: number }>(upstream, { cmd: 'sockets' })).started === distinct, 10_000, 'direct subscriptions');
    const directLatency: number[] = [];
    for (let s = 0; s < Number(args.samples); s++) {
      const before = direct.reduce((n, c) => n + c.stamped.length, 0);
      await ask(upstream, { cmd: 'one' });
      await until(() => direct.reduce((n, c) => n + c.stamped.length, 0) === before + distinct, 5000, 'direct event');
    }
    for (const c of direct) for (const s of c.stamped) directLatency.push(s.at - s.sentAt);
    for (const c of direct) c.ws.terminate();
    await until(async () => (await ask<{ sockets: number }>(upstream, { cmd: 'sockets' })).sockets === 0, 10_000, 'direct sockets closed');

    const openAll = async () => {
      const opened: Client[] = [];
      for (let i = 0; i < clientsWanted; i += 100) {
        opened.push(...(await Promise.all(Array.from({ length: Math.min(100, clientsWanted - i) }, (_, j) => openClient(url, i + j)))));
      }
      await until(async () => (await gauge(admin, 'bitquery_proxy_ws_subscriptions')) === clientsWanted, 20_000, 'every subscription');
      return opened;
    };
    // A warm-up round (every client subscribes, then leaves): what the proxy grows once (code,
    // young generation, buffer pools) is not counted per subscription.
    for (const c of await openAll()) c.ws.terminate();
    await until(async () => (await ask<{ sockets: number }>(upstream, { cmd: 'sockets' })).sockets === 0, 20_000, 'the warm-up streams closed');
    // Memory before any client, then with every client subscribed.
    const baseKb = rssKb(pid);
    const openStart = performance.now();
    const clients = await openAll();
    await until(async () => (await ask<{ started: number }>(upstream, { cmd: 'sockets' })).started === distinct, 20_000, 'upstream subscriptions');
    const openMs = performance.now() - openStart;
    const upstreamSockets = (await ask<{ sockets: number }>(upstream, { cmd: 'sockets' })).sockets;
    const upstreamStreams = await gauge(admin, 'bitquery_proxy_ws_upstream_streams');
    await new Promise((r) => setTimeout(r, 1000));
    const heldKb = rssKb(pid);

    // Latency of one event through the proxy, to every subscriber.
    const sharedLatency: number[] = [];
    const lastLatency: number[] = [];
    for (let s = 0; s < Number(args.samples); s++) {
      const before = clients.reduce((n, c) => n + c.stamped.length, 0);
      await ask(upstream, { cmd: 'one' });
      await until(() => clients.reduce((n, c) => n + c.stamped.length, 0) === before + clientsWanted, 10_000, 'shared event');
      const latest = clients.map((c) => c.stamped.at(-1)!);
      const all = latest.map((x) => x.at - x.sentAt);
      sharedLatency.push(...all);
      lastLatency.push(Math.max(...all));
    }

    // Throughput: bursts of K events per stream, each waited for at every client.
    const burst = Number(args.burst);
    let delivered = 0;
    let upstreamEvents = 0;
    const tBurst = performance.now();
    const cpu0 = { proxy: cpuSeconds(pid), clients: cpuSeconds(process.pid), upstream: cpuSeconds(upstream.pid!) };
    while (performance.now() - tBurst < Number(args.duration) * 1000) {
      const before = clients.reduce((n, c) => n + c.events, 0);
      await ask(upstream, { cmd: 'burst', n: burst });
      await until(() => clients.reduce((n, c) => n + c.events, 0) === before + burst * clientsWanted, 30_000, 'a burst');
      delivered += burst * clientsWanted;
      upstreamEvents += burst * distinct;
    }
    const burstSeconds = (performance.now() - tBurst) / 1000;
    const cpuUsed = { proxy: cpuSeconds(pid) - cpu0.proxy, clients: cpuSeconds(process.pid) - cpu0.clients, upstream: cpuSeconds(upstream.pid!) - cpu0.upstream };
    const closedEarly = clients.filter((c) => c.ws.readyState !== WebSocket.OPEN).length;
    for (const c of clients) c.ws.terminate();

    const f = (n: number, digits = 0) => n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits });
    const ms = (n: number) => f(n, 2);
    const pct = (seconds: number) => `${f((seconds / burstSeconds) * 100)}%`;
    const cpuLine = `proxy ${pct(cpuUsed.proxy)}, clients ${pct(cpuUsed.clients)}, upstream ${pct(cpuUsed.upstream)}`;
    directLatency.sort((a, b) => a - b);
    sharedLatency.sort((a, b) => a - b);
    lastLatency.sort((a, b) => a - b);
    const perSubKb = (heldKb - baseKb) / clientsWanted;
    const lines = [
      '',
      `Share mode through the proxy (dist/cli.js, WS_MODE=share), loopback, ${availableParallelism()} cores, Node ${process.version}: ${f(clientsWanted)} client subscriptions (one socket each, half graphql-ws, half graphql-transport-ws) over ${distinct} distinct queries; ${args.size}-byte event data.`,
      '',
      `| check | value |`,
      `|---|---:|`,
      `| upstream sockets held | ${upstreamSockets} (expected ${distinct}; the proxy's gauge: ${upstreamStreams}) |`,
      `| clients subscribed in | ${f(openMs)} ms |`,
      `| events delivered to clients | ${f(delivered / burstSeconds)}/s (${f(upstreamEvents / burstSeconds)} upstream events/s, bursts of ${burst} a stream) |`,
      `| one event, direct (p50 / p99) | ${ms(quantile(directLatency, 0.5))} / ${ms(quantile(directLatency, 0.99))} ms |`,
      `| one event through the proxy, per subscriber (p50 / p99) | ${ms(quantile(sharedLatency, 0.5))} / ${ms(quantile(sharedLatency, 0.99))} ms |`,
      `| one event through the proxy, last of ${f(clientsWanted)} subscribers (p50) | ${ms(quantile(lastLatency, 0.5))} ms |`,
      `| added latency (p50 per subscriber − p50 direct) | ${ms(quantile(sharedLatency, 0.5) - quantile(directLatency, 0.5))} ms |`,
      `| proxy memory per client subscription (RSS delta / clients, its socket included; goal < 20 KiB) | ${f(perSubKb, 1)} KiB (${f(baseKb / 1024, 1)} → ${f(heldKb / 1024, 1)} MiB) |`,
      `| CPU during the bursts | ${cpuLine} |`,
      `| clients closed early | ${closedEarly} |`,
      '',
      `Whole run: ${f((performance.now() - t0) / 1000, 1)} s.`,
      '',
    ];
    process.stdout.write(lines.join('\n'));
    if (upstreamSockets !== distinct || upstreamStreams !== distinct || closedEarly > 0) process.exitCode = 1;
  } finally {
    for (const c of children) c.kill('SIGTERM');
    clearTimeout(guard);
  }
}

if (args.role === 'upstream') await upstreamRole();
else await bench();
