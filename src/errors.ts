// Every error the proxy answers itself: its code, its status and its default wording, in one
// catalogue; ProxyError carries a code, and the three writers below (a Fastify reply, a response
// Fastify no longer manages, a raw socket refused before any WebSocket upgrade) give every one of
// them the same JSON shape: {"error": code, "message": text}. Errors are told apart by code or
// class, never by their text.
import { STATUS_CODES, type OutgoingHttpHeaders, type ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import type { FastifyReply } from 'fastify';

declare module 'fastify' {
  interface FastifyRequest {
    /** The error the proxy answered this request with, if it did (for the request and refused events). */
    proxyError: ProxyError | null;
  }
}

export const ERRORS = {
  bad_request: { status: 400, message: 'the request is not valid' },
  unauthorized: { status: 401, message: 'an API key is required: send Authorization: Bearer <key> or X-API-Key: <key>' },
  forbidden: { status: 403, message: 'the request is not allowed' },
  forbidden_origin: { status: 403, message: 'requests from this origin are not allowed (CORS_ORIGINS)' },
  cross_site: { status: 403, message: 'a cross-site browser request without an allowed Origin is not served: call from an origin listed in CORS_ORIGINS' },
  not_found: { status: 404, message: 'nothing here' },
  method_not_allowed: { status: 405, message: 'use GET or POST' },
  request_timeout: { status: 408, message: 'the request did not arrive in time (CLIENT_TIMEOUT_MS)' },
  misdirected_request: { status: 421, message: 'the Host header is not a name this proxy answers to: add it to ALLOWED_HOSTS' },
  payload_too_large: { status: 413, message: 'the request body is larger than BODY_LIMIT' },
  request_header_fields_too_large: { status: 431, message: 'the request has too many header lines' },
  rate_limited: { status: 429, message: 'too many requests a minute: retry later' },
  internal_error: { status: 500, message: 'the proxy failed to handle the request' },
  /** The upstream refused a WebSocket handshake: its own status (400–599) is passed on when it has one. */
  upstream_rejected: { status: 502, message: 'the upstream refused the request' },
  upstream_unreachable: { status: 502, message: 'the upstream could not be reached' },
  upstream_refused: { status: 502, message: 'the upstream refused the connection' },
  upstream_reset: { status: 502, message: 'the upstream closed the connection before answering' },
  token_unavailable: { status: 503, message: 'no valid Bitquery token' },
  upstream_busy: { status: 503, message: 'every upstream connection is busy (UPSTREAM_CONNECTIONS): try again later' },
  too_many_streams: { status: 503, message: 'too many streams are open: try again later' },
  /** REDIS_FAILURE=closed while Redis is away: limits that replicas share cannot be counted. */
  shared_state_unavailable: { status: 503, message: 'the limits shared by the replicas (Redis) cannot be counted now and REDIS_FAILURE=closed: try again shortly' },
  shutting_down: { status: 503, message: 'the proxy is shutting down' },
  upstream_timeout: { status: 504, message: 'the upstream did not answer in time' },
} as const satisfies Record<string, { status: number; message: string }>;

export type ErrorCode = keyof typeof ERRORS;

export interface ProxyErrorOptions {
  /** Instead of the catalogue's status (an upstream refusal passes the upstream's on). */
  status?: number;
  /** Extra response headers (Retry-After, Allow). */
  headers?: Record<string, string>;
  cause?: unknown;
}

export class ProxyError extends Error {
  override name = 'ProxyError';
  readonly status: number;
  readonly headers?: Record<string, string>;

  constructor(
    readonly code: ErrorCode,
    message: string = ERRORS[code].message,
    options: ProxyErrorOptions = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.status = options.status ?? ERRORS[code].status;
    if (options.headers) this.headers = options.headers;
  }
}

/**
 * The answer to an error thrown while a request was handled: its own for a ProxyError, a 4xx for
 * a request at fault (too large, unreadable), else null: an unexpected error, which the caller
 * logs and answers with internal_error.
 */
export function answerToThrown(err: { statusCode?: number; code?: string; message: string }, bodyLimit: number): ProxyError | null {
  if (err instanceof ProxyError) return err;
  if (err.code === 'FST_ERR_CTP_BODY_TOO_LARGE') return new ProxyError('payload_too_large', `the request body is larger than BODY_LIMIT (${bodyLimit} bytes)`);
  if (err.statusCode && err.statusCode >= 400 && err.statusCode < 500) return new ProxyError('bad_request', err.message, { status: err.statusCode });
  return null;
}

const JSON_TYPE = 'application/json; charset=utf-8';

const bodyOf = (error: ProxyError) => JSON.stringify({ error: error.code, message: error.message });

/** The error as the answer of a request Fastify still manages. */
export function sendError(reply: FastifyReply, error: ProxyError): FastifyReply {
  reply.request.proxyError = error;
  if (error.headers) reply.headers(error.headers);
  return reply.code(error.status).header('content-type', JSON_TYPE).send(bodyOf(error));
}

/** The error as a whole answer, for one written by hand (a hijacked reply, or a shared answer's sink). */
export function errorAnswer(error: ProxyError): { status: number; headers: Record<string, string>; body: Buffer } {
  const body = Buffer.from(bodyOf(error));
  return { status: error.status, headers: { ...error.headers, 'content-type': JSON_TYPE, 'content-length': String(body.length) }, body };
}

/** The error on a response Fastify no longer manages (a hijacked reply), with `headers` kept. */
export function writeError(res: ServerResponse, error: ProxyError, headers: OutgoingHttpHeaders = {}): void {
  const answer = errorAnswer(error);
  res.writeHead(answer.status, { ...headers, ...answer.headers }).end(answer.body);
}

/** A refusal written to a client that does not read it is cut after this long. */
const REFUSAL_LINGER_MS = 1000;

/** The error as a complete HTTP response on a socket that was never upgraded (a WebSocket handshake), which is then closed. */
export function refuseSocket(socket: Duplex, error: ProxyError): void {
  if (socket.destroyed || !socket.writable) {
    socket.destroy();
    return;
  }
  const body = bodyOf(error);
  let head = `HTTP/1.1 ${error.status} ${STATUS_CODES[error.status] ?? 'Error'}\r\nContent-Type: ${JSON_TYPE}\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n`;
  if (error.headers) for (const name of Object.keys(error.headers)) head += `${name}: ${error.headers[name]}\r\n`;
  socket.once('finish', () => socket.destroy());
  socket.end(`${head}\r\n${body}`);
  setTimeout(() => socket.destroy(), REFUSAL_LINGER_MS).unref();
}

/** undici's (or Node's) error code of a failed upstream request, if any. */
function errorCode(err: unknown): string {
  const e = err as { code?: string; cause?: { code?: string } };
  return e.code ?? e.cause?.code ?? '';
}

/** True when the upstream's TLS certificate was not accepted. */
export function certificateRefused(err: unknown): boolean {
  return /CERT|SELF_SIGNED|UNABLE_TO_VERIFY|ERR_TLS/.test(errorCode(err));
}

/** Node's and undici's codes of a connection closed under a request (a reset, a close before the answer). */
const RESET_CODES = new Set(['ECONNRESET', 'EPIPE', 'UND_ERR_SOCKET']);

/**
 * An upstream request that failed, as the error a client should see: 504 for timeouts, else 502,
 * telling a refused connection and one closed before the answer from the rest (DNS, TLS, routes).
 */
export function upstreamFailure(err: unknown): ProxyError {
  const code = errorCode(err);
  if (code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_BODY_TIMEOUT') {
    return new ProxyError('upstream_timeout', 'the upstream did not answer in time (UPSTREAM_TIMEOUT_MS)', { cause: err });
  }
  if (code === 'UND_ERR_CONNECT_TIMEOUT') {
    return new ProxyError('upstream_timeout', 'could not connect to the upstream in time (UPSTREAM_CONNECT_TIMEOUT_MS)', { cause: err });
  }
  if (certificateRefused(err)) {
    return new ProxyError('upstream_unreachable', `the upstream's TLS certificate was not accepted (${code})`, { cause: err });
  }
  if (code === 'ECONNREFUSED') return new ProxyError('upstream_refused', `the upstream refused the connection (${code})`, { cause: err });
  if (RESET_CODES.has(code)) return new ProxyError('upstream_reset', `the upstream closed the connection before answering (${code})`, { cause: err });
  const detail = code || (err as { message?: string }).message || 'connection failed';
  return new ProxyError('upstream_unreachable', `the upstream could not be reached (${detail})`, { cause: err });
}
