// What every process forked by bench/http.ts does once listening: report its URL over the IPC
// channel (or on stdout when started by hand), and end with the benchmark, even if the benchmark
// was killed without cleaning up.
import type { AddressInfo } from 'node:net';

export function announce(address: AddressInfo | string | null, extra: Record<string, unknown> = {}): void {
  const port = typeof address === 'object' && address ? address.port : 0;
  const message = { url: `http://127.0.0.1:${port}`, ...extra };
  if (process.send) process.send(message);
  else process.stdout.write(`${JSON.stringify(message)}\n`);
}

process.on('disconnect', () => process.exit(0));
process.on('SIGTERM', () => process.exit(0));
process.on('SIGINT', () => process.exit(0));
