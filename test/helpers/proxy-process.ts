// Starts the proxy the way users do (`node dist/cli.js`, settings in the environment) and
// captures everything it prints, so tests can wait on its log lines and grep them for secrets.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { once } from 'node:events';

export const CLI = resolve(import.meta.dirname, '../../dist/cli.js');

export interface LogLine {
  level: number;
  msg: string;
  [key: string]: unknown;
}

export interface ProxyProcess {
  url: string;
  child: ChildProcess;
  /** Everything printed so far, stdout and stderr, raw. */
  output(): string;
  /** Parsed JSON log lines so far. */
  logs(): LogLine[];
  waitForLog(match: (line: LogLine) => boolean, timeoutMs?: number): Promise<LogLine>;
  /** Resolves with the exit code/signal. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  stop(): Promise<void>;
}

/** Polls `check` until it returns a truthy value or the deadline passes. */
export async function waitFor<T>(check: () => T | Promise<T>, timeoutMs = 5000, what = 'condition'): Promise<Exclude<T, false | null | undefined | 0 | ''>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value as Exclude<T, false | null | undefined | 0 | ''>;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** The environment a test proxy gets: nothing from the test runner's own but PATH and coverage hooks. */
export function baseEnv(): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (v !== undefined && (k === 'PATH' || k.startsWith('NODE_') || k.startsWith('TAP') || k.startsWith('_TAPJS'))) env[k] = v;
  }
  return env;
}

export interface SpawnOptions {
  /** What node runs, before `args`: the built CLI by default. */
  entry?: string[];
  args?: string[];
  /** Only PATH from this process (no NODE_OPTIONS or coverage hooks that could lend it modules). */
  bareEnv?: boolean;
  /** Working directory; a fresh empty one by default so no stray `.env` is read. */
  cwd?: string;
  /** Do not wait for the "listening" line (for start-up failures). */
  noWait?: boolean;
}

export async function spawnProxy(env: Record<string, string>, options: SpawnOptions = {}): Promise<ProxyProcess> {
  const cwd = options.cwd ?? mkdtempSync(join(tmpdir(), 'bqp-'));
  const inherited = options.bareEnv ? { PATH: process.env.PATH ?? '/usr/bin:/bin' } : baseEnv();
  const child = spawn(process.execPath, [...(options.entry ?? [CLI]), ...(options.args ?? [])], {
    cwd,
    env: { ...inherited, HOST: '127.0.0.1', PORT: '0', LOG_LEVEL: 'debug', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  const lines: LogLine[] = [];
  let pending = '';
  const listeners = new Set<() => void>();
  child.stdout!.setEncoding('utf8');
  child.stderr!.setEncoding('utf8');
  const onData = (chunk: string) => {
    out += chunk;
    pending += chunk;
    let nl: number;
    while ((nl = pending.indexOf('\n')) !== -1) {
      const line = pending.slice(0, nl);
      pending = pending.slice(nl + 1);
      try {
        lines.push(JSON.parse(line) as LogLine);
      } catch {
        // not a log line (an error message on stderr): kept in output()
      }
    }
    for (const l of listeners) l();
  };
  child.stdout!.on('data', onData);
  child.stderr!.on('data', onData);
  const exited = once(child, 'exit').then(([code, signal]) => ({ code: code as number | null, signal: signal as NodeJS.Signals | null }));

  const waitForLog = (match: (line: LogLine) => boolean, timeoutMs = 5000) =>
    new Promise<LogLine>((resolvePromise, reject) => {
      const check = () => {
        const found = lines.find(match);
        if (found) {
          done();
          resolvePromise(found);
        }
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`no matching log line within ${timeoutMs} ms; output:\n${out}`));
      }, timeoutMs);
      const onExit = () => {
        check();
        done();
        reject(new Error(`proxy exited; output:\n${out}`));
      };
      const done = () => {
        clearTimeout(timer);
        listeners.delete(check);
        child.off('exit', onExit);
      };
      listeners.add(check);
      child.once('exit', onExit);
      check();
    });

  let url = '';
  if (!options.noWait) {
    // A proxy that did not come up in time is no one's to stop later: it goes now, not left running.
    const line = await waitForLog((l) => typeof l.url === 'string' && l.msg.startsWith('listening'), 10000).catch((err: Error) => {
      child.kill('SIGKILL');
      throw err;
    });
    url = line.url as string;
  }
  return {
    url,
    child,
    output: () => out,
    logs: () => lines,
    waitForLog,
    exited,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      await exited;
    },
  };
}
