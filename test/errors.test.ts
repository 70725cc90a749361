// The error catalogue in-process: every code has a client-error or server-error status and words,
// and the three writers give one JSON shape.
import t from 'tap';
import { PassThrough } from 'node:stream';
import { ERRORS, ProxyError, refuseSocket, upstreamFailure, type ErrorCode } from '../src/errors.js';

t.test('every code: a 4xx or 5xx status and a default message; ProxyError takes them unless told otherwise', async (t) => {
  for (const [code, { status, message }] of Object.entries(ERRORS)) {
    t.ok(status >= 400 && status <= 599, `${code} ${status}`);
    t.ok(message.length > 0);
    const error = new ProxyError(code as ErrorCode);
    t.match(error, { code, status, message, name: 'ProxyError' });
    t.ok(error instanceof Error);
  }
  const passed = new ProxyError('upstream_rejected', 'no', { status: 429, headers: { 'Retry-After': '5' } });
  t.match(passed, { status: 429, headers: { 'Retry-After': '5' } });
});

t.test('upstream failures: timeouts are 504, the rest 502, classified by undici code', async (t) => {
  t.match(upstreamFailure({ code: 'UND_ERR_HEADERS_TIMEOUT' }), { code: 'upstream_timeout', status: 504, message: /UPSTREAM_TIMEOUT_MS/ });
  t.match(upstreamFailure({ code: 'UND_ERR_CONNECT_TIMEOUT' }), { code: 'upstream_timeout', message: /UPSTREAM_CONNECT_TIMEOUT_MS/ });
  t.match(upstreamFailure({ cause: { code: 'DEPTH_ZERO_SELF_SIGNED_CERT' } }), { code: 'upstream_unreachable', status: 502, message: /certificate was not accepted/ });
  t.match(upstreamFailure(Object.assign(new Error('x'), { code: 'ECONNREFUSED' })), { code: 'upstream_refused', status: 502, message: 'the upstream refused the connection (ECONNREFUSED)' });
  t.match(upstreamFailure({ code: 'UND_ERR_SOCKET' }), { code: 'upstream_reset', status: 502, message: 'the upstream closed the connection before answering (UND_ERR_SOCKET)' });
  t.match(upstreamFailure({ cause: { code: 'ECONNRESET' } }), { code: 'upstream_reset' });
  t.match(upstreamFailure({ code: 'ENOTFOUND' }), { code: 'upstream_unreachable', message: 'the upstream could not be reached (ENOTFOUND)' });
  t.match(upstreamFailure(new Error('socket hang up')), { message: /\(socket hang up\)/ });
});

t.test('refuseSocket writes a complete HTTP response with the JSON body and closes the socket', async (t) => {
  const socket = new PassThrough();
  const chunks: Buffer[] = [];
  socket.on('data', (c: Buffer) => chunks.push(c));
  const closed = new Promise((resolve) => socket.once('close', resolve));
  refuseSocket(socket, new ProxyError('upstream_rejected', 'refused with 429', { status: 429, headers: { 'Retry-After': '7' } }));
  await closed;
  const [head, body] = Buffer.concat(chunks).toString().split('\r\n\r\n');
  t.same(head!.split('\r\n'), [
    'HTTP/1.1 429 Too Many Requests',
    'Content-Type: application/json; charset=utf-8',
    `Content-Length: ${Buffer.byteLength(body!)}`,
    'Connection: close',
    'Retry-After: 7',
  ]);
  t.same(JSON.parse(body!), { error: 'upstream_rejected', message: 'refused with 429' });
});

t.test('refuseSocket on a socket already gone only destroys it', async (t) => {
  const socket = new PassThrough();
  socket.destroy();
  refuseSocket(socket, new ProxyError('shutting_down'));
  t.ok(socket.destroyed);
});
