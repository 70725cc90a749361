// A real redis-server for tests: on a free loopback port, no persistence, stopped and restarted
// on the same port for outage tests, paused (SIGSTOP) to play a Redis that accepts and never
// answers. Tests skip with `skip` when redis-server is not installed.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { connect } from 'node:net';
import pino, { type Logger } from 'pino';
import { connectRedis, type RedisLink } from '../../src/shared-state/connection.js';
import { redisConfigFrom, type RedisConfig, type RedisRaw } from '../../src/shared-state/settings.js';
import { closedPort } from './ports.js';
import { waitFor } from './proxy-process.js';

const found = spawnSync('redis-server', ['--version'], { encoding: 'utf8' });

/** A reason to skip, for tap's `skip` option, when redis-server is not on PATH; else false. */
export const skip: string | false =
  found.status === 0 ? false : 'redis-server is not on PATH: install it (apt-get install -y redis-server) to run the Redis tests';

export interface RedisServer {
  port: number;
  /** redis://127.0.0.1:<port> (no password in it). */
  url: string;
  /** Starts it (again) on the same port and waits until it answers. Data does not survive a stop. */
  start(): Promise<void>;
  /** Kills it and waits for the exit. */
  stop(): Promise<void>;
  /** SIGSTOP: connections stay open, nothing is answered. */
  pause(): void;
  resume(): void;
}

/** Sends one inline command and resolves with the first reply line (`+PONG`, `-NOAUTH …`). */
function ask(port: number, command: string): Promise<string> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    let text = '';
    const done = (line: string) => {
      socket.destroy();
      resolve(line);
    };
    socket.setTimeout(1000, () => done(''));
    socket.on('error', () => done(''));
    socket.on('connect', () => socket.write(`${command}\r\n`));
    socket.on('data', (chunk) => {
      text += chunk.toString('latin1');
      const nl = text.indexOf('\r\n');
      if (nl !== -1) done(text.slice(0, nl));
    });
  });
}

/** Starts redis-server with `extra` arguments (e.g. ['--requirepass', 'pw']); stopped at the end of `t`. */
export async function startRedis(t: { teardown(fn: () => unknown): void }, extra: string[] = []): Promise<RedisServer> {
  const port = await closedPort();
  let child: ChildProcess | undefined;
  let output = '';
  const server: RedisServer = {
    port,
    url: `redis://127.0.0.1:${port}`,
    async start() {
      child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', ...extra], {
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      child.stdout!.on('data', (chunk: Buffer) => (output += chunk.toString()));
      child.stderr!.on('data', (chunk: Buffer) => (output += chunk.toString()));
      const started = child;
      await waitFor(
        async () => {
          if (started.exitCode !== null) throw new Error(`redis-server exited at start:\n${output}`);
          return /^(\+PONG|-NOAUTH)/.test(await ask(port, 'PING'));
        },
        10_000,
        `redis-server on port ${port}`,
      );
    },
    async stop() {
      const running = child;
      child = undefined;
      if (!running || running.exitCode !== null || running.signalCode !== null) return;
      running.kill('SIGCONT');
      running.kill('SIGKILL');
      await once(running, 'exit');
    },
    pause: () => child?.kill('SIGSTOP'),
    resume: () => child?.kill('SIGCONT'),
  };
  t.teardown(() => server.stop());
  await server.start();
  return server;
}

/**
 * The configuration the proxy would build from these REDIS_* values. The deadline defaults to 5 s
 * here, not 250 ms: on a loaded test machine a call can take longer, which would mark Redis down in
 * tests about something else. Tests of the deadline set REDIS_TIMEOUT_MS themselves.
 */
export function redisConfig(url: string, raw: Partial<RedisRaw> = {}): RedisConfig {
  return redisConfigFrom({ REDIS_URL: url, REDIS_PREFIX: 'bitquery-proxy:', REDIS_TIMEOUT_MS: 5000, REDIS_FAILURE: 'open', REDIS_STREAM_LEASE_MS: 30_000, ...raw })!;
}

/** A logger whose lines are kept, parsed, and as raw text (to grep for secrets). */
export function captureLogger(): { logger: Logger; lines: { level: number; msg: string; [k: string]: unknown }[]; text(): string } {
  let raw = '';
  const lines: { level: number; msg: string }[] = [];
  const logger = pino({ level: 'debug' }, {
    write(line: string) {
      raw += line;
      lines.push(JSON.parse(line) as { level: number; msg: string });
    },
  });
  return { logger, lines, text: () => raw };
}

/** A connection closed at the end of `t`. */
export function linkFor(t: { teardown(fn: () => unknown): void }, config: RedisConfig, logger: Logger = pino({ level: 'silent' })): RedisLink {
  const link = connectRedis(config, logger);
  t.teardown(() => link.close());
  return link;
}
