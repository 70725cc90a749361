// Share-mode benchmark: N client subscriptions over D distinct queries through the sharing engine
// (src/subscriptions), checking that exactly D upstream sockets are held, and measuring events
// delivered a second, the latency one event gains through the engine, and memory per client
// subscription.
//
//   node --import tsx bench/ws-share.ts
//   node --import tsx bench/ws-share.ts --help
//
// Processes: this one (the clients, half legacy graphql-ws, half graphql-transport-ws, by hand), the
// upstream (this file with --role upstream: a legacy graphql-ws server that publishes on command),
// and the engine (--role engine: createSharedSubscriptions behind a node:http upgrade listener, with
// --expose-gc so its memory is read after a full collection). Commands and answers go over IPC.
// Loopback only; the whole run is cut at 120 s.
import { fork, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { availableParallelism } from 'node:os';
import { parseArgs } from 'node:util';
import pino from 'pino';
import { WebSocket, WebSocketServer } from 'ws';

const HARD_LIMIT_MS = 120_000;
const TOKEN = 'bench-token';

const HELP = `Usage: node --import tsx bench/ws-share.ts [options]

  --clients N     client subscriptions, one socket each (default 1000)
  --distinct D    distinct queries they spread over (default 10)
  --size BYTES    size of each event's data (default 512)
  --burst K       events per upstream stream in each burst (default 100)
  --duration S    seconds of bursts measured (default 5)
  --samples N     single events timed for latency (default 50)
  -h, --help      this text
`;

const { values: args } = parseArgs({
  options: {
    role: { type: 'string', default: 'bench' },
    upstream: { type: 'string', default: '' },
    clients: { type: 'string', default: '1000' },
    distinct: { type: 'string', default: '10' },
    size: { type: 'string', default: '512' },
    burst: { type: 'string', default: '100' },
    duration: { type: 'string', default: '5' },
    samples: { type: 'string', default: '50' },
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

type Command = { cmd: 'burst'; n: number } | { cmd: 'one' } | { cmd: 'sockets' } | { cmd: 'memory' } | { cmd: 'stats' };

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
// The engine, as the WebSocket proxy will run it: every handshake handed over with one principal.

async function engineRole(): Promise<void> {
  const { createSharedSubscriptions } = await import('../src/subscriptions/engine.js');
  const origin = new URL(args.upstream);
  const tokens = { getToken: async () => TOKEN, tokenRejected: async () => undefined };
  const engine = createSharedSubscriptions({
    settings: {
      idleMs: 60_000,
      reconnectAttempts: 5,
      lingerMs: 2000,
      connectTimeoutMs: 10_000,
      tokenWaitMs: 10_000,
      maxMessageBytes: 16 * 1024 * 1024,
      backoffMinMs: 500,
      backoffMaxMs: 10_000,
      initTimeoutMs: 3000,
      maxBufferedBytes: 4 * 1024 * 1024,
      maxSubscriptions: 100,
      keepAliveMs: 10_000,
      pingIntervalMs: 30_000,
      maxClientMessageBytes: 1024 * 1024,
    },
    maxUpstreamStreams: () => 0,
    logger: pino({ level: 'warn' }),
  });
  const principal = { credentials: 'default', tokens, origin };
  const server = createServer((_req, res) => res.writeHead(404).end());
  server.on('upgrade', (req, socket, head) => {
    const protocols = (req.headers['sec-websocket-protocol'] ?? '').split(',').map((p) => p.trim());
    if (!engine.takeOver(req, socket, head, principal, protocols)) socket.destroy();
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  process.on('message', (c: Command) => {
    if (c.cmd === 'stats') return answer(engine.stats());
    if (c.cmd === 'memory') {
      (globalThis as { gc?: () => void }).gc?.();
      const m = process.memoryUsage();
      return answer({ rss: m.rss, heapUsed: m.heapUsed, external: m.external, arrayBuffers: m.arrayBuffers });
    }
  });
  answer({ port: (server.address() as AddressInfo).port });
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
    const engine = fork(import.meta.filename, ['--role', 'engine', '--upstream', `http://127.0.0.1:${upstreamPort}`], { execArgv: [...execArgv, '--expose-gc'] });
    children.push(engine);
    const { port: enginePort } = await ask<{ port: number }>(engine, undefined);
    const url = `ws://127.0.0.1:${enginePort}/graphql`;

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

    // Memory before any client, then with every client subscribed.
    const base = await ask<{ rss: number; heapUsed: number; external: number }>(engine, { cmd: 'memory' });
    const clients: Client[] = [];
    const openStart = performance.now();
    for (let i = 0; i < clientsWanted; i += 100) {
      clients.push(...(await Promise.all(Array.from({ length: Math.min(100, clientsWanted - i) }, (_, j) => openClient(url, i + j)))));
    }
    await until(async () => {
      const stats = await ask<{ credentials: { default?: { subscriptions: number } } }>(engine, { cmd: 'stats' });
      return stats.credentials.default?.subscriptions === clientsWanted;
    }, 20_000, 'every subscription');
    await until(async () => (await ask<{ started: number }>(upstream, { cmd: 'sockets' })).started === distinct, 20_000, 'upstream subscriptions');
    const openMs = performance.now() - openStart;
    const upstreamSockets = (await ask<{ sockets: number }>(upstream, { cmd: 'sockets' })).sockets;
    const held = await ask<{ rss: number; heapUsed: number; external: number }>(engine, { cmd: 'memory' });

    // Latency of one event through the engine, to every subscriber.
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
    const cpu0 = { engine: cpuSeconds(engine.pid!), clients: cpuSeconds(process.pid), upstream: cpuSeconds(upstream.pid!) };
    while (performance.now() - tBurst < Number(args.duration) * 1000) {
      const before = clients.reduce((n, c) => n + c.events, 0);
      await ask(upstream, { cmd: 'burst', n: burst });
      await until(() => clients.reduce((n, c) => n + c.events, 0) === before + burst * clientsWanted, 30_000, 'a burst');
      delivered += burst * clientsWanted;
      upstreamEvents += burst * distinct;
    }
    const burstSeconds = (performance.now() - tBurst) / 1000;
    const cpuUsed = { engine: cpuSeconds(engine.pid!) - cpu0.engine, clients: cpuSeconds(process.pid) - cpu0.clients, upstream: cpuSeconds(upstream.pid!) - cpu0.upstream };
    const closedEarly = clients.filter((c) => c.ws.readyState !== WebSocket.OPEN).length;
    for (const c of clients) c.ws.terminate();

    const f = (n: number, digits = 0) => n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits });
    const ms = (n: number) => f(n, 2);
    const pct = (seconds: number) => `${f((seconds / burstSeconds) * 100)}%`;
    const cpuLine = `engine ${pct(cpuUsed.engine)}, clients ${pct(cpuUsed.clients)}, upstream ${pct(cpuUsed.upstream)}`;
    directLatency.sort((a, b) => a - b);
    sharedLatency.sort((a, b) => a - b);
    lastLatency.sort((a, b) => a - b);
    const perSub = (field: 'rss' | 'heapUsed' | 'external') => (held[field] - base[field]) / clientsWanted / 1024;
    const lines = [
      '',
      `Share mode, loopback, ${availableParallelism()} cores, Node ${process.version}: ${f(clientsWanted)} client subscriptions (one socket each, half graphql-ws, half graphql-transport-ws) over ${distinct} distinct queries; ${args.size}-byte event data.`,
      '',
      `| check | value |`,
      `|---|---:|`,
      `| upstream sockets held | ${upstreamSockets} (expected ${distinct}) |`,
      `| clients subscribed in | ${f(openMs)} ms |`,
      `| events delivered to clients | ${f(delivered / burstSeconds)}/s (${f(upstreamEvents / burstSeconds)} upstream events/s, bursts of ${burst} a stream) |`,
      `| one event, direct (p50 / p99) | ${ms(quantile(directLatency, 0.5))} / ${ms(quantile(directLatency, 0.99))} ms |`,
      `| one event through the engine, per subscriber (p50 / p99) | ${ms(quantile(sharedLatency, 0.5))} / ${ms(quantile(sharedLatency, 0.99))} ms |`,
      `| one event through the engine, last of ${f(clientsWanted)} subscribers (p50) | ${ms(quantile(lastLatency, 0.5))} ms |`,
      `| added latency (p50 per subscriber − p50 direct) | ${ms(quantile(sharedLatency, 0.5) - quantile(directLatency, 0.5))} ms |`,
      `| engine memory per client subscription, after GC: RSS / heap / external | ${f(perSub('rss'), 1)} / ${f(perSub('heapUsed'), 1)} / ${f(perSub('external'), 1)} KiB |`,
      `| CPU during the bursts | ${cpuLine} |`,
      `| clients closed early | ${closedEarly} |`,
      '',
      `Whole run: ${f((performance.now() - t0) / 1000, 1)} s.`,
      '',
    ];
    process.stdout.write(lines.join('\n'));
    if (upstreamSockets !== distinct || closedEarly > 0) process.exitCode = 1;
  } finally {
    for (const c of children) c.kill('SIGTERM');
    clearTimeout(guard);
  }
}

if (args.role === 'upstream') await upstreamRole();
else if (args.role === 'engine') await engineRole();
else await bench();
