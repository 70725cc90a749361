// Every error the proxy itself answers has one JSON shape: {"error": code, "message": text}.
import type { OutgoingHttpHeaders, ServerResponse } from 'node:http';
import type { FastifyReply } from 'fastify';

export type ErrorCode =
  | 'not_found'
  | 'method_not_allowed'
  | 'payload_too_large'
  | 'request_header_fields_too_large'
  | 'bad_request'
  | 'unauthorized'
  | 'forbidden'
  | 'forbidden_origin'
  | 'rate_limited'
  | 'token_unavailable'
  | 'upstream_unreachable'
  | 'upstream_timeout'
  | 'shutting_down'
  | 'internal_error';

const JSON_TYPE = 'application/json; charset=utf-8';

export function sendError(reply: FastifyReply, status: number, error: ErrorCode, message: string): FastifyReply {
  return reply.code(status).header('content-type', JSON_TYPE).send({ error, message });
}

/** The same error on a response Fastify no longer manages (a hijacked reply), with `headers` kept. */
export function writeError(res: ServerResponse, headers: OutgoingHttpHeaders, status: number, error: ErrorCode, message: string): void {
  const body = JSON.stringify({ error, message });
  res
    .writeHead(status, { ...headers, 'content-type': JSON_TYPE, 'content-length': Buffer.byteLength(body) })
    .end(body);
}

/** Maps an undici failure to the status a client should see: 504 for timeouts, else 502. */
export function upstreamFailure(err: unknown): { status: 502 | 504; error: ErrorCode; message: string } {
  const e = err as { code?: string; message?: string; cause?: { code?: string; message?: string } };
  const code = e.code ?? e.cause?.code ?? '';
  if (code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_BODY_TIMEOUT') {
    return { status: 504, error: 'upstream_timeout', message: 'the upstream did not answer in time (UPSTREAM_TIMEOUT_MS)' };
  }
  if (code === 'UND_ERR_CONNECT_TIMEOUT') {
    return { status: 504, error: 'upstream_timeout', message: 'could not connect to the upstream in time (UPSTREAM_CONNECT_TIMEOUT_MS)' };
  }
  if (/CERT|SELF_SIGNED|UNABLE_TO_VERIFY|ERR_TLS/.test(code)) {
    return { status: 502, error: 'upstream_unreachable', message: `the upstream's TLS certificate was not accepted (${code})` };
  }
  const detail = code || e.message || 'connection failed';
  return { status: 502, error: 'upstream_unreachable', message: `the upstream could not be reached (${detail})` };
}
