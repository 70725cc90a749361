// The least a token-injecting forward can do, shared by the two floor peers (bare-node.ts and
// fastify-floor.ts): a fixed Authorization header, the buffered body, and undici's dispatch()
// callbacks written straight into the client response. No error handling worth the name.
import { basename } from 'node:path';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { Pool, type Dispatcher } from 'undici';

export type Forward = (req: IncomingMessage, res: ServerResponse, body: Buffer) => void;

/** The forward to the upstream named in argv (`<upstream-origin> [token]`), as the floors take it. */
export function forwarderFromArgv(script: string): Forward {
  const upstream = process.argv[2];
  const token = process.argv[3] ?? 'bench-token';
  if (!upstream) {
    process.stderr.write(`usage: ${basename(script)} <upstream-origin> [token]\n`);
    process.exit(2);
  }
  const pool = new Pool(upstream, { connections: 128 });
  const authorization = `Bearer ${token}`;
  return (req, res, body) => forward(pool, authorization, req, res, body);
}

function forward(pool: Dispatcher, authorization: string, req: IncomingMessage, res: ServerResponse, body: Buffer): void {
  pool.dispatch(
    {
      path: req.url ?? '/',
      method: req.method as Dispatcher.HttpMethod,
      headers: { 'content-type': req.headers['content-type'] ?? 'application/json', authorization },
      body,
    },
    {
      // A client that leaves mid-answer (every load run ends so) must free its upstream
      // connection: a paused answer whose 'drain' never comes would hold it for good, and once
      // every connection of the pool is held, every request waits in its queue without end.
      onRequestStart(controller) {
        res.once('close', () => {
          if (!res.writableFinished) controller.abort(new Error('the client has gone'));
        });
      },
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
    },
  );
}
