// The benchmark's ceiling: the least a Node token-injecting proxy can do per request. node:http
// in, undici's dispatch() out, a fixed Authorization header, the body buffered, the answer written
// straight back. No framework, no logging, no key or origin checks, no retry, no error handling
// worth the name. Nobody should run this; it shows how fast any Node proxy can be on this machine,
// so the proxy's and the peer's figures can be read against it.
//
// Usage (normally forked by bench/http.ts):
//   node --import tsx bench/peers/bare-node.ts <upstream-origin> <token>
// Reports {"url": "http://127.0.0.1:<port>"} over the IPC channel (or stdout without one).
import { createServer } from 'node:http';
import { Pool, type Dispatcher } from 'undici';
import { announce } from './announce.js';

const upstream = process.argv[2];
const token = process.argv[3] ?? 'bench-token';
if (!upstream) {
  process.stderr.write('usage: bare-node.ts <upstream-origin> [token]\n');
  process.exit(2);
}

const pool = new Pool(upstream, { connections: 128 });
const authorization = `Bearer ${token}`;

const server = createServer({ keepAliveTimeout: 60_000, requestTimeout: 0 }, (req, res) => {
  const chunks: Buffer[] = [];
  req.on('data', (chunk: Buffer) => chunks.push(chunk));
  req.on('end', () => {
    const handler: Dispatcher.DispatchHandler = {
      // undici takes a handler for its new API only when it has this method.
      onRequestStart() {},
      onResponseStart(_controller, status, headers) {
        const { connection: _c, 'keep-alive': _k, 'transfer-encoding': _t, ...rest } = headers;
        res.writeHead(status, rest as Record<string, string | string[]>);
      },
      onResponseData(controller, chunk) {
        if (!res.write(chunk)) {
          controller.pause();
          res.once('drain', () => controller.resume());
        }
      },
      onResponseEnd() {
        res.end();
      },
      onResponseError() {
        if (res.headersSent) res.destroy();
        else res.writeHead(502).end();
      },
    };
    pool.dispatch(
      {
        path: req.url ?? '/',
        method: req.method as Dispatcher.HttpMethod,
        headers: { 'content-type': req.headers['content-type'] ?? 'application/json', authorization },
        body: Buffer.concat(chunks),
      },
      handler,
    );
  });
});

server.listen(0, '127.0.0.1', () => announce(server.address()));
