// LOG_FORMAT: human-readable lines (pino-pretty) for a person at a terminal, JSON for machines.
// pino-pretty runs in-process as a plain stream (no worker thread), after pino has serialized and
// redacted the line, so redaction holds in both formats.
import pino, { type DestinationStream } from 'pino';
import pinoPretty from 'pino-pretty';

export type LogFormat = 'pretty' | 'json';

/** LOG_FORMAT when set, else pretty when stdout is a terminal and JSON otherwise. */
export function logFormat(setting: LogFormat | undefined, isTTY: boolean): LogFormat {
  return setting ?? (isTTY ? 'pretty' : 'json');
}

/**
 * Where the logger writes: file descriptor 1 by default, synchronously in both formats, so the
 * last lines before process.exit() are not lost.
 */
export function logDestination(format: LogFormat, to: number | NodeJS.WritableStream = 1): DestinationStream {
  if (format === 'pretty') {
    return pinoPretty({
      destination: to,
      sync: true,
      translateTime: 'SYS:HH:MM:ss.l',
      ignore: 'pid,hostname,name,component',
      messageFormat: '{if component}{component}: {end}{msg}',
    });
  }
  return typeof to === 'number' ? pino.destination({ fd: to, sync: true }) : (to as DestinationStream);
}
