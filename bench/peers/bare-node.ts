// The benchmark's ceiling: the least a Node token-injecting proxy can do per request. node:http
// in, undici's dispatch() out (dispatch.ts). No framework, no logging, no key or origin checks, no
// retry. Nobody should run this; it shows how fast any Node proxy can be on this machine, so the
// proxy's and the peer's figures can be read against it.
//
// Usage (normally forked by bench/http.ts):
//   node --import tsx bench/peers/bare-node.ts <upstream-origin> <token>
// Reports {"url": "http://127.0.0.1:<port>"} over the IPC channel (or stdout without one).
import { createServer } from 'node:http';
import { announce } from './announce.js';
import { forwarderFromArgv } from './dispatch.js';

const forward = forwarderFromArgv(import.meta.filename);

const server = createServer({ keepAliveTimeout: 60_000, requestTimeout: 0 }, (req, res) => {
  const chunks: Buffer[] = [];
  req.on('data', (chunk: Buffer) => chunks.push(chunk));
  req.on('end', () => forward(req, res, Buffer.concat(chunks)));
});

server.listen(0, '127.0.0.1', () => announce(server.address()));
