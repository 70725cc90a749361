// The benchmark's stand-in for Bitquery: a plain node:http server on loopback that answers
// POST /graphql with one fixed JSON body (keep-alive). It runs in its own process (forked by
// bench/http.ts) so it does not share an event loop with the load generator.
//
// A request without `authorization: Bearer <token>` gets 401, so a proxy that fails to inject
// the token shows up as non-2xx responses in the benchmark instead of as a fast wrong answer.
//
// Usage (normally forked by bench/http.ts or bench/cache.ts, which pass these through argv):
//   node --import tsx bench/peers/upstream.ts <token> [delay-ms]
// With a delay, every answer waits that long (a slow Bitquery query). `GET /count` answers how
// many POSTs were answered so far, so bench/cache.ts can count the requests a proxy saved.
// Reports {"url": "http://127.0.0.1:<port>"} over the IPC channel (or stdout without one).
import { createServer } from 'node:http';
import { announce } from './announce.js';

const token = process.argv[2] ?? 'bench-token';
const expected = `Bearer ${token}`;
const delayMs = Number(process.argv[3] ?? 0);
let answered = 0;

/** About 200 bytes: the size of a small real GraphQL answer. */
const RESPONSE_BODY = Buffer.from(
  JSON.stringify({
    data: {
      EVM: {
        Blocks: [
          {
            Block: {
              Number: '21000000',
              Time: '2024-10-18T12:00:00Z',
              Hash: '0x8f5bab218b6bb34476f51ca588e9f4553a3a7ce5e13a66c660a5283e97e9a85a',
              GasUsed: '12345678',
            },
          },
        ],
      },
    },
  }),
);
const UNAUTHORIZED = Buffer.from('Unauthorized');

const server = createServer({ keepAliveTimeout: 60_000, requestTimeout: 0 }, (req, res) => {
  // Read the whole body before answering, as a real server would.
  req.on('data', () => {});
  req.on('end', () => {
    if (req.method === 'GET' && req.url === '/count') {
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ posts: answered }));
      return;
    }
    if (req.method !== 'POST' || req.url?.split('?')[0] !== '/graphql') {
      res.writeHead(404, { 'content-type': 'text/plain', 'content-length': 9 }).end('not found');
      return;
    }
    if (req.headers.authorization !== expected) {
      res.writeHead(401, { 'content-type': 'text/plain', 'content-length': UNAUTHORIZED.length }).end(UNAUTHORIZED);
      return;
    }
    answered += 1;
    const answer = () => res.writeHead(200, { 'content-type': 'application/json', 'content-length': RESPONSE_BODY.length }).end(RESPONSE_BODY);
    if (delayMs > 0) setTimeout(answer, delayMs);
    else answer();
  });
});
server.keepAliveTimeout = 60_000;
server.headersTimeout = 65_000;

server.listen(0, '127.0.0.1', () => announce(server.address(), { bodyBytes: RESPONSE_BODY.length }));
