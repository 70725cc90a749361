// The points saver (src/savings) on the least a Node proxy can be: node:http in, PointsSaver in
// the middle, undici's dispatch() out into the saver's sink. What the saver itself costs and
// saves, before it is wired into the proxy; once wired, bench/cache.ts measures the proxy too.
//
// Usage (normally forked by bench/cache.ts):
//   node --import tsx bench/peers/saver-node.ts <upstream-origin> <token> <cache-ttl-ms> <coalesce: true|false>
// Reports {"url": "http://127.0.0.1:<port>"} over the IPC channel (or stdout without one).
import { createServer, type IncomingMessage } from 'node:http';
import { Pool, type Dispatcher } from 'undici';
import type { Exchange, ResponseHeaders } from '../../src/savings/flight.js';
import { PointsSaver } from '../../src/savings/saver.js';
import { MemoryStore } from '../../src/savings/store.js';
import { announce } from './announce.js';

const [upstream, token = 'bench-token', ttl = '60000', coalesce = 'true'] = process.argv.slice(2);
if (!upstream) {
  process.stderr.write('usage: saver-node.ts <upstream-origin> <token> <cache-ttl-ms> <coalesce>\n');
  process.exit(2);
}
const pool = new Pool(upstream, { connections: 128 });
const authorization = `Bearer ${token}`;
const cacheTtlMs = Number(ttl);
const saver = new PointsSaver({
  coalesce: coalesce === 'true',
  cacheTtlMs,
  store: cacheTtlMs > 0 ? new MemoryStore({ maxBytes: 64 << 20, maxEntryBytes: 1 << 20 }) : undefined,
  maxHeldBytes: 1 << 20,
  maxHeldTotalBytes: 64 << 20,
  maxBacklogBytes: 4 << 20,
  onError: (err) => process.stderr.write(`saver-node: ${String(err)}\n`),
});

function exchange(req: IncomingMessage, body: Buffer): Exchange {
  return (sink) =>
    new Promise((resolve) => {
      pool.dispatch(
        { path: req.url ?? '/', method: req.method as Dispatcher.HttpMethod, headers: { 'content-type': 'application/json', authorization }, body },
        {
          onRequestStart(controller) {
            sink.onGone(() => controller.abort(new Error('gone')));
          },
          onResponseStart(_controller, status, headers) {
            const { connection: _c, 'keep-alive': _k, 'transfer-encoding': _t, ...rest } = headers;
            sink.head(status, rest as ResponseHeaders);
          },
          onResponseData(controller, chunk) {
            if (sink.write(chunk)) return;
            controller.pause();
            sink.onDrain(() => controller.resume());
          },
          onResponseEnd() {
            sink.end();
            resolve();
          },
          onResponseError() {
            if (sink.started) sink.destroy();
            else if (!sink.gone) {
              sink.head(502, { 'content-length': '0' });
              sink.end();
            }
            resolve();
          },
        },
      );
    });
}

const server = createServer({ keepAliveTimeout: 60_000, requestTimeout: 0 }, (req, res) => {
  const chunks: Buffer[] = [];
  req.on('data', (chunk: Buffer) => chunks.push(chunk));
  req.on('end', () => {
    const body = Buffer.concat(chunks);
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    const facts = { method: req.method!, path: q === -1 ? url : url.slice(0, q), search: q === -1 ? '' : url.slice(q + 1), body, headers: req.headers, credentials: 'default' };
    void saver.handle(facts, exchange(req, body), res);
  });
});

server.listen(0, '127.0.0.1', () => announce(server.address()));
