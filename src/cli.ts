#!/usr/bin/env node
// The `bitquery-proxy` command: read the configuration, start the daemon, stop on signals.
import { readFileSync } from 'node:fs';
import { ConfigError, loadConfig, SETTINGS } from './config.js';
import { startDaemon } from './daemon.js';
import { createLogger } from './log.js';

/** Exit status for a configuration the daemon cannot start with. */
const EXIT_CONFIG = 2;

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

function help(): string {
  const width = Math.max(...SETTINGS.map((s) => s.name.length));
  const rows = SETTINGS.map((s) => {
    const def = s.default === undefined ? '' : ` (default: ${s.default})`;
    return `  ${s.name.padEnd(width)}  ${s.help}${def}`;
  });
  return [
    'Usage: bitquery-proxy [--help] [--version]',
    '',
    'Proxies Bitquery GraphQL with an OAuth token it obtains and renews itself.',
    'Settings come from the environment, then from a .env file in the working directory:',
    '',
    ...rows,
    '',
  ].join('\n');
}

async function main(argv: string[]): Promise<void> {
  if (argv.includes('--help') || argv.includes('-h')) {
    process.stdout.write(help());
    return;
  }
  if (argv.includes('--version')) {
    process.stdout.write(`${version()}\n`);
    return;
  }
  const unknown = argv.find((a) => a.startsWith('-') || a);
  if (unknown !== undefined) {
    process.stderr.write(`bitquery-proxy: unknown argument "${unknown}" (see --help)\n`);
    process.exit(EXIT_CONFIG);
  }

  let config;
  try {
    config = loadConfig(process.env);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`bitquery-proxy: ${err.message}\n`);
      process.exit(EXIT_CONFIG);
    }
    throw err;
  }

  const logger = createLogger(config.logLevel);
  const daemon = await startDaemon(config, logger);

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

main(process.argv.slice(2)).catch((err: Error) => {
  process.stderr.write(`bitquery-proxy: ${err.message}\n`);
  process.exit(1);
});
