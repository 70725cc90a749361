// The benchmark's peer: the simplest token-injecting proxy a person would hand-write with
// @fastify/http-proxy — /graphql forwarded to the upstream with a fixed Authorization header,
// logger off, every other option left at its default.
//
// Usage (normally forked by bench/http.ts):
//   node --import tsx bench/peers/fastify-http-proxy.ts <upstream-origin> <token>
// Reports {"url": "http://127.0.0.1:<port>"} over the IPC channel (or stdout without one).
import Fastify from 'fastify';
import proxy from '@fastify/http-proxy';
import { announce } from './announce.js';

const upstream = process.argv[2];
const token = process.argv[3] ?? 'bench-token';
if (!upstream) {
  process.stderr.write('usage: fastify-http-proxy.ts <upstream-origin> [token]\n');
  process.exit(2);
}

const app = Fastify({ logger: false });
await app.register(proxy, {
  upstream,
  prefix: '/graphql',
  rewritePrefix: '/graphql',
  replyOptions: {
    rewriteRequestHeaders: (_request, headers) => ({ ...headers, authorization: `Bearer ${token}` }),
  },
});
await app.listen({ host: '127.0.0.1', port: 0 });
announce(app.server.address());
