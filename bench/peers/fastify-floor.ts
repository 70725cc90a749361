// The floor of a Fastify-based proxy: the same forward as bare-node.ts (dispatch.ts) inside one
// Fastify route with the body parsed as a Buffer, logger off, no hooks, no plugins. The gap
// between this and bare-node.ts is what Fastify itself costs per request; the gap between this
// and the proxy is what the proxy's features cost.
//
// Usage (normally forked by bench/http.ts):
//   node --import tsx bench/peers/fastify-floor.ts <upstream-origin> <token>
// Reports {"url": "http://127.0.0.1:<port>"} over the IPC channel (or stdout without one).
import Fastify from 'fastify';
import { announce } from './announce.js';
import { forwarderFromArgv } from './dispatch.js';

const forward = forwarderFromArgv(import.meta.filename);

const app = Fastify({ logger: false });
app.removeAllContentTypeParsers();
app.addContentTypeParser('*', { parseAs: 'buffer' }, (_req, body, done) => done(null, body));
app.post('/graphql', (request, reply) => {
  reply.hijack();
  forward(request.raw, reply.raw, request.body as Buffer);
});
await app.listen({ host: '127.0.0.1', port: 0 });
announce(app.server.address());
