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
 * JSON lines to a file descriptor, written together once per turn of the event loop: under load,
 * the access lines of every request finished in one turn go out in one system call instead of one
 * each. Each batch is written synchronously, and what is pending is written when the process
 * exits, so no line is lost to process.exit(). Memory: at most one turn's lines.
 */
class BatchedLines implements DestinationStream {
  private pending = '';
  private scheduled = false;
  private readonly out: ReturnType<typeof pino.destination>;

  constructor(fd: number) {
    this.out = pino.destination({ fd, sync: true });
    process.once('exit', this.flush);
  }

  write(line: string): void {
    this.pending += line;
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(this.flush);
  }

  readonly flush = (): void => {
    this.scheduled = false;
    if (this.pending === '') return;
    const lines = this.pending;
    this.pending = '';
    this.out.write(lines);
  };
}

/**
 * Where the logger writes: file descriptor 1 by default. JSON lines go out in batches (above);
 * pretty lines, for a person at a terminal, one by one. Both synchronously, so the last lines
 * before process.exit() are not lost.
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
  return typeof to === 'number' ? new BatchedLines(to) : (to as DestinationStream);
}
