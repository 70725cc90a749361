import { createServer, type AddressInfo } from 'node:net';

/** A loopback port that was free a moment ago, for a process that cannot announce the one it picks. */
export function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as AddressInfo;
      server.close(() => resolvePort(port));
    });
  });
}
