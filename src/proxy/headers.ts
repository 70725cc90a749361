// Which headers cross the proxy. Inbound credentials never reach Bitquery; hop-by-hop headers
// belong to one connection and are never forwarded in either direction (RFC 9110 7.6.1).
import type { IncomingHttpHeaders } from 'node:http';
import { ProxyError } from '../errors.js';

/**
 * The most header lines a proxied request (or WebSocket handshake) may carry; more gets 431.
 * Browsers send about 20. Node itself accepts 2000, and an upstream that accepts fewer drops the
 * ones past its limit: with enough of them a client could push the proxy's Authorization out and
 * provoke 401s, each of which would cost a token renewal.
 */
export const MAX_REQUEST_HEADERS = 100;

/** The refusal for a request with more than MAX_REQUEST_HEADERS header lines, else undefined. */
export function headerLimit(rawHeaders: readonly string[]): ProxyError | undefined {
  if (rawHeaders.length / 2 <= MAX_REQUEST_HEADERS) return undefined;
  return new ProxyError('request_header_fields_too_large', `the request has ${rawHeaders.length / 2} header lines; at most ${MAX_REQUEST_HEADERS} are accepted`);
}

const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-authenticate',
  'proxy-authorization',
  'proxy-connection',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  'http2-settings',
]);

/**
 * Not forwarded upstream: the target is fixed (host), the body is re-framed (content-length,
 * expect), the caller's credentials are replaced (authorization, x-api-key), and a browser's
 * cookies for localhost are none of Bitquery's business.
 */
const DROPPED_REQUEST = new Set(['host', 'content-length', 'expect', 'authorization', 'x-api-key', 'cookie']);

type Headers = Record<string, string | string[] | undefined>;

/** Names listed in a Connection header are hop-by-hop too. */
function connectionListed(headers: Headers): Set<string> {
  const value = headers.connection;
  const list = Array.isArray(value) ? value.join(',') : value ?? '';
  return new Set(list.split(',').map((s) => s.trim().toLowerCase()).filter(Boolean));
}

function filter(headers: Headers, dropped: Set<string>): Record<string, string | string[]> {
  const listed = connectionListed(headers);
  const out: Record<string, string | string[]> = {};
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined || HOP_BY_HOP.has(name) || dropped.has(name) || listed.has(name)) continue;
    out[name] = value;
  }
  return out;
}

/** Inbound headers minus credentials and hop-by-hop ones; the caller adds Authorization per attempt. */
export function upstreamRequestHeaders(inbound: IncomingHttpHeaders): Record<string, string | string[]> {
  return filter(inbound, DROPPED_REQUEST);
}

/**
 * The headers of one upstream attempt, Authorization first: undici writes them in this order, so
 * no number of client headers comes before it. A flat list, because an object would put headers
 * with numeric names ahead of every other.
 */
export function withAuthorization(headers: Record<string, string | string[]>, bearer: string): string[] {
  const list = ['authorization', `Bearer ${bearer}`];
  for (const [name, value] of Object.entries(headers)) {
    for (const one of Array.isArray(value) ? value : [value]) list.push(name, one);
  }
  return list;
}

const NONE = new Set<string>();

/** Upstream response headers as sent, minus hop-by-hop ones. */
export function clientResponseHeaders(upstream: Headers): Record<string, string | string[]> {
  return filter(upstream, NONE);
}

/** The query string without any `token` parameter (a client-supplied token is never forwarded). */
export function withoutTokenParam(search: string): string {
  if (search === '') return '';
  const kept = search.split('&').filter((pair) => {
    const key = pair.split('=', 1)[0]!;
    try {
      return decodeURIComponent(key.replace(/\+/g, ' ')) !== 'token';
    } catch {
      return true;
    }
  });
  return kept.length ? `?${kept.join('&')}` : '';
}
