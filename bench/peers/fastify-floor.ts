// The floor of a Fastify-based proxy: the same forward as bare-node.ts (dispatch.ts) inside one
// Fastify route with the body parsed as a Buffer, logger off, no hooks, no plugins. The gap
// between this and bare-node.ts is what Fastify itself costs per request; the gap between this
// and the proxy is what the proxy's features cost.
//
// Usage (normally forked by bench/http.ts):
//   node --import tsx bench/peers/fastify-floor.ts <upstream-origin> <token>
// Reports {"url": "http://127.0.0.1:<port>"} over the IPC channel (or stdout without one).
import Fastify from 'fastify';
import { Pool } from 'undici';
import { announce } from './announce.js';
import { forward } from './dispatch.js';

const upstream = process.argv[2];
const token = process.argv[3] ?? 'bench-token';
if (!upstream) {
  process.stderr.write('usage: fastify-floor.ts <upstream-origin> [token]\n');
  process.exit(2);
}

const pool = new Pool(upstream, { connections: 128 });
const authorization = `Bearer ${token}`;

const app = Fastify({ logger: false });
app.removeAllContentTypeParsers();
app.addContentTypeParser('*', { parseAs: 'buffer' }, (_req, body, done) => done(null, body));
app.post('/graphql', (request, reply) => {
  reply.hijack();
  forward(pool, authorization, request.raw, reply.raw, request.body as Buffer);
});
await app.listen({ host: '127.0.0.1', port: 0 });
announce(app.server.address());
