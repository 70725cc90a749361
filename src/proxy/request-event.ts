// The request event of a proxied or refused HTTP request, once its answer is finished: one
// writer for both routes a request can take (Fastify, or the fast path).
import type { Events } from '../events.js';
import { redactUrl } from '../log.js';
import type { ProxiedRequest } from './http.js';

/** The request's facts (and a refused event for an error the proxy answered), once its answer is finished. Requests Fastify answered on other paths have no caller and no outcome. */
export function publishRequest(events: Events, request: ProxiedRequest, status: number, elapsedMs: number): void {
  const { proxyError: error, caller, proxyOutcome: outcome } = request;
  if (error !== null && events.has('refused')) {
    events.emit('refused', {
      transport: 'http',
      status: error.status,
      error: error.code,
      message: error.message,
      path: outcome?.path,
      key: caller?.keyName,
      credentials: caller?.credentialSet.name,
    });
  }
  if (!events.has('request')) return;
  events.emit('request', {
    requestId: request.id,
    method: request.method,
    url: redactUrl(request.url),
    path: outcome?.path,
    status,
    key: caller?.keyName,
    credentials: caller?.credentialSet.name,
    attempts: outcome?.attempts ?? 0,
    upstreamStatus: outcome?.upstreamStatus,
    upstreamMs: outcome?.upstreamMs,
    ms: Math.round(elapsedMs * 100) / 100,
    bytesIn: outcome?.bytesIn ?? 0,
    bytesOut: outcome ? outcome.bytesOut() : 0,
    operation: outcome?.operation,
    error: error?.code,
    cache: outcome?.cache,
  });
}
