#!/usr/bin/env node
// The `bitquery-proxy` command: arguments, configuration, then the daemon or a one-shot command.
// Precedence of settings: flags > environment > env file (.env) > defaults.
// First: refuse an unsupported Node.js before any other module is loaded; then tune the GC.
import './node-version.js';
import './gc-tuning.js';
import { readFileSync } from 'node:fs';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { check, CommandError, fetchToken } from './commands.js';
import { ConfigError, loadConfig, SETTINGS, type Config } from './config/index.js';
import { startDaemon } from './daemon.js';
import { createLogger } from './log.js';
import { logDestination, logFormat } from './observability/log-format.js';

/** Exit status for a configuration (or command line) the daemon cannot start with. */
const EXIT_CONFIG = 2;
/** Exit status for a `token` or `check` step that failed. */
const EXIT_FAILED = 1;

const COMMANDS = ['start', 'token', 'check'] as const;
type Command = (typeof COMMANDS)[number];

/** `PORT` → `--port`, `BITQUERY_UPSTREAM` → `--bitquery-upstream`. */
const flagOf = (name: string) => name.toLowerCase().replace(/_/g, '-');

/** Secrets on a command line show up in `ps` and shell history: environment or *_FILE only. */
const FLAG_SETTINGS = SETTINGS.filter((s) => !s.secret);

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

function help(): string {
  const rows = SETTINGS.map((s) => {
    const flag = s.secret ? '(environment only)' : `--${flagOf(s.name)}`;
    const def = s.default === undefined ? '' : ` [default: ${s.default}]`;
    return `  ${s.name.padEnd(28)} ${flag.padEnd(30)} ${s.help}${def}`;
  });
  return [
    'Usage: bitquery-proxy [start|token|check] [--setting value ...] [--dotenv path]',
    '',
    '  start   run the proxy daemon (the default)',
    '  token   fetch a token with the configured credentials and print only the token',
    '  check   validate the configuration, fetch a token, send one tiny query upstream, report',
    '',
    'Settings, from highest precedence: flags, then the environment, then the env file',
    '(--dotenv, default .env in the working directory), then the defaults.',
    'Secrets are taken from the environment or from files, never from flags.',
    '',
    `  ${'VARIABLE'.padEnd(28)} ${'FLAG'.padEnd(30)} MEANING`,
    ...rows,
    '',
    '  --dotenv <path>     the env file to read (not --env-file: Node.js reads that one itself, and exits 9 without a word from bitquery-proxy when it is missing)',
    '  -h, --help          this text',
    '  -v, --version       the version',
    '',
    'Exit status: 0 ok, 1 a token/check step failed, 2 bad configuration or arguments.',
    '',
  ].join('\n');
}

interface Invocation {
  command: Command;
  env: Record<string, string | undefined>;
  dotenv?: string;
  help: boolean;
  version: boolean;
}

function parse(argv: string[]): Invocation {
  const options: ParseArgsConfig['options'] = {
    help: { type: 'boolean', short: 'h' },
    version: { type: 'boolean', short: 'v' },
    dotenv: { type: 'string' },
  };
  for (const s of FLAG_SETTINGS) options[flagOf(s.name)] = { type: 'string' };
  if (argv.some((a) => a === '--env-file' || a.startsWith('--env-file='))) {
    throw new ConfigError('--env-file is an option of Node.js, which reads the file before bitquery-proxy starts (and exits 9 when it is missing): name the env file with --dotenv <path>');
  }
  let parsed;
  try {
    parsed = parseArgs({ args: argv, options, allowPositionals: true, strict: true });
  } catch (err) {
    const secret = SETTINGS.find((s) => s.secret && argv.some((a) => a.startsWith(`--${flagOf(s.name)}`)));
    if (secret) throw new ConfigError(`${secret.name} cannot be a flag (it would show in ps and shell history): set it in the environment, or use the *_FILE setting`);
    throw new ConfigError(`${(err as Error).message} (see --help)`);
  }
  const { values, positionals } = parsed;
  if (positionals.length > 1 || (positionals[0] && !COMMANDS.includes(positionals[0] as Command))) {
    throw new ConfigError(`unknown command "${positionals.join(' ')}": use start, token or check (see --help)`);
  }
  const flags: Record<string, string> = {};
  for (const s of FLAG_SETTINGS) {
    const value = values[flagOf(s.name)];
    if (typeof value === 'string') flags[s.name] = value;
  }
  return {
    command: (positionals[0] as Command | undefined) ?? 'start',
    env: { ...process.env, ...flags },
    dotenv: values.dotenv as string | undefined,
    help: Boolean(values.help),
    version: Boolean(values.version),
  };
}

async function startCommand(config: Config): Promise<void> {
  const logger = createLogger(config.logLevel, logDestination(logFormat(config.logFormat, process.stdout.isTTY)));
  for (const warning of config.warnings) logger.warn(warning);
  let daemon: Awaited<ReturnType<typeof startDaemon>>;
  try {
    daemon = await startDaemon(config, logger);
  } catch (err) {
    const failure = err as NodeJS.ErrnoException & { port?: number; address?: string };
    if (failure.code !== 'EADDRINUSE') throw err;
    const setting = failure.port === config.port ? 'PORT=<port> or --port <port>' : 'ADMIN_PORT=<port>';
    process.stderr.write(`bitquery-proxy: port ${failure.port} on ${failure.address} is in use: pick another with ${setting} (0 picks a free one)\n`);
    process.exit(EXIT_CONFIG);
  }
  let signals = 0;
  const stop = (signal: NodeJS.Signals) => {
    signals += 1;
    if (signals > 1) {
      logger.warn({ signal }, 'second signal: exiting without waiting');
      process.exit(1);
    }
    logger.info({ signal }, 'signal received');
    daemon.shutdown().then(
      () => process.exit(0),
      (err: Error) => {
        logger.error({ err }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

async function main(argv: string[]): Promise<void> {
  let invocation: Invocation;
  let config: Config;
  try {
    invocation = parse(argv);
    if (invocation.help) return void process.stdout.write(help());
    if (invocation.version) return void process.stdout.write(`${version()}\n`);
    config = loadConfig(invocation.env, { dotenvPath: invocation.dotenv, requireDotenv: invocation.dotenv !== undefined });
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    process.stderr.write(`bitquery-proxy: ${err.message}\n`);
    process.exit(EXIT_CONFIG);
  }

  if (invocation.command !== 'start') for (const warning of config.warnings) process.stderr.write(`bitquery-proxy: warning: ${warning}\n`);
  try {
    switch (invocation.command) {
      case 'start':
        return await startCommand(config);
      case 'token':
        process.stdout.write(`${(await fetchToken(config)).value}\n`);
        return;
      case 'check':
        await check(config, (line) => process.stdout.write(`${line}\n`));
        process.stdout.write('all checks passed\n');
        return;
    }
  } catch (err) {
    if (!(err instanceof CommandError)) throw err;
    process.stderr.write(`bitquery-proxy ${invocation.command}: ${err.message}\n`);
    process.exit(EXIT_FAILED);
  }
}

main(process.argv.slice(2)).catch((err: Error) => {
  process.stderr.write(`bitquery-proxy: ${err.message}\n`);
  process.exit(1);
});
